#!/usr/bin/env python3
"""Evaluate a checkpoint (or saved predictions) on Occ3D: mIoU, per-class IoU, RayIoU, 2D mIoU.

    python training/evaluate.py CONFIG CHECKPOINT [--split val] [--backend torch] [--device cpu]
                                [--out results.json] [--save-pred DIR] [--no-rayiou] [--max-samples N]
    python training/evaluate.py CONFIG --pred-dir DIR [--gt-root DIR]       # score saved predictions

CHECKPOINT is a PriorOcc checkpoint directory (model.safetensors + config.yaml, e.g. a work dir's
final/ or checkpoints/iter_XXXXXXX/); the network is rebuilt from the checkpoint's own config,
CONFIG says where the data is (its data section; --cfg-options apply). As with FlashOCC's
test.py, CONFIG comes first and CHECKPOINT second; ``--eval mIoU`` is accepted and ignored
(every metric is computed). When the directory has ema.safetensors (a training checkpoint with
EMA), the EMA weights are evaluated unless --weights model.

Metrics (priorocc_core.metrics): Occ3D mIoU over classes 0-16 inside mask_camera (and over all
voxels with --also-no-mask), per-class IoU, RayIoU@1/2/4 m (SparseOcc's definition), and the
SegHead's 2D mIoU against the 2D labels (when the dataset has them and the injector is on).
The per-class table is printed; everything goes to a JSON file.
A temporal model (model.temporal.num_adj > 0) is scored the same way, non-sequentially, in process:
every sample carries its previous keyframes (``adj``, docs/data.md), whose features the model
recomputes from their images; the JSON says so under ``temporal``.

Saved predictions: one ``<sample_token>.npz`` per sample holding ``pred`` (Dx, Dy, Dz) uint8
(SparseOcc's format; ``semantics`` or ``occupancy`` are accepted too; with --save-logits also
``logits`` (Dx, Dy, Dz, K) float16), scored against
``<gt-root>/<scene>/<token>/labels.npz`` (default: cfg.data.occ_root or <dataroot>/gts).

--backend / --precision / --device (priorocc_core.cli, as every tool): ``torch`` at fp32 (default)
runs the network in this process on the dataset's batches; any other backend or precision, or
--via-predictor, goes through priorocc_core.backends.make_predictor and is fed the raw camera
images of each sample, as deployed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from priorocc_core import cli  # noqa: E402
from priorocc_core.atomic import atomic_write_bytes  # noqa: E402
from priorocc_core.checkpoint import load_checkpoint  # noqa: E402
from priorocc_core.config import Config, GridConfig, load_config  # noqa: E402
from priorocc_core.metrics import OccMIoU, RayIoU, SegMIoU, format_table  # noqa: E402

EMA_TENSORS = "ema.safetensors"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Occ3D evaluation: mIoU, RayIoU, 2D mIoU.")
    ap.add_argument("config", help="YAML config (its data section locates the dataset)")
    ap.add_argument("checkpoint", nargs="?", help="checkpoint directory (or .safetensors)")
    ap.add_argument("--split", default=None, help="'val' (default: cfg.data.val_split / info_file_val), 'train', or a split name")
    cli.add_inference_args(ap, device_default=None)
    cli.add_debug_arg(ap)
    ap.add_argument("--via-predictor", action="store_true",
                    help="run --backend torch through the deployed predictor too (raw images in, as the node "
                         "does) instead of on the dataset's batches; implied by any other backend or precision")
    ap.add_argument("--weights", choices=("auto", "ema", "model"), default="auto",
                    help="which weights of a training checkpoint (auto: EMA when present)")
    ap.add_argument("--out", help="JSON output (default <checkpoint>/eval_<split>.json or <pred-dir>/eval.json)")
    ap.add_argument("--save-pred", metavar="DIR", help="also write <token>.npz predictions there")
    ap.add_argument("--save-logits", action="store_true",
                    help="with --save-pred: also store the occupancy logits (Dx, Dy, Dz, K) as float16 "
                         "('logits'), to compare an outside implementation by numbers, not only labels")
    ap.add_argument("--pred-dir", metavar="DIR", help="score saved predictions instead of running a model")
    ap.add_argument("--gt-root", metavar="DIR", help="Occ3D gts folder for --pred-dir")
    ap.add_argument("--also-no-mask", action="store_true", help="also report mIoU over all voxels")
    ap.add_argument("--no-rayiou", action="store_true", help="skip RayIoU")
    ap.add_argument("--max-samples", type=int, default=0, help="evaluate only the first N samples")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--drop-camera", action="append", default=[], metavar="NAME",
                    help="score the model with this camera masked out (as the node's missing_camera:=degrade: its "
                         "features pool nothing); repeat for several")
    ap.add_argument("--each-camera-dropped", action="store_true",
                    help="also score the model once with each single camera masked out; the JSON gets "
                         "'camera_dropped': {camera: results} beside the all-cameras results")
    ap.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    ap.add_argument("--eval", nargs="*", default=None, help="accepted for FlashOCC test.py compatibility; ignored")
    return ap.parse_args(argv)


class Evaluator:
    """Accumulates every metric; add() takes one sample."""

    def __init__(self, grid: GridConfig, rayiou: bool = True, no_mask: bool = False, device: Optional[str] = None):
        self.occ = OccMIoU()
        self.occ_all = OccMIoU() if no_mask else None
        self.ray = RayIoU(device=device, grid=grid) if rayiou else None  # ray casting on CUDA when given
        self.seg = SegMIoU()
        self.n = 0
        self.origin_source: set[str] = set()

    def add(self, pred: np.ndarray, gt: np.ndarray, mask_camera: Optional[np.ndarray],
            seg_pred: Optional[np.ndarray] = None, seg_gt: Optional[np.ndarray] = None,
            origins: Optional[np.ndarray] = None) -> None:
        self.occ.add(pred, gt, mask_camera)
        if self.occ_all is not None:
            self.occ_all.add(pred, gt, None)
        if self.ray is not None:
            self.ray.add(pred, gt, origins)
            self.origin_source.add("scene lidar origins" if origins is not None else "default LIDAR_TOP origin")
        if seg_pred is not None and seg_gt is not None:
            self.seg.add(seg_pred, seg_gt)
        self.n += 1

    def results(self) -> dict:
        r = {"samples": self.n, "occ_mask_camera": self.occ.summary(), "mIoU": self.occ.miou()}
        if self.occ_all is not None:
            r["occ_all_voxels"] = self.occ_all.summary()
            r["mIoU_no_mask"] = self.occ_all.miou()
        if self.ray is not None:
            r["rayiou"] = self.ray.summary()
            r["RayIoU"] = r["rayiou"]["RayIoU"]
            r["rayiou_origins"] = sorted(self.origin_source)
        if self.seg.count:
            r["seg2d"] = self.seg.summary()
            r["mIoU_2d"] = self.seg.miou()
        return r

    def table(self) -> str:
        return format_table(occ=self.occ.summary(),
                            occ_nomask=self.occ_all.summary() if self.occ_all is not None else None,
                            ray=self.ray.summary() if self.ray is not None else None,
                            seg=self.seg.summary() if self.seg.count else None)


# ----------------------------------------------------------------------------- model runners
def load_model(ckpt: str, device: torch.device, weights: str = "auto"):
    """(model in eval mode, its config, which weights) from a checkpoint directory."""
    from safetensors.torch import load_file

    model, cfg, info = load_checkpoint(ckpt, device)
    p = Path(ckpt)
    which = "model"
    if p.is_dir() and (p / EMA_TENSORS).is_file() and weights in ("auto", "ema"):
        model.load_state_dict(load_file(str(p / EMA_TENSORS)), strict=True)
        which = "ema"
    elif weights == "ema":
        raise SystemExit(f"--weights ema: {ckpt} has no {EMA_TENSORS}")
    elif info.get("extra", {}).get("weights") == "ema":
        which = "ema"
    return model.to(device).eval(), cfg, which


class BatchRunner:
    """Dataset batches (already preprocessed at test-time augmentation) through the one torch runner,
    :class:`priorocc_core.backends.TorchRunner` (fp32, NCHW as the model trains), with the model's own
    pooling planner for each batch's geometry."""

    def __init__(self, model, cfg: Config, device, keep_logits: bool = False):
        from priorocc_core.backends import TorchRunner

        self.runner = TorchRunner(model, cfg, device, precision="fp32", channels_last=False, logits=keep_logits)
        self.planner = model.planner
        self.logits = None  # (B, Dx, Dy, Dz, K) float16 of the last batch, when keep_logits

    def __call__(self, batch: dict):
        from priorocc_core.data import batch_to
        from priorocc_core.model.priorocc import GEOMETRY_KEYS

        x = batch_to(batch, self.runner.device)  # a temporal batch's adj frames too
        plan = self.planner(*(x[k] for k in GEOMETRY_KEYS))
        out = self.runner.run_batch(x, plan)
        self.logits = out.get("logits")
        return out["occ"], (out["seg"] if "seg_labels" in batch else None)


