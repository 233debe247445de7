"""Pictures a person can judge at a glance: class overlays, BEV maps, a 3D voxel view."""
from __future__ import annotations

import numpy as np

from .classes import FREE, IGNORE, OCC_CLASSES, OCC_COLORS
from .config import GridConfig


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


GROUND_CLASSES = (11, 12, 13, 14)  # driveable surface, other flat, sidewalk, terrain: drawn low-key
GROUND_GREY = (0.42, 0.42, 0.45)
BACKGROUND = (0.13, 0.13, 0.15)  # dark, so that manmade (lavender) and every class colour stand out


def _voxel_panel(ax, occ: np.ndarray, title: str, grid: GridConfig, max_points: int) -> set:
    """One 3D scatter panel: ground classes as small faint grey squares, everything else in its class colour."""
    idx = np.argwhere(occ != FREE)
    if len(idx) > max_points:
        idx = idx[np.random.default_rng(0).choice(len(idx), max_points, replace=False)]
    voxel = grid.voxel_size
    xyz = idx * voxel + np.asarray(grid.occ_origin) + voxel / 2
    cls = occ[tuple(idx.T)]
    ground = np.isin(cls, GROUND_CLASSES)
    g = xyz[ground]
    ax.scatter(g[:, 0], g[:, 1], g[:, 2], c=[GROUND_GREY], s=1.0, marker="s", alpha=0.6, depthshade=False,
               linewidths=0)
    o, oc = xyz[~ground], cls[~ground]
    ax.scatter(o[:, 0], o[:, 1], o[:, 2], c=OCC_COLORS[oc] / 255.0, s=3.0, marker="s", depthshade=True, linewidths=0)
    (x0, x1, _), (y0, y1, _), z0 = grid.x, grid.y, grid.occ_z[0]
    ax.set_xlim(x0, x1), ax.set_ylim(y0, y1), ax.set_zlim(z0, z0 + 11.0)
    ax.set_box_aspect((x1 - x0, y1 - y0, 16))
    ax.view_init(elev=30, azim=-150)
    ax.set_facecolor(BACKGROUND)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_pane_color(BACKGROUND)
        axis.label.set_color("white")
        axis.set_tick_params(colors="white")
    ax.set_xlabel("x (m)"), ax.set_ylabel("y (m)")
    ax.set_title(title, color="white")
    return set(oc.tolist())


def render_voxels_3d(occ: np.ndarray, path, title: str = "", grid: GridConfig = GridConfig(),
                     max_points: int = 60000, gt: np.ndarray | None = None,
                     mask: np.ndarray | None = None) -> None:
    """Write a 3D rendering of the occupied voxels to ``path`` (PNG): objects, buildings and vegetation in
    their class colours, the ground classes low-key grey so that obstacles stand out. With ``gt`` a
    second panel shows the ground truth; with ``mask`` (Dx, Dy, Dz) only voxels inside it are drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(occ, title or "prediction")] + ([(gt, "ground truth")] if gt is not None else [])
    fig = plt.figure(figsize=(9 * len(panels), 7), dpi=90, facecolor=BACKGROUND)
    present: set = set()
    for i, (vol, name) in enumerate(panels):
        vol = vol.copy()
        if mask is not None:
            vol[~mask.astype(bool)] = FREE
        present |= _voxel_panel(fig.add_subplot(1, len(panels), i + 1, projection="3d"), vol, name, grid,
                                max_points)
    handles = [plt.Line2D([], [], marker="s", ls="", color=OCC_COLORS[c] / 255.0, label=OCC_CLASSES[c])
               for c in sorted(present)]
    handles.append(plt.Line2D([], [], marker="s", ls="", color=GROUND_GREY, label="ground classes"))
    leg = fig.legend(handles=handles, loc="upper center", fontsize=9, ncol=min(len(handles), 8), facecolor=BACKGROUND,
                     edgecolor=BACKGROUND)
    for t in leg.get_texts():
        t.set_color("white")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, facecolor=BACKGROUND)
    plt.close(fig)


def side_by_side(tiles: list[np.ndarray], width: int) -> np.ndarray:
    """Stack (H, W, 3) uint8 pictures vertically, each scaled to ``width``, on white."""
    from PIL import Image

    rows = []
    for t in tiles:
        im = Image.fromarray(t)
        h = max(1, round(im.height * width / im.width))
        rows.append(np.asarray(im.convert("RGB").resize((width, h), Image.BILINEAR)))
    gap = np.full((6, width, 3), 255, np.uint8)
    out = []
    for r in rows:
        out += [r, gap]
    return np.concatenate(out[:-1], axis=0)


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
