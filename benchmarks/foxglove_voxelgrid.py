"""``foxglove_msgs/msg/VoxelGrid`` against the node's MarkerArray, per set of a replay (issue 29).

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python -m priorocc_ros.replay bags/demo \
        --checkpoint models/demo --out /tmp/vg_replay
    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/foxglove_voxelgrid.py /tmp/vg_replay

The occupancy of each set is rebuilt from the replay's ``/priorocc/voxels`` (every occupied
voxel, its class). Per set: the MarkerArray exactly as the node builds it
(``outputs.voxels_to_markers`` + ``msgs.serialize``) and two dense VoxelGrids of the same grid
(``foxglove_msgs`` schema of foxglove-sdk, Z-Y-X order): ``rgba`` (4 bytes a cell: the class
colour, alpha 0 for free cells) and ``class`` (1 byte a cell, the class index; a viewer
colours it by a colour map). Build = message + CDR, process CPU time, median of ``--reps``;
bytes = CDR, and zstd level 3 (what an MCAP chunk would hold). The VoxelGrid builder lives
here only: it is not a node output.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# foxglove_msgs/msg/VoxelGrid and PackedElementField (foxglove-sdk schemas/ros2, 2025), comments left out
VOXELGRID_MSG = """builtin_interfaces/Time timestamp
string frame_id
geometry_msgs/Pose pose
uint32 row_count
uint32 column_count
geometry_msgs/Vector3 cell_size
uint32 slice_stride
uint32 row_stride
uint32 cell_stride
foxglove_msgs/PackedElementField[] fields
uint8[] data
"""
PACKED_FIELD_MSG = """string name
uint32 offset
uint8 UNKNOWN=0
uint8 UINT8=1
uint8 type
"""


def voxelgrid_store():
    """A rosbags type store of its own with the two foxglove_msgs types (the node's is untouched)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = get_types_from_msg(PACKED_FIELD_MSG, "foxglove_msgs/msg/PackedElementField")
    types.update(get_types_from_msg(VOXELGRID_MSG, "foxglove_msgs/msg/VoxelGrid"))
    store.register(types)
    return store


def occ_from_cloud(raw: bytes, grid) -> np.ndarray:
    """/priorocc/voxels CDR -> (Dx, Dy, Dz) labels (FREE where no point)."""
    from priorocc_core.classes import FREE
    from priorocc_ros.msgs import deserialize
    from priorocc_ros.outputs import pointcloud2_to_array

    pts = pointcloud2_to_array(deserialize(raw, "sensor_msgs/msg/PointCloud2"))
    xyz = np.stack([pts["x"], pts["y"], pts["z"]], axis=1)
    idx = np.floor((xyz - np.asarray(grid.origin, np.float32)) / grid.voxel_size).astype(int)
    occ = np.full(grid.shape, FREE, np.uint8)
    occ[idx[:, 0], idx[:, 1], idx[:, 2]] = pts["label"]
    return occ


def voxelgrid_cdr(store, occ: np.ndarray, stamp, grid, mode: str) -> bytes:
    """(Dx, Dy, Dz) labels -> VoxelGrid CDR: ``rgba`` (class colour, alpha 0 for free) or ``class``."""
    from priorocc_core.classes import OCC_COLORS
    from priorocc_ros.outputs import occupied_mask

    T = store.types
    zyx = np.ascontiguousarray(occ.transpose(2, 1, 0))  # (Dz, Dy, Dx): depth-major, row-major
    dz, dy, dx = zyx.shape
    if mode == "rgba":
        rgba = np.zeros(zyx.shape + (4,), np.uint8)
        mask = occupied_mask(zyx)
        rgba[mask, :3] = OCC_COLORS[zyx[mask]]
        rgba[mask, 3] = 255
        data, cell = rgba.reshape(-1), 4
        fields = [T["foxglove_msgs/msg/PackedElementField"](name=n, offset=i, type=1)
                  for i, n in enumerate(("red", "green", "blue", "alpha"))]
    else:
        data, cell = zyx.reshape(-1), 1
        fields = [T["foxglove_msgs/msg/PackedElementField"](name="class", offset=0, type=1)]
    ox, oy, oz = grid.origin
    s = float(grid.voxel_size)
    pose = T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=ox, y=oy, z=oz),
                                       orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
    msg = T["foxglove_msgs/msg/VoxelGrid"](
        timestamp=stamp, frame_id="base_link", pose=pose, row_count=dy, column_count=dx,
        cell_size=T["geometry_msgs/msg/Vector3"](x=s, y=s, z=s), slice_stride=dy * dx * cell,
        row_stride=dx * cell, cell_stride=cell, fields=fields, data=data)
    return bytes(store.serialize_cdr(msg, "foxglove_msgs/msg/VoxelGrid"))


def _cpu_ms(fn, reps: int) -> tuple[float, bytes]:
    times, out = [], b""
    for _ in range(reps):
        t0 = time.process_time()
        out = fn()
        times.append((time.process_time() - t0) * 1e3)
    return statistics.median(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("replay", type=Path, help="a priorocc_replay output bag (with /priorocc/voxels)")
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "models" / "demo", help="its grid (config.yaml)")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    import zstandard

    from priorocc_core.config import load_config
    from priorocc_ros.bagio import iter_raw
    from priorocc_ros.msgs import header, serialize
    from priorocc_ros.outputs import VoxelGrid, occupied_mask, surface_mask, voxels_to_markers

    grid = VoxelGrid.from_grid_config(load_config(args.checkpoint / "config.yaml").model.grid)
    store = voxelgrid_store()
    zc = zstandard.ZstdCompressor(level=3)
    rows = []
    for topic, _, t, raw in iter_raw(args.replay, ["/priorocc/voxels"]):
        if topic != "/priorocc/voxels":
            continue
        occ = occ_from_cloud(bytes(raw), grid)
        h = header(t, "base_link")
        row = {"occupied": int(occupied_mask(occ).sum()), "surface": int(surface_mask(occupied_mask(occ)).sum())}
        for name, fn in (("markers", lambda: serialize(voxels_to_markers(occ, h, grid))),
                         ("rgba", lambda: voxelgrid_cdr(store, occ, h.stamp, grid, "rgba")),
                         ("class", lambda: voxelgrid_cdr(store, occ, h.stamp, grid, "class"))):
            ms, data = _cpu_ms(fn, args.reps)
            row[name] = (ms, len(data), len(zc.compress(data)))
        rows.append(row)
    if not rows:
        print(f"{args.replay}: no /priorocc/voxels", file=sys.stderr)
        return 1
    print(f"{len(rows)} sets, grid {grid.shape} (x, y, z), medians over sets of medians of {args.reps} builds")
    print(f"occupied voxels {statistics.median(r['occupied'] for r in rows):.0f}, "
          f"on the surface {statistics.median(r['surface'] for r in rows):.0f}")
    print("| message | build CPU ms | CDR bytes | zstd-3 bytes |")
    print("|---|---:|---:|---:|")
    for name, label in (("markers", "MarkerArray (the node's)"), ("rgba", "VoxelGrid rgba"),
                        ("class", "VoxelGrid class")):
        ms = statistics.median(r[name][0] for r in rows)
        n = statistics.median(r[name][1] for r in rows)
        z = statistics.median(r[name][2] for r in rows)
        print(f"| {label} | {ms:.1f} | {n:,.0f} | {z:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