class PredictorRunner:
    """A predictor of priorocc_core.backends (torch eager at a precision, onnxruntime, openvino):
    the raw camera images of each sample in, labels out, as deployed."""

    def __init__(self, model, cfg: Config, ckpt: str, backend: str, device: str, precision: str = "fp32"):
        from priorocc_core import backends

        # the graph backends export from the (model, cfg) pair, so EMA weights are honoured
        self.pred = backends.make_predictor((model, cfg), backend=backend, precision=precision, device=device)

    def __call__(self, batch: dict):
        from priorocc_core.data.io import read_image_rgb

        occs, segs = [], []
        for b in range(batch["imgs"].shape[0]):
            images = [np.asarray(read_image_rgb(p)) for p in batch["image_paths"][b]]
            mask = batch["cam_mask"][b].numpy() if "cam_mask" in batch else None
            p = self.pred.predict(images, batch["K"][b].numpy(), batch["cam2ego"][b].numpy(), camera_mask=mask)
            occs.append(p.occupancy)
            segs.append(p.seg2d)
        seg = np.stack(segs) if all(s is not None for s in segs) and "seg_labels" in batch else None
        return np.stack(occs), seg


class OriginFinder:
    """RayIoU lidar origins per sample from the dataset's records (SparseOcc's choice: the lidar
    origins of the scene's keyframes, in this keyframe's ego frame, up to 8); None when the
    records carry no lidar calibration (then RayIoU uses the default LIDAR_TOP position)."""

    def __init__(self, ds):
        self.records = getattr(ds, "records", None)
        self.scenes: dict[str, list[int]] = {}
        if self.records:
            for i, r in enumerate(self.records):
                self.scenes.setdefault(str(r.get("scene_name")), []).append(i)
            for idx in self.scenes.values():
                idx.sort(key=lambda j: self.records[j].get("timestamp", 0))

    def __call__(self, i: int) -> Optional[np.ndarray]:
        from priorocc_core.metrics import scene_lidar_origins

        if not self.records:
            return None
        rec = self.records[i]
        frames = self.scenes[str(rec.get("scene_name"))]
        if any(not self.records[j].get("lidar") or "ego2global" not in self.records[j] for j in frames):
            return None
        l2e = [np.asarray(self.records[j]["lidar"]["lidar2ego"]) for j in frames]
        e2g = [np.asarray(self.records[j]["ego2global"]) for j in frames]
        o = scene_lidar_origins(l2e, e2g, frames.index(i))
        return o if len(o) else None


