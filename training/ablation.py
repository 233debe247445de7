#!/usr/bin/env python3
"""Ablations on the synthetic world, paired over seeds: the same config with and without the
SemanticInjector (``--study injector``, the default), or without and with a BEV history
(``--study temporal``), or without and with camera dropout, each single camera dropped at test
time (``--study dropout``).

    python training/ablation.py --out work_dirs/ablation [--config training/configs/ablation-small.yaml]
        [--seeds 0 1] [--iters 300] [--scenes 2] [--keyframes 10] [--val-scenes 1] [--world-seed 7]
        [--labels world|projection] [--extra-variant NAME:KEY=VAL,KEY=VAL ...] [--eval-samples N]
        [--noisy-rate 0.3] [--results-md RESULTS.md]

Steps (each skipped when its output already exists, so an interrupted ablation continues):
1. training world  : training/make_synthetic.py --out OUT/world_train --seed WORLD_SEED
   validation world: training/make_synthetic.py --out OUT/world_val   --seed WORLD_SEED + 1000
   (different seeds: the validation scenes are never seen in training).
2. 2D labels: ``world`` uses the exact labels the generator writes (seg_2d_labels/);
   ``projection`` regenerates them from the Occ3D ground truth with
   training/generate_2d_seg_labels.py (the source that needs no network).
   With --noisy-rate R, training/corrupt_seg_labels.py also writes a copy of the training world's
   2D labels with R of the 8 x 8 px blocks relabelled to a wrong class (the measured share of
   changed pixels is reported), for the ``noisy`` variant (the injector defaults trained on those
   labels; its 2D mIoU is still measured against the clean validation labels).
3. For every seed and variant (``injector``: model.injector.enabled=true, ``no_injector``: false,
   ``noisy``, plus any --extra-variant), train.py with the same budget (--iters iterations), then
   evaluate.py on the validation world.
4. OUT/RESULTS.md (and results.json): one row per run (mIoU, objects / ground / structures mIoU,
   car IoU, RayIoU, 2D mIoU, wall time), the mean +- std per variant, a paired comparison of every
   variant with ``no_injector`` across seeds (mean difference, 95 % interval, paired t-test, wins)
   with a plain conclusion, the per-class IoU per variant, and the exact commands that ran.
   --results-md FILE also writes that report into FILE between ablation markers (the repository's
   RESULTS.md is generated this way, never edited by hand).

``--study temporal``: the worlds get a moving, turning ego (--motion-args, default
``--ego-speed 6 --turn-rate 8``) and the variants are ``single_frame`` (model.temporal.num_adj=0,
the baseline every variant is paired with), ``temporal`` (num_adj 1) and ``temporal<N>`` (num_adj N,
--long-history, default 2); everything else of the config is the same in every variant. The report
goes between its own markers, so RESULTS.md keeps both studies.

``--study dropout``: the variants are ``no_dropout`` (data.camera_dropout=0, the baseline) and
``dropout`` (data.camera_dropout=--dropout-rate, default 0.5: half the training samples have one
random camera masked out); each run is evaluated with every camera and once with each single
camera masked out (evaluate.py --each-camera-dropped); the report has mIoU per dropped camera and
the paired comparison of the mean and the worst single drop.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from priorocc_core import cli  # noqa: E402
from priorocc_core.atomic import atomic_write_bytes  # noqa: E402
from priorocc_core.classes import OCC_CLASSES  # noqa: E402

# class groups of the report (Occ3D class indices)
GROUPS = {"objects": range(0, 11), "ground": range(11, 15), "structures": range(15, 17)}
BASELINE = "no_injector"
MARK_BEGIN, MARK_END = "<!-- ablation.py:begin -->", "<!-- ablation.py:end -->"
# each study: its report's title, the variant every other is paired with, its RESULTS.md markers
STUDIES = {
    "injector": {"title": "Injector ablation on the synthetic world", "baseline": BASELINE,
                 "markers": (MARK_BEGIN, MARK_END)},
    "temporal": {"title": "Temporal ablation on a moving-ego synthetic world", "baseline": "single_frame",
                 "markers": ("<!-- ablation.py:temporal:begin -->", "<!-- ablation.py:temporal:end -->")},
    "dropout": {"title": "Camera dropout on the synthetic world: each single camera dropped at test time",
                "baseline": "no_dropout",
                "markers": ("<!-- ablation.py:dropout:begin -->", "<!-- ablation.py:dropout:end -->")},
}
TEMPORAL_MOTION = "--ego-speed 6 --turn-rate 8"  # make_synthetic.py: 3 m and 4 deg per keyframe


def study_variants(study: str, long_history: int = 2, dropout_rate: float = 0.5) -> list[tuple[str, list[str]]]:
    """The variants a study trains: (name, config overrides); the study's baseline among them."""
    if study == "dropout":
        return [("dropout", [f"data.camera_dropout={dropout_rate}"]), ("no_dropout", ["data.camera_dropout=0.0"])]
    if study == "injector":
        return [("injector", ["model.injector.enabled=true"]), ("no_injector", ["model.injector.enabled=false"])]
    if study == "temporal":
        return [("temporal", ["model.temporal.num_adj=1"]), ("single_frame", ["model.temporal.num_adj=0"]),
                (f"temporal{long_history}", [f"model.temporal.num_adj={long_history}"])]
    raise SystemExit(f"--study {study!r}: expected one of {sorted(STUDIES)}")


