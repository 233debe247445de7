#!/usr/bin/env python3
"""Injector ablation on the synthetic world: the same config with and without the SemanticInjector.

    python training/ablation.py --out work_dirs/ablation [--config training/configs/ablation-small.yaml]
        [--seeds 0 1] [--iters 300] [--scenes 2] [--keyframes 10] [--val-scenes 1] [--world-seed 7]
        [--labels world|projection] [--extra-variant NAME:KEY=VAL,KEY=VAL ...] [--eval-samples N]

Steps (each skipped when its output already exists, so an interrupted ablation continues):
1. training world  : training/make_synthetic.py --out OUT/world_train --seed WORLD_SEED
   validation world: training/make_synthetic.py --out OUT/world_val   --seed WORLD_SEED + 1000
   (different seeds: the validation scenes are never seen in training).
2. 2D labels: ``world`` uses the exact labels the generator writes (seg_2d_labels/);
   ``projection`` regenerates them from the Occ3D ground truth with
   training/generate_2d_seg_labels.py (the source that needs no network).
3. For every seed and variant (``injector``: model.injector.enabled=true, ``no_injector``: false,
   plus any --extra-variant), train.py with the same budget (--iters iterations), then
   evaluate.py on the validation world.
4. OUT/RESULTS.md (and results.json): one row per run (mIoU, RayIoU, 2D mIoU, wall time), the
   mean +- std per variant, the per-class IoU per variant, and the exact commands that ran.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from priorocc_core.classes import OCC_CLASSES  # noqa: E402


def run(cmd: list[str], log: Path, commands: list[str], env=None) -> float:
    """Run a command, tee its output to ``log``, record it; returns wall seconds."""
    line = " ".join(shlex.quote(c) for c in cmd)
    commands.append(line)
    print(f"$ {line}", flush=True)
    t = time.time()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    if p.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"command failed ({p.returncode}): {line}\n--- last output ({log}) ---\n{tail}")
    return time.time() - t


def parse_variant(spec: str) -> tuple[str, list[str]]:
    if ":" not in spec:
        raise SystemExit(f"--extra-variant {spec!r}: expected NAME:key=value,key=value")
    name, opts = spec.split(":", 1)
    return name, [o for o in opts.split(",") if o]


def fmt(v, w=6):
    return "n/a" if v is None or (isinstance(v, float) and v != v) else f"{v:.2f}"


def mean_std(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals))


def write_results(out: Path, runs: list[dict], args, commands: list[str]) -> Path:
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    lines = ["# Injector ablation on the synthetic world", ""]
    lines += [f"Config `{args.config}`, {args.iters} iterations per run (batch size of the config), seeds "
              f"{' '.join(map(str, args.seeds))}; training world: {args.scenes} scenes x {args.keyframes} keyframes "
              f"(seed {args.world_seed}); validation world: {args.val_scenes} scenes x {args.keyframes} keyframes "
              f"(seed {args.world_seed + 1000}); 2D labels: {args.labels}. Machine: {args.machine}.", ""]
    lines += ["## Runs", "", "| variant | seed | mIoU (mask_camera) | RayIoU | RayIoU@1/2/4 | 2D mIoU | train wall (s) |",
              "|---|---|---|---|---|---|---|"]
    for r in runs:
        e = r["eval"]
        ray = e.get("rayiou", {})
        lines.append(f"| {r['variant']} | {r['seed']} | {fmt(e.get('mIoU'))} | {fmt(e.get('RayIoU'))} | "
                     f"{fmt(ray.get('RayIoU@1'))} / {fmt(ray.get('RayIoU@2'))} / {fmt(ray.get('RayIoU@4'))} | "
                     f"{fmt(e.get('mIoU_2d'))} | {r['train_wall_s']:.0f} |")
    lines += ["", "## Mean +- std over seeds", "", "| variant | runs | mIoU | RayIoU | 2D mIoU |", "|---|---|---|---|---|"]
    for v in variants:
        rs = [r for r in runs if r["variant"] == v]
        cells = []
        for key in ("mIoU", "RayIoU", "mIoU_2d"):
            m, s = mean_std([r["eval"].get(key) for r in rs])
            cells.append("n/a" if m is None else f"{m:.2f} +- {s:.2f}")
        lines.append(f"| {v} | {len(rs)} | " + " | ".join(cells) + " |")
    lines += ["", "## Per-class IoU (mask_camera, mean over seeds)", "",
              "| class | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for c in OCC_CLASSES[:-1]:
        row = []
        for v in variants:
            m, _ = mean_std([r["eval"]["occ_mask_camera"]["per_class"].get(c) for r in runs if r["variant"] == v])
            row.append(fmt(m))
        lines.append(f"| {c} | " + " | ".join(row) + " |")
    lines += ["", "Classes shown as n/a never occur in the validation world's camera-visible ground truth "
              "and are never predicted.", "", "## Commands", "", "```"] + commands + ["```", ""]
    path = out / "RESULTS.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    (out / "results.json.tmp").write_text(json.dumps({"runs": runs, "commands": commands}, indent=1))
    os.replace(out / "results.json.tmp", out / "results.json")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="SemanticInjector ablation on the synthetic world.")
    ap.add_argument("--out", default="work_dirs/ablation")
    ap.add_argument("--config", default="training/configs/ablation-small.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--iters", type=int, default=300, help="training iterations per run (same for every variant)")
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--val-scenes", type=int, default=1)
    ap.add_argument("--keyframes", type=int, default=10)
    ap.add_argument("--world-seed", type=int, default=7)
    ap.add_argument("--world-args", default="--width 704 --height 396",
                    help="extra make_synthetic.py arguments (quoted string; default renders 704x396 images, "
                         "enough for the 128x352 network input)")
    ap.add_argument("--labels", choices=("world", "projection"), default="world")
    ap.add_argument("--extra-variant", action="append", default=[], metavar="NAME:KEY=VAL,...",
                    help="another variant, e.g. w1:model.injector.loss_weight=1.0")
    ap.add_argument("--eval-samples", type=int, default=0, help="evaluate on the first N validation samples (0: all)")
    ap.add_argument("--no-rayiou", action="store_true")
    ap.add_argument("--cfg-options", nargs="+", default=[], help="overrides for every run")
    ap.add_argument("--device", default=None)
    ap.add_argument("--machine", default="2-core CPU, this dev box")
    args = ap.parse_args(argv)

    py = sys.executable
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    commands: list[str] = []
    worlds = {"train": (out / "world_train", args.scenes, args.world_seed),
              "val": (out / "world_val", args.val_scenes, args.world_seed + 1000)}
    for name, (d, n, seed) in worlds.items():
        cmd = [py, str(HERE / "make_synthetic.py"), "--out", str(d), "--scenes", str(n),
               "--keyframes", str(args.keyframes), "--seed", str(seed)] + shlex.split(args.world_args)
        if not (d / ".complete").exists():
            run(cmd, out / "logs" / f"world_{name}.log", commands)
            (d / ".complete").write_text("ok\n")
        else:
            commands.append(" ".join(shlex.quote(c) for c in cmd) + "   # (already done)")
        if args.labels == "projection" and not (d / ".labels_projection").exists():
            cmd = [py, str(HERE / "generate_2d_seg_labels.py"), "--dataroot", str(d), "--sources", "projection",
                   "--out", str(d / "seg_2d_labels_projection"), "--no-progress"]
            run(cmd, out / "logs" / f"labels_{name}.log", commands)
            (d / ".labels_projection").write_text("ok\n")

    label_opts = []
    if args.labels == "projection":
        label_opts = [f"data.seg_label_root={worlds['train'][0] / 'seg_2d_labels_projection'}"]
    variants = [("injector", ["model.injector.enabled=true"]), ("no_injector", ["model.injector.enabled=false"])]
    variants += [parse_variant(s) for s in args.extra_variant]

    runs = []
    for seed in args.seeds:
        for vname, vopts in variants:
            wd = out / "runs" / f"{vname}_seed{seed}"
            opts = [f"data.dataroot={worlds['train'][0]}", f"train.seed={seed}", f"train.max_iters={args.iters}",
                    "train.epochs=100000"] + label_opts + args.cfg_options + vopts
            tcmd = [py, str(HERE / "train.py"), args.config, "--work-dir", str(wd), "--no-progress",
                    "--cfg-options"] + opts
            if args.device:
                tcmd += ["--device", args.device]
            summary = wd / "train_summary.json"
            if summary.is_file() and json.loads(summary.read_text())["steps"] >= args.iters:
                commands.append(" ".join(shlex.quote(c) for c in tcmd) + "   # (already done)")
                train_wall = json.loads(summary.read_text())["wall_s"]
            else:
                run(tcmd, out / "logs" / f"train_{vname}_seed{seed}.log", commands)
                train_wall = json.loads(summary.read_text())["wall_s"]
            eval_json = wd / "eval_val.json"
            val_opts = [f"data.dataroot={worlds['val'][0]}", "data.val_split=all"] + args.cfg_options
            if args.labels == "projection":
                val_opts.append(f"data.seg_label_root={worlds['val'][0] / 'seg_2d_labels_projection'}")
            ecmd = [py, str(HERE / "evaluate.py"), args.config, str(wd / "final"), "--out", str(eval_json),
                    "--cfg-options"] + val_opts
            if args.eval_samples:
                ecmd += ["--max-samples", str(args.eval_samples)]
            if args.no_rayiou:
                ecmd.append("--no-rayiou")
            if args.device:
                ecmd += ["--device", args.device]
            run(ecmd, out / "logs" / f"eval_{vname}_seed{seed}.log", commands)
            runs.append({"variant": vname, "seed": seed, "options": vopts, "train_wall_s": train_wall,
                         "eval": json.loads(eval_json.read_text())})
            write_results(out, runs, args, commands)
    path = write_results(out, runs, args, commands)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
