"""Rigs from the checkpoint (issue 30): the node and the replay take the number, names and order
of the cameras from the model's config (parameter cameras [''] by default), so a 4-camera model
and a front-camera-only model replay a recording without any camera parameter; the exported
graphs serve them as well (the plan carries the camera count)."""
from __future__ import annotations

import pytest

from priorocc_ros.bagio import read_messages
from tests.ros_helpers import write_camera_bag

RIGS = {"robot4": ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK"), "front1": ("CAM_FRONT",)}


def _checkpoint(out, cameras):
    import torch

    from priorocc_core.checkpoint import save_checkpoint
    from priorocc_core.config import load_config
    from priorocc_core.model import build_model
    from tests.ros_helpers import TINY_CONFIG

    torch.manual_seed(0)
    cfg = load_config(TINY_CONFIG).with_overrides([f"model.image.cameras=[{','.join(cameras)}]"])
    save_checkpoint(out, build_model(cfg.model), cfg)
    return out


@pytest.mark.parametrize("rig", list(RIGS))
def test_replay_takes_the_rig_from_the_checkpoint(tmp_path, rig):
    """Mutation: model_cameras ignoring the checkpoint (nuScenes' six) -> the node refuses:
    'parameter cameras=[...six...] must be the model's cameras'."""
    from priorocc_ros.replay import replay

    cams = RIGS[rig]
    ckpt = _checkpoint(tmp_path / "ckpt", cams)
    write_camera_bag(tmp_path / "in", n_sets=3, jitter_ns=10_000_000)  # a six-camera recording
    summary = replay(tmp_path / "in", tmp_path / "out", parameters={"checkpoint": str(ckpt)})
    n = summary.node
    assert n["sets_in"] == 3 == n["sets_out"] and n["unaccounted"] == 0, n
    topics = {t for t, *_ in read_messages(tmp_path / "out")}
    assert {f"/priorocc/seg_overlay/{c}" for c in cams} <= topics
    assert not {t for t in topics if t.startswith("/priorocc/seg_overlay/")} - {f"/priorocc/seg_overlay/{c}" for c in cams}
