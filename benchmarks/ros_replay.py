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

``--compare-temporal R`` (issue 26): node throughput with a temporal model vs the single-frame one.
Two checkpoints of ``--config`` (default FlashOCC M0, random weights, seed 0): as it is, and with
``model.temporal.num_adj`` (``--num-adj``, default 1) and FlashOCC-4D's pre-process net, as
benchmarks/temporal.py builds them. The bag gets ``map -> base_link`` on /tf at every camera stamp
(the ego driving 1.5 m per set), and the temporal replays run with ``motion_frame:=map``, so the
history is held and used from the second set on (``history_resets`` and ``odometry_missing`` 0,
checked). R rounds, each replaying single then temporal (same process, interleaved); per run the
steady throughput (first to last output) and the network time; the ratio temporal / single of the
steady throughput per round and of the medians. Then the network alone, the two models
alternating set by set (``--network-reps`` each): a replay runs one model for a whole bag, so load
drift on a shared machine moves the per-round ratios; alternating sets cancels most of it, and for
an inference-bound node (throughput x network ~ 1) the throughput ratio is the network ratio's
inverse.
"""
from __future__ import annotations

import argparse
import json
import os
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
from priorocc_ros.transport.base import RELIABLE_QOS, SENSOR_DATA_QOS, TF_STATIC_QOS


def real_jpeg_bag(out: Path, n_sets: int, real_root: Path, metres_per_set: float | None = None) -> None:
    """metres_per_set: also write ``map -> base_link`` on /tf at every camera stamp, the ego
    driving straight ahead (odometry for a temporal model, motion_frame:=map)."""
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
                if metres_per_set is not None:
                    ego2map = np.eye(4)
                    ego2map[0, 3] = metres_per_set * (k + i * 8_000_000 / 83_333_333)
                    w.write("/tf", "tf2_msgs/msg/TFMessage", t, new_msg("tf2_msgs/msg/TFMessage", transforms=[
                        matrix_to_transform_stamped(ego2map, "map", "base_link", t)]), RELIABLE_QOS)


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


def model_checkpoints(config: str, num_adj: int, out: Path) -> dict[str, Path]:
    """{'single': config as it is, 'temporal': + num_adj past frames and the pre-process net},
    random weights (seed 0), saved through the real checkpoint code."""
    import torch

    from priorocc_core.checkpoint import save_checkpoint
    from priorocc_core.config import load_config
    from priorocc_core.model import build_model

    paths = {}
    for name, over in (("single", []), ("temporal", [f"model.temporal.num_adj={num_adj}",
                                                      "model.temporal.pre_process.enabled=true"])):
        cfg = load_config(config, over)
        torch.manual_seed(0)
        paths[name] = out / name
        save_checkpoint(paths[name], build_model(cfg.model), cfg, extra_meta={"weights": "random (seed 0)"})
    return paths


def compare_temporal(args, tmp: Path, params: dict) -> list[dict]:
    """R rounds of (single, temporal) replays of the moving-ego bag; one record per replay."""
    import statistics

    from priorocc_core.backends import make_predictor
    from priorocc_ros.replay import replay

    ckpts = model_checkpoints(args.config, args.num_adj, tmp)
    real_jpeg_bag(tmp / "moving", args.sets, Path(args.real_root), metres_per_set=1.5)
    predictors = {k: make_predictor(p, backend=params.get("backend", "auto"), precision=params.get("precision", "auto"),
                                    device=params.get("device", "auto")) for k, p in ckpts.items()}
    for k, p in predictors.items():
        print(f"{k}: {p.choice.as_dict()}", flush=True)
        replay(tmp / "moving", tmp / f"warm_{k}", predictor=p, parameters={**params, "motion_frame": "map"})
    runs = []
    for r in range(args.compare_temporal):
        for name in ("single", "temporal"):
            s = replay(tmp / "moving", tmp / f"out{r}{name}", predictor=predictors[name],
                       parameters={**params, "motion_frame": "map"})
            n = s.node
            if name == "temporal" and (n["history_resets"] or n["odometry_missing"] or n["odometry_invalid"]):
                raise SystemExit(f"the temporal replay did not use its history throughout: {n}")
            steady = float(n["rate_hz"])
            net = s.latency_ms["model.model"]["p50"] / 1e3
            runs.append(dict(round=r, model=name, sets_out=n["sets_out"], sets_dropped=n["sets_dropped"],
                             wall_s=s.wall_s, steady_sets_per_s=steady, network_p50_s=net,
                             throughput_x_network=steady * net, history_resets=n["history_resets"],
                             stage_p50_s={k: v["p50"] / 1e3 for k, v in s.latency_ms.items()}))
            print(f"round {r} {name}: {n['sets_out']} sets out ({n['sets_dropped']} dropped) in {s.wall_s:.1f} s; "
                  f"steady {steady:.4f} sets/s; network p50 {net:.3f} s; throughput x network {steady * net:.3f}",
                  flush=True)
    by = {k: [x for x in runs if x["model"] == k] for k in ("single", "temporal")}
    ratios = [t["steady_sets_per_s"] / s["steady_sets_per_s"] for s, t in zip(by["single"], by["temporal"])]
    med = {k: statistics.median(x["steady_sets_per_s"] for x in v) for k, v in by.items()}
    print(f"throughput temporal / single per round: {', '.join(f'{x:.3f}' for x in ratios)}; "
          f"of the medians {med['temporal'] / med['single']:.3f}", flush=True)
    runs.append(network_interleaved(predictors, Path(args.real_root), args.network_reps))
    return runs


def network_interleaved(predictors: dict, real_root: Path, reps: int) -> dict:
    """The network alone (Predictor.run on a prepared set: what the inference stage runs), the two
    models alternating set by set, ``reps`` sets each, the temporal one chaining its history: load
    changes hit both alike, unlike the replays, which run one model for a whole bag at a time."""
    import statistics
    import time

    import numpy as np

    from priorocc_core.data.real_keyframe import load_real_keyframe

    frame = load_real_keyframe(real_root)
    times: dict[str, list[float]] = {"single": [], "temporal": []}
    history = None
    for k in range(reps + 1):  # the first set of each is a warm-up
        for name, pred in predictors.items():
            ego2map = np.eye(4)
            ego2map[0, 3] = 1.5 * k
            prepared = pred.prepare(frame["images"], frame["K"], frame["cam2ego"], ego2map, 0.5 * k)
            t0 = time.perf_counter()
            out = pred.run(prepared, history if name == "temporal" else None)
            if k:
                times[name].append(time.perf_counter() - t0)
            if name == "temporal":
                history = out.history
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"model": "network_interleaved", "reps": reps, "median_s": med, "times_s": times,
           "network_ratio_temporal_over_single": med["temporal"] / med["single"],
           "implied_throughput_ratio": med["single"] / med["temporal"]}
    print(f"network alone, interleaved, {reps} sets each: single {med['single']:.3f} s, temporal "
          f"{med['temporal']:.3f} s (x{res['network_ratio_temporal_over_single']:.3f}); throughput ratio it implies for "
          f"an inference-bound node {res['implied_throughput_ratio']:.3f}", flush=True)
    return res


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
    ap.add_argument("--compare-temporal", type=int, default=0, metavar="ROUNDS",
                    help="replay ROUNDS x (single-frame, temporal) models of --config on a moving-ego bag")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "training" / "configs"
                                            / "flashocc-r50-m0.yaml"), help="--compare-temporal's model config")
    ap.add_argument("--num-adj", type=int, default=1, help="--compare-temporal: past frames of the temporal model")
    ap.add_argument("--network-reps", type=int, default=8,
                    help="--compare-temporal: sets per model of the interleaved network timing")
    args = ap.parse_args(argv)
    from priorocc_ros.occupancy_node import _parse_param
    from priorocc_ros.replay import replay
    from benchmarks.inputs import make_tiny_checkpoint

    with tempfile.TemporaryDirectory(prefix="priorocc_bench_") as tmp:
        tmp = Path(tmp)
        if args.compare_temporal:
            import platform

            import torch

            from priorocc_core.autoselect import cpu_flags, cpu_name

            params = dict(_parse_param(p) for p in args.param)
            runs = compare_temporal(args, tmp, params)
            if args.json:
                meta = {"command": "python -m benchmarks.ros_replay " + " ".join(sys.argv[1:] if argv is None else argv),
                        "cpu": cpu_name(), "cpu_flags": sorted(cpu_flags() & {"avx2", "fma", "avx512f", "avx512_bf16",
                                                                               "avx512_vnni", "amx_bf16"}),
                        "torch": torch.__version__, "python": platform.python_version(), "loadavg": os.getloadavg()}
                atomic_write_bytes(args.json, json.dumps({"meta": meta, "runs": runs}, indent=2).encode())
            return 0
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
