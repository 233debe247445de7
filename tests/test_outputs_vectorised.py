"""The vectorised output messages (issue: speed at the machine's limit) are byte for byte the
messages of a per-voxel reference written straight from the message definitions: CDR bytes
equal (rosbags' serialiser on the reference, ``msgs.serialize`` on ours) on a random volume.

Mutations tried: the sentinel's length patch skipped (both marker tests fail); an unstable
sort (quicksort) in voxels_to_markers (point order within a class changes: both fail); issue 28's
gathered builders: surface_mask testing one neighbour per axis only (``(2, None)`` shift dropped:
both marker tests fail), occupied_indices dividing by Dy before Dz (the cloud and both marker tests fail), the
rgb table shifted by one class (cloud test fails), the ground classes ranked as obstacles in
column_states' table (grid test fails). The reference's surface test is its own per-voxel
neighbour check, not ``outputs.surface_mask``. Not
caught, by design: centres cast to float32 before the PointList (they are float32 values).
(msgs.PointList and its splice are shared with the rclpy / DDS output path; see also
tests/test_ros_outputs_calib.py.)
"""
from __future__ import annotations

import numpy as np
import pytest

from priorocc_core.classes import FREE, IGNORE, NUM_OCC_CLASSES, OCC_CLASSES, OCC_COLORS
from priorocc_ros import outputs
from priorocc_ros.msgs import PointList, deserialize, header, msg_class, new_msg, serialize, typestore


def _random_volume(seed: int, n: int = 6000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    occ = np.full((200, 200, 16), FREE, np.uint8)
    flat = occ.reshape(-1)
    flat[rng.choice(flat.size, n, replace=False)] = rng.integers(0, NUM_OCC_CLASSES - 1, n)
    flat[rng.choice(flat.size, 300, replace=False)] = IGNORE
    occ[10:20, 10:20, 2:6] = 4  # a solid block: interior voxels the surface filter drops
    return occ


def _enclosed(occupied, v) -> bool:
    """All six neighbours of voxel v inside the grid and occupied (a voxel on the border is seen)."""
    for ax in range(3):
        for d in (-1, 1):
            n = list(v)
            n[ax] += d
            if not 0 <= n[ax] < occupied.shape[ax] or not occupied[tuple(n)]:
                return False
    return True


def _reference_markers(occ, hdr, grid=outputs.VoxelGrid()):
    """One Point object per surface voxel, in x, y, z order per class (the original builder)."""
    Marker, Point = msg_class("visualization_msgs/msg/Marker"), msg_class("geometry_msgs/msg/Point")
    occupied = outputs.occupied_mask(occ)
    pts = {c: [] for c in range(NUM_OCC_CLASSES)}
    for x, y, z in zip(*np.nonzero(occupied)):
        if _enclosed(occupied, (x, y, z)):
            continue
        c = int(occ[x, y, z])
        cx, cy, cz = (np.float32(grid.origin[i]) + (np.float32(v) + np.float32(0.5)) * np.float32(grid.voxel_size)
                      for i, v in enumerate((x, y, z)))
        pts[c].append(Point(x=float(cx), y=float(cy), z=float(cz)))
    s = float(grid.voxel_size)
    markers = []
    for c in range(NUM_OCC_CLASSES):
        if c == FREE:
            continue
        if not pts[c]:
            markers.append(new_msg("visualization_msgs/msg/Marker", header=hdr, ns="priorocc_occupancy", id=c,
                                   type=Marker.CUBE_LIST, action=Marker.DELETE))
            continue
        r, g, b = (OCC_COLORS[c] / 255.0).tolist()
        markers.append(new_msg(
            "visualization_msgs/msg/Marker", header=hdr, ns="priorocc_occupancy", id=c, type=Marker.CUBE_LIST,
            action=Marker.ADD, pose=new_msg("geometry_msgs/msg/Pose"),
            scale=new_msg("geometry_msgs/msg/Vector3", x=s, y=s, z=s),
            color=new_msg("std_msgs/msg/ColorRGBA", r=r, g=g, b=b, a=1.0), points=pts[c], text=OCC_CLASSES[c]))
    return new_msg("visualization_msgs/msg/MarkerArray", markers=markers)


def _reference_cloud_bytes(occ, grid=outputs.VoxelGrid()) -> bytes:
    """x, y, z, rgb, label per occupied voxel, packed one at a time."""
    import struct

    out = bytearray()
    for x, y, z in zip(*np.nonzero(outputs.occupied_mask(occ))):
        c = int(occ[x, y, z])
        xyz = [np.float32(grid.origin[i]) + (np.float32(v) + np.float32(0.5)) * np.float32(grid.voxel_size)
               for i, v in enumerate((x, y, z))]
        r, g, b = (int(v) for v in OCC_COLORS[c])
        out += struct.pack("<fffII", *xyz, (r << 16) | (g << 8) | b, c)
    return bytes(out)


def _reference_grid(occ, columns) -> list[int]:
    """Column by column: 100 obstacle, 0 free, -1 unknown."""
    out = []
    for x, y in columns:
        col = [int(v) for v in occ[x, y] if v != IGNORE and v < NUM_OCC_CLASSES]
        out.append(-1 if not col else (100 if any(v != FREE and v not in outputs.GROUND_CLASSES for v in col) else 0))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_markers_bytes_equal_the_per_voxel_reference(seed):
    occ = _random_volume(seed)
    hdr = header(123_456_789_012, "base_link")
    ours = outputs.voxels_to_markers(occ, hdr)
    assert any(isinstance(m.points, PointList) for m in ours.markers)
    ref = bytes(typestore().serialize_cdr(_reference_markers(occ, hdr), "visualization_msgs/msg/MarkerArray"))
    assert serialize(ours) == ref
    # rosbags' own serialiser iterates the PointList: the same bytes the slow way
    assert bytes(typestore().serialize_cdr(ours, "visualization_msgs/msg/MarkerArray")) == ref
    back = deserialize(ref, "visualization_msgs/msg/MarkerArray")
    assert [len(m.points) for m in back.markers] == [len(m.points) for m in ours.markers]


def test_cloud_and_grid_equal_the_per_voxel_reference():
    occ = _random_volume(2)
    hdr = header(5, "base_link")
    cloud = outputs.voxels_to_pointcloud2(occ, hdr)
    assert np.asarray(cloud.data).tobytes() == _reference_cloud_bytes(occ)
    grid = outputs.voxels_to_occupancy_grid(occ, hdr)
    cols = np.random.default_rng(3).integers(0, 200, (3000, 2))  # a per-column loop over all 40,000 takes 7 s
    data = np.asarray(grid.data).reshape(200, 200)  # rows over y
    assert [int(data[y, x]) for x, y in cols] == _reference_grid(occ, cols)
    assert deserialize(serialize(grid), "nav_msgs/msg/OccupancyGrid").info.width == 200


def test_point_array_behaves_as_a_point_list():
    a = PointList(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    assert len(a) == 2 and a[1].y == 5.0 and [p.z for p in a] == [3.0, 6.0] and len(a[:1]) == 1
    with pytest.raises(ValueError, match="expected \\(N, 3\\)"):
        PointList(np.zeros((3, 2)))
