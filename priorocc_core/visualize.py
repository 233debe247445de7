"""Pictures a person can judge at a glance: class overlays, BEV maps, a 3D voxel view."""
from __future__ import annotations

import numpy as np

from .classes import FREE, IGNORE, OCC_CLASSES, OCC_COLORS


def colorize(labels: np.ndarray) -> np.ndarray:
    """(...,) class indices -> (..., 3) uint8 RGB; ignore (255) is black."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(OCC_COLORS)] = OCC_COLORS
    lut[IGNORE] = 0
    return lut[labels]


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend (H, W, 3) uint8 RGB with (H, W) class labels (ignore pixels stay as they are)."""
    col = colorize(labels).astype(np.float32)
    out = image.astype(np.float32)
    m = (labels != IGNORE)[..., None]
    out = np.where(m, (1 - alpha) * out + alpha * col, out)
    return out.clip(0, 255).astype(np.uint8)


def bev_semantic_map(occ: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(Dx, Dy, Dz) labels -> (Dy, Dx, 3) RGB top view: the highest non-free class per column.

    Rendered as a map with ego x pointing up and ego y pointing left (row 0 = far ahead)."""
    occ = occ.copy()
    if mask is not None:
        occ[~mask.astype(bool)] = FREE
    occupied = occ != FREE
    z_top = occupied.shape[2] - 1 - np.argmax(occupied[:, :, ::-1], axis=2)  # highest occupied z
    top = np.take_along_axis(occ, z_top[..., None], axis=2)[..., 0]
    top = np.where(occupied.any(axis=2), top, FREE)
    rgb = colorize(top)  # (Dx, Dy, 3)
    rgb[top == FREE] = 30
    return np.ascontiguousarray(rgb[::-1, ::-1])  # x up, y left


def render_voxels_3d(occ: np.ndarray, path, title: str = "", voxel: float = 0.4,
                     origin=(-40.0, -40.0, -1.0), max_points: int = 60000) -> None:
    """Write a 3D scatter rendering of the occupied voxels (class colours) to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = np.argwhere(occ != FREE)
    if len(idx) > max_points:
        idx = idx[np.random.default_rng(0).choice(len(idx), max_points, replace=False)]
    xyz = idx * voxel + np.asarray(origin) + voxel / 2
    cls = occ[tuple(idx.T)]
    fig = plt.figure(figsize=(9, 7), dpi=110)
    ax = fig.add_subplot(111, projection="3d")
    ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], c=OCC_COLORS[cls] / 255.0, s=1.5, marker="s", depthshade=False)
    ax.set_xlim(-40, 40), ax.set_ylim(-40, 40), ax.set_zlim(-1, 10)
    ax.set_box_aspect((80, 80, 11))
    ax.view_init(elev=35, azim=-150)
    ax.set_xlabel("x (m)"), ax.set_ylabel("y (m)")
    ax.set_title(title)
    present = sorted(set(cls.tolist()))
    handles = [plt.Line2D([], [], marker="s", ls="", color=OCC_COLORS[c] / 255.0, label=OCC_CLASSES[c]) for c in present]
    ax.legend(handles=handles, loc="upper left", fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def legend_strip(width: int = 900) -> np.ndarray:
    """(H, W, 3) image naming the 17 occupied classes in their colours."""
    from PIL import Image, ImageDraw

    n = FREE
    cols = 6
    rows = (n + cols - 1) // cols
    img = Image.new("RGB", (width, rows * 18 + 4), (255, 255, 255))
    d = ImageDraw.Draw(img)
    cw = width // cols
    for c in range(n):
        x, y = (c % cols) * cw + 4, (c // cols) * 18 + 3
        d.rectangle([x, y, x + 12, y + 12], fill=tuple(int(v) for v in OCC_COLORS[c]), outline=(0, 0, 0))
        d.text((x + 16, y), OCC_CLASSES[c], fill=(0, 0, 0))
    return np.asarray(img)
