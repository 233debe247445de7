"""Rigs end to end (issue 30): a 4-camera and a front-camera-only model train (a few iterations,
tiny config, camera dropout on for the 4-camera one), evaluate, and replay a recording, all taking
the cameras from the config / checkpoint; nothing assumes six."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "training"))

RIGS = {"robot4": (("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_FRONT_RIGHT"), 0.5),
        "front1": (("CAM_FRONT",), 0.0)}


def _world(out, rig):
    """A synthetic world (1 scene, 2 keyframes, 90 x 160 images) seen by the preset rig."""
    from priorocc_core.data.synthetic import generate_world, rig_preset

    generate_world(out, 1, 2, 0, (90, 160), "v1.0-mini", rig=rig_preset(rig), progress=False, lidar_azimuth=540)
    return out


@pytest.mark.parametrize("rig", list(RIGS))
def test_rig_trains_evaluates_and_replays(tmp_path, rig):
    """Synthetic world of the preset rig (make_synthetic --rig-preset) -> 2 training iterations ->
    evaluation -> replay of a recording. Mutations: the writer listing nuScenes' six channels
    instead of the rig's -> KeyError for a camera the preset does not have; the replay not taking
    the checkpoint's cameras -> ParameterError naming both lists."""
    from evaluate import evaluate_model
    from train import train

    from priorocc_ros.replay import replay
    from tests.ros_helpers import write_camera_bag
    from priorocc_core.config import load_config
    from tests.ros_helpers import TINY_CONFIG

    cams, dropout = RIGS[rig]
    root = _world(tmp_path / "world", rig)
    data = [f"data.dataroot={root}", "data.version=v1.0-mini", "data.train_split=all", "data.val_split=all"]
    cfg = load_config(TINY_CONFIG, data + ["train.max_iters=2", "train.warmup_iters=1", "train.batch_size=1",
                                           "train.log_interval=1", f"model.image.cameras=[{','.join(cams)}]",
                                           f"data.camera_dropout={dropout}"])
    s = train(cfg, tmp_path / "work", progress=False)
    ck = Path(s["final"]) if "final" in s else tmp_path / "work" / "final"
    assert ck.is_dir(), s
    from priorocc_core.checkpoint import read_config

    assert tuple(read_config(ck).model.image.cameras) == cams
    r = evaluate_model(read_config(ck).with_overrides(data), str(ck), "val", progress=False, rayiou=False)
    assert r["samples"] == 2 and 0.0 <= r["mIoU"] <= 100.0, r
    if len(cams) > 1:
        _check_dropped_camera_scoring(read_config(ck).with_overrides(data), ck, cams, tmp_path, data)
    write_camera_bag(tmp_path / "in", n_sets=2, jitter_ns=10_000_000)
    n = replay(tmp_path / "in", tmp_path / "out", parameters={"checkpoint": str(ck)}).node
    assert n["sets_out"] == 2 and n["unaccounted"] == 0, n


def _check_dropped_camera_scoring(cfg, ck, cams, tmp_path, data):
    """evaluate.py --drop-camera (RESULTS.md's camera-dropout study): the camera is masked out of
    the in-process batches (its logits change), the deployed predictor given the same camera_mask
    gives the same labels, and a name the checkpoint lacks or dropping every camera is one clear
    error. Mutation: evaluate_model ignoring the keep mask -> the logits equal the all-camera
    logits and the assertion below fails. ``each_camera_dropped`` (one pass, every camera dropped
    in turn) equals one run per dropped camera; mutation: the extra runs given the main run's mask
    (``masked(batch, keep)``) -> the robot4 rig's camera-dropped figures equal the all-camera ones."""
    import json

    import numpy as np
    import torch
    from evaluate import evaluate_model
    from evaluate import main as evaluate_main

    from priorocc_core.checkpoint import load_checkpoint, save_checkpoint
    from priorocc_core.cli import OptionError
    from tests.ros_helpers import TINY_CONFIG

    def preds(name, **kw):
        d = tmp_path / name
        r = evaluate_model(cfg, str(ck), "val", progress=False, rayiou=False, save_pred=str(d), **kw)
        return r, {f.stem: np.load(f) for f in sorted(d.glob("*.npz"))}

    _, full = preds("full", save_logits=True)
    r, dropped = preds("drop", save_logits=True, drop_cameras=[cams[-1]])
    assert r["dropped_cameras"] == [cams[-1]]
    assert any(not np.array_equal(full[t]["logits"], dropped[t]["logits"]) for t in full), \
        "masking a camera changed no logit: the mask did not reach the model"
    _, deployed = preds("deployed", drop_cameras=[cams[-1]], via_predictor=True)
    for t in dropped:
        agree = float((dropped[t]["pred"] == deployed[t]["pred"]).mean())
        assert agree >= 0.999, (t, agree)
    # --each-camera-dropped: one pass scores every camera dropped, each equal to its own run. The
    # 2-iteration model gives one class everywhere, whatever the cameras: its weights are jittered
    # (seeded) so that the labels depend on each camera's features.
    model, mcfg = load_checkpoint(ck)[:2]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for prm in model.parameters():
            prm.add_(torch.randn(prm.shape, generator=gen) * 0.2)
    varied = tmp_path / "varied"
    save_checkpoint(varied, model, mcfg)
    assert evaluate_main([str(TINY_CONFIG), str(varied), "--split", "val", "--no-rayiou", "--device", "cpu",
                          "--each-camera-dropped", "--out", str(tmp_path / "each.json"), "--cfg-options", *data]) == 0
    one = json.loads((tmp_path / "each.json").read_text())
    assert sorted(one["camera_dropped"]) == sorted(cams)
    base = evaluate_model(cfg, str(varied), "val", progress=False, rayiou=False)
    assert one["occ_mask_camera"] == base["occ_mask_camera"]  # the all-cameras figures unchanged
    for c in (cams[0], cams[-1]):
        alone = evaluate_model(cfg, str(varied), "val", progress=False, rayiou=False, drop_cameras=[c])
        assert one["camera_dropped"][c]["occ_mask_camera"] == alone["occ_mask_camera"], c
        assert one["camera_dropped"][c]["dropped_cameras"] == [c]
    assert any(one["camera_dropped"][c]["occ_mask_camera"] != one["occ_mask_camera"] for c in cams), \
        "no dropped camera changed a figure: the comparison above shows nothing"
    with pytest.raises(OptionError, match="CAM_NOPE: not a camera of this checkpoint"):
        evaluate_model(cfg, str(ck), "val", progress=False, rayiou=False, drop_cameras=["CAM_NOPE"])
    with pytest.raises(OptionError, match="drops every camera"):
        evaluate_model(cfg, str(ck), "val", progress=False, rayiou=False, drop_cameras=list(cams))
