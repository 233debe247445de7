"""The whole frame, JPEG bytes to serialised output messages, through the node's own pipeline
(``priorocc_ros.pipeline.OccupancyPipeline``): section ``frame`` of benchmarks/run.py.

Per backend / precision (any make_predictor arguments, int8 included), three preprocessing
modes (``MODES``): ``exact`` (full decode, FlashOCC's BICUBIC resize then crop), ``fused`` (full
decode, resize + crop in one call: ``preprocess:=fast``) and ``fast`` (DCT-scaled decode at the
network's size, ``jpeg_reduce:=0``, and fused), each one's voxel agreement with ``exact``; per
stage medians: decode, preprocess, network, postprocess, output building (PointCloud2 +
MarkerArray + OccupancyGrid, no overlays) and CDR serialisation; ``frame_over_network`` = the sum / network (one set at a
time: the node's ``pipelined:=false``). Output building is also timed on a fixed volume of the
real Occ3D labels (39,092 occupied voxels) or, without them, 40,000 random occupied voxels,
against the network time of the same run; peak RSS.

``pipelined`` (what the node runs by default): ``sets`` sets through the node's three stages in
their own threads (``priorocc_ros.runner.InferenceRunner``; the pipeline calls that
``priorocc_ros.node.stages`` makes: decode + preprocessing + plan, network, messages + CDR), the
entry blocking (nothing dropped); per-set wall time in steady state = (last set out - first set out) /
(sets - 1). Against it, in the same worker and interleaved round by round, the network alone on
the same prepared input (``Predictor.run``, ``sets`` calls, median). ``frame_over_network`` of a
round = steady per-set time / that round's network-alone median; the result is the median over
``rounds``, each round's load average kept. Each stage's thread CPU time per set is recorded,
so the overhead can be told apart from the machine's load.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from priorocc_core.jpeg import PREPROCESS_MODES

ROOT = Path(__file__).resolve().parents[1]
OCC3D_REAL = ROOT.parent / "shared" / "data" / "occ3d-real"


# preprocessing modes (exact, fused, fast): the node's parameters jpeg_reduce and preprocess, named in core
MODES = PREPROCESS_MODES


def jpeg_messages(frame: dict) -> list:
    """The frame's JPEGs as sensor_msgs/CompressedImage messages (what the node receives)."""
    from priorocc_ros.msgs import header, new_msg

    return [new_msg("sensor_msgs/msg/CompressedImage", header=header(0, "cam"), format="jpeg",
                    data=np.frombuffer(j, np.uint8)) for j in frame["jpegs"]]


def mode_pipeline(pred, mode: str):
    """The node's pipeline around ``pred`` in preprocessing ``mode`` of :data:`MODES`, overlays off
    (sets the predictor's ``fused_resize``)."""
    from priorocc_ros.pipeline import OccupancyPipeline, PipelineOptions

    pred.fused_resize = MODES[mode]["fused_resize"]
    return OccupancyPipeline(pred, pred.cameras, PipelineOptions(publish_overlay=False,
                                                                 jpeg_reduce=MODES[mode]["jpeg_reduce"]))


def fixed_volume(occ_size: tuple[int, int, int], n: int = 40_000, seed: int = 0) -> tuple[np.ndarray, str]:
    """On the model's grid ``occ_size``: the real Occ3D labels when present, else ``n`` random occupied
    voxels; -> (occ, what)."""
    files = sorted(OCC3D_REAL.glob("*/labels.npz"))
    if files:
        from priorocc_core.data.io import load_occ_gt

        occ = np.asarray(load_occ_gt(files[0], tuple(occ_size))["semantics"]).astype(np.uint8)
        return occ, f"real Occ3D labels {files[0].parent.name}"
    from priorocc_core.classes import FREE, NUM_OCC_CLASSES

    rng = np.random.default_rng(seed)
    occ = np.full(tuple(occ_size), FREE, np.uint8)
    occ.reshape(-1)[rng.choice(occ.size, n, replace=False)] = rng.integers(0, NUM_OCC_CLASSES - 1, n)
    return occ, f"{n} random occupied voxels"


def time_outputs(pipe, occ: np.ndarray, repeats: int) -> dict:
    """Median seconds to build and to serialise the voxel, marker and BEV messages of ``occ``."""
    from priorocc_ros import outputs
    from priorocc_ros.msgs import header, serialize

    grid = pipe.grid
    build, ser = {}, {}
    for name, fn in (("voxels", lambda: outputs.voxels_to_pointcloud2(occ, header(0, "base_link"), grid)),
                     ("markers", lambda: outputs.voxels_to_markers(occ, header(0, "base_link"), grid)),
                     ("bev", lambda: outputs.voxels_to_occupancy_grid(occ, header(0, "base_link"), grid))):
        msg = fn()
        serialize(msg)  # rosbags generates its serialiser on first use
        tb, ts = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            msg = fn()
            tb.append(time.perf_counter() - t)
            t = time.perf_counter()
            serialize(msg)
            ts.append(time.perf_counter() - t)
        build[name], ser[name] = statistics.median(tb), statistics.median(ts)
    return {"build_s": build, "serialize_s": ser, "build_total_s": sum(build.values()),
            "build_and_serialize_total_s": sum(build.values()) + sum(ser.values()),
            "occupied": int(outputs.occupied_mask(occ).sum())}


