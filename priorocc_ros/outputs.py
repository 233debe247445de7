"""Output messages built from one prediction (all rosbags-style message objects).

- ``voxels_to_pointcloud2``: sensor_msgs/PointCloud2, one point per occupied voxel centre with
  fields x, y, z (float32), rgb (float32 holding 0x00RRGGBB, as rviz's RGB8 transformer
  reads it), label (uint32, Occ3D class index).
- ``voxels_to_markers``: visualization_msgs/MarkerArray, one CUBE_LIST per class present
  (id = class index, colour = OCC_COLORS), DELETE for classes absent this frame; the points
  are a numpy-backed ``msgs.PointList`` that ``msgs.serialize`` writes as one block.

No per-voxel Python: every output is built with numpy over all voxels at once.
- ``voxels_to_occupancy_grid``: nav_msgs/OccupancyGrid over the x-y grid: 100 = the column
  holds an obstacle voxel (any occupied class except the ground classes), 0 = free, -1 =
  unknown (column not seen by any camera, or only ignore labels).
- ``seg_overlay``: sensor_msgs/Image (rgb8), the network-input view of a camera blended with
  the predicted 2D classes.
- ``diagnostics``: diagnostic_msgs/DiagnosticArray with the node's counters and latencies.

The occupancy volume is (Dx, Dy, Dz) uint8 indexed [x, y, z] in ``base_link`` (docs/design.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import cv2
import numpy as np

from priorocc_core.classes import FREE, IGNORE, NUM_OCC_CLASSES, OCC_CLASSES, OCC_COLORS
from priorocc_core.config import GridConfig
from priorocc_ros.msgs import PointList, msg_class, new_msg

GROUND_CLASSES = (11, 12, 13, 14)  # driveable_surface, other_flat, sidewalk, terrain
POINTFIELD_UINT8, POINTFIELD_UINT32, POINTFIELD_FLOAT32 = 2, 6, 7
VOXEL_POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4"), ("label", "<u4")])


@dataclass(frozen=True)
class VoxelGrid:
    """Occupancy grid geometry: origin = the minimum corner (metres), cubic voxels."""

    origin: tuple[float, float, float] = GridConfig().occ_origin  # defaults: GridConfig's, the one definition
    voxel_size: float = GridConfig().voxel_size
    shape: tuple[int, int, int] = GridConfig().occ_size

    @classmethod
    def from_grid_config(cls, g: Any) -> "VoxelGrid":
        """priorocc_core.config.GridConfig -> VoxelGrid (x, y, occ_z ranges)."""
        return cls(origin=(g.x[0], g.y[0], g.occ_z[0]), voxel_size=float(g.x[2]), shape=tuple(g.occ_size))

    def centres(self, idx: np.ndarray) -> np.ndarray:
        """(P, 3) integer [x, y, z] indices -> (P, 3) float32 voxel centres in metres."""
        return (np.asarray(self.origin, dtype=np.float32)
                + (idx.astype(np.float32) + 0.5) * np.float32(self.voxel_size))

    def axis_centres(self, axis: int) -> np.ndarray:
        """(D_axis,) float32 centres along one axis, the same float32 arithmetic as ``centres``."""
        i = np.arange(self.shape[axis], dtype=np.float32)
        return np.float32(self.origin[axis]) + (i + np.float32(0.5)) * np.float32(self.voxel_size)


def occupied_indices(mask: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(Dx, Dy, Dz) bool -> (flat (P,) int64, (ix, iy, iz) (P,) int32 each), in x, y, z order
    (np.argwhere's order, without its (P, 3) int64 transpose)."""
    flat = np.flatnonzero(mask)
    _, dy, dz = mask.shape
    q, iz = np.divmod(flat.astype(np.int32), np.int32(dz))
    ix, iy = np.divmod(q, np.int32(dy))
    return flat, (ix, iy, iz)


def _check_occ(occ: np.ndarray, grid: VoxelGrid) -> np.ndarray:
    occ = np.asarray(occ)
    if occ.shape != tuple(grid.shape):
        raise ValueError(f"occupancy must have shape {grid.shape} indexed [x, y, z], got {occ.shape}")
    return occ


