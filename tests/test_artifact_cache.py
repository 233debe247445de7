"""Cached graphs are keyed on what produced them (priorocc_core/artifacts.py): model code, weights,
config, tool versions. A change of any of them exports afresh; the old graph is never run.

Mutations tried (each fails the test named):
- ``graph_key`` keyed on the weights only (code, config and versions left out of ``parts``):
  ``test_model_code_change_reexports`` fails (the second process runs the cached graph of the old
  code: its labels differ from the edited code's torch labels) and ``test_config_change_changes_the_key``.
- ``_onnx_file`` back to ``<checkpoint>/onnx/model.onnx``: ``test_nothing_is_written_beside_the_checkpoint``.
- ``make_predictor`` int8 without the key check: ``test_int8_ir_of_other_weights_is_refused``.
- ``graph_key`` on the weights file's bytes again (``file_digest``, before this test):
  ``test_same_weights_saved_twice_share_the_key`` fails (another step in the metadata, another key).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from priorocc_core.artifacts import KEY_FILE, cache_root, code_digest, graph_key
from priorocc_core.backends import BackendError, make_predictor

from .conftest import ROOT

# Runs in a copy of the package: builds an onnxruntime predictor over the shared cache folder,
# predicts one synthetic frame, and reports the graph it ran and its agreement with torch (same code).
_PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from priorocc_core.backends import make_predictor
    from priorocc_core.geometry import surround_rig
    ck, cache = sys.argv[1], sys.argv[2]
    graph = make_predictor(ck, "onnxruntime", cache_dir=cache)
    torch_ = make_predictor(ck, "torch")
    cfg = torch_.cfg
    rng = np.random.default_rng(0)
    h, w = 90, 160
    cam2ego, K = (t.numpy() for t in surround_rig(len(cfg.model.image.cameras), (h, w), 120.0, 1.6))
    images = [(rng.random((h, w, 3)) * 255).astype(np.uint8) for _ in cfg.model.image.cameras]
    a = graph.predict(images, K, cam2ego).occupancy
    b = torch_.predict(images, K, cam2ego).occupancy
    print(json.dumps(dict(agree=float((a == b).mean()), labels=np.bincount(a.ravel(), minlength=18).tolist())))
""")


def _copy_package(dst):
    shutil.copytree(ROOT / "priorocc_core", dst / "priorocc_core",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dst / "probe.py").write_text(_PROBE)


def _run_probe(pkg_root, ck, cache) -> dict:
    env = dict(os.environ, PYTHONPATH=str(pkg_root), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(pkg_root / "probe.py"), str(ck), str(cache)], env=env,
                       capture_output=True, text=True, timeout=300, cwd=pkg_root)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _graph_folders(cache):
    return sorted(p.name for p in (cache / "graphs").iterdir()) if (cache / "graphs").is_dir() else []


def test_model_code_change_reexports(tiny_checkpoint, tmp_path):
    """Edit one line of model code in a copy of the package: the next predictor exports a new graph
    (a second key folder) and its labels are the edited code's, never the old cached graph's."""
    pkg = tmp_path / "pkg"
    _copy_package(pkg)
    cache = tmp_path / "cache"
    first = _run_probe(pkg, tiny_checkpoint, cache)
    assert first["agree"] >= 0.999 and len(_graph_folders(cache)) == 1
    post = pkg / "priorocc_core" / "model" / "postprocess.py"
    src = post.read_text()
    assert "return logits.argmax(-1)" in src
    post.write_text(src.replace("return logits.argmax(-1)", "return logits.argmin(-1)"))  # a code change
    second = _run_probe(pkg, tiny_checkpoint, cache)
    assert len(_graph_folders(cache)) == 2, "the code change did not make a new export"
    assert second["agree"] >= 0.999, "the graph that ran is not the edited code's (a stale export ran)"
    assert second["labels"] != first["labels"]


def test_config_change_changes_the_key(tiny_checkpoint, tmp_path):
    from priorocc_core.checkpoint import load_checkpoint

    model, cfg, _ = load_checkpoint(tiny_checkpoint)
    a = graph_key(tiny_checkpoint, None, cfg)
    b = graph_key(tiny_checkpoint, None, cfg.with_overrides(["model.head.use_mask=false"]
                                                             if cfg.model.head.use_mask else ["model.head.use_mask=true"]))
    assert a.digest != b.digest
    assert graph_key(tiny_checkpoint, None, cfg).digest == a.digest  # stable for the same inputs
    assert graph_key(None, model, cfg).digest == graph_key(None, model, cfg).digest
    assert a.parts["config"] != b.parts["config"]