def camera_keep(model_cfg: Config, drop_cameras: Sequence[str]) -> Optional[np.ndarray]:
    """The (N,) keep mask over the checkpoint's cameras with ``drop_cameras`` False; None when none
    is dropped. OptionError for a name the checkpoint does not have or for dropping every camera."""
    cams = list(model_cfg.model.image.cameras)
    if not drop_cameras:
        return None
    unknown = [c for c in drop_cameras if c not in cams]
    if unknown:
        raise cli.OptionError(f"--drop-camera {', '.join(unknown)}: not a camera of this checkpoint; expected one of {cams}")
    keep = np.array([c not in drop_cameras for c in cams], dtype=bool)
    if not keep.any():
        raise cli.OptionError(f"--drop-camera: drops every camera of this checkpoint ({cams}); keep at least one")
    return keep


def evaluate_model(cfg: Config, ckpt: str, split: str, backend: str = "torch", device: Optional[str] = None,
                   weights: str = "auto", rayiou: bool = True, no_mask: bool = False, max_samples: int = 0,
                   batch_size: int = 1, save_pred: Optional[str] = None, progress: bool = True,
                   precision: str = "fp32", via_predictor: bool = False, save_logits: bool = False,
                   drop_cameras: Sequence[str] = (), each_camera_dropped: bool = False) -> dict:
    """Run a checkpoint over ``split`` of cfg's dataset; returns the results dict. ``drop_cameras``:
    names of the checkpoint's cameras scored as missing (their features masked out of the pooling,
    as the node's ``missing_camera:=degrade``); every voxel of the camera mask is still scored with
    the network's labels, so the figure says what the remaining cameras recover.
    ``each_camera_dropped``: in the same pass (one checkpoint load, each batch loaded once; the
    predictor path reads a sample's images per run), also score each camera not already dropped as
    missing too; results under ``camera_dropped[name]`` (the predictions saved are the first run's only)."""
    from torch.utils.data import DataLoader, Subset

    from priorocc_core.data import OccDataset, collate

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, model_cfg, which = load_model(ckpt, dev, weights)
    if cfg.model != model_cfg.model:
        print(f"note: the network is built from the checkpoint's own config ({model_cfg.name}), which differs from "
              f"the model section of the config given ({cfg.name}); the given config's data section is used",
              flush=True)
    run_cfg = Config(name=model_cfg.name, model=model_cfg.model, data=cfg.data, train=cfg.train)
    keep = camera_keep(model_cfg, drop_cameras)  # (N,) bool or None
    cams = list(model_cfg.model.image.cameras)
    extra_drops = ({c: sorted(set(drop_cameras) | {c}) for c in cams if c not in drop_cameras}
                   if each_camera_dropped else {})  # camera -> the cameras dropped in its run
    extra = {c: camera_keep(model_cfg, d) for c, d in extra_drops.items()}  # camera -> (N,) keep mask
    num_adj = run_cfg.model.temporal.num_adj  # a temporal model: each sample carries its previous keyframes
    ds = OccDataset(run_cfg, split=split, train=False)
    n = len(ds) if max_samples <= 0 else min(max_samples, len(ds))
    if n == 0:
        raise SystemExit(f"split {split!r} of {cfg.data.dataroot} has no samples")
    in_process = backend == "torch" and precision == "fp32" and not via_predictor
    if save_logits and not in_process:
        raise cli.OptionError("--save-logits: only with --backend torch --precision fp32 without --via-predictor")
    if num_adj and not in_process:
        raise cli.OptionError(f"a temporal model (model.temporal.num_adj {num_adj}) is evaluated in process "
                              "(--backend torch --precision fp32, without --via-predictor): the predictor path "
                              "feeds one image set at a time and holds no history here")
    if in_process:
        runner = BatchRunner(model, model_cfg, dev, keep_logits=save_logits)
    else:
        runner = PredictorRunner(model, model_cfg, ckpt, backend, str(dev), precision)
    loader = DataLoader(Subset(ds, range(n)), batch_size=batch_size, shuffle=False, collate_fn=collate,
                        num_workers=cfg.data.num_workers)

    def evaluator():
        return Evaluator(model_cfg.model.grid, rayiou=rayiou, no_mask=no_mask,
                         device=str(dev) if dev.type == "cuda" else None)

    ev = evaluator()
    ev_extra = {c: evaluator() for c in extra}
    origins = OriginFinder(ds)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="evaluate", unit="sample", dynamic_ncols=True)

    def masked(batch, keep_n):  # the batch with its (B, N) camera mask; keep_n None: every camera
        if keep_n is None:
            return batch
        return {**batch, "cam_mask": torch.from_numpy(keep_n)[None].expand(batch["imgs"].shape[0], -1)}

    def score(e, batch, b, occ_b, seg_b, i):  # one sample's prediction into evaluator e
        gt = batch["voxel_semantics"][b].numpy()
        mask = batch["mask_camera"][b].numpy().astype(bool) if "mask_camera" in batch else None
        seg_gt = batch["seg_labels"][b].numpy() if ("seg_labels" in batch and seg_b is not None) else None
        e.add(occ_b, gt, mask, seg_b, seg_gt, origins(i))

    t0 = time.time()
    t_model = 0.0
    idx = 0
    for batch in loader:
        if "voxel_semantics" not in batch:
            raise SystemExit(f"split {split!r}: samples have no Occ3D ground truth (voxel_semantics)")
        for c, keep_c in extra.items():  # the extra runs first: the main run's logits stay the runner's last
            occ_c, seg_c = runner(masked(batch, keep_c))
            for b in range(occ_c.shape[0]):
                score(ev_extra[c], batch, b, occ_c[b], None if seg_c is None else seg_c[b], idx + b)
        t = time.time()
        occ, seg = runner(masked(batch, keep))
        t_model += time.time() - t
        for b in range(occ.shape[0]):
            score(ev, batch, b, occ[b], None if seg is None else seg[b], idx)
            if save_pred:
                token = batch["sample_token"][b]
                arrays = {"pred": occ[b].astype(np.uint8)}
                if seg is not None:
                    arrays["seg2d"] = seg[b]
                if save_logits:
                    arrays["logits"] = runner.logits[b]
                _save_npz(Path(save_pred) / f"{token}.npz", arrays)
            idx += 1
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    r = ev.results()
    r.update({"checkpoint": str(ckpt), "weights": which, "split": split, "backend": backend,
              "precision": precision, "via_predictor": not in_process, "device": str(dev),
              "config": model_cfg.name, "wall_s": time.time() - t0, "model_s_per_sample": t_model / max(n, 1),
              "injector": bool(model_cfg.model.injector.enabled), "dropped_cameras": list(drop_cameras),
              # temporal models: non-sequential, each sample's previous keyframes recomputed from their images
              "temporal": {"num_adj": num_adj, "mode": "non-sequential" if num_adj else None}})
    if extra:
        r["camera_dropped"] = {}
        for c, e in ev_extra.items():
            r["camera_dropped"][c] = dict(e.results(), dropped_cameras=extra_drops[c])
    r["_table"] = ev.table()
    return r