def occupied_mask(occ: np.ndarray) -> np.ndarray:
    return (occ != FREE) & (occ != IGNORE) & (occ < NUM_OCC_CLASSES)


def packed_rgb_float(colors: np.ndarray) -> np.ndarray:
    """(P, 3) uint8 RGB -> (P,) float32 whose bits are 0x00RRGGBB (PCL / rviz 'rgb')."""
    c = np.asarray(colors, dtype=np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).astype(np.uint32).view(np.float32)


_RGB_BY_LABEL = np.zeros(256, np.float32)  # packed rgb of each class index (a constant table)
_RGB_BY_LABEL[:len(OCC_COLORS)] = packed_rgb_float(OCC_COLORS)


def unpack_rgb_float(rgb: np.ndarray) -> np.ndarray:
    """(P,) float32 packed rgb -> (P, 3) uint8."""
    u = np.asarray(rgb, dtype=np.float32).view(np.uint32)
    return np.stack([(u >> 16) & 255, (u >> 8) & 255, u & 255], axis=1).astype(np.uint8)


def voxels_to_pointcloud2(occ: np.ndarray, header: Any, grid: VoxelGrid = VoxelGrid()) -> Any:
    """(Dx, Dy, Dz) labels -> PointCloud2 of occupied voxel centres (x, y, z, rgb, label)."""
    occ = _check_occ(occ, grid)
    flat, ijk = occupied_indices(occupied_mask(occ))
    labels = occ.reshape(-1)[flat]
    pts = np.empty(len(flat), dtype=VOXEL_POINT_DTYPE)
    for ax, name in enumerate(("x", "y", "z")):  # a centre per axis index, gathered: no (P, 3) temporaries
        pts[name] = grid.axis_centres(ax)[ijk[ax]]
    pts["rgb"] = _RGB_BY_LABEL[labels]
    pts["label"] = labels
    PF = msg_class("sensor_msgs/msg/PointField")
    fields = [PF(name=n, offset=VOXEL_POINT_DTYPE.fields[n][1], datatype=dt, count=1)
              for n, dt in (("x", POINTFIELD_FLOAT32), ("y", POINTFIELD_FLOAT32), ("z", POINTFIELD_FLOAT32),
                            ("rgb", POINTFIELD_FLOAT32), ("label", POINTFIELD_UINT32))]
    return new_msg("sensor_msgs/msg/PointCloud2", header=header, height=1, width=len(pts), fields=fields,
                   is_bigendian=False, point_step=VOXEL_POINT_DTYPE.itemsize,
                   row_step=VOXEL_POINT_DTYPE.itemsize * len(pts), data=pts.view(np.uint8).reshape(-1),
                   is_dense=True)


_PF_DTYPES = {1: "i1", 2: "u1", 3: "<i2", 4: "<u2", 5: "<i4", 6: "<u4", 7: "<f4", 8: "<f8"}


def pointcloud2_to_array(msg: Any) -> np.ndarray:
    """PointCloud2 -> numpy structured array with one field per PointField (little endian)."""
    if msg.is_bigendian:
        raise ValueError("pointcloud2_to_array: big-endian clouds are not supported")
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if f.datatype not in _PF_DTYPES:
            raise ValueError(f"pointcloud2_to_array: field {f.name!r} has unknown datatype {f.datatype}")
        names.append(f.name)
        formats.append(_PF_DTYPES[f.datatype] if f.count == 1 else (_PF_DTYPES[f.datatype], f.count))
        offsets.append(f.offset)
    dt = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": msg.point_step})
    n = int(msg.width) * int(msg.height)
    data = np.asarray(msg.data, dtype=np.uint8)
    if data.size != n * msg.point_step:
        raise ValueError(f"pointcloud2_to_array: data has {data.size} bytes; expected {n} x {msg.point_step}")
    return data.view(dt).reshape(-1)


