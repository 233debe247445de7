"""Temporal M0 (num_adj past frames, sequential mode) vs single-frame M0: network time per frame
and the history's memory, one run, the two models interleaved frame by frame.

    .venv/bin/python benchmarks/temporal.py --threads 2 --frames 6 --out /tmp/temporal.json

Both models are built from training/configs/flashocc-r50-m0.yaml (random weights: the time does
not depend on them); the temporal one adds model.temporal (num_adj, FlashOCC-4D's pre-process
net). The pooling plan is computed once before timing (a fixed rig, as the Predictor does); the
timed call is ``model(batch, plan)`` vs ``model(batch, plan, history=h)`` under torch.no_grad, fp32
eager. The first frame of each model is a warm-up and not counted. On a loaded machine whole
frames are noisy, so the BEV part (the only part that differs: pre-process, warp, the encoder's
wider first layer) is also timed alone with many interleaved repetitions, and the frame ratio
derived from it is reported too. Speed figures go to BENCHMARKS.md, never into tests.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from priorocc_core.autoselect import cpu_flags, cpu_name  # noqa: E402
from priorocc_core.config import load_config  # noqa: E402
from priorocc_core.geometry import surround_rig  # noqa: E402
from priorocc_core.model import build_model  # noqa: E402
from priorocc_core.model.temporal import fuse_past, history_inputs, reset_history  # noqa: E402


def pose(t: int) -> torch.Tensor:
    e = torch.eye(4)
    e[0, 3] = 1.5 * t  # 1.5 m per frame
    return e[None]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "training" / "configs" / "flashocc-r50-m0.yaml"))
    ap.add_argument("--num-adj", type=int, default=1)
    ap.add_argument("--frames", type=int, default=6, help="frames per model, the first one a warm-up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bev-reps", type=int, default=10, help="repetitions of the BEV-part timing")
    ap.add_argument("--out", help="JSON file to write")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    single_cfg = load_config(a.config)
    temporal_cfg = load_config(a.config, [f"model.temporal.num_adj={a.num_adj}", "model.temporal.pre_process.enabled=true"])
    torch.manual_seed(0)
    single, temporal = build_model(single_cfg.model).eval(), build_model(temporal_cfg.model).eval()
    n = len(single_cfg.model.image.cameras)
    h, w = single_cfg.model.image.input_size
    cam2ego, K = surround_rig(n, (h, w), focal=w * 0.9, height=1.5)
    geometry = dict(cam2ego=cam2ego[None], K=K[None], img_aug=torch.eye(3).repeat(1, n, 1, 1), bev_aug=torch.eye(4)[None])
    plan = single.planner(*geometry.values())
    g = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"single": [], "temporal": [], "bev_single": [], "bev_temporal": []}
    hist = reset_history()
    load_before = os.getloadavg()
    with torch.no_grad():
        for t in range(a.frames):
            imgs = torch.randn(1, n, 3, h, w, generator=g)
            t0 = time.perf_counter()
            single({"imgs": imgs}, plan)
            t1 = time.perf_counter()
            out = temporal({"imgs": imgs, "ego2global": pose(t), "bev_aug": geometry["bev_aug"]}, plan, history=hist)
            t2 = time.perf_counter()
            hist = out["history"]
            if t:
                times["single"].append(t1 - t0)
                times["temporal"].append(t2 - t1)
            print(f"frame {t}: single {t1 - t0:.3f} s, temporal {t2 - t1:.3f} s", flush=True)
        # the BEV part alone (what the temporal model adds is all here), many interleaved repetitions:
        # single: BEV encoder + head; temporal: pre-process + warp of the history + BEV encoder + head
        bev = torch.randn(temporal.bev_shape(1), generator=g)
        prev, valid, curr2adj = history_inputs(hist, temporal.history_key(), a.num_adj, tuple(bev.shape), pose(a.frames),
                                               geometry["bev_aug"])
        lower_step = temporal.bev_lower_step
        for r in range(a.bev_reps + 1):
            t0 = time.perf_counter()
            single.bev_to_logits(bev)
            t1 = time.perf_counter()
            temporal.bev_to_logits(fuse_past(temporal.pre_process_net(bev)[0], prev, valid, curr2adj, *lower_step))
            t2 = time.perf_counter()
            if r:
                times["bev_single"].append(t1 - t0)
                times["bev_temporal"].append(t2 - t1)
    load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in times.items()}
    # the frame ratio from the BEV part: the image encoder and lift-splat are the same in both models
    extra = med["bev_temporal"] - med["bev_single"]
    res = {
        "command": "benchmarks/temporal.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "cpu": cpu_name(), "cpu_flags": sorted(cpu_flags() & {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"}),
        "torch": torch.__version__, "python": platform.python_version(), "threads": a.threads,
        "config": Path(a.config).name, "num_adj": a.num_adj, "frames_timed": a.frames - 1,
        "input": [n, 3, h, w], "median_s": med, "ratio_temporal_over_single": med["temporal"] / med["single"],
        "bev_part_extra_s": extra, "ratio_from_bev_part": (med["single"] + extra) / med["single"],
        "times_s": times, "loadavg_before_after": [load_before, load_after], "history_bytes": hist.nbytes, "history_frames": len(hist),
        "history_feature_bytes": sum(f.numel() * f.element_size() for f in hist.feats),
    }
    print(json.dumps({k: v for k, v in res.items() if k != "times_s"}, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
