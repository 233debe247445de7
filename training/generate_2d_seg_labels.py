#!/usr/bin/env python3
"""Generate 2D semantic labels (Occ3D classes 0-16, 255 ignore) for the camera images of a
nuScenes dataroot, in docs/design.md's layout: <out>/<image path relative to dataroot>.png.

Sources (--sources, priority order, first one that labels a pixel wins):
  segformer   Cityscapes SegFormer via transformers: --model FOLDER (a local copy), or
              --model HUB_ID --allow-download (nothing is fetched from a hub otherwise)
  projection  Occ3D ground truth: class of the nearest occupied voxel along each pixel ray
  lidar       LIDAR_TOP points labelled by their Occ3D voxel, projected (sparse)
e.g. --sources projection,segformer = projected where known, SegFormer elsewhere.

Resumable (finished PNGs are skipped unless --overwrite; with every label present no model is
loaded); unreadable images are reported and skipped. Parallel: torchrun --nproc_per_node=G
training/generate_2d_seg_labels.py ... (images are sharded by rank; one GPU per rank when --device cuda).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from priorocc_core import cli  # noqa: E402  (light: the heavy imports wait until labels are to be made)
from priorocc_core.errors import PriorOccError  # noqa: E402

PROG = "generate_2d_seg_labels.py"
SOURCES = ("segformer", "projection", "lidar")
SEGFORMER_CITYSCAPES = "nvidia/segformer-b2-finetuned-cityscapes-1024-1024"
GET_SEGFORMER = (f"give --model FOLDER, a local copy of a Cityscapes SegFormer (e.g. `huggingface-cli download "
                 f"{SEGFORMER_CITYSCAPES} --local-dir FOLDER` on a machine with network), or --model HUB_ID "
                 "--allow-download; or use --sources projection (labels from the Occ3D ground truth)")


def parse(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataroot", required=True)
    ap.add_argument("--version", default="auto", help="table folder (default auto: the dataroot's only one)")
    ap.add_argument("--split", default="all", help="all | a nuScenes split | a key of <dataroot>/splits.json")
    ap.add_argument("--sources", default="segformer")
    ap.add_argument("--model", default=None,
                    help="SegFormer for --sources segformer: a local folder (from_pretrained layout), or a hub id "
                         f"with --allow-download (e.g. {SEGFORMER_CITYSCAPES})")
    ap.add_argument("--allow-download", action="store_true", help="let --model be fetched from the Hugging Face hub")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (torchrun: cuda:<LOCAL_RANK>)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--scale", type=float, default=1.0, help="SegFormer inference resize factor")
    ap.add_argument("--out", default=None, help="label root (default <dataroot>/seg_2d_labels)")
    ap.add_argument("--occ-root", default=None, help="Occ3D gts folder (default <dataroot>/gts)")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    cli.add_debug_arg(ap)
    a = ap.parse_args(argv)
    a.sources = [s.strip() for s in a.sources.split(",") if s.strip()]
    bad = [s for s in a.sources if s not in SOURCES]
    if bad or not a.sources:
        ap.error(f"--sources: unknown {bad}; choose from {SOURCES}")
    return a


def segformer_problem(a) -> str | None:
    """Why the SegFormer source cannot run as asked (None: it can, or it is not asked for)."""
    if "segformer" not in a.sources:
        return None
    if a.model is None:
        return "--sources segformer has no model: " + GET_SEGFORMER
    if Path(a.model).is_dir() or a.allow_download:
        return None
    return f"--model {a.model}: no such folder (a hub id is fetched only with --allow-download); " + GET_SEGFORMER


def unlabelled_on_disk(dataroot: Path, out_root: Path) -> list[Path]:
    """Camera images <dataroot>/samples/CAM_*/* without a label file, from the file system alone:
    a quick answer (no tables, no torch) to "is there anything to label?" for --split all."""
    return [img for img in sorted(dataroot.glob("samples/CAM_*/*"))
            if not (out_root / img.relative_to(dataroot)).with_suffix(".png").is_file()]


def main(argv=None) -> int:
    return cli.run(PROG, _main, argv)


def _main(argv) -> int:
    a = parse(argv)
    dataroot = Path(a.dataroot)
    out_root = Path(a.out) if a.out else dataroot / "seg_2d_labels"
    problem = segformer_problem(a)
    if problem and a.split == "all" and dataroot.is_dir():  # quick: before torch and the tables are loaded
        n = len(list(dataroot.glob("samples/CAM_*/*"))) if a.overwrite else len(unlabelled_on_disk(dataroot, out_root))
        if n:
            raise PriorOccError(f"{n} camera image(s) of {dataroot} to label; {problem}")
    return label(a, dataroot, out_root, problem)


