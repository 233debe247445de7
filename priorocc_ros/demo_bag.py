"""Regenerate ``bags/demo``: a small synthetic demo bag (python -m priorocc_ros.demo_bag).

Synthetic world (priorocc_core.data.synthetic.generate_world, fixed seed) -> nuScenes-format
dataroot in a temporary folder -> ``nuscenes_to_bag`` (MCAP, cameras + TF only by default, to stay
small). Keyframes only: the synthetic world has no sweeps, so cameras run at 2 Hz.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m priorocc_ros.demo_bag", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "bags" / "demo"))
    ap.add_argument("--keyframes", type=int, default=6)
    ap.add_argument("--height", type=int, default=450)
    ap.add_argument("--width", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lidar", action="store_true", help="include LIDAR_TOP (larger bag)")
    ap.add_argument("--occ-gt", action="store_true", help="include /occ_gt/voxels (about 4.7 MB per keyframe)")
    ap.add_argument("--overwrite", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from nuscenes.nuscenes import NuScenes

    from priorocc_core.data.synthetic import generate_world
    from priorocc_ros.nuscenes_to_bag import NuScenesBagConverter

    with tempfile.TemporaryDirectory(prefix="priorocc_demo_world_") as tmp:
        generate_world(tmp, n_scenes=1, n_keyframes=args.keyframes, seed=args.seed, hw=(args.height, args.width),
                       version="v1.0-mini", progress=False)
        nusc = NuScenes(version="v1.0-mini", dataroot=tmp, verbose=False)
        stats = NuScenesBagConverter(nusc, occ_root=tmp if args.occ_gt else None, with_lidar=args.lidar).convert(
            args.out, overwrite=args.overwrite, progress=False)
    size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    print(f"wrote {args.out}: {stats}, {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