def time_pipelined(pipe, msgs: list, K: np.ndarray, cam2ego: np.ndarray, sets: int, rounds: int) -> dict:
    """The pipelined frame (see the module docstring) against the network alone, ``rounds``
    interleaved rounds of ``sets`` sets each -> per round and median figures (seconds)."""
    import os
    import threading

    from priorocc_ros.msgs import serialize
    from priorocc_ros.runner import InferenceRunner

    if sets < 2:
        raise ValueError(f"time_pipelined: sets must be >= 2 (steady state needs two outputs), got {sets}")
    cpu: dict[str, list[float]] = {}
    out_t: list[float] = []
    net_in: list[float] = []
    lock = threading.Lock()

    def timed(name, fn):
        def stage(x):
            c = time.thread_time()
            r = fn(x)
            with lock:
                cpu.setdefault(name, []).append(time.thread_time() - c)
            return r
        return stage

    def decode(i):  # the node's decode stage: images, then preprocessing + pooling plan
        imgs, Kd = pipe.decode(msgs, K)
        return imgs, Kd, pipe.prepare(imgs, Kd, cam2ego)

    def infer(x):
        imgs, Kd, prepared = x
        return imgs, Kd, pipe.predict(imgs, Kd, cam2ego, prepared)

    def publish(x):  # messages + their CDR bytes (what a transport publishes)
        imgs, Kd, pred = x
        for m in pipe.build(0, pred, imgs, Kd, cam2ego).values():
            serialize(m)
        out_t.append(time.perf_counter())
        net_in.append(pred.timings["model"])

    stages = [timed("decode_prepare", decode), timed("network", infer), timed("build_serialize", publish)]
    prepared = pipe.prepare(*pipe.decode(msgs, K), cam2ego)
    rows = []
    for _ in range(rounds):
        load = os.getloadavg()[0]
        c = time.process_time()
        net = statistics.median(pipe.predictor.run(prepared).timings["model"] for _ in range(sets))
        net_cpu = (time.process_time() - c) / sets  # every thread of this process: the runtime's workers
        cpu.clear()
        out_t.clear()
        net_in.clear()
        runner = InferenceRunner(stages, queue_size=1, block=True, name="frame-bench")
        t0 = time.perf_counter()
        for i in range(sets):
            runner.submit(i)
        runner.wait_idle()
        runner.stop()
        if len(out_t) != sets or runner.stats.errors:
            raise RuntimeError(f"pipelined frame: {len(out_t)} of {sets} sets came out ({runner.stats.as_dict()})")
        steady = (out_t[-1] - out_t[0]) / (sets - 1)
        rows.append({"loadavg_1min": [load, os.getloadavg()[0]], "network_alone_s": net, "steady_per_set_s": steady,
                     "wall_per_set_s": (out_t[-1] - t0) / sets, "network_in_pipeline_s": statistics.median(net_in),
                     "cpu_per_set_s": {k: statistics.median(v) for k, v in cpu.items()}, "network_alone_cpu_s": net_cpu,
                     "frame_over_network": steady / net})
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    overhead = statistics.median(r["cpu_per_set_s"]["decode_prepare"] + r["cpu_per_set_s"]["build_serialize"]
                                 for r in rows)
    return {"sets": sets, "rounds": rows, "frame_over_network": med("frame_over_network"),
            "steady_per_set_s": med("steady_per_set_s"), "network_alone_s": med("network_alone_s"),
            "network_in_pipeline_s": med("network_in_pipeline_s"), "overhead_cpu_per_set_s": overhead,
            "network_alone_cpu_s": med("network_alone_cpu_s"),
            # CPU seconds of a whole set / of the network alone: what the wall ratio tends to when
            # the cores are the bottleneck (a loaded machine, or the network using every core)
            "cpu_frame_over_network": 1.0 + overhead / med("network_alone_cpu_s")}