def label(a, dataroot: Path, out_root: Path, problem: str | None) -> int:
    import numpy as np

    from priorocc_core.data.dataset import resolve_split
    from priorocc_core.data.infos import open_nuscenes, records_from_nuscenes
    from priorocc_core.data.io import (DataError, load_lidar_points, load_occ_gt, load_seg_label, read_image_rgb,
                                       seg_label_path, write_json_atomic, write_png_atomic)
    from priorocc_core.data.labels import ProjectionLabeler, SegFormerLabeler, lidar_labels, merge_labels
    from priorocc_core.geometry import invert_rigid

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dist = None
    device = a.device
    if world > 1:
        import torch.distributed as dist_mod

        dist = dist_mod
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    occ_root = Path(a.occ_root) if a.occ_root else dataroot / "gts"
    nusc, _ = open_nuscenes(dataroot, a.version, ("--dataroot", "--version"))
    scenes = resolve_split(dataroot, a.split, [s["name"] for s in nusc.scene])
    records = records_from_nuscenes(nusc, scenes)
    items = [(r, cam) for r in records for cam in sorted(r["cams"])]
    items = items[rank::world]

    stats = {"rank": rank, "world_size": world, "done": 0, "skipped_existing": 0, "failed": [], "no_ground_truth": 0}
    todo = []
    for r, cam in items:
        img = dataroot / r["cams"][cam]["path"]
        dst = seg_label_path(out_root, dataroot, img)
        if dst.is_file() and not a.overwrite:
            try:
                load_seg_label(dst)
                stats["skipped_existing"] += 1
                continue
            except DataError:
                pass  # a broken label file: redo it
        todo.append((r, cam, img, dst))
    if todo and problem:
        raise PriorOccError(f"{len(todo)} camera image(s) of {dataroot} to label; {problem}")
    seg = None
    if todo and "segformer" in a.sources:
        try:
            seg = SegFormerLabeler(a.model, device, a.scale)
        except OSError as e:  # transformers: no such model / no network / offline
            raise PriorOccError(f"--model {a.model}: cannot be loaded ({str(e).splitlines()[0]}); "
                                + GET_SEGFORMER) from e
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    bar = tqdm(total=len(todo), desc=f"labels[rank {rank}]", disable=a.no_progress or tqdm is None or not todo) if tqdm else None
    gt_cache: dict[str, object] = {}
    t0 = time.perf_counter()
    for s in range(0, len(todo), a.batch_size):
        batch = []
        for r, cam, img, dst in todo[s : s + a.batch_size]:
            try:
                batch.append((r, cam, np.asarray(read_image_rgb(img)), dst))
            except DataError as e:
                stats["failed"].append({"image": str(img), "error": str(e)})
                print(f"[generate_2d_seg_labels] skipping unreadable image: {e}", file=sys.stderr, flush=True)
        seg_out: dict[int, np.ndarray] = {}
        if seg is not None and batch:
            by_size: dict[tuple, list[int]] = {}
            for i, b in enumerate(batch):
                by_size.setdefault(b[2].shape, []).append(i)
            for ids in by_size.values():
                for i, lab in zip(ids, seg([batch[i][2] for i in ids])):
                    seg_out[i] = lab
        for i, (r, cam, rgb, dst) in enumerate(batch):
            hw = rgb.shape[:2]
            layers = []
            for src in a.sources:
                if src == "segformer":
                    layers.append(seg_out[i])
                    continue
                gt_file = occ_root / str(r["scene_name"]) / r["token"] / "labels.npz"
                if not gt_file.is_file():
                    stats["no_ground_truth"] += 1
                    layers.append(None)
                    continue
                key = str(gt_file)
                if key not in gt_cache:
                    gt_cache.clear()
                    sem = load_occ_gt(gt_file)["semantics"]
                    gt_cache[key] = (sem, ProjectionLabeler(sem, device))
                sem, proj = gt_cache[key]
                c = r["cams"][cam]
                cam2ego = invert_rigid(np.asarray(r["ego2global"])) @ np.asarray(c["ego2global"]) @ np.asarray(c["sensor2ego"])
                K = np.asarray(c["K"], np.float64)
                if src == "projection":
                    layers.append(proj(cam2ego, K, hw))
                else:
                    if not r.get("lidar"):
                        layers.append(None)
                        continue
                    pts = load_lidar_points(dataroot / r["lidar"]["path"])
                    layers.append(lidar_labels(pts, np.asarray(r["lidar"]["lidar2ego"]), sem, cam2ego, K, hw))
            present = [l for l in layers if l is not None]
            lab = merge_labels(present) if present else np.full(hw, 255, np.uint8)
            write_png_atomic(dst, lab)
            stats["done"] += 1
        if bar:
            bar.update(len(todo[s : s + a.batch_size]))
    if bar:
        bar.close()
    secs = time.perf_counter() - t0
    stats["seconds"] = round(secs, 3)
    stats["images_per_second"] = round(stats["done"] / secs, 3) if secs > 0 and stats["done"] else 0.0
    stats["sources"] = a.sources
    write_json_atomic(out_root / f"_report_rank{rank}.json", stats, indent=1)
    if dist is not None:
        dist.barrier()
    if rank == 0:
        reports = [json.loads((out_root / f"_report_rank{r}.json").read_text()) for r in range(world)]
        total = {"done": sum(r["done"] for r in reports), "skipped_existing": sum(r["skipped_existing"] for r in reports),
                 "failed": [f for r in reports for f in r["failed"]],
                 "no_ground_truth": sum(r["no_ground_truth"] for r in reports),
                 "images_per_second": sum(r["images_per_second"] for r in reports), "sources": a.sources,
                 "world_size": world}
        write_json_atomic(out_root / "report.json", total, indent=1)
        print(json.dumps({k: (len(v) if k == "failed" else v) for k, v in total.items()}))
        if total["failed"]:
            print(f"[generate_2d_seg_labels] {len(total['failed'])} unreadable image(s) skipped; see "
                  f"{out_root / 'report.json'}", file=sys.stderr)
    if dist is not None:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