def run(cmd: list[str], log: Path, commands: list[str], env=None) -> float:
    """Run a command, tee its output to ``log``, record it; returns wall seconds."""
    line = shlex.join(cmd)
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


def group_miou(ev: dict, group: str) -> float | None:
    """Mean IoU of a class group over the classes present (IoU not None) in the evaluation."""
    pc = ev["occ_mask_camera"]["per_class"]
    vals = [pc.get(OCC_CLASSES[c]) for c in GROUPS[group]]
    vals = [v for v in vals if v is not None and v == v]
    return float(np.mean(vals)) if vals else None


def metrics_of(run: dict) -> dict:
    e = run["eval"]
    m = {"mIoU": e.get("mIoU"), "RayIoU": e.get("RayIoU"), "mIoU_2d": e.get("mIoU_2d"),
         "car": e["occ_mask_camera"]["per_class"].get("car")}
    for g in GROUPS:
        m[g] = group_miou(e, g)
    dropped = {c: d.get("mIoU") for c, d in (e.get("camera_dropped") or {}).items()}  # --study dropout
    for c, v in dropped.items():
        m[f"drop:{c}"] = v
    if dropped and all(v is not None for v in dropped.values()):
        m["drop:mean"] = float(np.mean(list(dropped.values())))
        m["drop:worst"] = float(min(dropped.values()))
        # graceful degradation: the share of its own all-camera mIoU a model keeps with one camera missing
        m["drop:kept"] = 100.0 * m["drop:mean"] / m["mIoU"] if m["mIoU"] else None
    return m


def paired(runs: list[dict], variant: str, key: str, baseline: str = BASELINE) -> dict | None:
    """Paired comparison of ``variant`` with ``baseline`` on metric ``key`` over the seeds both have."""
    from scipy import stats

    a = {r["seed"]: metrics_of(r)[key] for r in runs if r["variant"] == variant}
    b = {r["seed"]: metrics_of(r)[key] for r in runs if r["variant"] == baseline}
    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None)
    if not seeds:
        return None
    d = np.array([a[s] - b[s] for s in seeds])
    out = {"n": len(seeds), "mean": float(d.mean()), "wins": int((d > 0).sum()), "diffs": d.tolist()}
    if len(seeds) >= 2:
        sd = float(d.std(ddof=1))
        half = float(stats.t.ppf(0.975, len(seeds) - 1) * sd / np.sqrt(len(seeds)))
        p = float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue) if sd > 0 else float("nan")
        out.update(sd=sd, ci=(out["mean"] - half, out["mean"] + half), p=p)
    return out


def verdict(c: dict | None, what: str) -> str:
    """A plain sentence on how sure the comparison is."""
    if c is None:
        return f"{what}: no paired runs."
    if c["n"] < 2:
        return f"{what}: one seed only ({c['mean']:+.2f}); no conclusion possible."
    lo, hi = c["ci"]
    head = f"{what}: {c['mean']:+.2f} on average, better in {c['wins']} of {c['n']} seeds, 95 % interval [{lo:+.2f}, {hi:+.2f}], paired t-test p = {c['p']:.3f}"
    if c["p"] == c["p"] and c["p"] < 0.05:
        return head + (": a gain shown at the 5 % level." if c["mean"] > 0 else ": a loss shown at the 5 % level.")
    return head + ": not distinguishable from no difference with this many seeds."


