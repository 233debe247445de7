#!/usr/bin/env python
"""The demo: a fresh synthetic scene, the shipped demo model, pictures and metrics.

    python training/demo.py [--checkpoint models/demo] [--out demo_out] [--seed 4242] [--backend auto] [--precision auto] [--device auto]

Writes into --out, per keyframe k: seg_overlay_<k>.png (six cameras blended with the predicted 2D
classes), bev_<k>.png (BEV semantic map: prediction | ground truth, inside the camera mask),
voxels_<k>.png (3D view, prediction | ground truth inside the camera mask: objects, buildings and
vegetation in colour, ground classes low-key grey) and keyframe_<k>.png (the three stacked: the
side-by-side to look at); metrics.json (mIoU, per-class IoU).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from priorocc_core import cli  # noqa: E402
from priorocc_core.atomic import atomic_write_bytes  # noqa: E402
from priorocc_core.checkpoint import read_checkpoint  # noqa: E402
from priorocc_core.data import OccDataset  # noqa: E402
from priorocc_core.data.io import read_image_rgb  # noqa: E402
from priorocc_core.data.synthetic import generate_world  # noqa: E402
from priorocc_core.metrics import OccMIoU  # noqa: E402
from priorocc_core.preprocess import apply_image_aug, test_time_aug  # noqa: E402
from priorocc_core.visualize import bev_semantic_map, legend_strip, overlay, render_voxels_3d, side_by_side  # noqa: E402


def make_predictor(checkpoint: str, **opts):
    from priorocc_core.backends import make_predictor as mk

    pred = mk(checkpoint, **opts)
    c = pred.choice
    print(f"backend {c.backend} {c.precision} on {c.device}: {c.reason}")
    return pred


def camera_grid(tiles: list[np.ndarray], names: list[str]) -> np.ndarray:
    from PIL import ImageDraw

    h, w = tiles[0].shape[:2]
    canvas = Image.new("RGB", (3 * w, 2 * h))
    for i, (t, n) in enumerate(zip(tiles, names)):
        im = Image.fromarray(t)
        ImageDraw.Draw(im).text((4, 4), n, fill=(255, 255, 255))
        canvas.paste(im, ((i % 3) * w, (i // 3) * h))
    return np.asarray(canvas)


def main(argv=None) -> int:
    return cli.run("demo.py", _main, argv)


def _main(argv) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "demo"))
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--seed", type=int, default=4242, help="world seed (the demo model was trained on others)")
    ap.add_argument("--keyframes", type=int, default=2)
    ap.add_argument("--width", type=int, default=704)
    ap.add_argument("--height", type=int, default=396)
    cli.add_inference_args(ap, auto=True)
    cli.add_debug_arg(ap)
    args = ap.parse_args(argv)
    opts = cli.inference_options(args)
    t0 = time.perf_counter()
    _, cfg, info = read_checkpoint(args.checkpoint)  # a wrong --checkpoint fails here, before the scene is made
    predictor = make_predictor(args.checkpoint, **opts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    world = out / "world"
    print(f"generating a synthetic scene (seed {args.seed}, {args.keyframes} keyframes) in {world} ...")
    generate_world(world, n_scenes=1, n_keyframes=args.keyframes, seed=args.seed, hw=(args.height, args.width),
                   progress=False)
    cfg = cfg.with_overrides([f"data.dataroot={world}", "data.version=auto", "data.val_split=all"])
    ds = OccDataset(cfg, split="val", train=False)
    cams = list(cfg.model.image.cameras)
    metric, metric_all = OccMIoU(), OccMIoU()
    latencies = []
    for k in range(len(ds)):
        s = ds[k]
        images = [np.asarray(read_image_rgb(p)) for p in s["image_paths"]]
        t = time.perf_counter()
        pred = predictor.predict(images, s["K"].numpy(), s["cam2ego"].numpy())
        latencies.append(time.perf_counter() - t)
        gt, mask = s["voxel_semantics"].numpy(), s["mask_camera"].numpy().astype(bool)
        metric.add(pred.occupancy, gt, mask)
        metric_all.add(pred.occupancy, gt)
        # six cameras at network-input size with the predicted 2D classes (or the 3D ones if no injector)
        tiles = []
        for n, img in enumerate(images):
            view = np.asarray(apply_image_aug(Image.fromarray(img), test_time_aug(img.shape[:2], cfg.model.image)))
            tiles.append(overlay(view, pred.seg2d[n], 0.45) if pred.seg2d is not None else view)
        grid = camera_grid(tiles, cams)
        Image.fromarray(grid).save(out / f"seg_overlay_{k}.png")
        p_map, g_map = bev_semantic_map(pred.occupancy, mask), bev_semantic_map(gt, mask)
        gap = np.full((p_map.shape[0], 8, 3), 255, np.uint8)
        bev = np.concatenate([p_map, gap, g_map], axis=1)
        bev = np.asarray(Image.fromarray(bev).resize((bev.shape[1] * 2, bev.shape[0] * 2), Image.NEAREST))
        legend = legend_strip(bev.shape[1])
        bev = np.concatenate([bev, legend], axis=0)
        Image.fromarray(bev).save(out / f"bev_{k}.png")
        render_voxels_3d(pred.occupancy, out / f"voxels_{k}.png", title=f"prediction, keyframe {k}", grid=cfg.model.grid, gt=gt, mask=mask)
        vox = np.asarray(Image.open(out / f"voxels_{k}.png").convert("RGB"))
        Image.fromarray(side_by_side([grid, bev, vox], width=grid.shape[1])).save(out / f"keyframe_{k}.png")
    result = {
        "checkpoint": str(args.checkpoint), "trained_steps": info["step"], **predictor.choice.as_dict(),
        "world_seed": args.seed, "keyframes": len(ds),
        "mask_camera": metric.summary(), "all_voxels": metric_all.summary(),
        "latency_s_mean": float(np.mean(latencies)), "wall_s": time.perf_counter() - t0,
    }
    atomic_write_bytes(out / "metrics.json", json.dumps(result, indent=1).encode())
    print(f"mIoU (mask_camera) {result['mask_camera']['mIoU']:.2f}  (all voxels {result['all_voxels']['mIoU']:.2f}); "
          f"{len(ds)} keyframes, {result['latency_s_mean']:.2f} s per frame; pictures in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
