"""The whole frame, JPEG bytes to serialised output messages, through the node's own pipeline
(``priorocc_ros.pipeline.OccupancyPipeline``): section ``frame`` of benchmarks/run.py.

Per backend / precision (any make_predictor arguments, int8 included), both preprocessing modes:
``exact`` (full decode, FlashOCC's BICUBIC resize then crop) and ``fast`` (DCT-scaled decode at
the network's size, ``jpeg_reduce=0``, resize + crop fused); per stage medians: decode,
preprocess, network, postprocess, output building (PointCloud2 + MarkerArray + OccupancyGrid,
no overlays) and CDR serialisation; ``frame_over_network`` = the sum / network. Output building
is also timed on a fixed volume of the real Occ3D labels (39,092 occupied voxels) or, without
them, 40,000 random occupied voxels, against the network time of the same run. Voxel agreement
fast vs exact on the same frame; peak RSS.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OCC3D_REAL = ROOT.parent / "shared" / "data" / "occ3d-real"


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


def work_frame(spec: dict) -> dict:
    import resource

    from benchmarks.inputs import frame_inputs
    from benchmarks.measure import matmul_peaks
    from priorocc_core.backends import make_predictor
    from priorocc_ros.msgs import header, new_msg, serialize
    from priorocc_ros.pipeline import OccupancyPipeline, PipelineOptions

    peaks = matmul_peaks(spec["matmul"], spec["peak_repeats"])
    try:
        from benchmarks.precision import openvino_matmul_rates

        ov_rates = openvino_matmul_rates(n=1024, repeats=3)
    except ImportError:
        ov_rates = None
    pred = make_predictor(spec["checkpoint"], spec["backend"], spec["precision"], **spec.get("opts", {}))
    frame = frame_inputs(spec["frame"])
    msgs = [new_msg("sensor_msgs/msg/CompressedImage", header=header(0, "cam"), format="jpeg",
                    data=np.frombuffer(j, np.uint8)) for j in frame["jpegs"]]
    reps = spec["repeats"]
    res: dict = {"backend": pred.choice.backend, "precision": pred.choice.precision, "label": spec["label"],
                 "config": pred.cfg.name, "peaks": peaks, "openvino_matmul": ov_rates, "modes": {}}
    occs = {}
    for mode in ("exact", "fast"):
        opts = PipelineOptions(publish_overlay=False, jpeg_reduce=0 if mode == "fast" else 1)
        pred.fused_resize = mode == "fast"
        pipe = OccupancyPipeline(pred, pred.cameras, opts)
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
    res["fast_vs_exact_voxel_agreement"] = float((occs["fast"] == occs["exact"]).mean())
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
        res["fraction_of_openvino_matmul"] = {k: res["achieved_gflops_per_s"] / ov_rates[f"{k}_gflops"]
                                              for k in ("f32", "bf16", "int8")}
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