def conclusion(runs: list[dict], study: str = "injector") -> list[str]:
    """The plain answer, generated from the runs: were objects learned, does the injector help
    (paired with no_injector), what do noisy labels cost (paired with injector); for the temporal
    study, does each history help over the single-frame model (paired with single_frame)."""
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    if not runs:
        return ["No run has finished yet."]
    means = {v: mean_std([metrics_of(r)["mIoU"] for r in runs if r["variant"] == v])[0] for v in variants}
    best = max(variants, key=lambda v: -1.0 if means[v] is None else means[v])
    rs = [r for r in runs if r["variant"] == best]
    cars = sum(1 for r in rs if (metrics_of(r)["car"] or 0) > 0)
    out = [f"- Objects learned: the best variant by mean mIoU, **{best}**, has car IoU > 0 in {cars} of {len(rs)} "
           f"seeds" + (" (the bar for 'objects learned' is met; object IoUs are still small at this budget: "
                                   "see the per-class table)." if cars == len(rs) else
                       " (objects are **not** reliably learned at this budget, so the comparison says little "
                       "about them).")]

    def answer(v, base, question):
        c = paired(runs, v, "mIoU", baseline=base)
        o = paired(runs, v, "objects", baseline=base)
        if c is None:
            return f"- {question} No paired seeds yet."
        if c["n"] < 2:
            return f"- {question} One paired seed only ({c['mean']:+.2f} mIoU): no conclusion."
        lo, hi = c["ci"]
        sure = c["p"] == c["p"] and c["p"] < 0.05
        if sure:
            head = f"**{'yes' if c['mean'] > 0 else 'no, it is worse'}** at this budget"
        else:
            head = "**not shown either way**"
        text = (f"- {question} {head}: {c['mean']:+.2f} mIoU on average over {c['n']} paired seeds "
                f"(95 % interval [{lo:+.2f}, {hi:+.2f}], p = {c['p']:.3f}, better in {c['wins']} of {c['n']})")
        if o is not None and o.get("ci") is not None:
            text += f"; objects mIoU {o['mean']:+.2f} [{o['ci'][0]:+.2f}, {o['ci'][1]:+.2f}]"
        if not sure:
            text += (f". With {c['n']} seeds and this seed-to-seed spread, only a mean difference beyond about "
                     f"+-{(hi - lo) / 2:.1f} mIoU (the interval's half-width) would be told from seed noise")
        return text + "."
    if study == "dropout":
        return out[:1] + dropout_conclusion(runs)
    if study == "temporal":
        base = STUDIES[study]["baseline"]
        for v in variants:
            if v != base and base in variants:
                n = next((o.split("=")[1] for r in runs if r["variant"] == v for o in r.get("options", [])
                          if o.startswith("model.temporal.num_adj=")), "?")
                out.append(answer(v, base, f"Does the BEV history of {v} (num_adj {n}) help over the single-frame "
                                           "model?"))
        return out
    if "injector" in variants and BASELINE in variants:
        out.append(answer("injector", BASELINE, "Does the 2D prior (injector, PriorOcc defaults) help over FlashOCC?"))
    for v in variants:
        if v not in ("injector", BASELINE) and BASELINE in variants:
            out.append(answer(v, BASELINE, f"Variant {v} vs FlashOCC?"))
    if "noisy" in variants and "injector" in variants:
        out.append(answer("noisy", "injector", "What do noisy 2D labels cost against clean ones (noisy - injector)?"))
    return out