def surface_mask(mask: np.ndarray) -> np.ndarray:
    """Occupied voxels with at least one of their 6 neighbours free or outside the grid (the
    ones a viewer can see); interior voxels are hidden by their neighbours."""
    m = np.pad(mask, 1, constant_values=False)
    interior = mask.copy()
    c = (slice(1, -1),) * 3
    for ax in range(3):  # the two neighbours along each axis: shifted views of the padded mask, no copies
        for lo, hi in ((0, -2), (2, None)):
            sl = list(c)
            sl[ax] = slice(lo, hi)
            interior &= m[tuple(sl)]
    return mask & ~interior


def voxels_to_markers(occ: np.ndarray, header: Any, grid: VoxelGrid = VoxelGrid(),
                      ns: str = "priorocc_occupancy", alpha: float = 1.0, surface_only: bool = True) -> Any:
    """(Dx, Dy, Dz) labels -> MarkerArray: a CUBE_LIST per occupied class present, DELETE
    markers for the classes absent (so rviz clears them). ``surface_only`` leaves out voxels
    enclosed on all six sides (invisible in rviz, and most of the cost)."""
    occ = _check_occ(occ, grid)
    Marker = msg_class("visualization_msgs/msg/Marker")
    mask = occupied_mask(occ)
    if surface_only:
        mask = surface_mask(mask)
    flat, ijk = occupied_indices(mask)  # x, y, z order
    labels = occ.reshape(-1)[flat]
    centres = np.empty((len(flat), 3), np.float64)
    for ax in range(3):
        centres[:, ax] = grid.axis_centres(ax)[ijk[ax]]
    # group by class with one stable sort (keeps the x, y, z order within a class)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(NUM_OCC_CLASSES + 1))
    markers = []
    s = float(grid.voxel_size)
    for c in range(NUM_OCC_CLASSES):  # per class (17), never per voxel
        if c == FREE:
            continue
        sel = order[bounds[c]:bounds[c + 1]]
        if sel.size == 0:
            markers.append(new_msg("visualization_msgs/msg/Marker", header=header, ns=ns, id=c,
                                   type=Marker.CUBE_LIST, action=Marker.DELETE))
            continue
        pts = PointList(centres[sel])  # numpy-backed Point[]: no Point objects made here (msgs.PointList)
        r, g, b = (OCC_COLORS[c] / 255.0).tolist()
        markers.append(new_msg(
            "visualization_msgs/msg/Marker", header=header, ns=ns, id=c, type=Marker.CUBE_LIST,
            action=Marker.ADD, pose=new_msg("geometry_msgs/msg/Pose"),
            scale=new_msg("geometry_msgs/msg/Vector3", x=s, y=s, z=s),
            color=new_msg("std_msgs/msg/ColorRGBA", r=r, g=g, b=b, a=float(alpha)),
            points=pts, text=OCC_CLASSES[c]))
    return new_msg("visualization_msgs/msg/MarkerArray", markers=markers)


# per class index: 0 unknown (IGNORE, out of range), 1 known and not an obstacle (free, ground), 2 obstacle;
# a column's state is its highest rank: -1, 0, 100
_VOXEL_RANK = np.zeros(256, np.uint8)
_VOXEL_RANK[:NUM_OCC_CLASSES] = 2
_VOXEL_RANK[[FREE, *GROUND_CLASSES]] = 1
_VOXEL_RANK[IGNORE] = 0
_COLUMN_STATE = np.array([-1, 0, 100], np.int8)


def column_states(occ: np.ndarray, visible: np.ndarray | None = None) -> np.ndarray:
    """(Dx, Dy, Dz) labels -> (Dx, Dy) int8: 100 obstacle, 0 free, -1 unknown."""
    occ = np.asarray(occ)
    out = _COLUMN_STATE[_VOXEL_RANK[occ].max(axis=2)]  # one table look-up per voxel, the column's highest rank
    if visible is not None:
        out[~np.asarray(visible, dtype=bool)] = -1
    return out


