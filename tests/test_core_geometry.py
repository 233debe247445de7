"""Geometry against nuscenes-devkit on the real keyframe, frustum layout, BEV cells, pooling."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from priorocc_core.classes import CAMERAS
from priorocc_core.config import Config, GridConfig, ImageConfig
from priorocc_core.geometry import create_frustum, frustum_to_ego, invert_rigid, project_points, transform_from_quat
from priorocc_core.model.bev_pool import bev_pool, bev_pool_cumsum_reference, pooling_indices
from priorocc_core.preprocess import normalize_image, test_time_aug
from tests.conftest import ROOT, require_shared


def test_projection_matches_devkit_on_real_keyframe(monkeypatch):
    root = require_shared("nuscenes-real")
    import nuscenes.nuscenes as devkit
    from nuscenes.nuscenes import NuScenes
    from nuscenes.utils.data_classes import LidarPointCloud

    # The devkit stores points as float32 after each transform (global coordinates of
    # hundreds of metres lose ~1e-2 px that way); run its own code on float64 points so the
    # comparison measures geometry, not float32 storage.
    original = LidarPointCloud.from_file.__func__

    def from_file_f64(cls, path):
        pc = original(cls, path)
        pc.points = pc.points.astype(np.float64)
        return pc

    monkeypatch.setattr(devkit.LidarPointCloud, "from_file", classmethod(from_file_f64))

    nusc = NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)
    sample = nusc.get("sample", "ca9a282c9e77460f8360f564131a8af5")
    lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    pc = LidarPointCloud.from_file(str(root / lidar["filename"]))
    cs = nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])
    pose = nusc.get("ego_pose", lidar["ego_pose_token"])
    lidar2ego = transform_from_quat(cs["translation"], cs["rotation"])
    ego2global = transform_from_quat(pose["translation"], pose["rotation"])
    pts_ego = pc.points[:3].T.astype(np.float64) @ lidar2ego[:3, :3].T + lidar2ego[:3, 3]
    checked = 0
    for cam in CAMERAS:
        cam_sd = nusc.get("sample_data", sample["data"][cam])
        ccs = nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])
        cpose = nusc.get("ego_pose", cam_sd["ego_pose_token"])
        # camera -> ego at the keyframe (LIDAR_TOP) time, through the camera's own ego pose
        cam2ego = invert_rigid(ego2global) @ transform_from_quat(cpose["translation"], cpose["rotation"]) \
            @ transform_from_quat(ccs["translation"], ccs["rotation"])
        uv, depth = project_points(pts_ego, cam2ego, np.asarray(ccs["camera_intrinsic"]))
        w, h = cam_sd["width"], cam_sd["height"]
        keep = (depth > 1.0) & (uv[:, 0] > 1) & (uv[:, 0] < w - 1) & (uv[:, 1] > 1) & (uv[:, 1] < h - 1)
        ref, _, _ = nusc.explorer.map_pointcloud_to_image(lidar["token"], cam_sd["token"])
        ours = uv[keep]
        assert ours.shape[0] == ref.shape[1] > 100, cam
        np.testing.assert_allclose(ours, ref[:2].T, atol=1e-3, rtol=0)
        checked += ours.shape[0]
    assert checked > 1000


def test_frustum_layout_as_flashocc():
    f = create_frustum((1.0, 45.0, 1.0), (256, 704), 16)  # M0
    assert f.shape == (44, 16, 44, 3)
    assert torch.allclose(f[:, 0, 0, 2], torch.arange(1.0, 45.0))
    assert torch.allclose(f[0, 0, :, 0], torch.linspace(0, 703, 44))
    assert torch.allclose(f[0, :, 0, 1], torch.linspace(0, 255, 16))
    assert f[5, 3, 7].tolist() == pytest.approx([7 * 703 / 43, 3 * 255 / 15, 6.0])
    assert create_frustum((1.0, 45.0, 0.5), (256, 704), 16).shape[0] == 88  # M1
    assert GridConfig().num_depth_bins == 88


def test_normalised_channel_order_is_flashoccs_bgr():
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255  # pure red RGB image, as PIL gives it
    x = normalize_image(red, ImageConfig())
    # mmcv imnormalize(to_rgb=True) on an RGB array swaps it to BGR before subtracting the mean
    assert x[0, 0, 0].item() == pytest.approx((0 - 123.675) / 58.395)
    assert x[2, 0, 0].item() == pytest.approx((255 - 103.53) / 57.375)
    x = normalize_image(red, ImageConfig(channel_order="rgb"))
    assert x[0, 0, 0].item() == pytest.approx((255 - 123.675) / 58.395)


def test_test_time_transform_keeps_bottom_rows():
    aug = test_time_aug((900, 1600), ImageConfig())
    assert aug.resize == pytest.approx(0.44) and aug.resize_dims == (704, 396)
    assert aug.crop == (0, 140, 704, 396)
    m = aug.matrix()
    assert m @ np.array([0, 900, 1.0]) == pytest.approx([0, 256, 1])


def forward_camera():
    """One camera at the ego origin, 1 m up, looking along ego +x."""
    cam2ego = torch.eye(4)
    cam2ego[:3, :3] = torch.tensor([[0, 0, 1.0], [-1, 0, 0], [0, -1, 0]])
    cam2ego[2, 3] = 1.0
    K = torch.tensor([[100.0, 0, 352], [0, 100.0, 128], [0, 0, 1]])
    return cam2ego[None, None], K[None, None]


def test_frustum_points_land_in_expected_bev_cells():
    grid = GridConfig()
    cam2ego, K = forward_camera()
    f = create_frustum(grid.depth, (256, 704), 16)
    coords = frustum_to_ego(f, cam2ego, K, torch.eye(3)[None, None], torch.eye(4)[None])
    # pixel column w, depth bin d: by hand, x = depth, y = -(u - cx) / fx * depth, z = 1 - (v - cy)/fy * depth
    d, h, w = 20, 8, 30
    u, v, depth = f[d, h, w].tolist()
    assert coords[0, 0, d, h, w].tolist() == pytest.approx([depth, -(u - 352) / 100 * depth, 1 - (v - 128) / 100 * depth], abs=1e-4)
    # pool a one-hot depth + a constant feature: the mass lands in cell ((x+40)/0.4, (y+40)/0.4)
    plan = pooling_indices(coords, torch.tensor([-40.0, -40.0, -1.0]), torch.tensor([0.4, 0.4, 6.4]), grid.size_xyz)
    depth_prob = torch.zeros(1, 1, f.shape[0], 16, 44)
    depth_prob[0, 0, d, h, w] = 1.0
    feat = torch.ones(1, 1, 16, 44, 1)
    bev = bev_pool(depth_prob, feat, plan)[0, 0, 0]  # (Dy, Dx)
    x, y = coords[0, 0, d, h, w, :2].tolist()
    iy, ix = torch.nonzero(bev).tolist()[0]
    assert (ix, iy) == (int((x + 40) / 0.4), int((y + 40) / 0.4))


def test_bev_aug_flip_moves_the_cell():
    grid = GridConfig()
    cam2ego, K = forward_camera()
    f = create_frustum(grid.depth, (256, 704), 16)
    flip = torch.diag(torch.tensor([1.0, -1.0, 1.0, 1.0]))[None]
    a = frustum_to_ego(f, cam2ego, K, torch.eye(3)[None, None], torch.eye(4)[None])
    b = frustum_to_ego(f, cam2ego, K, torch.eye(3)[None, None], flip)
    assert torch.allclose(a[..., 1], -b[..., 1]) and torch.allclose(a[..., 0], b[..., 0])


def test_img_aug_is_undone_by_the_lift():
    cam2ego, K = forward_camera()
    f = create_frustum((1.0, 45.0, 1.0), (256, 704), 16)
    aug = torch.tensor([[0.5, 0, -10], [0, 0.5, -20], [0, 0, 1.0]])
    lifted = frustum_to_ego(f, cam2ego, K, aug[None, None], torch.eye(4)[None])[0, 0].reshape(-1, 3).double().numpy()
    uv, depth = project_points(lifted, cam2ego[0, 0].double().numpy(), K[0, 0].double().numpy(), aug.double().numpy())
    np.testing.assert_allclose(uv, f[..., :2].reshape(-1, 2).double().numpy(), atol=1e-3)
    np.testing.assert_allclose(depth, f[..., 2].reshape(-1).double().numpy(), atol=1e-4)


def test_pooling_matches_cumsum_reference():
    torch.manual_seed(0)
    cfg = Config.from_yaml(ROOT / "training" / "configs" / "priorocc-r50.yaml").model
    from tests.test_core_model import random_batch

    b = random_batch(Config(model=cfg), b=1, train=False)
    b["K"][..., 0, 0] = b["K"][..., 1, 1] = 400.0
    f = create_frustum(cfg.grid.depth, cfg.image.input_size, 16)
    coords = frustum_to_ego(f, b["cam2ego"], b["K"], b["img_aug"], b["bev_aug"])
    lower, interval = torch.tensor([-40.0, -40.0, -1.0]), torch.tensor([0.4, 0.4, 6.4])
    depth = torch.rand(1, 6, *f.shape[:3]).softmax(2)
    feat = torch.randn(1, 6, 16, 44, 64)
    plan = pooling_indices(coords, lower, interval, cfg.grid.size_xyz)
    ours = bev_pool(depth, feat, plan)
    ref = bev_pool_cumsum_reference(coords, depth, feat, lower, interval, cfg.grid.size_xyz)
    assert plan.ranks_bev.numel() > 100_000
    assert (ours - ref).abs().max().item() <= 1e-4
    assert ours.abs().sum() > 0


def test_hot_bev_cell_comes_out_at_voxel_xy():
    """A BEV feature (B, C, Dy, Dx) hot at (y0, x0) changes only voxel [x0, y0, :] of the head output."""
    from priorocc_core.model.occ_head import OccHead2D

    torch.manual_seed(0)
    head = OccHead2D(in_dim=8, out_dim=8, dz=16, num_classes=18)
    with torch.no_grad():  # make the 3x3 conv a centre-tap identity, so nothing spreads to neighbours
        head.final_conv.weight.zero_()
        head.final_conv.bias.zero_()
        for c in range(8):
            head.final_conv.weight[c, c, 1, 1] = 1.0
    x0, y0 = 170, 30  # ego x = -40 + 170.5 * 0.4 = 28.2 m ahead, y = -40 + 30.5 * 0.4 = -27.8 m (right)
    bev = torch.zeros(1, 8, 200, 200)
    base = head(bev)
    bev[0, :, y0, x0] = 5.0
    diff = (head(bev) - base).abs().sum(dim=(-1, -2))[0]  # (Dx, Dy)
    assert torch.nonzero(diff).tolist() == [[x0, y0]]
