#!/usr/bin/env python3
"""The demo model's section of RESULTS.md: per-class IoU on the demo and validation worlds against the
currently shipped model, and the per-class learning curve of its training run.

    python training/demo_report.py --run work_dirs/demo16/run --val-world work_dirs/demo16/world_val \
        --demo-world work_dirs/demo16/world_demo --baseline models/demo --results-md RESULTS.md \
        --train-command "python training/train.py ..."

Steps (each skipped when its JSON already exists, so a rerun only adds what is new):
1. every training checkpoint of the run (run/checkpoints/iter_*, EMA weights) evaluated on the
   validation world without RayIoU -> <checkpoint>/eval_curve.json (the learning curve per class);
2. run/final and --baseline evaluated on both worlds (with RayIoU) -> OUT/eval_<model>_<world>.json;
3. the section between this script's markers in --results-md (generated, never edited by hand).
The demo world is what `make demo` generates (training/demo.py: seed 4242, 1 scene, 2 keyframes,
704 x 396 images); pass the world folder that demo.py wrote (demo_out/world) or generate one with
training/make_synthetic.py --seed 4242 --scenes 1 --keyframes 2 --width 704 --height 396.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from priorocc_core import cli  # noqa: E402

from ablation import GROUPS, fmt, group_miou, write_section  # noqa: E402
from priorocc_core.atomic import atomic_write_bytes  # noqa: E402
from priorocc_core.classes import OCC_CLASSES  # noqa: E402

MARK_BEGIN, MARK_END = "<!-- demo_report.py:begin -->", "<!-- demo_report.py:end -->"
GOAL = {"car": 25.0, "manmade": 25.0, "vegetation": 25.0, "mIoU": 30.0}


def evaluate(ckpt: Path, world: Path, out: Path, rayiou: bool) -> dict:
    if not out.is_file():
        cmd = [sys.executable, str(HERE / "evaluate.py"), str(ckpt / "config.yaml"), str(ckpt), "--out", str(out),
               "--device", "cpu", "--cfg-options", f"data.dataroot={world}", "data.val_split=all",
               "data.version=auto"]
        if not rayiou:
            cmd.append("--no-rayiou")
        print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"evaluate.py failed on {ckpt} / {world}:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return json.loads(out.read_text())


def per_class(ev: dict) -> dict:
    return ev["occ_mask_camera"]["per_class"]


def loss_curve(run: Path, every: int) -> list[tuple[int, float]]:
    rows = [json.loads(ln) for ln in (run / "losses.jsonl").read_text().splitlines() if ln.strip()]
    out = []
    for s in range(0, len(rows), every):
        chunk = rows[s:s + every]
        out.append((chunk[-1]["step"], float(np.mean([r["loss_occ"] for r in chunk]))))
    return out


def main(argv=None) -> int:
    return cli.run("demo_report.py", _main, argv)


def _main(argv) -> int:
    ap = argparse.ArgumentParser(prog="demo_report.py", description=__doc__.split("\n\n")[0])
    cli.add_debug_arg(ap)
    ap.add_argument("--run", required=True, help="train.py work dir")
    ap.add_argument("--val-world", required=True)
    ap.add_argument("--demo-world", required=True)
    ap.add_argument("--baseline", default=str(REPO / "models" / "demo"), help="the model shipped before")
    ap.add_argument("--candidate", default=None, help="checkpoint to report (default RUN/final)")
    ap.add_argument("--out", default=None, help="folder for the evaluation JSONs (default RUN/report)")
    ap.add_argument("--results-md", default=None)
    ap.add_argument("--train-command", default="")
    ap.add_argument("--note", default="", help="a sentence added under the tables (budget, machine, load)")
    a = ap.parse_args(argv)
    run = Path(a.run)
    out = Path(a.out or run / "report")
    out.mkdir(parents=True, exist_ok=True)
    cand = Path(a.candidate or run / "final")
    worlds = {"demo": Path(a.demo_world), "val": Path(a.val_world)}

    curve = []
    for ck in sorted((run / "checkpoints").glob("iter_*")):
        curve.append((int(ck.name.split("_")[1]), evaluate(ck, worlds["val"], ck / "eval_curve.json", rayiou=False)))
    evals = {(m, w): evaluate(p, worlds[w], out / f"eval_{m}_{w}.json", rayiou=True)
             for m, p in (("candidate", cand), ("baseline", Path(a.baseline))) for w in worlds}

    classes = [c for c in OCC_CLASSES[:-1]
               if any(per_class(e).get(c) is not None for e in evals.values())]
    L = ["# The demo model", "",
         f"Candidate `{cand}` against the model shipped before (`{a.baseline}`), both evaluated with "
         "training/evaluate.py inside mask_camera. Demo world: what `make demo` renders (seed 4242, 1 scene x 2 "
         f"keyframes, 704 x 396); validation world: `{worlds['val']}` (never trained on). Goal (issue 16): "
         "car, manmade, vegetation IoU >= 25 and mIoU >= 30 on both.", ""]
    head = ["candidate, demo world", "candidate, validation world", "before, demo world", "before, validation world"]
    keys = [("candidate", "demo"), ("candidate", "val"), ("baseline", "demo"), ("baseline", "val")]
    L += ["| | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    L.append("| **mIoU** | " + " | ".join(f"**{fmt(evals[k]['mIoU'])}**" for k in keys) + " |")
    for g in GROUPS:
        L.append(f"| {g} mIoU | " + " | ".join(fmt(group_miou(evals[k], g)) for k in keys) + " |")
    L.append("| RayIoU | " + " | ".join(fmt(evals[k].get("RayIoU")) for k in keys) + " |")
    L.append("| 2D mIoU | " + " | ".join(fmt(evals[k].get("mIoU_2d")) for k in keys) + " |")
    for c in classes:
        L.append(f"| {c} | " + " | ".join(fmt(per_class(evals[k]).get(c)) for k in keys) + " |")
    met = {w: all((evals[("candidate", w)]["mIoU"] if g == "mIoU" else per_class(evals[("candidate", w)]).get(g) or 0.0)
                  >= v for g, v in GOAL.items()) for w in worlds}
    L += ["", f"Goal met: demo world {'yes' if met['demo'] else 'no'}, validation world {'yes' if met['val'] else 'no'}."]
    if a.note:
        L += ["", a.note]
    if curve:
        L += ["", "## Learning curve (validation world, EMA weights of each checkpoint, IoU per class)", ""]
        L += ["| iteration | " + " | ".join(str(i) for i, _ in curve) + " |", "|---|" + "---|" * len(curve)]
        L.append("| **mIoU** | " + " | ".join(fmt(e["mIoU"]) for _, e in curve) + " |")
        for g in GROUPS:
            L.append(f"| {g} mIoU | " + " | ".join(fmt(group_miou(e, g)) for _, e in curve) + " |")
        for c in classes:
            L.append(f"| {c} | " + " | ".join(fmt(per_class(e).get(c)) for _, e in curve) + " |")
        L.append("| 2D mIoU | " + " | ".join(fmt(e.get("mIoU_2d")) for _, e in curve) + " |")
    every = 25 if not curve or curve[-1][0] <= 500 else 100
    lc = loss_curve(run, every) if (run / "losses.jsonl").is_file() else []
    if lc:
        L += ["", f"Training loss_occ (mean over {every} iterations): "
              + ", ".join(f"{s}: {v:.3f}" for s, v in lc) + "."]
    if a.train_command:
        L += ["", "Training command:", "", "```bash", a.train_command, "```"]
    text = "\n".join(L) + "\n"
    atomic_write_bytes(out / "demo_report.md", text.encode())
    if a.results_md:
        write_section(Path(a.results_md), text, MARK_BEGIN, MARK_END)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