def work_frame(spec: dict) -> dict:
    import resource

    from benchmarks.inputs import frame_inputs
    from benchmarks.measure import SAME_PRECISION_PEAK, matmul_peaks
    from priorocc_core.backends import make_predictor
    from priorocc_ros.msgs import serialize

    peaks = matmul_peaks(spec["matmul"], spec["peak_repeats"])
    try:
        from benchmarks.precision import openvino_matmul_rates

        ov_rates = openvino_matmul_rates(n=1024, repeats=3)
    except ImportError:
        ov_rates = None
    pred = make_predictor(spec["checkpoint"], spec["backend"], spec["precision"], **spec.get("opts", {}))
    frame = frame_inputs(spec["frame"])
    msgs = jpeg_messages(frame)
    reps = spec["repeats"]
    res: dict = {"backend": pred.choice.backend, "precision": pred.choice.precision, "label": spec["label"],
                 "config": pred.cfg.name, "peaks": peaks, "openvino_matmul": ov_rates, "modes": {}}
    occs = {}
    for mode in spec.get("modes", MODES):
        pipe = mode_pipeline(pred, mode)
        for _ in range(spec.get("warmup", 3)):
            r = pipe.run(0, msgs, frame["K"], frame["cam2ego"])
        recs = []
        for _ in range(reps):
            r = pipe.run(0, msgs, frame["K"], frame["cam2ego"])
            t = time.perf_counter()
            outputs_bytes = [len(serialize(m)) for m in r.messages.values()]
            recs.append(dict(r.timings, serialize=time.perf_counter() - t))
        med = {k: statistics.median(x[k] for x in recs) for k in recs[0]}
        net = med["model.model"]
        whole = med["decode"] + med["model"] + med["build"] + med["serialize"]
        occs[mode] = pipe.predictor.predict(*pipe.decode(msgs, frame["K"]), frame["cam2ego"]).occupancy
        res["modes"][mode] = {"median_s": med, "network_s": net, "frame_s": whole, "frame_over_network": whole / net,
                              "decoded_hw": list(pipe.decode(msgs, frame["K"])[0][0].shape[:2]),
                              "output_bytes": sum(outputs_bytes), "occupied": r.num_occupied}
        res["modes"][mode]["pipelined"] = time_pipelined(pipe, msgs, frame["K"], frame["cam2ego"],
                                                         spec.get("sets", 10), spec.get("rounds", 2))
    for mode in occs:
        res["modes"][mode]["voxel_agreement_with_exact"] = float((occs[mode] == occs["exact"]).mean()) \
            if "exact" in occs else None
    if "fast" in occs and "exact" in occs:
        res["fast_vs_exact_voxel_agreement"] = res["modes"]["fast"]["voxel_agreement_with_exact"]
    vol, what = fixed_volume(pred.cfg.model.grid.occ_size)
    res["outputs_fixed_volume"] = dict(time_outputs(pipe, vol, reps), volume=what)
    best_net = min(m["network_s"] for m in res["modes"].values())
    res["outputs_fixed_volume"]["build_fraction_of_network"] = res["outputs_fixed_volume"]["build_total_s"] / best_net
    res["outputs_fixed_volume"]["build_and_serialize_fraction_of_network"] = (
        res["outputs_fixed_volume"]["build_and_serialize_total_s"] / best_net)
    res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    gflop = network_gflop(spec["checkpoint"], frame)
    res["network_gflop"] = gflop
    res["achieved_gflops_per_s"] = gflop / best_net
    res["fraction_of_torch_matmul"] = {k: res["achieved_gflops_per_s"] / peaks[f"{k}_gflops"] for k in ("fp32", "bf16")}
    if ov_rates:
        # again after the timings, the higher kept: one short measurement on a shared machine can
        # fall into a busy moment and put a path above its peak
        after = openvino_matmul_rates(n=1024, repeats=3)
        ov_rates = {k: max(v, after[k]) if k.endswith("_gflops") else v for k, v in ov_rates.items()}
        res["openvino_matmul"] = ov_rates
        res["fraction_of_openvino_matmul"] = {k: res["achieved_gflops_per_s"] / ov_rates[f"{k}_gflops"]
                                              for k in ("f32", "bf16", "int8")}
    what, prec = SAME_PRECISION_PEAK.get((res["backend"], res["precision"]), (None, None))
    peak = ((ov_rates or {}).get(f"{prec}_gflops") if what and what.startswith("openvino")
            else peaks.get(f"{prec}_gflops") if what else None)
    res["fraction_of_peak"] = {"peak": f"{what} {prec}", "peak_gflops_per_s": peak,
                               "fraction": res["achieved_gflops_per_s"] / peak if peak else None}
    return res


def network_gflop(checkpoint, frame) -> float:
    """FLOPs of one network call (convolutions and matrix products, 2 per multiply-add), counted
    by torch's FlopCounterMode on the fp32 model (after the peak RSS was read)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from priorocc_core.checkpoint import load_checkpoint
    from priorocc_core.inference import preprocess
    from priorocc_core.model.plan import PoolingPlanner

    model, cfg, _ = load_checkpoint(checkpoint)
    batch = preprocess(frame["images"], frame["K"], frame["cam2ego"], cfg)
    plan = PoolingPlanner.from_config(cfg.model)(batch["cam2ego"], batch["K"], batch["img_aug"], batch["bev_aug"])
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.eval()({"imgs": batch["imgs"]}, plan)
    return fc.get_total_flops() / 1e9
