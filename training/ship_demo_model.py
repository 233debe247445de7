#!/usr/bin/env python3
"""Ship a trained checkpoint as the demo model: fp16 weights + config, written atomically.

    python training/ship_demo_model.py work_dirs/RUN/final [--out models/demo] [--name demo]

Reads the checkpoint (a train.py ``final/``: EMA weights when the run had EMA), names its config
``--name``, resets the training-data paths to the config defaults (the run's work_dirs mean nothing
in a clone) and writes ``model.safetensors`` (floating tensors as float16, half the size; loading
casts them back) + ``config.yaml`` into ``--out``; the checkpoint's own step and the source path go
into the file's metadata. Loading needs no code from the run: priorocc_core.checkpoint alone.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from priorocc_core import cli  # noqa: E402

from priorocc_core.checkpoint import read_checkpoint, save_checkpoint  # noqa: E402
from priorocc_core.config import Config  # noqa: E402


def main(argv=None) -> int:
    return cli.run("ship_demo_model.py", _main, argv)


def _main(argv) -> int:
    ap = argparse.ArgumentParser(prog="ship_demo_model.py", description=__doc__.split("\n\n")[0])
    cli.add_debug_arg(ap)
    ap.add_argument("checkpoint")
    ap.add_argument("--out", default=str(REPO / "models" / "demo"))
    ap.add_argument("--name", default="demo")
    a = ap.parse_args(argv)
    tensors, cfg, info = read_checkpoint(a.checkpoint)
    cfg.name = a.name
    default = Config().data
    cfg.data.dataroot, cfg.data.occ_root, cfg.data.seg_label_root = default.dataroot, default.occ_root, default.seg_label_root
    step = int(info.get("step", 0)) if isinstance(info, dict) else 0
    path = save_checkpoint(a.out, None, cfg, step=step, state_dict=tensors, dtype=torch.float16,
                           extra_meta={"source": str(a.checkpoint), "weights": "fp16 of the source's"})
    print(f"{a.checkpoint} -> {path} ({path.stat().st_size / 1e6:.1f} MB, step {step})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
