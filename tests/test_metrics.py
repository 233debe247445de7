"""Occ3D mIoU, RayIoU and 2D mIoU against hand computations and the real Occ3D labels."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from priorocc_core.classes import FREE, OCC_CLASSES
from priorocc_core.metrics import (
    OccMIoU,
    RayIoU,
    SegMIoU,
    cast_rays,
    format_table,
    lidar_rays,
    render_rays,
    scene_lidar_origins,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_LABELS = SHARED / "occ3d-real" / "29796060110c4163b07f06eff4af0753" / "labels.npz"


def _real_labels():
    if not REAL_LABELS.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"real Occ3D labels missing in CI: {REAL_LABELS}")
        pytest.skip(f"real Occ3D labels not available at {REAL_LABELS} (../shared/data absent)")
    d = np.load(REAL_LABELS)
    return d["semantics"], d["mask_camera"].astype(bool)


# ----------------------------------------------------------------------------- Occ3D mIoU
def test_miou_hand_computed():
    gt = np.array([0, 0, 1, 17, 4, 4, 4, 255]).reshape(2, 2, 2)
    pred = np.array([0, 1, 1, 17, 4, 17, 3, 4]).reshape(2, 2, 2)
    m = OccMIoU()
    m.add(pred, gt)  # no mask; gt 255 skipped
    iou = m.per_class_iou()
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 1, FP 1 -> 1/2; class 4: TP 1, FN 2 -> 1/3
    # class 3: FP 1 -> 0; free: TP 1, FP 1 -> 1/2 (not in the mean); others NaN
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(0.5)
    assert iou[4] == pytest.approx(1 / 3) and iou[3] == 0.0 and iou[17] == pytest.approx(0.5)
    assert np.isnan(iou[2]) and np.isnan(iou[16])
    assert m.miou() == pytest.approx(100 * (0.5 + 0.5 + 1 / 3 + 0) / 4)

    masked = OccMIoU()
    mask = np.array([1, 1, 1, 1, 1, 0, 0, 1], dtype=np.uint8).reshape(2, 2, 2)
    masked.add(pred, gt, mask)  # class 4: TP 1 only -> 1; class 3 gone -> NaN
    assert masked.per_class_iou()[4] == pytest.approx(1.0)
    assert masked.miou() == pytest.approx(100 * (0.5 + 0.5 + 1.0) / 3)


def test_miou_accumulates_over_samples():
    a = OccMIoU()
    a.add(np.array([4, 4]).reshape(1, 1, 2), np.array([4, 17]).reshape(1, 1, 2))
    a.add(np.array([4, 4]).reshape(1, 1, 2), np.array([4, 4]).reshape(1, 1, 2))
    # dataset-level: TP 3, FP 1 -> 0.75 (a mean of per-sample IoUs would be 0.75 too here;
    # make it differ) ...
    a.add(np.array([17, 17]).reshape(1, 1, 2), np.array([4, 4]).reshape(1, 1, 2))
    assert a.per_class_iou()[4] == pytest.approx(3 / 6)


def test_miou_real_labels_identity_and_perturbation():
    sem, mask = _real_labels()
    m = OccMIoU()
    m.add(sem, sem, mask)
    assert m.miou() == pytest.approx(100.0)
    m_all = OccMIoU()
    m_all.add(sem, sem)
    assert m_all.miou() == pytest.approx(100.0)

    present = sorted(set(np.unique(sem[mask]).tolist()) - {FREE})
    assert present == [0, 1, 3, 4, 6, 11, 13, 14, 15, 16]
    # perturbation 1: every car voxel predicted as truck -> car 0, truck 0 (now present),
    # the other 9 classes 1: mIoU = 9 / 11
    pred = sem.copy()
    pred[sem == 4] = 10
    m = OccMIoU()
    m.add(pred, sem, mask)
    assert m.miou() == pytest.approx(100 * 9 / 11)
    # perturbation 2: first 1000 driveable_surface voxels inside the camera mask -> free
    n11 = int((sem[mask] == 11).sum())
    assert n11 == 5933
    pred = sem.copy()
    idx = np.argwhere((sem == 11) & mask)[:1000]
    pred[idx[:, 0], idx[:, 1], idx[:, 2]] = FREE
    m = OccMIoU()
    m.add(pred, sem, mask)
    assert m.per_class_iou()[11] == pytest.approx((n11 - 1000) / n11)
    assert m.miou() == pytest.approx(100 * (9 + (n11 - 1000) / n11) / 10)
    # outside the mask nothing changes when pred differs only outside it
    pred = sem.copy()
    pred[~mask] = 4
    m = OccMIoU()
    m.add(pred, sem, mask)
    assert m.miou() == pytest.approx(100.0)


def test_miou_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expected shape"):
        OccMIoU().add(np.zeros((4, 4, 2)), np.zeros((4, 4, 3)))


# ----------------------------------------------------------------------------- 2D mIoU
def test_seg_miou_hand_computed():
    gt = np.array([[0, 0, 255], [11, 11, 15]])
    pred = np.array([[0, 11, 4], [11, 11, 16]])
    s = SegMIoU()
    s.add(pred, gt)
    iou = s.per_class_iou()
    # 0: TP1 FN1 -> .5; 11: TP2 FP1 -> 2/3; 15: FN1 -> 0; 16: FP1 -> 0; 4 ignored (gt 255)
    assert iou[0] == pytest.approx(0.5) and iou[11] == pytest.approx(2 / 3)
    assert iou[15] == 0 and iou[16] == 0 and np.isnan(iou[4])
    assert s.miou() == pytest.approx(100 * (0.5 + 2 / 3) / 4)


# ----------------------------------------------------------------------------- RayIoU
def test_lidar_rays_definition():
    r = lidar_rays()
    pitch = np.arcsin(r[::360, 2].astype(np.float64))
    assert r.shape == (len(pitch) * 360, 3)
    assert np.allclose(np.linalg.norm(r, axis=1), 1, atol=1e-6)
    assert pitch[0] == pytest.approx(-math.pi / 4, abs=1e-6)  # k = 1
    assert pitch[9] == pytest.approx(-(math.pi / 2 - math.atan(10)), abs=1e-6)
    assert pitch[-1] >= 0.21 and pitch[-2] < 0.21


def _wall(x_vox: int, label: int = 15) -> np.ndarray:
    g = np.full((200, 200, 16), FREE, dtype=np.uint8)
    g[x_vox, :, :] = label
    return g


def test_rayiou_single_ray_wall_shift():
    origin = np.array([[0.2, 0.2, 0.2]], dtype=np.float32)  # centre of voxel (100, 100, 3)
    ray = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
    gt = _wall(125)  # voxel 125 spans x in [10.0, 10.4): the ray leaves it at 10.4 m -> 10.2 m
    labels, depth = render_rays(gt, origin, ray)
    assert labels.tolist() == [15] and depth[0] == pytest.approx(10.2, abs=1e-5)

    exact = RayIoU(directions=ray)
    exact.add(gt, gt, origin)
    s = exact.summary()
    assert s["RayIoU"] == pytest.approx(100.0)

    shifted = RayIoU(directions=ray)  # wall 4 voxels (1.6 m) further: counted at 2 m, 4 m only
    shifted.add(_wall(129), gt, origin)
    s = shifted.summary()
    assert s["RayIoU@1"] == 0.0 and s["RayIoU@2"] == 100.0 and s["RayIoU@4"] == 100.0
    assert s["RayIoU"] == pytest.approx(200 / 3)

    wrong = RayIoU(directions=ray)  # right depth, wrong class -> 0 everywhere
    wrong.add(_wall(125, label=1), gt, origin)
    s = wrong.summary()
    assert s["RayIoU"] == 0.0
    assert s["per_class"]["manmade"]["@4"] == 0.0 and s["per_class"]["barrier"]["@4"] == 0.0

    empty = RayIoU(directions=ray)  # predicting nothing: the gt ray counts, no pred ray
    empty.add(np.full_like(gt, FREE), gt, origin)
    assert empty.summary()["RayIoU"] == 0.0


def test_rayiou_full_lidar_wall_shift_hand_computed():
    """Wall across the grid at x = 10 m seen by the 14040 lidar rays, prediction 1.6 m further.

    For a ray with unit direction d hitting both walls through their x faces, the depth error is
    1.6 / d_x; rays whose pitch leaves the grid through its floor or ceiling first are free in
    the ground truth and do not count. The expected IoU per threshold follows from that count.
    """
    origin = np.array([[0.2, 0.2, 0.2]], dtype=np.float32)
    gt, pred = _wall(125), _wall(129)
    dirs = lidar_rays()
    lg, dg = render_rays(gt, origin, dirs)
    lp, dp = render_rays(pred, origin, dirs)
    valid = lg != FREE
    both = valid & (lp == 15)  # steep rays may leave through floor/ceiling before the far wall
    assert both.sum() > 1000 and (lp[valid & ~both] == FREE).all()
    err = np.abs(dp - dg)[both]
    # the walls' x faces are 1.6 / d_x apart along a ray; the depth is where the ray leaves the
    # first wall voxel, between 0 and 0.4 / d_x after entering it
    dx = dirs[both, 0].astype(np.float64)
    assert (np.abs(err - 1.6 / dx) <= 0.4 / dx + 1e-6).all()
    r = RayIoU()
    r.add(pred, gt, origin)
    s = r.summary()
    n_gt, n_pred = int(valid.sum()), int(both.sum())
    for t in (1, 2, 4):
        tp = int((err < t).sum())
        assert s[f"RayIoU@{t}"] == pytest.approx(100 * tp / (n_gt + n_pred - tp))
    assert s["RayIoU@1"] == 0.0
    assert 0 < s["RayIoU@2"] < s["RayIoU@4"] <= 100


def _brute_force_ray(occ, o_vox, d, max_t=400.0, dt=1e-3):
    """Reference by dense sampling: first occupied voxel met, then its slab exit distance."""
    size = np.array(occ.shape)
    ts = np.arange(0, max_t, dt)
    pts = o_vox[None] + ts[:, None] * d[None]
    v = np.floor(pts).astype(np.int64)
    inside = np.all((v >= 0) & (v < size), axis=1)
    first_out = np.argmin(inside) if not inside.all() else len(ts)
    v = v[:first_out]
    occ_along = occ[v[:, 0], v[:, 1], v[:, 2]]
    k = int(np.argmax(occ_along)) if occ_along.any() else len(v) - 1
    vox = v[k]
    with np.errstate(divide="ignore"):
        exits = np.where(d > 0, (vox + 1 - o_vox) / d, np.where(d < 0, (vox - o_vox) / d, np.inf))
    return vox, float(exits.min())


def test_cast_rays_matches_dense_sampling():
    rng = np.random.default_rng(0)
    occ = rng.random((40, 40, 16)) < 0.01
    pc_range = (-8.0, -8.0, -1.0, 8.0, 8.0, 5.4)
    origin = np.array([0.13, -0.31, 1.1], dtype=np.float32)
    dirs = rng.normal(size=(60, 3)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    depth, idx = cast_rays(occ, origin, dirs, pc_range=pc_range)
    o_vox = (origin.astype(np.float64) - np.array(pc_range[:3])) / 0.4
    for i in range(len(dirs)):
        d = dirs[i].astype(np.float64)
        d /= np.linalg.norm(d)
        vox, t = _brute_force_ray(occ, o_vox, d)
        assert idx[i].tolist() == vox.tolist(), i
        assert depth[i] == pytest.approx(t * 0.4, abs=1e-4), i


def test_rayiou_real_labels_identity_and_class_swap():
    sem, _ = _real_labels()
    r = RayIoU()
    r.add(sem, sem)
    s = r.summary()
    assert s["RayIoU"] == pytest.approx(100.0)
    assert s["per_class"]["vegetation"]["@1"] == pytest.approx(100.0)
    # vegetation predicted as manmade: same depths, vegetation rays now wrong
    pred = sem.copy()
    pred[sem == 16] = 15
    r2 = RayIoU()
    r2.add(pred, sem)
    s2 = r2.summary()
    gt_cnt, pred_cnt = r2.gt_cnt, r2.pred_cnt
    assert s2["per_class"]["vegetation"]["@4"] == 0.0
    # manmade: TP = its gt rays, pred rays = manmade + vegetation rays
    assert s2["per_class"]["manmade"]["@1"] == pytest.approx(100 * gt_cnt[15] / pred_cnt[15])
    assert pred_cnt[15] == gt_cnt[15] + gt_cnt[16]


def test_scene_lidar_origins():
    l2e = np.eye(4)
    l2e[:3, 3] = [0.9, 0.0, 1.8]
    poses = []
    for x in (0.0, 5.0, 10.0, 100.0):
        e2g = np.eye(4)
        e2g[:3, 3] = [x, 0.0, 0.0]
        poses.append(e2g)
    o = scene_lidar_origins([l2e] * 4, poses, ref_index=1)
    # frame 3 is 95 m away (> 39 m) and dropped
    assert o.shape == (3, 3)
    assert np.allclose(o, [[-4.1, 0, 1.8], [0.9, 0, 1.8], [5.9, 0, 1.8]], atol=1e-5)


def test_format_table_lists_every_class():
    sem = np.full((4, 4, 2), FREE)
    sem[0, 0, 0] = 4
    m = OccMIoU()
    m.add(sem, sem)
    text = format_table(occ=m.summary())
    for n in OCC_CLASSES[:-1]:
        assert n in text
    assert "100.00" in text


def test_torch_traversal_matches_numpy():
    """The torch traversal (used on CUDA devices) gives the numpy traversal's answer (run on CPU here)."""
    from priorocc_core import metrics

    rng = np.random.default_rng(1)
    occ = rng.random((200, 200, 16)) < 0.02
    dirs = metrics.lidar_rays()[::7]
    calls = {}
    orig = metrics._traverse_torch

    def spy(*a):
        calls["torch"] = True
        return orig(*a[:-1], "cpu")

    metrics._traverse_torch = spy
    try:
        dt, it = cast_rays(occ, (0.9, 0.0, 1.8), dirs, device="cuda:0")
    finally:
        metrics._traverse_torch = orig
    dn, in_ = cast_rays(occ, (0.9, 0.0, 1.8), dirs)
    assert calls.get("torch")
    assert np.array_equal(it, in_) and np.allclose(dt, dn, rtol=0, atol=1e-12)