def dropout_conclusion(runs: list[dict]) -> list[str]:
    """--study dropout: does training with camera dropout keep more when one camera is missing (the
    mean and the worst over single dropped cameras, paired with no_dropout), and what does it cost
    with every camera present."""
    base = STUDIES["dropout"]["baseline"]
    out = []
    for key, question in (("drop:mean", "With one camera missing (mIoU averaged over the single drops of each camera), does "
                                        "dropout training keep more?"),
                          ("drop:worst", "For the worst single camera to lose, does dropout training keep more?"),
                          ("drop:kept", "Does dropout training degrade more gracefully (the share of its own "
                                        "all-camera mIoU kept with one camera missing, in points of %)?"),
                          ("mIoU", "With every camera present, what does dropout training cost?")):
        c = paired(runs, "dropout", key, baseline=base)
        if c is None or c["n"] < 2:
            out.append(f"- {question} Not enough paired seeds.")
            continue
        lo, hi = c["ci"]
        sure = c["p"] == c["p"] and c["p"] < 0.05
        head = (f"**{'yes, a gain' if c['mean'] > 0 else 'a loss'} shown**" if sure else "**not shown either way**")
        unit = "points of %" if key == "drop:kept" else "mIoU"
        out.append(f"- {question} {head}: {c['mean']:+.2f} {unit} on average over {c['n']} paired seeds (95 % "
                   f"interval [{lo:+.2f}, {hi:+.2f}], p = {c['p']:.3f}, dropout better in {c['wins']} of {c['n']}).")
    return out


