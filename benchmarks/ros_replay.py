"""Replay benchmark at 1600x900 JPEG: python -m benchmarks.ros_replay --checkpoint CKPT

Builds a bag of ``--sets`` six-camera sets at 12 Hz from the real nuScenes keyframe's JPEG
files (../shared/data/nuscenes-real; bytes unchanged, new stamps), replays it with the given
checkpoint (default: a freshly initialised tiny model) and prints the replay summary
(throughput, per-stage latency percentiles) as text and JSON.

``--compare-pipelined R``: R rounds, each replaying the bag with ``pipelined:=false`` then
``pipelined:=true`` (same predictor, same process, interleaved so that load changes hit both);
per run: sets/s (whole replay, and steady: first to last output), the median network time of its
sets (``model.model``: network + postprocess) and steady throughput x network time (1.0 = the
network never waits for the other stages).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.inputs import REAL_ROOT
from priorocc_core.atomic import atomic_write_bytes
from priorocc_core.classes import CAMERAS
from priorocc_ros.bagio import AtomicBagWriter
from priorocc_ros.calibration import make_camera_info, matrix_to_transform_stamped
from priorocc_ros.msgs import header, new_msg
from priorocc_ros.transport.base import SENSOR_DATA_QOS, TF_STATIC_QOS


def real_jpeg_bag(out: Path, n_sets: int, real_root: Path) -> None:
    from nuscenes.nuscenes import NuScenes

    from priorocc_core.geometry import transform_from_quat

    nusc = NuScenes(version="v1.0-mini", dataroot=str(real_root), verbose=False)
    sample = nusc.sample[0]
    cams = []
    for cam in CAMERAS:
        sd = nusc.get("sample_data", sample["data"][cam])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        cams.append((cam, (real_root / sd["filename"]).read_bytes(), np.asarray(cs["camera_intrinsic"]),
                     transform_from_quat(cs["translation"], cs["rotation"]), sd["width"], sd["height"]))
    t0 = 1_700_000_000_000_000_000
    with AtomicBagWriter(out) as w:
        w.write("/tf_static", "tf2_msgs/msg/TFMessage", t0, new_msg("tf2_msgs/msg/TFMessage", transforms=[
            matrix_to_transform_stamped(c2e, "base_link", cam, t0) for cam, _, _, c2e, _, _ in cams]), TF_STATIC_QOS)
        for k in range(n_sets):
            for i, (cam, jpeg, K, _, wd, ht) in enumerate(cams):
                t = t0 + k * 83_333_333 + i * 8_000_000
                hdr = header(t, cam)
                w.write(f"/{cam}/camera_info", "sensor_msgs/msg/CameraInfo", t, make_camera_info(K, wd, ht, hdr),
                        SENSOR_DATA_QOS)
                w.write(f"/{cam}/image_rect_compressed", "sensor_msgs/msg/CompressedImage", t,
                        new_msg("sensor_msgs/msg/CompressedImage", header=hdr, format="jpeg",
                                data=np.frombuffer(jpeg, np.uint8)), SENSOR_DATA_QOS)


class _GtOccupancy:
    """Runs the wrapped predictor, then swaps its occupancy for a ground-truth volume."""

    def __init__(self, predictor, npz):
        from priorocc_core.data.io import load_occ_gt

        self.p = predictor
        self.cfg = predictor.cfg
        self.cameras = predictor.cameras
        self.occ = load_occ_gt(npz)["semantics"]

    def predict(self, images, K, cam2ego):
        pred = self.p.predict(images, K, cam2ego)
        pred.occupancy = self.occ.copy()
        return pred


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ros_replay")
    ap.add_argument("--checkpoint", default=None, help="default: a tiny model (training/configs/tiny.yaml)")
    ap.add_argument("--sets", type=int, default=20)
    ap.add_argument("--real-root", default=str(REAL_ROOT))
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE")
    ap.add_argument("--json", default=None)
    ap.add_argument("--gt-occupancy", default=None, metavar="LABELS_NPZ",
                    help="run the model but build the outputs from this Occ3D labels.npz (a realistic occupancy; "
                         "an untrained model marks nearly every voxel occupied)")
    ap.add_argument("--compare-pipelined", type=int, default=0, metavar="ROUNDS",
                    help="replay ROUNDS x (pipelined:=false, pipelined:=true) and report throughput x network time")
    args = ap.parse_args(argv)
    from priorocc_ros.occupancy_node import _parse_param
    from priorocc_ros.replay import replay
    from benchmarks.inputs import make_tiny_checkpoint

    with tempfile.TemporaryDirectory(prefix="priorocc_bench_") as tmp:
        tmp = Path(tmp)
        ckpt = args.checkpoint or str(make_tiny_checkpoint(tmp / "tiny"))
        real_jpeg_bag(tmp / "in", args.sets, Path(args.real_root))
        params = {"checkpoint": ckpt, **dict(_parse_param(p) for p in args.param)}
        from priorocc_core.backends import make_predictor

        # what the node would run: -p backend:= / precision:= / device:= (default auto, as the node)
        predictor = make_predictor(ckpt, backend=params.get("backend", "auto"), precision=params.get("precision", "auto"),
                                   device=params.get("device", "auto"))
        print(f"predictor: {predictor.choice.as_dict()}", flush=True)
        if args.gt_occupancy:
            predictor = _GtOccupancy(predictor, args.gt_occupancy)
        if args.compare_pipelined:
            replay(tmp / "in", tmp / "warm", predictor=predictor, parameters=params)  # warm-up (graph caches)
            runs = []
            for r in range(args.compare_pipelined):
                for pipelined in (False, True):
                    s = replay(tmp / "in", tmp / f"out{r}{pipelined}", predictor=predictor,
                               parameters={**params, "pipelined": pipelined})
                    net = s.latency_ms["model.model"]["p50"] / 1e3
                    steady = float(s.node["rate_hz"])  # (outputs - 1) / (last output - first output)
                    runs.append(dict(round=r, pipelined=pipelined, sets_out=s.node["sets_out"], wall_s=s.wall_s,
                                     sets_per_s=s.sets_per_s, steady_sets_per_s=steady, network_p50_s=net,
                                     throughput_x_network=steady * net,
                                     stage_p50_s={k: v["p50"] / 1e3 for k, v in s.latency_ms.items()}))
                    print(f"round {r} pipelined={pipelined}: {s.node['sets_out']} sets in {s.wall_s:.2f} s "
                          f"({s.sets_per_s:.3f} sets/s incl. start-up); steady {steady:.3f} sets/s (first to last "
                          f"output); network p50 {net:.3f} s; steady throughput x network {steady * net:.3f}",
                          flush=True)
            if args.json:
                atomic_write_bytes(args.json, json.dumps(runs, indent=2).encode())
            return 0
        s = replay(tmp / "in", tmp / "out", predictor=predictor, parameters=params)
    print(s.text())
    if args.json:
        atomic_write_bytes(args.json, json.dumps(s.as_dict(), indent=2).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
