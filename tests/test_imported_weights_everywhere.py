"""An imported FlashOCC M0 checkpoint runs through integration_test.py, the replay and the demo;
the backend switch works in the replay and the demo (issue: FlashOCC checkpoints in, speed)."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from priorocc_core.config import Config
from priorocc_core.importer import main as import_main
from tests.conftest import ROOT
from tests.fixtures import mmcv_layouts as L


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "training" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def imported_m0(tmp_path_factory):
    d = tmp_path_factory.mktemp("m0")
    L.save_mmcv_checkpoint(d / "m0.pth", L.flashocc_m0())
    cfg = Config.from_yaml(ROOT / "training" / "configs" / "flashocc-r50-m0.yaml")
    # smaller network input keeps the R50 forward quick on CPU; no weight shape depends on it
    cfg.with_overrides(["model.image.input_size=[128, 352]"]).to_yaml(d / "m0.yaml")
    assert import_main([str(d / "m0.pth"), "--config", str(d / "m0.yaml"), "--out", str(d / "ck")]) == 0
    return d / "ck"


def test_imported_m0_through_integration_test(imported_m0, capsys):
    assert _script("integration_test").main(["--checkpoint", str(imported_m0)]) == 0
    assert "all stage shapes match docs/design.md" in capsys.readouterr().out


def test_imported_m0_in_the_replay(imported_m0, tmp_path):
    from priorocc_ros.replay import main as replay_main

    bag = ROOT / "bags" / "demo"
    summary = tmp_path / "s.json"
    assert replay_main([str(bag), "--out", str(tmp_path / "out"), "--checkpoint", str(imported_m0),
                        "--json", str(summary)]) == 0
    s = json.loads(summary.read_text())
    node = s["node"]
    assert node["sets_in"] >= 1 and node["sets_out"] == node["sets_in"] - node.get("sets_dropped", 0) - node.get("sets_failed", 0)
    assert node["sets_out"] >= 1


def runner_calls(monkeypatch) -> dict:
    """Count the calls into each kind of runner (which runtime really produced the outputs), of
    runners built after this call only (a thread of an earlier test may still be running)."""
    from priorocc_core import backends

    calls = {"torch": 0, "graph": 0}
    mine: set[int] = set()
    for name, cls in (("torch", backends.TorchRunner), ("graph", backends.GraphRunner)):
        init, call = cls.__init__, cls.__call__

        def spy_init(self, *a, _init=init, **k):
            mine.add(id(self))
            _init(self, *a, **k)

        def spy_call(self, *a, _call=call, _name=name, **k):
            if id(self) in mine:
                calls[_name] += 1
            return _call(self, *a, **k)
        monkeypatch.setattr(cls, "__init__", spy_init)
        monkeypatch.setattr(cls, "__call__", spy_call)
    return calls


def test_replay_backend_switch(tiny_checkpoint, tmp_path, monkeypatch):
    """Mutation check: make_predictor forced to torch fails this (no graph runner call)."""
    from priorocc_ros.replay import main as replay_main

    calls = runner_calls(monkeypatch)
    summary = tmp_path / "s.json"
    assert replay_main([str(ROOT / "bags" / "demo"), "--out", str(tmp_path / "out"), "--checkpoint",
                        str(tiny_checkpoint), "--backend", "onnxruntime", "--json", str(summary)]) == 0
    sets = json.loads(summary.read_text())["node"]["sets_out"]
    assert sets >= 1 and calls["torch"] == 0 and calls["graph"] >= sets  # every output came from the ONNX graph


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_demo_runs_imported_m0_and_backends(imported_m0, tiny_checkpoint, tmp_path, backend, monkeypatch):
    ckpt = imported_m0 if backend == "torch" else tiny_checkpoint
    out = tmp_path / "demo"
    calls = runner_calls(monkeypatch)
    assert _script("demo").main(["--checkpoint", str(ckpt), "--out", str(out), "--keyframes", "1",
                                 "--width", "352", "--height", "198", "--backend", backend]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["backend"] == backend and m["keyframes"] == 1
    assert calls == ({"torch": 1, "graph": 0} if backend == "torch" else {"torch": 0, "graph": 1})
    per_class = m["mask_camera"]["per_class"]
    assert m["mask_camera"]["mIoU"] == pytest.approx(np.mean([v for k, v in per_class.items()
                                                              if k != "free" and v is not None]))
    for name in ("seg_overlay_0.png", "bev_0.png", "voxels_0.png", "keyframe_0.png"):
        assert (out / name).stat().st_size > 1000


def test_training_starts_from_bevdet_pth_and_reports_skips(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(ROOT / "training"))
    from tests.test_train import make_tiny_dataset
    from train import train

    from priorocc_core.config import load_config

    data = tmp_path / "data"
    info = make_tiny_dataset(data, n=1)
    L.save_mmcv_checkpoint(tmp_path / "bevdet.pth", L.bevdet_r50_cbgs())
    cfg = load_config(ROOT / "training" / "configs" / "priorocc-r50.yaml", [
        f"data.dataroot={data}", f"data.info_file_train={info}", "data.num_workers=0", "model.image.input_size=[64, 176]",
        "train.max_iters=1", "train.batch_size=1", "train.ema=false", "train.load_from=null"])
    s = train(cfg, tmp_path / "wd", load_from=str(tmp_path / "bevdet.pth"), device="cpu", progress=False)
    out = capsys.readouterr().out
    assert "skipped  pts_bbox_head.shared_conv.conv.weight" in out
    assert "skipped  img_view_transformer.depth_net.weight: shape (123, 256, 1, 1)" in out
    assert "SemanticInjector: freshly initialised" in out
    assert s["steps"] == 1
