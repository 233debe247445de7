"""The per-camera mask (issue 30): masking a camera drops its frustum points from the pooling
plan, which is pooling with its features zeroed, for every backend (the exported graphs take the
plan as inputs: no re-export per combination); all cameras kept is the unmasked path itself; a
mask that keeps no camera is refused in one line."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from priorocc_core.model.bev_pool import CameraMaskError, bev_pool, bev_pool_index_add, drop_cameras, pooling_indices
from tests.test_bev_pool import INTERVAL, LOWER, SIZE, random_inputs


def test_dropping_a_camera_equals_zeroing_its_features():
    """Mutations: drop_cameras indexing keep by ranks_depth // feat_hw instead of ranks_feat ->
    the sums differ; keeping the masked camera's points (returning plan) -> its features still
    counted, not equal to the zeroed reference."""
    coords, depth, feat = random_inputs(b=2, n=3, h=4, w=6)
    plan = pooling_indices(coords, LOWER, INTERVAL, SIZE)
    keep = torch.tensor([[True, False, True], [False, True, True]])
    masked = drop_cameras(plan, keep, feat_hw=4 * 6)
    assert 0 < masked.ranks_bev.numel() < plan.ranks_bev.numel()
    zeroed = feat * keep[:, :, None, None, None]  # (B, N, fH, fW, C), masked cameras' features 0
    for pool in (bev_pool, bev_pool_index_add):  # inference (sparse) and training / export paths
        got, ref = pool(depth, feat, masked), pool(depth, zeroed, plan)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
        assert not torch.allclose(pool(depth, feat, plan), ref, atol=1e-3)  # the camera did contribute


def test_mask_that_keeps_no_camera_is_refused():
    """Mutation: no any() check in drop_cameras -> an empty plan, all-zero features, no error."""
    coords, _, _ = random_inputs(b=2, n=3)
    plan = pooling_indices(coords, LOWER, INTERVAL, SIZE)
    with pytest.raises(CameraMaskError, match=r"drops every camera of frame\(s\) \[1\]"):
        drop_cameras(plan, torch.tensor([[True, False, False], [False, False, False]]), feat_hw=4 * 6)
    with pytest.raises(CameraMaskError, match="expected"):
        drop_cameras(plan, torch.ones(3, dtype=torch.bool), feat_hw=4 * 6)


def test_model_with_every_camera_kept_is_bitwise_unmasked(tiny_cfg):
    """All cameras kept: the plan object itself (the unmasked path, bitwise); one camera masked
    changes the logits; a mask keeping none raises. Mutation: masked() always calling
    drop_cameras -> a new plan object (checked by identity)."""
    from priorocc_core.export import example_rig
    from priorocc_core.model import build_model

    torch.manual_seed(0)
    model = build_model(tiny_cfg.model).eval()
    rig = example_rig(tiny_cfg)
    n = rig["K"].shape[1]
    h, w = tiny_cfg.model.image.input_size
    imgs = torch.randn(1, n, 3, h, w)
    plan = model.planner(rig["cam2ego"], rig["K"], rig["img_aug"], rig["bev_aug"])
    assert model.planner.masked(plan, torch.ones(1, n, dtype=torch.bool)) is plan
    with torch.no_grad():
        base = model({"imgs": imgs, **rig})["occ_logits"]
        same = model({"imgs": imgs, **rig, "cam_mask": torch.ones(1, n, dtype=torch.bool)})["occ_logits"]
        keep = torch.ones(1, n, dtype=torch.bool)
        keep[0, 1] = False
        other = model({"imgs": imgs, **rig, "cam_mask": keep})["occ_logits"]
        assert torch.equal(base, same)
        assert not torch.equal(base, other)
        with pytest.raises(CameraMaskError, match="drops every camera"):
            model({"imgs": imgs, **rig, "cam_mask": torch.zeros(1, n, dtype=torch.bool)})


def test_predictor_camera_mask(tiny_checkpoint):
    """Predictor.predict(camera_mask=...): all True equals no mask bitwise; a masked camera's image
    no longer matters (its pixels replaced, same occupancy) and its points leave the plan; all
    False raises CameraMaskError. Mutation: prepare ignoring camera_mask -> camera 4 still in the plan."""
    from priorocc_core.backends import make_predictor
    from tests.ros_helpers import nuscenes_like_rig

    pred = make_predictor(tiny_checkpoint, backend="torch")
    n = len(pred.cameras)
    K, c2e = nuscenes_like_rig((90, 160))
    rng = np.random.default_rng(0)
    imgs = [(rng.random((90, 160, 3)) * 255).astype(np.uint8) for _ in range(n)]
    full = pred.predict(imgs, K, c2e).occupancy
    assert np.array_equal(full, pred.predict(imgs, K, c2e, camera_mask=[True] * n).occupancy)
    mask = [True] * n
    mask[4] = False
    a = pred.predict(imgs, K, c2e, camera_mask=mask).occupancy
    imgs2 = list(imgs)
    imgs2[4] = np.zeros_like(imgs[4])
    b = pred.predict(imgs2, K, c2e, camera_mask=mask).occupancy
    assert np.array_equal(a, b)
    plan = pred.prepare(imgs, K, c2e).plan
    feat_hw = pred.planner.frustum.shape[1] * pred.planner.frustum.shape[2]
    cams = lambda p: set(torch.div(p.ranks_feat, feat_hw, rounding_mode="floor").tolist())  # noqa: E731
    assert 4 in cams(plan) and cams(pred.prepare(imgs, K, c2e, camera_mask=mask).plan) == cams(plan) - {4}
    with pytest.raises(CameraMaskError, match="drops every camera"):
        pred.predict(imgs, K, c2e, camera_mask=[False] * n)


def test_rig_with_duplicate_camera_names_is_a_config_error(tmp_path):
    """Mutation: no __post_init__ check in ImageConfig -> the config loads (two slots, one name)."""
    from priorocc_core.config import Config, ConfigError
    from tests.conftest import ROOT

    with pytest.raises(ConfigError, match=r"model.image.cameras: .*distinct camera names \(duplicated: CAM_FRONT\)"):
        Config.from_yaml(ROOT / "training" / "configs" / "tiny.yaml").with_overrides(
            ["model.image.cameras=[CAM_FRONT,CAM_BACK,CAM_FRONT]"])
    with pytest.raises(ConfigError, match="one or more"):
        Config.from_yaml(ROOT / "training" / "configs" / "tiny.yaml").with_overrides(["model.image.cameras=[]"])


def test_camera_dropout_masks_one_camera_and_zero_is_todays_sample():
    """data.camera_dropout: 1.0 -> every training sample masks exactly one camera (cam_mask (N,),
    collated (B, N)), every other tensor equal to the sample without dropout (drawn last); 0.0 ->
    no cam_mask key, the sample bitwise today's; out of [0, 1] -> ConfigError.
    Mutations: drawing the dropout before the augmentation -> the images differ from p=0's;
    never setting keep False -> no camera masked."""
    from priorocc_core.config import ConfigError
    from priorocc_core.data import OccDataset, collate
    from tests.test_data_dataset import _cfg
    from tests.test_data_synthetic import tiny_world

    world = tiny_world()

    def sample(p, i):
        ds = OccDataset(_cfg(world, camera_dropout=p), "all", train=True)
        torch.manual_seed(11 + i)
        return ds[i]

    for i in range(2):
        drop, base = sample(1.0, i), sample(0.0, i)
        assert "cam_mask" not in base
        m = drop.pop("cam_mask")
        assert m.dtype == torch.bool and m.shape == (6,) and int((~m).sum()) == 1
        assert set(drop) == set(base)
        for k, v in base.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, drop[k]), k
    ds = OccDataset(_cfg(world, camera_dropout=1.0), "all", train=True)
    assert collate([ds[0], ds[1]])["cam_mask"].shape == (2, 6)
    assert "cam_mask" not in OccDataset(_cfg(world, camera_dropout=1.0), "all", train=False)[0]  # evaluation
    from priorocc_core.config import Config
    with pytest.raises(ConfigError, match="camera_dropout"):
        Config().with_overrides(["data.camera_dropout=1.5"])


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_exported_graphs_take_the_mask_without_reexport(tiny_checkpoint, backend):
    """The exported graph (one file, exported once) runs a masked set: the masked plan is its
    input, and its occupancy equals the torch model's with the same mask.
    Mutation: export.py without dynamic_axes (the plan's point count fixed in the graph) -> the
    masked plan (fewer points) is refused by the runtime."""
    from priorocc_core.backends import make_predictor
    from tests.ros_helpers import nuscenes_like_rig

    K, c2e = nuscenes_like_rig((90, 160))
    rng = np.random.default_rng(0)
    imgs = [(rng.random((90, 160, 3)) * 255).astype(np.uint8) for _ in range(6)]
    mask = [True] * 6
    mask[4] = False
    ref = make_predictor(tiny_checkpoint, backend="torch").predict(imgs, K, c2e, camera_mask=mask).occupancy
    p = make_predictor(tiny_checkpoint, backend=backend, precision="fp32")
    assert (p.predict(imgs, K, c2e, camera_mask=mask).occupancy == ref).mean() > 0.999
    assert np.array_equal(p.predict(imgs, K, c2e).occupancy, p.predict(imgs, K, c2e, camera_mask=[True] * 6).occupancy)