def _save_npz(path: Path, arrays: dict) -> None:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def evaluate_pred_dir(pred_dir: str, gt_root: str, grid: GridConfig, rayiou: bool = True, no_mask: bool = False,
                      max_samples: int = 0) -> dict:
    """Score ``<pred_dir>/<token>.npz`` files on ``grid`` (the config's) against
    ``<gt_root>/<scene>/<token>/labels.npz``."""
    occ_size = tuple(grid.occ_size)
    from priorocc_core.data.io import load_occ_gt

    pred_dir, gt_root = Path(pred_dir), Path(gt_root)
    if not pred_dir.is_dir():
        raise SystemExit(f"--pred-dir {pred_dir}: not a directory")
    gts = {p.parent.name: p for p in gt_root.glob("*/*/labels.npz")}
    if not gts:
        raise SystemExit(f"--gt-root {gt_root}: no <scene>/<token>/labels.npz files there")
    files = sorted(pred_dir.glob("*.npz"))
    if max_samples > 0:
        files = files[:max_samples]
    if not files:
        raise SystemExit(f"--pred-dir {pred_dir}: no .npz predictions")
    ev = Evaluator(grid, rayiou=rayiou, no_mask=no_mask)
    for f in files:
        token = f.stem
        if token not in gts:
            raise SystemExit(f"prediction {f}: no ground truth for sample {token} under {gt_root}")
        with np.load(f, allow_pickle=False) as z:
            key = next((k for k in ("pred", "semantics", "occupancy") if k in z.files), None)
            if key is None:
                raise SystemExit(f"prediction {f}: expected an array 'pred' (or 'semantics'/'occupancy'), has {z.files}")
            pred = z[key]
        if pred.size != int(np.prod(occ_size)):
            raise SystemExit(f"prediction {f}: expected {'x'.join(map(str, occ_size))} labels, got shape {pred.shape}")
        gt = load_occ_gt(gts[token], occ_size)
        ev.add(pred.reshape(occ_size), gt["semantics"], gt["mask_camera"].astype(bool))
    r = ev.results()
    r.update({"pred_dir": str(pred_dir), "gt_root": str(gt_root)})
    r["_table"] = ev.table()
    return r


