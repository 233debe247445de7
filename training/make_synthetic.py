#!/usr/bin/env python3
"""Write a synthetic nuScenes-format world (dataroot + Occ3D gts + exact 2D labels).

    python training/make_synthetic.py --out DIR --scenes N --keyframes K --seed S [--width 1600 --height 900]
        [--ego-speed M_PER_S] [--turn-rate DEG_PER_S] [--no-moving-objects]

The result loads with ``NuScenes(version=<--version>, dataroot=DIR)``; see docs/data.md.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from priorocc_core import cli  # noqa: E402

from priorocc_core.data.synthetic import RIG_PRESETS, SYNTHETIC_VERSION, generate_world, rig_preset  # noqa: E402


def main(argv=None) -> int:
    return cli.run("make_synthetic.py", _main, argv)


def _main(argv) -> int:
    ap = argparse.ArgumentParser(prog="make_synthetic.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_debug_arg(ap)
    ap.add_argument("--out", required=True, help="output dataroot")
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--keyframes", type=int, default=10, help="keyframes per scene (0.5 s apart)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--version", default=SYNTHETIC_VERSION,
                    help=f"nuScenes table folder name to write (default {SYNTHETIC_VERSION}; readers take any: data.version auto)")
    ap.add_argument("--rig", default=None, help="real nuScenes dataroot to take the rig from (default ../shared/data/nuscenes-real, built-in numbers if absent)")
    ap.add_argument("--rig-preset", default="nuscenes", choices=RIG_PRESETS,
                    help="cameras of the world: nuscenes (six, the real rig), robot4 (four 100-degree cameras 0.8 m "
                         "high), front1 (the front camera only); train with model.image.cameras set to them")
    ap.add_argument("--jpeg-quality", type=int, default=92)
    ap.add_argument("--lidar-azimuth", type=int, default=1084, help="lidar azimuth steps per revolution (32 beams)")
    ap.add_argument("--ego-speed", type=float, default=None,
                    help="ego speed in m/s along its path (default: drawn per scene, 4.0-5.6 m/s)")
    ap.add_argument("--turn-rate", type=float, default=0.0,
                    help="ego yaw rate in deg/s, > 0 turns left, on an arc whose chord is the lane (default 0: straight)")
    ap.add_argument("--no-moving-objects", dest="moving_objects", action="store_false",
                    help="leave out every moving object (traffic, cyclists, walking pedestrians)")
    a = ap.parse_args(argv)
    if a.scenes < 1 or a.keyframes < 1 or a.width < 16 or a.height < 16:
        ap.error("--scenes and --keyframes must be >= 1, --width/--height >= 16")
    if a.ego_speed is not None and not (math.isfinite(a.ego_speed) and a.ego_speed >= 0):
        ap.error(f"--ego-speed {a.ego_speed}: expected a finite speed >= 0 m/s")
    if not math.isfinite(a.turn_rate):
        ap.error(f"--turn-rate {a.turn_rate}: expected a finite yaw rate in deg/s")
    if a.rig and not (Path(a.rig) / "v1.0-mini" / "sample.json").is_file():
        raise SystemExit(f"--rig {a.rig}: no nuScenes v1.0-mini tables there (expected {a.rig}/v1.0-mini/sample.json); "
                         "leave --rig out for the built-in copy of the real rig")
    summary = generate_world(a.out, a.scenes, a.keyframes, a.seed, (a.height, a.width), a.version,
                             rig=rig_preset(a.rig_preset, a.rig), jpeg_quality=a.jpeg_quality,
                             lidar_azimuth=a.lidar_azimuth, ego_speed=a.ego_speed, turn_rate=a.turn_rate,
                             moving_objects=a.moving_objects)
    print(json.dumps({k: summary[k] for k in ("out", "version", "scenes", "keyframes", "images", "seconds", "timing",
                                              "rig")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