def test_rayiou_reads_the_grid_it_is_given():
    """RayIoU on a model grid other than Occ3D's (0.8 m voxels, 100 x 100 x 8): a wall at x index 62
    ([9.6, 10.4) m) is hit at the same 10.2 m as on the 0.4 m grid, and a prediction of another shape
    than the grid is refused.

    Mutation caught: render_rays casting with the module's Occ3D PC_RANGE / VOXEL_SIZE instead of the
    grid's (the 100-voxel grid read as 0.4 m voxels: the origin falls outside it, cast_rays refuses)."""
    from priorocc_core.config import GridConfig

    g = GridConfig(x=(-40.0, 40.0, 0.8), y=(-40.0, 40.0, 0.8), occ_z=(-1.0, 5.4, 0.8))
    assert tuple(g.occ_size) == (100, 100, 8)
    gt = np.full(g.occ_size, FREE, np.uint8)
    gt[62] = 15
    origin = np.array([[0.2, 0.2, 0.2]], dtype=np.float32)
    ray = np.array([[1.0, 0.0, 0.0]], dtype=np.float32)
    labels, depth = render_rays(gt, origin, ray, grid=g)
    assert labels.tolist() == [15] and depth[0] == pytest.approx(10.2, abs=1e-5)
    r = RayIoU(directions=ray, grid=g)
    r.add(gt, gt, origin)
    assert r.summary()["RayIoU"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="expected shape"):
        RayIoU(directions=ray, grid=g).add(_wall(125), _wall(125), origin)