def dropout_table(runs: list[dict], variants: list[str]) -> list[str]:
    """mIoU per single dropped camera, mean +- std over seeds per variant, and the paired difference."""
    cams = list(dict.fromkeys(k[5:] for r in runs for k in metrics_of(r) if k.startswith("drop:")
                              and k not in ("drop:mean", "drop:worst", "drop:kept")))
    if not cams:
        return []
    base = STUDIES["dropout"]["baseline"]
    lines = ["## mIoU with one camera dropped (mean +- std over seeds)", "",
             "The camera's features are masked out of the BEV pooling (as the node's `missing_camera:=degrade`, "
             "training/evaluate.py --each-camera-dropped); every voxel of the camera mask is scored with the "
             "network's labels, so the figure says how much of the missing camera's view the other cameras and "
             "the learned priors recover.", "",
             "| dropped | " + " | ".join(variants) + " | dropout - no_dropout (paired) |", "|---|" + "---|" * (len(variants) + 1)]
    for key, name in [("mIoU", "none")] + [(f"drop:{c}", c) for c in cams] + [("drop:mean", "mean of single drops"),
                                                                              ("drop:worst", "worst single drop"),
                                                                              ("drop:kept", "% of own all-camera mIoU kept")]:
        cells = []
        for v in variants:
            m, sd = mean_std([metrics_of(r).get(key) for r in runs if r["variant"] == v])
            cells.append("n/a" if m is None else f"{m:.2f} +- {sd:.2f}")
        c = paired(runs, "dropout", key, baseline=base) if base in variants and "dropout" in variants else None
        diff = "n/a" if c is None else (f"{c['mean']:+.2f}" + (f" [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}], p {c['p']:.3f}"
                                                              if c.get("ci") else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {diff} |")
    return lines + [""]


def write_results(out: Path, runs: list[dict], args, commands: list[str]) -> Path:
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    study = STUDIES[getattr(args, "study", "injector")]
    base = study["baseline"]
    lines = [f"# {study['title']}", ""]
    argv = getattr(args, "argv", None)
    if argv is not None:
        lines += ["Reproduce (steps already done are skipped on a rerun):", "", "```bash",
                  "python training/ablation.py " + shlex.join(a for a in argv if a != "--report-only"), "```", ""]
    lines += [f"Config `{args.config}`, {args.iters} iterations per run (batch size of the config), seeds "
              f"{' '.join(map(str, args.seeds))}; training world: {args.scenes} scenes x {args.keyframes} keyframes "
              f"(seed {args.world_seed}); validation world: {args.val_scenes} scenes x {args.keyframes} keyframes "
              f"(seed {args.world_seed + 1000}); 2D labels: {args.labels}. Machine: {args.machine}.", ""]
    if getattr(args, "motion_args", ""):
        lines += [f"Ego motion of both worlds (make_synthetic.py): `{args.motion_args}`.", ""]
    keys = [("mIoU", "mIoU"), ("objects", "objects mIoU"), ("ground", "ground mIoU"), ("structures", "manmade+veg mIoU"),
            ("car", "car IoU"), ("RayIoU", "RayIoU"), ("mIoU_2d", "2D mIoU")]
    lines += ["Objects = classes 0-10 (others ... truck), ground = 11-14 (driveable, other flat, sidewalk, terrain), "
              "structures = manmade and vegetation; a group's mIoU averages the classes present in the validation "
              "world's camera-visible ground truth or the prediction. All IoU inside mask_camera.", ""]
    noisy = getattr(args, "noisy_stats", None)
    if noisy:
        lines += [f"Noisy labels (`noisy`): {100 * noisy['rate_requested']:.0f} % of the {noisy['block']} x {noisy['block']} px "
                  f"blocks of the training world's 2D labels relabelled to a wrong class; measured: "
                  f"{100 * noisy['rate_measured']:.1f} % of the labelled pixels changed "
                  f"(training/corrupt_seg_labels.py). Evaluation uses the clean validation labels.", ""]
    lines += ["## Conclusion", ""] + conclusion(runs, getattr(args, "study", "injector")) + [""]
    if getattr(args, "study", "injector") == "dropout":
        lines += dropout_table(runs, variants)
    lines += ["## Runs", "", "| variant | seed | " + " | ".join(k[1] for k in keys) + " | RayIoU@1/2/4 | train wall (s) |",
              "|---|---|" + "---|" * (len(keys) + 2)]
    for r in runs:
        m = metrics_of(r)
        ray = r["eval"].get("rayiou", {})
        lines.append(f"| {r['variant']} | {r['seed']} | " + " | ".join(fmt(m[k]) for k, _ in keys) + " | "
                     f"{fmt(ray.get('RayIoU@1'))} / {fmt(ray.get('RayIoU@2'))} / {fmt(ray.get('RayIoU@4'))} | "
                     f"{r['train_wall_s']:.0f} |")
    lines += ["", "## Mean +- std over seeds", "", "| variant | runs | " + " | ".join(k[1] for k in keys) + " | car IoU > 0 |",
              "|---|---|" + "---|" * (len(keys) + 1)]
    for v in variants:
        rs = [r for r in runs if r["variant"] == v]
        cells = []
        for key, _ in keys:
            m, sd = mean_std([metrics_of(r).get(key) for r in rs])
            cells.append("n/a" if m is None else f"{m:.2f} +- {sd:.2f}")
        cars = sum(1 for r in rs if (metrics_of(r)["car"] or 0) > 0)
        lines.append(f"| {v} | {len(rs)} | " + " | ".join(cells) + f" | {cars} of {len(rs)} seeds |")
    if base in variants:
        lines += ["", f"## Paired comparison with {base} (same seed: same initial weights and data order)", ""]
        for v in variants:
            if v == base:
                continue
            keys = (("mIoU", "mIoU"), ("objects", "objects mIoU"))
            if getattr(args, "study", "injector") == "temporal":  # RayIoU: what a history should improve
                keys += (("RayIoU", "RayIoU"),)
            if getattr(args, "study", "injector") == "dropout":  # what dropout should improve
                keys += (("drop:mean", "mIoU with one camera dropped (mean over cameras)"),
                         ("drop:worst", "mIoU with the worst camera dropped"),
                         ("drop:kept", "% of the all-camera mIoU kept with one camera dropped"))
            for key, name in keys:
                lines.append(f"- **{v}**, {verdict(paired(runs, v, key, baseline=base), name)}")
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
    atomic_write_bytes(path, "\n".join(lines).encode())
    atomic_write_bytes(out / "results.json", json.dumps({"runs": runs, "commands": commands}, indent=1).encode())
    if getattr(args, "results_md", None):
        write_section(Path(args.results_md), "\n".join(lines), *study["markers"])
    return path


def write_section(path: Path, text: str, begin: str, end: str) -> None:
    """Replace the text between ``begin`` and ``end`` in ``path`` (appended when absent), atomically."""
    old = path.read_text() if path.is_file() else ""
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + ("\n\n" if old.strip() else "") + block + "\n"
    atomic_write_bytes(path, new.encode())


def main(argv=None) -> int:
    return cli.run("ablation.py", _main, argv)


def _main(argv) -> int:
    ap = argparse.ArgumentParser(prog="ablation.py", description="Injector or temporal ablation on the synthetic world.")
    cli.add_debug_arg(ap)
    ap.add_argument("--study", choices=sorted(STUDIES), default="injector",
                    help="injector: with / without the SemanticInjector; temporal: single-frame vs BEV histories "
                         "on a moving-ego world")
    ap.add_argument("--motion-args", default=None,
                    help="make_synthetic.py ego-motion arguments for both worlds (quoted string; default: none for "
                         f"--study injector, '{TEMPORAL_MOTION}' for --study temporal)")
    ap.add_argument("--long-history", type=int, default=2, metavar="N",
                    help="--study temporal: num_adj of the longer-history variant temporalN (default 2)")
    ap.add_argument("--dropout-rate", type=float, default=0.5, metavar="P",
                    help="--study dropout: data.camera_dropout of the 'dropout' variant (probability that a training "
                         "sample has one random camera masked out; default 0.5)")
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
    ap.add_argument("--machine", default=None, help="what the report says the runs ran on (default: the CPU "
                    "model, core count and speed-relevant flags read from /proc/cpuinfo)")
    ap.add_argument("--noisy-rate", type=float, default=None, metavar="R",
                    help="add the 'noisy' variant: injector trained on 2D labels with R of the 8 px blocks relabelled")
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs at a time; with more than one each run gets one thread (OMP_NUM_THREADS=1), "
                         "so on an N-core CPU --jobs N trains N runs side by side")
    ap.add_argument("--report-only", action="store_true",
                    help="train and evaluate nothing: write the report from the runs already evaluated "
                         "(e.g. after stopping an ablation early)")
    ap.add_argument("--results-md", default=None, metavar="FILE",
                    help="also write the report into FILE between ablation markers (e.g. RESULTS.md)")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.motion_args is None:
        args.motion_args = TEMPORAL_MOTION if args.study == "temporal" else ""
    if args.study != "injector" and args.noisy_rate is not None:
        ap.error("--noisy-rate belongs to --study injector")
    if not 0.0 < args.dropout_rate <= 1.0:
        ap.error(f"--dropout-rate {args.dropout_rate}: expected a probability in (0, 1]")
    if args.long_history < 2:
        ap.error(f"--long-history {args.long_history}: expected >= 2 (num_adj 1 is the 'temporal' variant)")
    if args.machine is None:
        from priorocc_core.autoselect import cpu_summary

        args.machine = cpu_summary() + (f"; {args.jobs} runs side by side, one thread each" if args.jobs > 1 else "")

    py = sys.executable
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    commands: list[str] = []
    worlds = {"train": (out / "world_train", args.scenes, args.world_seed),
              "val": (out / "world_val", args.val_scenes, args.world_seed + 1000)}
    for name, (d, n, seed) in worlds.items():
        cmd = [py, str(HERE / "make_synthetic.py"), "--out", str(d), "--scenes", str(n),
               "--keyframes", str(args.keyframes), "--seed", str(seed)] + shlex.split(args.world_args) \
            + shlex.split(args.motion_args)
        if not (d / ".complete").exists():
            run(cmd, out / "logs" / f"world_{name}.log", commands)
            (d / ".complete").write_text("ok\n")
        else:
            commands.append(shlex.join(cmd) + "   # (already done)")
        if args.labels == "projection" and not (d / ".labels_projection").exists():
            cmd = [py, str(HERE / "generate_2d_seg_labels.py"), "--dataroot", str(d), "--sources", "projection",
                   "--out", str(d / "seg_2d_labels_projection"), "--no-progress"]
            run(cmd, out / "logs" / f"labels_{name}.log", commands)
            (d / ".labels_projection").write_text("ok\n")

    noisy_root = None
    if args.noisy_rate is not None:
        src = (worlds["train"][0] / "seg_2d_labels_projection") if args.labels == "projection" \
            else worlds["train"][0] / "seg_2d_labels"
        noisy_root = worlds["train"][0] / f"seg_2d_labels_noisy{round(100 * args.noisy_rate)}"
        cmd = [py, str(HERE / "corrupt_seg_labels.py"), "--src", str(src), "--out", str(noisy_root),
               "--rate", str(args.noisy_rate)]
        if not (noisy_root / "corruption.json").is_file():
            run(cmd, out / "logs" / "labels_noisy.log", commands)
        else:
            commands.append(shlex.join(cmd) + "   # (already done)")
        args.noisy_stats = json.loads((noisy_root / "corruption.json").read_text())

    label_opts = []
    if args.labels == "projection":
        label_opts = [f"data.seg_label_root={worlds['train'][0] / 'seg_2d_labels_projection'}"]
    variants = study_variants(args.study, args.long_history, args.dropout_rate)
    if noisy_root is not None:
        variants.append(("noisy", ["model.injector.enabled=true"]))
    variants += [parse_variant(s) for s in args.extra_variant]

    # One job per (seed, variant), seed-major: with --jobs N they run N at a time, one thread each,
    # so an ablation cut short still has whole seeds.
    jobs = [(seed, vname, vopts) for seed in args.seeds for vname, vopts in variants]
    env = None
    if args.jobs > 1:
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    # each job records its commands in its own list; the report lists them in job order
    job_commands: dict[tuple[int, str], list[str]] = {(seed, vname): [] for seed, vname, _ in jobs}

    def all_commands() -> list[str]:
        return commands + [c for seed, vname, _ in jobs for c in job_commands[seed, vname]]

    def train_and_evaluate(seed: int, vname: str, vopts: list[str]) -> dict | None:
        wd = out / "runs" / f"{vname}_seed{seed}"
        if args.report_only:  # read what is there, run nothing
            if not (wd / "eval_val.json").is_file():
                return None
            summary = wd / "train_summary.json"
            wall = json.loads(summary.read_text())["wall_s"] if summary.is_file() else float("nan")
            return {"variant": vname, "seed": seed, "options": vopts, "train_wall_s": wall,
                    "eval": json.loads((wd / "eval_val.json").read_text())}
        lopts = [f"data.seg_label_root={noisy_root}"] if vname == "noisy" else label_opts
        opts = [f"data.dataroot={worlds['train'][0]}", f"train.seed={seed}", f"train.max_iters={args.iters}",
                "train.epochs=100000"] + lopts + args.cfg_options + vopts
        tcmd = [py, str(HERE / "train.py"), args.config, "--work-dir", str(wd), "--no-progress",
                "--cfg-options"] + opts
        if args.device:
            tcmd += ["--device", args.device]
        summary = wd / "train_summary.json"
        if summary.is_file() and json.loads(summary.read_text())["steps"] >= args.iters:
            job_commands[seed, vname].append(shlex.join(tcmd) + "   # (already done)")
        else:
            run(tcmd, out / "logs" / f"train_{vname}_seed{seed}.log", job_commands[seed, vname], env=env)
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
        if args.study == "dropout":
            ecmd.append("--each-camera-dropped")
        if args.device:
            ecmd += ["--device", args.device]
        if not eval_json.is_file() or eval_json.stat().st_mtime < (wd / "final").stat().st_mtime:
            run(ecmd, out / "logs" / f"eval_{vname}_seed{seed}.log", job_commands[seed, vname], env=env)
        else:
            job_commands[seed, vname].append(shlex.join(ecmd) + "   # (already done)")
        return {"variant": vname, "seed": seed, "options": vopts, "train_wall_s": train_wall,
                "eval": json.loads(eval_json.read_text())}

    order = {(seed, vname): i for i, (seed, vname, _) in enumerate(jobs)}
    runs: list[dict] = []
    failed: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(train_and_evaluate, *job): job for job in jobs}
        for fut in as_completed(futures):
            seed, vname, _ = futures[fut]
            try:
                r = fut.result()
                if r is None:  # --report-only: not run
                    continue
                runs.append(r)
            except SystemExit as e:  # run() names the command and shows its log's tail
                failed.append(f"{vname} seed {seed}: {e}")
                print(f"[ablation] {vname} seed {seed} failed:\n{e}", file=sys.stderr, flush=True)
                continue
            runs.sort(key=lambda r: order[(r["seed"], r["variant"])])
            write_results(out, runs, args, all_commands())
    if failed:
        raise SystemExit(f"{len(failed)} of {len(jobs)} runs failed (the report has the {len(runs)} that finished):\n"
                         + "\n".join(failed))
    path = write_results(out, runs, args, all_commands())
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
