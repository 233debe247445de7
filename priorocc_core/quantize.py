"""int8: post-training quantisation of the exported model with NNCF for OpenVINO (``priorocc_quantize``).

    priorocc_quantize model_dir --world /path/to/synthetic_world [--real ../shared/data/nuscenes-real]
                      [--frames 300] [-o model_dir/openvino/int8.xml]

The exported ONNX graph (:mod:`priorocc_core.export`) is read by OpenVINO and quantised by
``nncf.quantize`` (8-bit weights and activations of the convolutions and matrix products; the
pooling plan, softmax, scatter and argmax stay in floating point), calibrated on frames run
through the same preprocessing and pooling plan as at inference (``backends.GraphRunner``): frames of
synthetic worlds (``priorocc_core.data.synthetic``), the real nuScenes keyframe, or any
``dict(images, K, cam2ego)``. The result is an OpenVINO IR (``.xml`` + ``.bin``) that
``make_predictor(ckpt, "openvino", "int8")`` runs (default path ``<checkpoint>/openvino/int8.xml``).

How many frames: NNCF's statistics need a few hundred for a trained model (``--frames 300``,
the default ``subset_size``); the parity tests use a handful on the tiny config.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from . import cli
from .atomic import atomic_write_files
from .backends import default_int8_path  # noqa: F401  (the IR this tool writes and backends reads)
from .config import Config

# Layers kept in floating point: the per-voxel class predictor (its argmax decides every label)
# and the 2D class classifier. Quantising them flipped 1 of 16 height slices of the tiny
# random-weights model (93.75 % agreement); everything else (backbone, depth net, BEV encoder) is int8.
KEEP_FLOAT = (".*occ_head/predicter.*", ".*seg_head/classifier.*")


def calibration_feeds(cfg: Config, frames: Iterable[dict]) -> Iterator[dict[str, np.ndarray]]:
    """dict(images, K, cam2ego) frames -> the exported graph's input feeds, exactly as the graph
    runners of backends.py build them (same preprocessing, the model package's one pooling plan)."""
    from .backends import PLAN_INPUTS
    from .inference import preprocess
    from .model.plan import PoolingPlanner

    planner = PoolingPlanner.from_config(cfg.model)
    for f in frames:
        batch = preprocess(f["images"], f["K"], f["cam2ego"], cfg)
        plan = planner(batch["cam2ego"], batch["K"], batch["img_aug"], batch["bev_aug"])
        yield {"imgs": batch["imgs"].numpy(), **{k: getattr(plan, k).cpu().numpy() for k in PLAN_INPUTS}}


def world_frames(dataroot, cfg: Config, version: str = "auto", limit: int | None = None) -> Iterator[dict]:
    """Keyframes of a nuScenes-format world (e.g. a synthetic one) as dict(images, K, cam2ego)."""
    from .data import OccDataset
    from .data.io import read_image_rgb

    c = cfg.with_overrides([f"data.dataroot={dataroot}", f"data.version={version}", "data.val_split=all"])
    ds = OccDataset(c, split="val", train=False)
    for k in range(len(ds) if limit is None else min(limit, len(ds))):
        s = ds[k]
        yield dict(images=[np.asarray(read_image_rgb(p)) for p in s["image_paths"]],
                   K=s["K"].numpy(), cam2ego=s["cam2ego"].numpy())


def quantize_openvino(onnx_path, cfg: Config, frames: Iterable[dict], out_xml, subset_size: int = 300,
                      fast_bias_correction: bool = True, keep_float: tuple[str, ...] = KEEP_FLOAT) -> Path:
    """Read ``onnx_path`` with OpenVINO, quantise with NNCF on ``frames``, save the IR to
    ``out_xml`` (written to a temporary name, then renamed). Returns the path."""
    import nncf
    import openvino as ov

    feeds = list(calibration_feeds(cfg, frames))
    if not feeds:
        raise ValueError("quantize: no calibration frames")
    model = ov.Core().read_model(str(onnx_path))
    q = nncf.quantize(model, nncf.Dataset(feeds), subset_size=min(subset_size, len(feeds)),
                      preset=nncf.QuantizationPreset.PERFORMANCE, fast_bias_correction=fast_bias_correction,
                      ignored_scope=nncf.IgnoredScope(patterns=list(keep_float), validate=False))
    out = Path(out_xml)
    # the weights first, the .xml that readers open last
    atomic_write_files([out.with_suffix(".bin"), out],
                       lambda folder: ov.save_model(q, str(folder / out.name), compress_to_fp16=False))
    return out


def main(argv=None) -> int:
    return cli.run("priorocc_quantize", _main, argv)


def _main(argv) -> int:
    ap = argparse.ArgumentParser(prog="priorocc_quantize", description=__doc__.split("\n\n")[0])
    cli.add_debug_arg(ap)
    ap.add_argument("checkpoint", help="checkpoint directory")
    ap.add_argument("--world", action="append", default=[], help="nuScenes-format world for calibration (repeatable)")
    ap.add_argument("--version", default="auto", help="table folder of the worlds (default auto: the only one there)")
    ap.add_argument("--real", default=None, help="folder of the real nuScenes keyframe (v1.0-mini tables of one sample, as ../shared/data/nuscenes-real)")
    ap.add_argument("--frames", type=int, default=300, help="calibration frames at most (default 300)")
    ap.add_argument("-o", "--output", default=None, help="IR to write (default <checkpoint>/openvino/int8.xml)")
    a = ap.parse_args(argv)
    from .artifacts import write_key
    from .backends import _onnx_file, int8_key, int8_key_file
    from .checkpoint import load_checkpoint

    model, cfg, _ = load_checkpoint(a.checkpoint)
    if cfg.model.temporal.num_adj:
        raise SystemExit(f"{a.checkpoint}: a temporal model (model.temporal.num_adj {cfg.model.temporal.num_adj}); "
                         "int8 calibration covers single-frame graphs only")
    frames: list[dict] = []
    budget = a.frames - (1 if a.real else 0)  # the real keyframe always gets a place
    for w in a.world:
        if not Path(w).is_dir():
            raise SystemExit(f"--world {w}: no such folder (make one with training/make_synthetic.py)")
        frames.extend(world_frames(w, cfg, a.version, limit=max(0, budget - len(frames))))
    if a.real:
        from .data.real_keyframe import load_real_keyframe

        try:
            frames.append(load_real_keyframe(a.real))
        except FileNotFoundError as e:
            raise SystemExit(f"--real: {e}") from None
    if not frames:
        raise SystemExit("no calibration frames: give --world and/or --real")
    onnx = _onnx_file(a.checkpoint, model, cfg, None, None)
    out = quantize_openvino(onnx, cfg, frames[: a.frames], a.output or default_int8_path(a.checkpoint), a.frames)
    write_key(int8_key_file(out), int8_key(a.checkpoint, cfg))  # what backends.py checks before running it
    print(f"wrote {out} ({len(frames[: a.frames])} calibration frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
