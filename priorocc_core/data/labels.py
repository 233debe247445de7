"""2D semantic label sources for the SemanticInjector (docs/design.md: classes 0-16, 255 ignore).

* ``projection``: the Occ3D ground truth seen from each camera: the class of the nearest
  occupied voxel along each pixel's ray (exact ray casting of the voxel grid, merged into
  boxes); pixels whose ray leaves the grid without a hit are 255. No domain gap.
* ``lidar``: LIDAR_TOP points labelled by the Occ3D voxel they fall in, projected into each
  camera (nearest point per pixel): sparse labels.
* ``segformer``: a Cityscapes SegFormer through ``transformers``, mapped to Occ3D classes with
  ``classes.CITYSCAPES_TO_OCC`` (road 11, sidewalk 13, building / wall / pole 15, fence 1,
  traffic light / sign 8, vegetation 16, terrain 14, sky 255, person / rider 7, car 4,
  truck 10, bus 3, train 9, motorcycle 6, bicycle 2).
* merge policy :func:`merge_labels`: sources in priority order, the first one that labels a
  pixel wins (e.g. ``projection,segformer`` = projected where known, SegFormer elsewhere).
"""
from __future__ import annotations

import numpy as np
import torch

from ..classes import FREE, IGNORE, cityscapes_to_occ_lut
from ..config import GridConfig
from ..geometry import invert_rigid
from .raycast import cast_camera

GRID_LO = np.array(GridConfig().occ_origin)  # the Occ3D grid's one definition
VOXEL = GridConfig().voxel_size