def test_weights_replaced_in_place_reexport(tiny_checkpoint, tmp_path):
    """A new model.safetensors written over the old one with the old mtime (a git checkout can do
    that): the weights' bytes are in the key, so the export follows."""
    import torch

    from priorocc_core.checkpoint import load_checkpoint, save_checkpoint
    from priorocc_core.geometry import surround_rig

    ck = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, ck)
    model, cfg = load_checkpoint(ck)[:2]
    cam2ego, K = (t.numpy() for t in surround_rig(len(cfg.model.image.cameras), (90, 160), 120.0, 1.6))
    rng = np.random.default_rng(1)
    images = [(rng.random((90, 160, 3)) * 255).astype(np.uint8) for _ in cfg.model.image.cameras]
    cache = tmp_path / "cache"
    a = make_predictor(ck, "onnxruntime", cache_dir=cache).predict(images, K, cam2ego).occupancy
    with torch.no_grad():
        for prm in model.parameters():
            prm.mul_(-1.0)
    save_checkpoint(tmp_path / "other", model, cfg)
    st = os.stat(ck / "model.safetensors")
    (ck / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    os.utime(ck / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns))
    b = make_predictor(ck, "onnxruntime", cache_dir=cache).predict(images, K, cam2ego).occupancy
    ref = make_predictor(ck, "torch").predict(images, K, cam2ego).occupancy
    assert (b == ref).mean() >= 0.999 and (a != b).any()
    assert len(_graph_folders(cache)) == 2


def test_same_weights_saved_twice_share_the_key(tiny_checkpoint, tmp_path):
    """The same weights saved again with other metadata (another step, another dtype round trip
    that changes nothing) share the key, so the cached graph is found, not exported again; the
    in-memory model gives the same weights digest as its file; one changed value changes it."""
    import torch

    from priorocc_core.checkpoint import load_checkpoint, save_checkpoint

    model, cfg = load_checkpoint(tiny_checkpoint)[:2]
    a = save_checkpoint(tmp_path / "a", model, cfg, step=3)
    b = save_checkpoint(tmp_path / "b", model, cfg, step=12345, extra_meta={"note": "saved elsewhere"})
    assert a.read_bytes() != b.read_bytes()
    ka, kb = graph_key(tmp_path / "a", None, cfg), graph_key(tmp_path / "b", None, cfg)
    assert ka.digest == kb.digest
    assert graph_key(None, model, cfg).parts["weights"] == ka.parts["weights"]
    with torch.no_grad():
        next(iter(model.parameters())).view(-1)[0] += 1.0
    save_checkpoint(tmp_path / "c", model, cfg, step=3)
    assert graph_key(tmp_path / "c", None, cfg).parts["weights"] != ka.parts["weights"]


def test_nothing_is_written_beside_the_checkpoint(tiny_checkpoint, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, ck)
    before = sorted(p.name for p in ck.iterdir())
    make_predictor(ck, "onnxruntime")
    assert sorted(p.name for p in ck.iterdir()) == before
    folders = _graph_folders(cache_root())
    assert folders, f"no graph in the cache {cache_root()}"
    key = json.loads((cache_root() / "graphs" / folders[0] / KEY_FILE).read_text())
    assert set(key["parts"]) >= {"code", "weights", "config", "tools"}


def test_cache_root_is_never_the_repository():
    assert ROOT not in cache_root().resolve().parents
    assert len(code_digest()) == 64


def test_int8_ir_of_other_weights_is_refused(tiny_checkpoint, tmp_path):
    """An int8 IR whose recorded key is not this checkpoint's (other weights) is refused, naming
    the command that remakes it; an IR without a recorded key likewise."""
    from priorocc_core.artifacts import write_key
    from priorocc_core.backends import default_int8_path, int8_key, int8_key_file
    from priorocc_core.checkpoint import read_config

    ck = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, ck)
    xml = default_int8_path(ck)
    xml.parent.mkdir(parents=True)
    xml.write_text("<net/>")  # never read: the key check comes first
    with pytest.raises(BackendError, match=r"differs in: missing.*priorocc_quantize"):
        make_predictor(ck, "openvino", "int8")
    cfg = read_config(ck)
    write_key(int8_key_file(xml), int8_key(ck, cfg))
    data = bytearray((ck / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # other weights (the last byte of the last tensor)
    (ck / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(BackendError, match=r"differs in: weights.*priorocc_quantize"):
        make_predictor(ck, "openvino", "int8")
