"""Shared fixtures: the repo root, the tiny config, a tiny checkpoint (single-frame and temporal), the
real data folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_configure(config):
    """Derived artifacts (exported graphs, artifacts.py) go to a cache folder of this run's own, not
    the user's cache and never the repository: a run sees no graph exported by another run's code.

    Under pytest-xdist (``make test`` runs ``-n 2``) each worker also gets: its own slice of DDS
    domain ids (benchmarks/local_dds.domain_slice: two workers never share a domain, and the
    worker's default ``ROS_DOMAIN_ID`` is one of its own), and one OpenMP thread unless the caller
    set ``OMP_NUM_THREADS`` (two workers x two spinning OpenMP threads on two cores stall each
    other; child processes inherit it).

    Also for every worker and child: torch's inductor cache inside that cache folder, and
    onnxruntime's / NNCF's telemetry off (``priorocc_core.telemetry``)."""
    import tempfile

    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw"):
        n = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        os.environ["PRIOROCC_DDS_DOMAIN_SLICE"] = f"{int(worker[2:])}/{n}"
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        from benchmarks.local_dds import unique_domain_id

        os.environ["ROS_DOMAIN_ID"] = str(unique_domain_id())

    if not os.environ.get("PRIOROCC_CACHE_DIR"):
        config._priorocc_cache = tempfile.mkdtemp(prefix="priorocc-test-cache-")
        os.environ["PRIOROCC_CACHE_DIR"] = config._priorocc_cache
    # torch.compile's / the dynamo exporter's kernel cache beside it, not $TMPDIR/torchinductor_<user>
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(os.environ["PRIOROCC_CACHE_DIR"], "torchinductor"))
    # onnxruntime's and NNCF's telemetry off in this process and every child (tests talk only to loopback)
    from priorocc_core.telemetry import keep_third_party_quiet

    keep_third_party_quiet()


def pytest_unconfigure(config):
    import shutil

    folder = getattr(config, "_priorocc_cache", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop("PRIOROCC_CACHE_DIR", None)


def require_shared(sub: str) -> Path:
    """Path of ../shared/data/<sub>; skip outside CI when absent, fail in CI."""
    p = SHARED_DATA / sub
    if not p.exists():
        msg = f"real data {p} is absent (see ../shared/data/README.md)"
        if os.environ.get("CI"):
            pytest.fail(msg + " — CI must have it")
        pytest.skip(msg)
    return p


@pytest.fixture(scope="session")
def tiny_cfg():
    from priorocc_core.config import Config

    return Config.from_yaml(ROOT / "training" / "configs" / "tiny.yaml")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_cfg):
    """A randomly initialised tiny model saved through the real checkpoint code."""
    import torch

    from priorocc_core.checkpoint import save_checkpoint
    from priorocc_core.model import build_model

    torch.manual_seed(0)
    model = build_model(tiny_cfg.model)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(path, model, tiny_cfg, step=1)
    return path


@pytest.fixture(scope="session")
def temporal_ckpt(tmp_path_factory):
    """A tiny temporal model (tiny-temporal.yaml: num_adj 1) saved through the real checkpoint
    code; BatchNorm statistics of a trained-looking model, so that the labels vary with the input
    (and with the history)."""
    import torch

    from priorocc_core.checkpoint import save_checkpoint
    from priorocc_core.config import Config
    from priorocc_core.model import build_model

    cfg = Config.from_yaml(ROOT / "training" / "configs" / "tiny-temporal.yaml")
    torch.manual_seed(0)
    model = build_model(cfg.model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.01, 0.1)
    path = tmp_path_factory.mktemp("tck") / "tiny-temporal"
    save_checkpoint(path, model, cfg, step=1)
    return path
