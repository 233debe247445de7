"""Output conversion cost on the rclpy path for one 40,000-voxel set (needs ROS 2 sourced).

    . ../shared/ros2/activate.sh && ROS_DOMAIN_ID=97 OMP_NUM_THREADS=1 \
        PYTHONPATH=$PWD:$PYTHONPATH .venv/bin/python benchmarks/ros_outputs.py [--old REV] [--reps 7]

The set: a 200 x 200 x 16 grid with one full layer occupied (40,000 voxels, every one on the
surface, so the MarkerArray carries all 40,000 points), random classes. Per output (all but
the overlays): ``build`` = the ROS-free message building (``priorocc_ros.outputs``, the same
for every transport), ``cdr`` = rosbags serialisation, ``publish`` = rclpy
``Publisher.publish(bytes)`` — cdr + publish is what the rclpy transport adds. ``--old REV``
also times the per-field converter of that revision's rclpy_transport.py (``to_rclpy`` +
``publish(msg)``) for the ratio. Medians of ``--reps`` runs, milliseconds of wall time
(``--cpu``: of process CPU time).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_set(occ_size: tuple[int, int, int], seed: int = 0):
    """An occupancy of the model's grid ``occ_size`` with one full layer (z = 4) of classes 1..10."""
    from priorocc_core.classes import FREE

    rng = np.random.default_rng(seed)
    dx, dy, dz = occ_size
    occ = np.full((dx, dy, dz), FREE, np.uint8)
    occ[:, :, min(4, dz - 1)] = rng.integers(1, 11, size=(dx, dy))  # never FREE
    return occ


CLOCK = time.perf_counter


def timed(fn, reps):
    ts = []
    out = None
    for _ in range(reps):
        t0 = CLOCK()
        out = fn()
        ts.append(CLOCK() - t0)
    return statistics.median(ts) * 1e3, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--config", default=str(ROOT / "training" / "configs" / "priorocc-r50.yaml"),
                    help="model config whose grid the outputs are built on (default: PriorOcc R50)")
    ap.add_argument("--cpu", action="store_true", help="time with the process CPU clock (time.process_time) "
                    "instead of wall time: the figure a loaded machine does not inflate")
    ap.add_argument("--old", default=None, help="git revision whose per-field converter to time as well")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.cpu else time.perf_counter

    import rclpy

    from priorocc_ros import outputs
    from priorocc_ros.msgs import header, serialize
    from priorocc_ros.transport.rclpy_transport import rclpy_type_support

    from priorocc_core.config import load_config

    grid_cfg = load_config(args.config).model.grid
    grid = outputs.VoxelGrid.from_grid_config(grid_cfg)
    occ = make_set(tuple(grid_cfg.occ_size))
    hdr = header(1_700_000_000_000_000_000, "base_link")
    builders = {
        "voxels": ("sensor_msgs/msg/PointCloud2", lambda: outputs.voxels_to_pointcloud2(occ, hdr, grid)),
        "markers": ("visualization_msgs/msg/MarkerArray", lambda: outputs.voxels_to_markers(occ, hdr, grid)),
        "bev": ("nav_msgs/msg/OccupancyGrid", lambda: outputs.voxels_to_occupancy_grid(occ, hdr, grid)),
        "diagnostics": ("diagnostic_msgs/msg/DiagnosticArray",
                        lambda: outputs.diagnostics(hdr, "priorocc: occupancy", "priorocc", 0, "ok",
                                                    {f"k{i}": float(i) for i in range(40)})),
    }
    conv = None
    if args.old:
        src = subprocess.run(["git", "show", f"{args.old}:priorocc_ros/transport/rclpy_transport.py"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        path = Path(tempfile.mkdtemp()) / "old_rclpy_transport.py"
        path.write_text(src)
        import importlib.util

        spec = importlib.util.spec_from_file_location("old_rclpy_transport", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        conv = mod.RclpyConverter()

    rclpy.init()
    node = rclpy.create_node("priorocc_bench_outputs")
    rows = []
    total = {"build": 0.0, "cdr": 0.0, "publish": 0.0, "old": 0.0}
    for key, (tn, build) in builders.items():
        pub = node.create_publisher(rclpy_type_support(tn), f"/bench/{key}", 10)
        t_build, msg = timed(build, args.reps)
        t_cdr, data = timed(lambda: serialize(msg, tn), args.reps)
        t_pub, _ = timed(lambda: pub.publish(data), args.reps)
        row = {"output": key, "n": len(occ[occ != 0]), "bytes": len(data), "build": t_build, "cdr": t_cdr,
               "publish": t_pub}
        if conv is not None:
            t_old, _ = timed(lambda: pub.publish(conv.to_rclpy(msg, tn)), max(1, args.reps // 2))
            row["old"] = t_old
            total["old"] += t_old
        for k in ("build", "cdr", "publish"):
            total[k] += row[k]
        rows.append(row)
    node.destroy_node()
    rclpy.shutdown()

    print("| output | CDR bytes | build ms | CDR ms | publish(bytes) ms | rclpy path (CDR + publish) ms |"
          + (" per-field converter ms |" if conv else ""))
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if conv else ""))
    for r in rows:
        print(f"| {r['output']} | {r['bytes']:,} | {r['build']:.1f} | {r['cdr']:.2f} | {r['publish']:.2f} | "
              f"{r['cdr'] + r['publish']:.2f} |" + (f" {r['old']:.0f} |" if conv else ""))
    print(f"| all but overlays | | {total['build']:.1f} | {total['cdr']:.2f} | {total['publish']:.2f} | "
          f"{total['cdr'] + total['publish']:.2f} |" + (f" {total['old']:.0f} |" if conv else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