def report(r: dict, out: Optional[Path]) -> None:
    table = r.pop("_table", None)
    if table:
        print(table)
    line = f"mIoU (mask_camera, classes 0-16): {r['mIoU']:.2f}"
    if "mIoU_no_mask" in r:
        line += f" | mIoU (all voxels): {r['mIoU_no_mask']:.2f}"
    if "RayIoU" in r:
        line += f" | RayIoU: {r['RayIoU']:.2f}"
    if "mIoU_2d" in r:
        line += f" | 2D mIoU: {r['mIoU_2d']:.2f}"
    print(line + f" | {r['samples']} samples")
    if out is not None:
        atomic_write_bytes(out, json.dumps(r, indent=1, allow_nan=False).encode())
        print(f"results -> {out}")


def _clean(o):
    if isinstance(o, float) and o != o:
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_clean(v) for v in o]
    return o


def main(argv=None) -> int:
    """Expected errors (config, checkpoint, data, options) as one line; --debug shows the traceback."""
    from priorocc_core import cli

    return cli.run("evaluate.py", _main, argv)


def _main(argv) -> int:
    from priorocc_core.data.dataset import fit_loader_workers

    args = parse_args(argv)
    cfg, note = fit_loader_workers(load_config(args.config, args.cfg_options))
    if note:
        print(note, flush=True)
    split = args.split or "val"
    if args.pred_dir:
        gt_root = args.gt_root or cfg.data.occ_root or str(Path(cfg.data.dataroot) / "gts")
        r = evaluate_pred_dir(args.pred_dir, gt_root, cfg.model.grid, not args.no_rayiou, args.also_no_mask,
                              args.max_samples)
        out = Path(args.out) if args.out else Path(args.pred_dir) / "eval.json"
    else:
        if not args.checkpoint:
            raise SystemExit("give CHECKPOINT (a checkpoint directory) or --pred-dir DIR")
        opts = cli.inference_options(args)
        if args.save_logits and not args.save_pred:
            raise cli.OptionError("--save-logits needs --save-pred DIR")
        r = evaluate_model(cfg, args.checkpoint, split, opts["backend"], opts["device"], args.weights,
                           not args.no_rayiou, args.also_no_mask, args.max_samples, args.batch_size, args.save_pred,
                           precision=opts["precision"], via_predictor=args.via_predictor,
                           save_logits=args.save_logits, drop_cameras=args.drop_camera,
                           each_camera_dropped=args.each_camera_dropped)  # issue 30's study: one pass
        for cam, rc in r.get("camera_dropped", {}).items():
            print(f"{cam} dropped: mIoU {rc['mIoU']:.2f}", flush=True)
        ck = Path(args.checkpoint)
        out = Path(args.out) if args.out else (ck if ck.is_dir() else ck.parent) / f"eval_{split}.json"
    table = r.pop("_table", None)
    r = _clean(r)
    r["_table"] = table
    report(r, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