def voxels_to_occupancy_grid(occ: np.ndarray, header: Any, grid: VoxelGrid = VoxelGrid(),
                             visible: np.ndarray | None = None) -> Any:
    """(Dx, Dy, Dz) labels -> OccupancyGrid (row-major over y then x, origin at the grid's
    minimum corner, resolution = voxel size). ``visible``: optional (Dx, Dy) bool mask."""
    occ = _check_occ(occ, grid)
    states = column_states(occ, visible)  # [x, y]
    data = np.ascontiguousarray(states.T).reshape(-1)  # row = y, column = x
    info = new_msg(
        "nav_msgs/msg/MapMetaData", map_load_time=header.stamp, resolution=float(grid.voxel_size),
        width=int(grid.shape[0]), height=int(grid.shape[1]),
        origin=new_msg("geometry_msgs/msg/Pose",
                       position=new_msg("geometry_msgs/msg/Point", x=float(grid.origin[0]), y=float(grid.origin[1]),
                                        z=0.0)))
    return new_msg("nav_msgs/msg/OccupancyGrid", header=header, info=info, data=data)


def camera_visibility(cam2ego: np.ndarray, K: np.ndarray, image_hw: Iterable[tuple[int, int]],
                      grid: VoxelGrid = VoxelGrid(), heights: tuple[float, ...] = (0.0, 1.0),
                      min_depth: float = 1.0) -> np.ndarray:
    """(Dx, Dy) bool: columns whose centre (at any of ``heights`` metres) projects inside some
    camera image with depth >= min_depth. cam2ego (N, 4, 4), K (N, 3, 3), image_hw N x (H, W)."""
    nx, ny = grid.shape[:2]
    ix, iy = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    xs = grid.origin[0] + (ix + 0.5) * grid.voxel_size
    ys = grid.origin[1] + (iy + 0.5) * grid.voxel_size
    vis = np.zeros((nx, ny), dtype=bool)
    for c2e, k, (h, w) in zip(np.asarray(cam2ego), np.asarray(K), image_hw):
        e2c = np.linalg.inv(c2e)
        for z in heights:
            p = np.stack([xs, ys, np.full_like(xs, z)], axis=-1).reshape(-1, 3)
            pc = p @ e2c[:3, :3].T + e2c[:3, 3]
            d = pc[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                uv = (pc @ np.asarray(k).T)[:, :2] / d[:, None]
            ok = (d >= min_depth) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
            vis |= ok.reshape(nx, ny)
    return vis


def seg_overlay(image_rgb: np.ndarray, img_aug: np.ndarray, seg: np.ndarray, alpha: float = 0.5,
                scale: float = 1.0) -> np.ndarray:
    """Blend predicted 2D classes over the camera image as the network saw it.

    image_rgb (H, W, 3) uint8 original; img_aug (3, 3) original -> network-input pixels;
    seg (h, w) uint8 labels at network-input size (255 = none). Returns
    (round(h*scale), round(w*scale), 3) uint8.
    """
    seg = np.asarray(seg)
    h, w = seg.shape
    M = np.asarray(img_aug, dtype=np.float64)
    view = cv2.warpPerspective(np.asarray(image_rgb), M, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT)
    if scale != 1.0:
        oh, ow = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        view = cv2.resize(view, (ow, oh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        seg = cv2.resize(seg, (ow, oh), interpolation=cv2.INTER_NEAREST)
    valid = seg < len(OCC_COLORS) - 1  # classes 0-16; 255 and free untouched
    colours = OCC_COLORS[np.where(valid, seg, 0)]
    out = view.astype(np.float32)
    a = np.float32(alpha)
    out[valid] = (1 - a) * out[valid] + a * colours[valid].astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def diagnostics(stamp_header: Any, name: str, hardware_id: str, level: int, message: str,
                values: Mapping[str, Any]) -> Any:
    """DiagnosticArray with one DiagnosticStatus; values become KeyValue strings."""
    KV = msg_class("diagnostic_msgs/msg/KeyValue")
    kvs = [KV(key=str(k), value=(f"{v:.6g}" if isinstance(v, float) else str(v))) for k, v in values.items()]
    status = new_msg("diagnostic_msgs/msg/DiagnosticStatus", level=int(level), name=name, message=message,
                     hardware_id=hardware_id, values=kvs)
    return new_msg("diagnostic_msgs/msg/DiagnosticArray", header=stamp_header, status=[status])


def diagnostics_values(msg: Any) -> dict[str, str]:
    """DiagnosticArray -> {key: value} of its first status (for tests and tools)."""
    return {kv.key: kv.value for kv in msg.status[0].values} if msg.status else {}
