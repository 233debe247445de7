"""Rigs end to end (issue 30): a 4-camera and a front-camera-only model train (a few iterations,
tiny config, camera dropout on for the 4-camera one), evaluate, and replay a recording, all taking
the cameras from the config / checkpoint; nothing assumes six."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "training"))

RIGS = {"robot4": (("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK"), 0.5),
        "front1": (("CAM_FRONT",), 0.0)}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from tests.test_train import make_tiny_dataset

    root = tmp_path_factory.mktemp("tinydata")
    return root, make_tiny_dataset(root, n=2)


@pytest.mark.parametrize("rig", list(RIGS))
def test_rig_trains_evaluates_and_replays(tiny_data, tmp_path, rig):
    """Mutations: OccDataset reading every camera of the record instead of the config's ->
    (B, 6) images for an N-camera model (the view transformer's plan does not fit); the replay
    not taking the checkpoint's cameras -> ParameterError."""
    from evaluate import evaluate_model
    from train import train

    from priorocc_ros.replay import replay
    from tests.ros_helpers import write_camera_bag
    from tests.test_train import tiny_cfg

    cams, dropout = RIGS[rig]
    root, info = tiny_data
    cfg = tiny_cfg(root, info, ["train.max_iters=2", "train.warmup_iters=1", "train.batch_size=1",
                               f"model.image.cameras=[{','.join(cams)}]", f"data.camera_dropout={dropout}"])
    s = train(cfg, tmp_path / "work", progress=False)
    ck = Path(s["final"]) if "final" in s else tmp_path / "work" / "final"
    assert ck.is_dir(), s
    from priorocc_core.checkpoint import read_config

    assert tuple(read_config(ck).model.image.cameras) == cams
    r = evaluate_model(read_config(ck).with_overrides([f"data.dataroot={root}", f"data.info_file_val={info}"]),
                       str(ck), "val", progress=False, rayiou=False)
    assert r["samples"] == 2 and 0.0 <= r["mIoU"] <= 100.0, r
    write_camera_bag(tmp_path / "in", n_sets=2, jitter_ns=10_000_000)
    n = replay(tmp_path / "in", tmp_path / "out", parameters={"checkpoint": str(ck)}).node
    assert n["sets_out"] == 2 and n["unaccounted"] == 0, n
