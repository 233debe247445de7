"""Backends behind one parameter give the same labels as PyTorch fp32 (tiny config), and the
runtime asked for is the one that ran.

fp32 paths: >= 99.9 % voxel agreement; bf16 paths: >= 99.5 %. With the random weights of the
test checkpoint; the benchmark (benchmarks/run.py) measures the same with the R50 configs.
Mutation check: make_predictor forced to the torch runner fails ``test_backend_agrees_with_torch_fp32``
for every other backend (no graph runner ran, no session / compiled model behind it).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from benchmarks.inputs import REAL_ROOT, synthetic_frame
from priorocc_core.backends import BackendError, GraphRunner, TorchRunner, make_predictor
from priorocc_core.data.real_keyframe import load_real_keyframe
from priorocc_core.inference import Prediction

from .conftest import require_shared

CASES = [  # backend, precision, options, minimum occupancy agreement
    ("torch", "fp32", {"channels_last": True}, 0.999),
    ("torch", "bf16", {}, 0.995),
    ("onnxruntime", "fp32", {}, 0.999),
    ("openvino", "fp32", {}, 0.999),
    ("openvino", "bf16", {}, 0.995),
]


@pytest.fixture(scope="module")
def onnx_file(tiny_checkpoint, tmp_path_factory):
    from priorocc_core.checkpoint import load_checkpoint
    from priorocc_core.export import export_onnx

    model, cfg, _ = load_checkpoint(tiny_checkpoint)
    return export_onnx(model, cfg, tmp_path_factory.mktemp("onnx") / "model.onnx")


def _frames():
    frames = [("synthetic", synthetic_frame(seed=3))]
    if (REAL_ROOT / "v1.0-mini").is_dir():
        frames.append(("real", load_real_keyframe(REAL_ROOT)))
    return frames


@pytest.fixture(scope="module")
def frames():
    return _frames()


@pytest.fixture(scope="module")
def reference(tiny_checkpoint, frames):
    ref = make_predictor(tiny_checkpoint)
    return {name: ref.predict(f["images"], f["K"], f["cam2ego"]) for name, f in frames}


def runtime_spy(pred, monkeypatch) -> list:
    """Record every call into the runtime itself (torch module, onnxruntime session, OpenVINO
    request) of ``pred``; asserts the runner is the kind its backend name says."""
    calls = []
    r = pred.runner
    if pred.backend == "torch":
        assert isinstance(r, TorchRunner)
        orig = r._forward
        monkeypatch.setattr(r, "_forward", lambda *a, **k: calls.append("torch") or orig(*a, **k))
    else:
        assert isinstance(r, GraphRunner)
        kind = {"onnxruntime": "onnxruntime.capi.onnxruntime_inference_collection",
                "openvino": "openvino"}[pred.backend]
        assert type(r.engine).__module__.startswith(kind), type(r.engine)
        orig = r._run
        monkeypatch.setattr(r, "_run", lambda feeds: calls.append(pred.backend) or orig(feeds))
    return calls


@pytest.mark.parametrize("backend,precision,opts,minimum", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_backend_agrees_with_torch_fp32(backend, precision, opts, minimum, tiny_checkpoint, onnx_file, frames, reference,
                                        monkeypatch):
    if backend != "torch":
        opts = dict(opts, onnx_path=onnx_file)
    pred = make_predictor(tiny_checkpoint, backend, precision, **opts)
    assert pred.cameras == tuple(pred.cfg.model.image.cameras)
    assert pred.backend == backend
    calls = runtime_spy(pred, monkeypatch)
    for name, f in frames:
        out = pred.predict(f["images"], f["K"], f["cam2ego"])
        ref = reference[name]
        assert isinstance(out, Prediction)
        assert out.occupancy.shape == (200, 200, 16) and out.occupancy.dtype == np.uint8
        assert out.seg2d.shape == ref.seg2d.shape and out.seg2d.dtype == np.uint8
        np.testing.assert_allclose(out.img_aug, ref.img_aug)
        agree = (out.occupancy == ref.occupancy).mean()
        assert agree >= minimum, f"{backend} {precision} on the {name} frame: {agree:.5f} voxel agreement"
        if precision == "fp32":
            assert (out.seg2d == ref.seg2d).mean() >= 0.999
        assert set(out.timings) == {"preprocess", "model", "postprocess"}
    assert calls == [backend] * len(frames)


def test_real_keyframe_present_for_backend_parity():
    """The parity above runs on the real keyframe too; say so loudly when it cannot."""
    require_shared("nuscenes-real")


def test_openvino_converted_from_torch(tiny_checkpoint, frames, reference, monkeypatch):
    """``source="torch"``: ``openvino.convert_model``. OpenVINO's converter reports each conversion
    to Google Analytics through openvino-telemetry unless the user opted out or ``CI`` is true (its
    only switch besides the opt-out file in ~/intel): tests talk only to loopback, so it is told so here.
    Mutation: the setenv removed -> the converter's telemetry has consent (the last assertion)."""
    monkeypatch.setenv("CI", "true")
    pred = make_predictor(tiny_checkpoint, "openvino", "fp32", source="torch")
    import openvino_telemetry

    assert not openvino_telemetry.Telemetry().consent  # the converter's singleton: nothing is sent
    name, f = frames[0]
    out = pred.predict(f["images"], f["K"], f["cam2ego"])
    assert (out.occupancy == reference[name].occupancy).mean() >= 0.999


def test_onnx_is_exported_into_the_keyed_cache(tiny_checkpoint, tmp_path):
    """The export goes to <cache_dir>/graphs/<key>/model.onnx (tests/test_artifact_cache.py has the key's cases)."""
    pred = make_predictor(tiny_checkpoint, "onnxruntime", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "graphs").glob("*/model.onnx"))) == 1
    assert pred.backend == "onnxruntime"


def test_plan_is_computed_once_for_a_fixed_rig(tiny_checkpoint, onnx_file, frames):
    pred = make_predictor(tiny_checkpoint, "onnxruntime", onnx_path=onnx_file)
    f = frames[0][1]
    pred.predict(f["images"], f["K"], f["cam2ego"])
    plan = pred.planner._plan
    pred.predict(f["images"], f["K"], f["cam2ego"])
    assert pred.planner._plan is plan


@pytest.mark.parametrize("kwargs,words", [
    (dict(backend="tensorflow"), "backend 'tensorflow': unknown"),
    (dict(precision="int3"), "precision 'int3': unknown"),
    (dict(backend="onnxruntime", precision="bf16"), "only --precision fp32"),
    (dict(backend="torch", colour="blue"), "unknown option"),
    (dict(backend="onnxruntime", onnx_path="/nonexistent.onnx"), "no such file"),
])
def test_bad_backend_arguments_are_named(tiny_checkpoint, kwargs, words):
    with pytest.raises(BackendError, match=words):
        make_predictor(tiny_checkpoint, **kwargs)
