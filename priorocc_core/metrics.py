"""Occupancy and segmentation metrics: Occ3D mIoU, RayIoU (SparseOcc's definition), 2D mIoU.

All accumulators work on numpy arrays (torch tensors are converted) and sum confusion
counts over the whole evaluation set before dividing, as the Occ3D / FlashOCC evaluation does
(so a class's IoU is a dataset-level figure, not a mean of per-sample IoUs).

Occ3D mIoU (``OccMIoU``)
    Confusion matrix over the 18 labels (0-16 semantic classes, 17 free) of voxels inside
    ``mask_camera`` (or all voxels); ground-truth labels outside 0-17 (e.g. 255) are skipped.
    IoU_c = TP_c / (TP_c + FP_c + FN_c); mIoU = mean over classes 0-16 of the classes whose
    denominator is non-zero (classes absent from both prediction and ground truth are NaN
    and left out of the mean). Reported in percent.

RayIoU (``RayIoU``), as SparseOcc defines it
    From each lidar origin, cast a fixed set of lidar-like rays (``lidar_rays``: 360 azimuths
    x pitch angles pi/2 - atan(k) mirrored down, extended up to the nuScenes lidar's upper
    field of view) through the voxel grid with exact voxel traversal. A ray's depth is the
    distance at which it leaves the first non-free voxel it meets (or the grid, then its
    label is free); its label is that voxel's class. Only rays whose ground-truth label is
    not free count. For each threshold t in (1, 2, 4) m and class c:
        TP = rays labelled c in both with |depth_pred - depth_gt| < t,
        IoU = TP / (#gt rays labelled c + #pred rays labelled c - TP),
    RayIoU@t = mean over classes 0-16 (NaN classes left out), RayIoU = mean over all
    (threshold, class) entries. Origins: the keyframe's lidar origin plus up to 8 lidar
    origins of the scene's keyframes expressed in the current ego frame
    (``scene_lidar_origins``), as SparseOcc's evaluation uses them.

2D segmentation mIoU (``SegMIoU``)
    Confusion over 17 classes (Occ3D 0-16), labels 255 ignored, mean over classes present.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from .classes import FREE, IGNORE, NUM_OCC_CLASSES, NUM_SEG_CLASSES, OCC_CLASSES
from .config import GridConfig

# Occ3D-nuScenes grid (docs/design.md), from its one definition, GridConfig's defaults.
PC_RANGE = GridConfig().occ_range
VOXEL_SIZE = GridConfig().voxel_size
RAY_THRESHOLDS = (1.0, 2.0, 4.0)
# nuScenes LIDAR_TOP position in the ego frame (calibrated_sensor translation, typical
# value; SparseOcc quotes the same figure). Used only when no calibration is available.
DEFAULT_LIDAR_ORIGIN = (0.9858, 0.0, 1.8402)


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _check_grid(name: str, a: np.ndarray, shape: Optional[tuple] = None) -> None:
    if a.ndim < 3:
        raise ValueError(f"{name}: expected a voxel grid (..., X, Y, Z), got shape {a.shape}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")


def confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = ground truth, columns = prediction."""
    return np.bincount(gt * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_from_confusion(hist: np.ndarray) -> np.ndarray:
    """Per-class IoU (C,) from a (C, C) confusion matrix hist[gt, pred]; NaN where 0/0."""
    tp = np.diag(hist).astype(np.float64)
    denom = hist.sum(0) + hist.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    if np.all(np.isnan(x)):
        return float("nan")
    return float(np.nanmean(x))


# ----------------------------------------------------------------------------- Occ3D mIoU
class OccMIoU:
    """Occ3D-nuScenes semantic mIoU accumulator (FlashOCC / Occ3D convention).

    add(pred, gt, mask): pred, gt (..., 200, 200, 16) integer labels 0-17 (any leading batch
    dims), mask (same shape) bool/uint8 or None (all voxels).
    """

    def __init__(self, num_classes: int = NUM_OCC_CLASSES, class_names: Sequence[str] = OCC_CLASSES):
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.hist = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.count = 0

    def add(self, pred, gt, mask=None) -> None:
        pred, gt = _np(pred), _np(gt)
        _check_grid("pred", pred)
        _check_grid("gt", gt, pred.shape)
        if mask is not None:
            mask = _np(mask).astype(bool)
            _check_grid("mask", mask, pred.shape)
            pred, gt = pred[mask], gt[mask]
        pred = pred.reshape(-1).astype(np.int64)
        gt = gt.reshape(-1).astype(np.int64)
        keep = (gt >= 0) & (gt < self.num_classes)
        pred, gt = pred[keep], gt[keep]
        if pred.size and (pred.min() < 0 or pred.max() >= self.num_classes):
            raise ValueError(f"pred: labels must be in 0..{self.num_classes - 1}, got {pred.min()}..{pred.max()}")
        self.hist += confusion(gt, pred, self.num_classes)
        self.count += 1

    def per_class_iou(self) -> np.ndarray:
        """(num_classes,) IoU in [0, 1], NaN for classes absent from prediction and ground truth."""
        return iou_from_confusion(self.hist)

    def miou(self) -> float:
        """Mean IoU in percent over classes 0..num_classes-2 (free excluded)."""
        return 100.0 * _nanmean(self.per_class_iou()[: self.num_classes - 1])

    def summary(self) -> dict:
        iou = self.per_class_iou()
        return {
            "mIoU": self.miou(),
            "per_class": {n: (None if np.isnan(v) else 100.0 * float(v)) for n, v in zip(self.class_names, iou)},
            "samples": self.count,
        }


# ----------------------------------------------------------------------------- 2D mIoU
class SegMIoU:
    """2D semantic segmentation mIoU over ``num_classes`` classes; label 255 ignored.

    add(pred, gt): integer label maps of identical shape (..., H, W).
    """

    def __init__(self, num_classes: int = NUM_SEG_CLASSES, class_names: Sequence[str] = OCC_CLASSES[:NUM_SEG_CLASSES]):
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.hist = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.count = 0

    def add(self, pred, gt) -> None:
        pred, gt = _np(pred), _np(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"2D pred shape {pred.shape} != label shape {gt.shape}")
        pred = pred.reshape(-1).astype(np.int64)
        gt = gt.reshape(-1).astype(np.int64)
        keep = (gt != IGNORE) & (gt >= 0) & (gt < self.num_classes)
        pred, gt = pred[keep], gt[keep]
        bad = (pred < 0) | (pred >= self.num_classes)
        if bad.any():
            raise ValueError(f"2D pred: labels must be in 0..{self.num_classes - 1}")
        self.hist += confusion(gt, pred, self.num_classes)
        self.count += 1

    def per_class_iou(self) -> np.ndarray:
        return iou_from_confusion(self.hist)

    def miou(self) -> float:
        return 100.0 * _nanmean(self.per_class_iou())

    def summary(self) -> dict:
        iou = self.per_class_iou()
        return {
            "mIoU": self.miou(),
            "per_class": {n: (None if np.isnan(v) else 100.0 * float(v)) for n, v in zip(self.class_names, iou)},
            "images": self.count,
        }


# ----------------------------------------------------------------------------- RayIoU
def lidar_rays() -> np.ndarray:
    """(R, 3) float32 unit ray directions of SparseOcc's virtual lidar (R = 44 * 360 = 15840).

    Pitch angles: -(pi/2 - atan(k)) for k = 1..10, then continued with the last step until the
    angle reaches the nuScenes lidar's upper field of view (0.21 rad); azimuth 0..359 degrees.
    """
    pitch = [-(math.pi / 2 - math.atan(k)) for k in range(1, 11)]
    while pitch[-1] < 0.21:
        pitch.append(pitch[-1] + (pitch[-1] - pitch[-2]))
    p = np.asarray(pitch, dtype=np.float64)[:, None]
    az = np.deg2rad(np.arange(0, 360, 1, dtype=np.float64))[None, :]
    dirs = np.stack(
        [np.cos(p) * np.cos(az), np.cos(p) * np.sin(az), np.broadcast_to(np.sin(p), (p.shape[0], az.shape[1]))], -1
    )
    return dirs.reshape(-1, 3).astype(np.float32)


def cast_rays(
    occupied,
    origin,
    directions: np.ndarray,
    pc_range: Sequence[float] = PC_RANGE,
    voxel_size: float = VOXEL_SIZE,
    max_steps: int = 1000,
    device: Optional[str] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact voxel traversal (Amanatides & Woo) of rays through a boolean grid.

    occupied: (X, Y, Z) bool, indexed [x, y, z]. origin: (3,) or per ray (R, 3), metres in the
    grid's frame (inside the grid). directions: (R, 3) ray directions (any length).
    Returns depth (R,) float64 metres: distance from the origin at which the ray leaves the first
    occupied voxel it traverses (the origin's voxel included), or leaves the grid when it meets
    none; and index (R, 3) int64: that voxel (the last voxel inside the grid when no hit).
    Runs in numpy (float64) on the CPU, or in torch on ``device`` when it is a CUDA device.
    """
    occ = _np(occupied).astype(bool)
    if occ.ndim != 3:
        raise ValueError(f"occupied: expected (X, Y, Z), got {occ.shape}")
    lo = np.asarray(pc_range[:3], dtype=np.float32)
    d32 = np.asarray(directions, dtype=np.float32).reshape(-1, 3)
    o32 = np.asarray(origin, dtype=np.float32).reshape(-1, 3)
    if o32.shape[0] not in (1, d32.shape[0]):
        raise ValueError(f"cast_rays: origin must be (3,) or one per ray ({d32.shape[0]}, 3), got {o32.shape}")
    o32 = np.broadcast_to(o32, d32.shape)
    # grid coordinates in voxel units, computed in float32 like the reference's rendering inputs
    org = ((o32 - lo) / np.float32(voxel_size)).astype(np.float32).astype(np.float64)
    end = (((d32 + o32) - lo) / np.float32(voxel_size)).astype(np.float32).astype(np.float64)
    r = end - org
    length = np.sqrt((r**2).sum(1))
    if np.any(length <= 0):
        raise ValueError("cast_rays: zero-length ray direction")
    v0 = org.astype(np.int64)  # truncation; the origin is inside the grid
    if np.any(org < 0) or np.any(v0 >= np.asarray(occ.shape)):
        raise ValueError(f"cast_rays: an origin lies outside the grid {tuple(pc_range)}")
    d = r / length[:, None]
    step = np.where(d >= 0, 1, -1).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_max = np.where(d != 0, (v0 + (step > 0) - org) / d, np.inf)
        t_delta = np.where(d != 0, step / d, np.inf)
    if device is not None and str(device).startswith("cuda"):
        depth, index = _traverse_torch(occ, v0, step, t_max, t_delta, max_steps, device)
    else:
        depth, index = _traverse_numpy(occ, v0, step, t_max, t_delta, max_steps)
    return depth * voxel_size, index


def _traverse_numpy(occ, vox, step, t_max, t_delta, max_steps):
    """Vectorised traversal over all rays (see cast_rays); arrays (R, 3) -> depth (R,), index (R, 3)."""
    size = np.asarray(occ.shape, dtype=np.int64)
    vox, t_max = vox.copy(), t_max.copy()
    n = vox.shape[0]
    depth = np.zeros(n)
    hit_index = vox.copy()
    idx = np.arange(n)  # rays still marching
    for _ in range(max_steps + 1):
        if idx.size == 0:
            break
        v = vox[idx]
        tm = t_max[idx]
        # axis chosen exactly as the reference traversal: x if tx < ty and tx < tz, z if
        # tx < ty and tx >= tz, y if ty <= tx and ty < tz, z otherwise
        ax = np.where(tm[:, 0] < tm[:, 1], np.where(tm[:, 0] < tm[:, 2], 0, 2), np.where(tm[:, 1] < tm[:, 2], 1, 2))
        depth[idx] = tm[np.arange(idx.size), ax]  # where the ray leaves the current voxel
        hit_index[idx] = v
        hit = occ[v[:, 0], v[:, 1], v[:, 2]]
        adv, a = idx[~hit], ax[~hit]
        vox[adv, a] += step[adv, a]
        t_max[adv, a] += t_delta[adv, a]
        vv = vox[adv]
        idx = adv[np.all((vv >= 0) & (vv < size), axis=1)]
    return depth, hit_index


def _traverse_torch(occ, vox, step, t_max, t_delta, max_steps, device):
    """The same traversal in torch (float64) on a CUDA device."""
    import torch

    dev = torch.device(device)
    occ_t = torch.as_tensor(occ, device=dev)
    size = torch.tensor(occ.shape, dtype=torch.int64, device=dev)
    vox = torch.as_tensor(vox, device=dev).clone()
    step = torch.as_tensor(step, device=dev)
    t_max = torch.as_tensor(t_max, device=dev).clone()
    t_delta = torch.as_tensor(t_delta, device=dev)
    n = vox.shape[0]
    depth = torch.zeros(n, dtype=torch.float64, device=dev)
    hit_index = vox.clone()
    idx = torch.arange(n, device=dev)
    for _ in range(max_steps + 1):
        if idx.numel() == 0:
            break
        v = vox[idx]
        tm = t_max[idx]
        ax = torch.where(tm[:, 0] < tm[:, 1], torch.where(tm[:, 0] < tm[:, 2], 0, 2),
                         torch.where(tm[:, 1] < tm[:, 2], 1, 2))
        depth[idx] = tm.gather(1, ax[:, None])[:, 0]
        hit_index[idx] = v
        hit = occ_t[v[:, 0], v[:, 1], v[:, 2]]
        adv, a = idx[~hit], ax[~hit]
        vox[adv, a] += step[adv, a]
        t_max[adv, a] += t_delta[adv, a]
        vv = vox[adv]
        idx = adv[((vv >= 0) & (vv < size)).all(1)]
    return depth.cpu().numpy(), hit_index.cpu().numpy()


def scene_lidar_origins(
    lidar2ego: Sequence[np.ndarray],
    ego2global: Sequence[np.ndarray],
    ref_index: int,
    max_origins: int = 8,
    limit: float = 39.0,
) -> np.ndarray:
    """Lidar origins of a scene's keyframes in the ego frame of keyframe ``ref_index``.

    lidar2ego, ego2global: per keyframe of the scene, in time order, 4x4 matrices. Keeps
    origins with |x|, |y| < ``limit`` m and, when more than ``max_origins`` remain, picks
    ``max_origins`` evenly spaced ones (SparseOcc's choice). Returns (T, 3) float32.
    """
    if len(lidar2ego) != len(ego2global) or not (0 <= ref_index < len(lidar2ego)):
        raise ValueError("scene_lidar_origins: lidar2ego / ego2global lengths differ or ref_index out of range")
    ref_l2e = np.asarray(lidar2ego[ref_index], dtype=np.float64)
    ref_l2g = np.asarray(ego2global[ref_index], dtype=np.float64) @ ref_l2e
    g2ref_l = np.linalg.inv(ref_l2g)
    out = []
    for i in range(len(lidar2ego)):
        if i == ref_index:
            p_lidar = np.zeros(3)
        else:
            cur_l2g = np.asarray(ego2global[i], dtype=np.float64) @ np.asarray(lidar2ego[i], dtype=np.float64)
            p_lidar = (g2ref_l @ cur_l2g)[:3, 3]
        p_ego = ref_l2e[:3, :3] @ p_lidar + ref_l2e[:3, 3]
        if abs(p_ego[0]) < limit and abs(p_ego[1]) < limit:
            out.append(p_ego)
    if len(out) > max_origins:
        sel = np.round(np.linspace(0, len(out) - 1, max_origins)).astype(np.int64)
        out = [out[i] for i in sel]
    return np.asarray(out, dtype=np.float32).reshape(-1, 3)


def render_rays(
    semantics, origins: np.ndarray, directions: Optional[np.ndarray] = None, free: int = FREE,
    device: Optional[str] = None, grid: Optional[GridConfig] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cast rays from every origin through a label grid.

    semantics: (X, Y, Z) labels (free = ``free``) on ``grid`` (None: Occ3D's, GridConfig's defaults);
    origins: (T, 3) metres, ego frame; directions: (R, 3) or None for ``lidar_rays()``. Returns labels
    (T*R,) int64 and depth (T*R,) float64 metres, origin-major.
    """
    grid = grid or GridConfig()
    semantics = _np(semantics)
    _check_grid("semantics", semantics)
    if directions is None:
        directions = lidar_rays()
    directions = np.asarray(directions, dtype=np.float32).reshape(-1, 3)
    origins = np.asarray(origins, dtype=np.float32).reshape(-1, 3)
    t = origins.shape[0]
    per_ray_origin = np.repeat(origins, directions.shape[0], axis=0)
    depth, idx = cast_rays(semantics != free, per_ray_origin, np.tile(directions, (t, 1)), grid.occ_range,
                           grid.voxel_size, device=device)
    return semantics[idx[:, 0], idx[:, 1], idx[:, 2]].astype(np.int64), depth


class RayIoU:
    """RayIoU accumulator (SparseOcc's definition, see the module docstring).

    add(pred, gt, origins): pred, gt (Dx, Dy, Dz) labels 0-17 on ``grid`` (the model's; None: Occ3D's
    200 x 200 x 16, GridConfig's defaults); origins (T, 3) lidar origins in the ego frame (None: the
    nuScenes LIDAR_TOP mounting position, one origin).
    """

    def __init__(
        self,
        thresholds: Sequence[float] = RAY_THRESHOLDS,
        num_classes: int = NUM_OCC_CLASSES,
        class_names: Sequence[str] = OCC_CLASSES,
        directions: Optional[np.ndarray] = None,
        device: Optional[str] = None,
        grid: Optional[GridConfig] = None,
    ):
        self.device = device
        self.grid = grid or GridConfig()
        self.thresholds = tuple(float(t) for t in thresholds)
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.free = num_classes - 1
        self.directions = lidar_rays() if directions is None else np.asarray(directions, dtype=np.float32)
        self.gt_cnt = np.zeros(num_classes, dtype=np.int64)
        self.pred_cnt = np.zeros(num_classes, dtype=np.int64)
        self.tp_cnt = np.zeros((len(self.thresholds), num_classes), dtype=np.int64)
        self.count = 0

    def add(self, pred, gt, origins=None) -> None:
        pred, gt = _np(pred), _np(gt)
        _check_grid("pred", pred)
        _check_grid("gt", gt, pred.shape)
        if origins is None:
            origins = np.asarray([DEFAULT_LIDAR_ORIGIN], dtype=np.float32)
        origins = _np(origins).reshape(-1, 3)
        _check_grid("pred", pred, tuple(self.grid.occ_size))
        lp, dp = render_rays(pred, origins, self.directions, self.free, self.device, self.grid)
        lg, dg = render_rays(gt, origins, self.directions, self.free, self.device, self.grid)
        valid = lg != self.free
        lp, dp, lg, dg = lp[valid], dp[valid], lg[valid], dg[valid]
        err = np.abs(dp - dg)
        self.gt_cnt += np.bincount(lg, minlength=self.num_classes)[: self.num_classes]
        self.pred_cnt += np.bincount(np.clip(lp, 0, self.num_classes), minlength=self.num_classes + 1)[
            : self.num_classes
        ]
        same = lp == lg
        for j, t in enumerate(self.thresholds):
            m = same & (err < t)
            self.tp_cnt[j] += np.bincount(lg[m], minlength=self.num_classes)[: self.num_classes]
        self.count += 1

    def per_class_iou(self) -> np.ndarray:
        """(len(thresholds), num_classes - 1) IoU in [0, 1], NaN where 0/0 (free excluded)."""
        denom = self.gt_cnt[None] + self.pred_cnt[None] - self.tp_cnt
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(denom > 0, self.tp_cnt / np.maximum(denom, 1), np.nan)
        return iou[:, : self.num_classes - 1]

    def summary(self) -> dict:
        iou = self.per_class_iou()
        out = {"RayIoU": 100.0 * _nanmean(iou)}
        for j, t in enumerate(self.thresholds):
            out[f"RayIoU@{t:g}"] = 100.0 * _nanmean(iou[j])
        out["per_class"] = {
            n: {f"@{t:g}": (None if np.isnan(iou[j, i]) else 100.0 * float(iou[j, i])) for j, t in enumerate(self.thresholds)}
            for i, n in enumerate(self.class_names[: self.num_classes - 1])
        }
        out["samples"] = self.count
        return out


# ----------------------------------------------------------------------------- tables
def format_table(occ: Optional[dict] = None, ray: Optional[dict] = None, seg: Optional[dict] = None,
                 occ_nomask: Optional[dict] = None) -> str:
    """Plain-text per-class table of summaries from OccMIoU / RayIoU / SegMIoU."""

    def f(v):
        return "   nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.2f}"

    cols = []
    if occ is not None:
        cols.append(("mIoU(cam)", lambda n: occ["per_class"].get(n)))
    if occ_nomask is not None:
        cols.append(("mIoU(all)", lambda n: occ_nomask["per_class"].get(n)))
    if ray is not None:
        for t in ("@1", "@2", "@4"):
            cols.append((f"Ray{t}", lambda n, t=t: ray["per_class"].get(n, {}).get(t)))
    if seg is not None:
        cols.append(("2D IoU", lambda n: seg["per_class"].get(n)))
    head = f"{'class':<22}" + "".join(f"{c:>11}" for c, _ in cols)
    lines = [head, "-" * len(head)]
    for n in OCC_CLASSES[:-1]:
        lines.append(f"{n:<22}" + "".join(f"{f(g(n)):>11}" for _, g in cols))
    lines.append("-" * len(head))
    means = []
    if occ is not None:
        means.append(occ["mIoU"])
    if occ_nomask is not None:
        means.append(occ_nomask["mIoU"])
    if ray is not None:
        means += [ray["RayIoU@1"], ray["RayIoU@2"], ray["RayIoU@4"]]
    if seg is not None:
        means.append(seg["mIoU"])
    lines.append(f"{'MEAN':<22}" + "".join(f"{f(m):>11}" for m in means))
    if ray is not None:
        lines.append(f"RayIoU (mean over thresholds 1/2/4 m): {f(ray['RayIoU']).strip()}")
    return "\n".join(lines)