def voxels_to_boxes(sem: np.ndarray, free: int = FREE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge the occupied voxels of a (X, Y, Z) grid into boxes of one class each.

    Runs along x, merged along y then z. Returns (lo (M, 3) int, hi (M, 3) int voxel
    indices, end exclusive; cls (M,) uint8)."""
    X, Y, Z = sem.shape
    lines = sem.transpose(1, 2, 0).reshape(-1, X)  # line = (y, z)
    start = np.ones_like(lines, dtype=bool)
    start[:, 1:] = lines[:, 1:] != lines[:, :-1]
    li, x0 = np.nonzero(start)
    nxt = np.append(x0[1:], X)
    same_line = np.append(li[1:] == li[:-1], False)
    x1 = np.where(same_line, nxt, X)
    cls = lines[li, x0]
    keep = cls != free
    li, x0, x1, cls = li[keep], x0[keep], x1[keep], cls[keep]
    y, z = li // Z, li % Z
    # merge along y
    runs = np.stack([z, x0, x1, cls.astype(np.int64), y], 1)
    runs = _merge(runs, key_cols=[0, 1, 2, 3], pos_col=4)  # -> z, x0, x1, cls, y0, y1
    # merge along z: key (y0, y1, x0, x1, cls), position z
    r2 = np.stack([runs[:, 4], runs[:, 5], runs[:, 1], runs[:, 2], runs[:, 3], runs[:, 0]], 1)
    r2 = _merge(r2, key_cols=[0, 1, 2, 3, 4], pos_col=5)  # -> y0, y1, x0, x1, cls, z0, z1
    lo = np.stack([r2[:, 2], r2[:, 0], r2[:, 5]], 1)
    hi = np.stack([r2[:, 3], r2[:, 1], r2[:, 6]], 1)
    return lo, hi, r2[:, 4].astype(np.uint8)


def _merge(rows: np.ndarray, key_cols: list[int], pos_col: int) -> np.ndarray:
    """Merge rows with equal keys at consecutive positions -> rows of keys + (pos0, pos1)."""
    if len(rows) == 0:
        return np.zeros((0, len(key_cols) + 2), dtype=np.int64)
    order = np.lexsort([rows[:, pos_col]] + [rows[:, c] for c in key_cols[::-1]])
    r = rows[order]
    keys = r[:, key_cols]
    pos = r[:, pos_col]
    new = np.ones(len(r), dtype=bool)
    new[1:] = (keys[1:] != keys[:-1]).any(1) | (pos[1:] != pos[:-1] + 1)
    gid = np.cumsum(new) - 1
    first = np.nonzero(new)[0]
    last = np.append(first[1:], len(r)) - 1
    return np.concatenate([keys[first], pos[first, None], pos[last, None] + 1], 1)


class ProjectionLabeler:
    """Occ3D ground truth -> per-camera labels (nearest occupied voxel along each ray)."""

    def __init__(self, semantics: np.ndarray, device: str = "cpu"):
        lo, hi, self.cls = voxels_to_boxes(semantics)
        self.lo = GRID_LO + lo * VOXEL
        self.hi = GRID_LO + hi * VOXEL
        self.device = device

    def __call__(self, cam2ego: np.ndarray, K: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        """cam2ego (4, 4) camera -> ego of the keyframe; K (3, 3) of the image; -> (H, W) uint8."""
        r = cast_camera(np.asarray(cam2ego, np.float64), np.asarray(K, np.float64), hw, self.lo, self.hi,
                        device=self.device)
        idx = r["idx"].cpu().numpy()
        out = np.full(hw, IGNORE, dtype=np.uint8)
        hit = idx >= 0
        out[hit] = self.cls[idx[hit]]
        return out


def lidar_labels(points_lidar: np.ndarray, lidar2ego: np.ndarray, semantics: np.ndarray, cam2ego: np.ndarray,
                 K: np.ndarray, hw: tuple[int, int], point_classes: np.ndarray | None = None) -> np.ndarray:
    """Sparse labels from lidar points: class from ``point_classes`` (e.g. lidarseg mapped to
    Occ3D) or from the Occ3D voxel each point falls in (nudged 5 cm along its ray so that a
    surface point lands in the voxel it hit). -> (H, W) uint8, 255 where no point."""
    p = points_lidar[:, :3].astype(np.float64)
    pe = p @ lidar2ego[:3, :3].T + lidar2ego[:3, 3]
    if point_classes is None:
        o = lidar2ego[:3, 3]
        ray = pe - o
        ray /= np.maximum(np.linalg.norm(ray, axis=1, keepdims=True), 1e-9)
        ijk = np.floor((pe + 0.05 * ray - GRID_LO) / VOXEL).astype(np.int64)
        ok = np.all((ijk >= 0) & (ijk < np.array(semantics.shape)), 1)
        cls = np.full(len(pe), IGNORE, dtype=np.uint8)
        cls[ok] = semantics[ijk[ok, 0], ijk[ok, 1], ijk[ok, 2]]
        cls[cls == FREE] = IGNORE
    else:
        cls = point_classes.astype(np.uint8)
    e2c = invert_rigid(np.asarray(cam2ego, np.float64))
    pc = pe @ e2c[:3, :3].T + e2c[:3, 3]
    keep = (pc[:, 2] > 0.1) & (cls != IGNORE)
    pc, cls = pc[keep], cls[keep]
    uvw = pc @ np.asarray(K, np.float64).T
    u = np.floor(uvw[:, 0] / uvw[:, 2]).astype(np.int64)
    v = np.floor(uvw[:, 1] / uvw[:, 2]).astype(np.int64)
    h, w = hw
    ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    order = np.argsort(-pc[ok, 2], kind="stable")
    out = np.full(hw, IGNORE, dtype=np.uint8)
    out[v[ok][order], u[ok][order]] = cls[ok][order]
    return out


class SegFormerLabeler:
    """Cityscapes SegFormer -> Occ3D labels. ``model``: hub id or local folder
    (``from_pretrained``); images are normalised with ImageNet mean / std as SegFormer's
    processor does, optionally resized by ``scale`` for inference; logits are upsampled to
    the image size before the arg-max."""

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, model: str = "nvidia/segformer-b2-finetuned-cityscapes-1024-1024", device: str = "cpu",
                 scale: float = 1.0, lut: np.ndarray | None = None):
        from transformers import SegformerForSemanticSegmentation

        self.device = torch.device(device)
        self.model = SegformerForSemanticSegmentation.from_pretrained(model).to(self.device).eval()
        self.scale = scale
        self.lut = torch.from_numpy(lut if lut is not None else cityscapes_to_occ_lut()).to(self.device)
        n = self.model.config.num_labels
        if n > 256:
            raise ValueError(f"SegFormer {model}: {n} classes do not fit a uint8 class map")

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """images: list of (H, W, 3) uint8 RGB of one size -> list of (H, W) uint8 Occ3D labels."""
        x = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(self.MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.STD, device=self.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        h, w = x.shape[-2:]
        if self.scale != 1.0:
            x = torch.nn.functional.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        logits = self.model(pixel_values=x).logits
        logits = torch.nn.functional.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        cls = logits.argmax(1)
        return [a for a in self.lut[cls].to(torch.uint8).cpu().numpy()]


def merge_labels(sources: list[np.ndarray | None]) -> np.ndarray:
    """Priority merge: the first source that labels a pixel (not 255) wins."""
    present = [s for s in sources if s is not None]
    if not present:
        raise ValueError("merge_labels: no label source produced a label map")
    out = present[0].copy()
    for s in present[1:]:
        fill = out == IGNORE
        out[fill] = s[fill]
    return out


def agreement(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(agreement on pixels both label, coverage = fraction of ref-labelled pixels pred labels)."""
    both = (pred != IGNORE) & (ref != IGNORE)
    agree = float((pred[both] == ref[both]).mean()) if both.any() else float("nan")
    cover = float(both.sum() / max((ref != IGNORE).sum(), 1))
    return agree, cover
