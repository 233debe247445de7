#!/usr/bin/env python3
"""Corrupt 2D semantic labels at a known rate: the ablation's stand-in for imperfect pseudo-labels.

    python training/corrupt_seg_labels.py --src WORLD/seg_2d_labels --out WORLD/seg_2d_labels_noisy30 --rate 0.3

Real pseudo-labels (SegFormer, projection) are wrong in patches, not in single pixels, so each image
is cut into --block x --block pixel blocks and a fraction --rate of the blocks is relabelled: every
labelled pixel of a chosen block gets one random wrong class (drawn per block among the 17 classes
other than the block's majority class). Ignore pixels (255) stay ignore. Deterministic by --seed and
the file's path. Writes the same layout under --out (samples/<CAM>/<stem>.png) and
``corruption.json`` with the requested and the measured rate (share of labelled pixels whose class
changed) and the per-class confusion counts.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from priorocc_core import cli  # noqa: E402

from priorocc_core.data.io import load_seg_label, write_json_atomic, write_png_atomic  # noqa: E402

NUM_CLASSES = 17
IGNORE = 255


def corrupt_label(label: np.ndarray, rate: float, block: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) uint8 -> corrupted copy: a fraction ``rate`` of the block x block tiles relabelled."""
    h, w = label.shape
    by, bx = -(-h // block), -(-w // block)
    chosen = rng.random((by, bx)) < rate
    out = label.copy()
    for j, i in zip(*np.nonzero(chosen)):
        tile = out[j * block:(j + 1) * block, i * block:(i + 1) * block]
        known = tile != IGNORE
        if not known.any():
            continue
        major = int(np.bincount(tile[known], minlength=NUM_CLASSES).argmax())
        new = int(rng.integers(0, NUM_CLASSES - 1))
        new += new >= major  # any class but the majority
        tile[known] = new
    return out


def main(argv=None) -> int:
    return cli.run("corrupt_seg_labels.py", _main, argv)


def _main(argv) -> int:
    ap = argparse.ArgumentParser(prog="corrupt_seg_labels.py", description=__doc__.split("\n\n")[0])
    cli.add_debug_arg(ap)
    ap.add_argument("--src", required=True, help="label root to read (e.g. <dataroot>/seg_2d_labels)")
    ap.add_argument("--out", required=True, help="label root to write")
    ap.add_argument("--rate", type=float, required=True, help="fraction of blocks relabelled, 0..1")
    ap.add_argument("--block", type=int, default=8, help="block size in pixels")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if not 0.0 <= a.rate <= 1.0 or a.block < 1:
        ap.error("--rate must be in [0, 1] and --block >= 1")
    src, out = Path(a.src), Path(a.out)
    files = sorted(src.rglob("*.png"))
    if not files:
        raise SystemExit(f"--src {src}: no label PNGs found (expected <src>/samples/<CAM>/<image>.png)")
    changed = labelled = 0
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for f in files:
        rel = f.relative_to(src)
        key = int(hashlib.md5(f"{a.seed}/{rel.as_posix()}".encode()).hexdigest()[:8], 16)
        lab = load_seg_label(f)
        noisy = corrupt_label(lab, a.rate, a.block, np.random.default_rng(key))
        known = lab != IGNORE
        diff = known & (noisy != lab)
        changed += int(diff.sum())
        labelled += int(known.sum())
        np.add.at(confusion, (lab[diff], noisy[diff]), 1)
        write_png_atomic(out / rel, noisy)
    report = {"src": str(src), "rate_requested": a.rate, "block": a.block, "seed": a.seed, "images": len(files),
              "rate_measured": changed / max(labelled, 1), "changed_pixels": changed, "labelled_pixels": labelled,
              "confusion_true_to_noisy": confusion.tolist()}
    write_json_atomic(out / "corruption.json", report, indent=1)
    print(f"{len(files)} label images -> {out}: {100 * report['rate_measured']:.1f} % of labelled pixels changed "
          f"(requested {100 * a.rate:.0f} % of {a.block} px blocks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
