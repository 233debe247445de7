#!/usr/bin/env python3
"""Train PriorOcc / FlashOCC on one process or many (torchrun).

    python training/train.py CONFIG [--work-dir DIR] [--resume CKPT|auto] [--load-from CKPT_OR_PTH]
                             [--cfg-options key=value ...] [--device cpu|cuda]
    torchrun --nproc_per_node N training/train.py CONFIG ...      (or training/dist_train.sh CONFIG N)

The loop (``train``) reads as nanoGPT's: ``setup`` (work dir, seeds, data order, model, optimizer) ->
``resume_from`` (a training checkpoint's every state) -> per step ``train_step`` (forward, backward,
update, EMA), ``Reporter`` (the step's losses to losses.jsonl / TensorBoard / the log), ``save`` (a
resumable checkpoint) -> ``save_final`` (the deployable weights). A ``Run`` holds the state they pass.

What it does
- DistributedDataParallel when started by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA;
  each process reads its own shard of every epoch (DistributedSampler's split).
- AdamW (cfg.train.lr, weight_decay), linear warm-up from lr * warmup_ratio over warmup_iters
  iterations, then lr * 0.1 at every epoch in lr_steps (lr_policy step) or a cosine to
  lr * min_lr_ratio at the last iteration (lr_policy cosine); gradient clipping (grad_clip > 0);
  with cfg.train.amp: float16 autocast + GradScaler on CUDA, bfloat16 autocast on a CPU with AMX or
  avx512_bf16 (fp32 elsewhere: emulated bf16 is slower); channels_last when cfg.train.channels_last;
  EMA of the weights when cfg.train.ema.
- Work dir: config.yaml (the resolved config), losses.jsonl (every iteration's loss terms, rank 0),
  tb/ (TensorBoard: each loss term, total loss, lr, samples/s, grad norm), checkpoints/iter_XXXXXXX/
  (periodic, every cfg.train.checkpoint_interval epochs and --checkpoint-every iterations),
  checkpoints/latest (name of the newest), final/ (the deployable weights: EMA when enabled).
- A training checkpoint directory holds model.safetensors + config.yaml (priorocc_core.checkpoint),
  ema.safetensors, train_state.safetensors (optimizer moments, torch/CUDA RNG states) and
  train_state.json (step, epoch, lr schedule position, numpy/python RNG states, sampler seed,
  AMP scaler, EMA meta). No pickle anywhere. Directories are written under a temporary name and
  renamed into place.
- --resume continues exactly: the data order and the augmentation of every sample are a function of
  (seed, epoch, position) only, and all states above are restored, so N steps in one go and
  N/2 + resume + N/2 give the same loss curve, bitwise on CPU on one machine at one torch thread
  count, whatever the load (no training op sums in an order set by thread timing: see
  model/bev_pool.py). Another thread count or CPU (ISA) splits reductions differently: close, not
  bitwise; the log says so when the thread count changed.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset, Sampler

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from priorocc_core.atomic import atomic_write_bytes, remove_stale_temps, replace_dir, temp_dir_for  # noqa: E402
from priorocc_core.checkpoint import (  # noqa: E402
    CheckpointError,
    read_checkpoint,
    save_checkpoint,
    save_tensors_atomic,
)
from priorocc_core.config import Config, load_config  # noqa: E402
from priorocc_core.ema import ModelEMA, unwrap  # noqa: E402

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"
EMA_TENSORS = "ema.safetensors"


# ----------------------------------------------------------------------------- distributed
class Dist:
    """Process-group facts; single process when WORLD_SIZE is unset or 1."""

    def __init__(self, device_arg: Optional[str]):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        want = device_arg or ("cuda" if torch.cuda.is_available() else "cpu")
        if want.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit("--device cuda requested but CUDA is not available")
        if want.startswith("cuda"):
            self.device = torch.device("cuda", self.local_rank if self.world > 1 else torch.device(want).index or 0)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_gather_object(self, obj):
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        if not self.enabled:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist())}

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


# ----------------------------------------------------------------------------- data order
class SeededSampler(Sampler):
    """Yields (dataset index, sample seed) for this rank's share of one epoch.

    The permutation is DistributedSampler's (torch.randperm seeded with seed + epoch, padded to a
    multiple of the world size, rank::world), and every sample gets a seed derived from
    (seed, epoch, index), so data order and augmentation do not depend on worker processes or on
    where a run was resumed. ``start`` skips the first samples of the epoch (resume).
    """

    def __init__(self, n: int, world: int, rank: int, seed: int, shuffle: bool = True):
        if n == 0:
            raise ValueError("the training dataset is empty")
        self.n, self.world, self.rank, self.seed, self.shuffle = n, world, rank, seed, shuffle
        self.epoch, self.start = 0, 0
        self.per_rank = math.ceil(n / world)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world
        order = (order * math.ceil(total / self.n))[:total]
        return order[self.rank:total:self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.indices()[self.start:]:
            yield i, (self.seed * 1_000_003 + self.epoch * 10_007 + i) % (2**31 - 1)

    def __len__(self) -> int:
        return self.per_rank - self.start


class SeededDataset(Dataset):
    """Calls ds[i] with python, numpy and torch RNGs seeded from the sampler's sample seed.

    The caller's RNG states are restored afterwards, so loading data in the main process
    (num_workers = 0) does not disturb the training process's random streams.
    """

    def __init__(self, ds: Dataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, item):
        i, seed = item
        py, npy, th = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            return self.ds[i]
        finally:
            random.setstate(py)
            np.random.set_state(npy)
            torch.set_rng_state(th)


def build_dataset(cfg: Config, split: str, train: bool):
    from priorocc_core.data import OccDataset

    return OccDataset(cfg, split=split, train=train)


def collate_fn(samples):
    from priorocc_core.data import collate

    return collate(samples)


def to_device(batch: dict, device: torch.device) -> dict:
    """Every tensor of the batch on ``device``, including a temporal batch's ``adj`` frames."""
    from priorocc_core.data import batch_to

    return batch_to(batch, device, non_blocking=True)


# ----------------------------------------------------------------------------- schedule
class LRSchedule:
    """lr(iteration): linear warm-up (mmcv 'linear': from lr * ratio to lr), then either x0.1 per passed
    step epoch (policy 'step') or a cosine from lr to lr * min_lr_ratio at total_iters (policy 'cosine',
    mmcv's CosineAnnealing by iteration: suited to a short fixed budget)."""

    def __init__(self, base_lr: float, warmup_iters: int, warmup_ratio: float, step_epochs, iters_per_epoch: int,
                 policy: str = "step", total_iters: int = 0, min_lr_ratio: float = 0.01):
        if policy not in ("step", "cosine"):
            raise SystemExit(f"train.lr_policy {policy!r}: expected 'step' or 'cosine'")
        self.base_lr = base_lr
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio
        self.step_iters = sorted(int(e) * iters_per_epoch for e in step_epochs)
        self.policy, self.total_iters, self.min_lr_ratio = policy, total_iters, min_lr_ratio

    def __call__(self, it: int) -> float:
        if self.policy == "cosine":
            span = max(1, self.total_iters - self.warmup_iters)
            prog = min(1.0, max(0, it - self.warmup_iters) / span)
            lo = self.base_lr * self.min_lr_ratio
            lr = lo + (self.base_lr - lo) * 0.5 * (1 + math.cos(math.pi * prog))
        else:
            lr = self.base_lr * (0.1 ** sum(it >= s for s in self.step_iters))
        if self.warmup_iters > 0 and it < self.warmup_iters:
            k = (1 - it / self.warmup_iters) * (1 - self.warmup_ratio)
            lr = lr * (1 - k)
        return lr


def cpu_bf16_supported() -> bool:
    """True where the CPU does bfloat16 matrix maths natively (AMX or avx512_bf16, from /proc/cpuinfo's
    flags): elsewhere (e.g. avx2-only EPYC) oneDNN emulates bf16 and autocast is slower than fp32."""
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        return False
    return any(f in flags.split() for f in ("amx_bf16", "avx512_bf16"))


def autocast_mode(device: torch.device, amp: bool) -> Optional[torch.dtype]:
    """The autocast dtype of a training step: float16 on CUDA, bfloat16 on a CPU with native bf16, else None."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_bf16_supported() else None


# ----------------------------------------------------------------------------- state (no pickle)
def _rng_state_tensors(prefix: str) -> dict[str, torch.Tensor]:
    out = {f"{prefix}torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"{prefix}cuda.{i}"] = s
    return out


def _rng_state_json() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    py = random.getstate()
    return {
        "numpy": {"name": name, "keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": py[0], "state": list(py[1]), "gauss_next": py[2]},
    }


def _restore_rng(tensors: dict[str, torch.Tensor], prefix: str, js: dict) -> None:
    torch.set_rng_state(tensors[f"{prefix}torch"])
    cuda = sorted(k for k in tensors if k.startswith(f"{prefix}cuda."))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in sorted(cuda, key=lambda s: int(s.rsplit(".", 1)[1]))]
        torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])
    n = js["numpy"]
    np.random.set_state((n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = js["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def optimizer_to_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{name}"] = v
            else:
                scalars.setdefault(str(pid), {})[name] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], js: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if not k.startswith("optim."):
            continue
        _, pid, name = k.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    for pid, st in js.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    groups = []
    for g in js["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_training_checkpoint(ckpt_dir: Path, model, cfg: Config, opt, ema: Optional[ModelEMA], scaler, step: int,
                             epoch: int, iter_in_epoch: int, rng_tensors: dict, rng_json: dict, world: int) -> Path:
    """Write a complete training checkpoint directory atomically; returns its path."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_for(ckpt_dir)
    try:
        save_checkpoint(tmp, unwrap(model), cfg, step=step, extra_meta={"epoch": epoch, "iter_in_epoch": iter_in_epoch})
        if ema is not None:
            save_tensors_atomic(tmp / EMA_TENSORS, ema.state_dict())
        opt_tensors, opt_json = optimizer_to_state(opt)
        save_tensors_atomic(tmp / STATE_TENSORS, {**opt_tensors, **rng_tensors})
        js = {
            "format": "priorocc-train-state/1",
            "step": step,
            "epoch": epoch,
            "iter_in_epoch": iter_in_epoch,
            "world_size": world,
            "torch_threads": torch.get_num_threads(),
            "seed": cfg.train.seed,
            "optimizer": opt_json,
            "ema": ema.meta() if ema is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng_json,
        }
        atomic_write_bytes(tmp / STATE_JSON, json.dumps(js).encode(), fsync=True)
        replace_dir(tmp, ckpt_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_bytes(ckpt_dir.parent / "latest", ckpt_dir.name.encode(), fsync=True)
    return ckpt_dir


def resolve_resume(path: str, work_dir: Path) -> Path:
    if path == "auto":
        latest = work_dir / "checkpoints" / "latest"
        if not latest.is_file():
            raise SystemExit(f"--resume auto: no {latest} (nothing to resume in {work_dir})")
        return work_dir / "checkpoints" / latest.read_text().strip()
    p = Path(path)
    if not p.is_dir():
        raise SystemExit(f"--resume {p}: no such folder (give a training checkpoint folder, e.g. "
                         f"{work_dir / 'checkpoints' / 'iter_0000100'}, or --resume auto for the work dir's latest)")
    if not (p / STATE_JSON).is_file():
        raise SystemExit(f"--resume {p}: not a training checkpoint (expected {p / STATE_JSON}); "
                         "use --load-from to start from weights only")
    return p


# ----------------------------------------------------------------------------- weights
def load_initial_weights(model: torch.nn.Module, src: str, cfg: Config, log) -> None:
    """--load-from: a PriorOcc checkpoint (dir or .safetensors) or a FlashOCC / BEVDet .pth."""
    p = Path(src)
    if not p.exists():
        raise SystemExit(f"--load-from {src}: no such file or directory")
    if p.suffix in (".pth", ".pt", ".ckpt"):
        from priorocc_core.importer import import_checkpoint

        state, report = import_checkpoint(str(p), cfg, allow_missing=True)  # BEVDet init: reported below
        if hasattr(report, "print"):
            report.print()
        else:
            log(str(report))
    else:
        try:
            state, _, _ = read_checkpoint(p)
        except CheckpointError as e:
            raise SystemExit(f"--load-from {src}: {e}") from None
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    shape_skipped = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    unexpected = sorted(k for k in state if k not in own)
    missing = sorted(k for k in own if k not in usable)
    model.load_state_dict(usable, strict=False)
    log(f"--load-from {src}: loaded {len(usable)} tensors, {len(missing)} model tensors left at init, "
        f"{len(shape_skipped)} skipped for shape, {len(unexpected)} not in the model")
    for name, items in (("shape mismatch", shape_skipped), ("left at init", missing), ("not in model", unexpected)):
        if items:
            log(f"  {name}: " + ", ".join(items[:8]) + (" ..." if len(items) > 8 else ""))


# ----------------------------------------------------------------------------- command line
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Train PriorOcc (single process or torchrun).")
    ap.add_argument("config", help="YAML config (training/configs/*.yaml)")
    ap.add_argument("--work-dir", help="output folder (default work_dirs/<config name>)")
    ap.add_argument("--resume", help="training checkpoint dir to continue exactly, or 'auto' for the work dir's latest")
    ap.add_argument("--load-from", help="initial weights: PriorOcc checkpoint or FlashOCC/BEVDet .pth (overrides cfg.train.load_from)")
    ap.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides, e.g. train.lr=2e-4")
    ap.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--checkpoint-every", type=int, default=0, metavar="ITERS",
                    help="also write a training checkpoint every ITERS iterations")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bar (logs only)")
    from priorocc_core import cli

    cli.add_debug_arg(ap)
    return ap.parse_args(argv)


# ----------------------------------------------------------------------------- a run's state
class RunLog:
    """Timestamped lines to stdout and <work_dir>/train.log (rank 0 only)."""

    def __init__(self, work_dir: Path, main: bool):
        self.path, self.main = work_dir / "train.log", main

    def __call__(self, msg: str) -> None:
        if self.main:
            line = f"[{time.strftime('%H:%M:%S')}] {msg}"
            print(line, flush=True)
            with open(self.path, "a") as f:
                f.write(line + "\n")


@dataclass
class Run:
    """Everything one training run holds, passed explicitly between the phases of :func:`train`."""

    cfg: Config
    dd: Dist
    work_dir: Path
    log: RunLog
    ds: Dataset
    sampler: SeededSampler
    loader_kwargs: dict
    iters_per_epoch: int
    total_iters: int
    model: torch.nn.Module  # DDP-wrapped when distributed; unwrap() for the network
    opt: torch.optim.Optimizer
    sched: LRSchedule
    amp_dtype: Optional[torch.dtype]
    scaler: Any
    ema: Optional[ModelEMA]
    step: int = 0
    epoch: int = 0
    start_in_epoch: int = 0  # where the current epoch (re)starts: non-zero after a mid-epoch resume
    it_in_epoch: int = 0


# ----------------------------------------------------------------------------- setup
def setup(cfg: Config, work_dir: Path, device: Optional[str], dataset: Optional[Dataset],
          load_from: Optional[str]) -> Run:
    """Work dir, seeds, data order, model, optimizer, schedule, AMP, EMA: a run at step 0."""
    from priorocc_core.model import build_model

    dd = Dist(device)
    log = RunLog(work_dir, dd.main)
    if dd.main:
        work_dir.mkdir(parents=True, exist_ok=True)
        # what a run killed while writing left behind (e.g. a half-written .iter_*.tmp-* folder)
        for stale in [p for d in (work_dir, work_dir / "checkpoints", work_dir / "final") for p in remove_stale_temps(d)]:
            log(f"removed {stale} (left by an interrupted write)")
        atomic_write_bytes(work_dir / "config.yaml", cfg.to_yaml().encode(), fsync=True)
    dd.barrier()
    tc = cfg.train

    # seeds (per rank); exact continuation is handled by restoring the states in resume_from()
    random.seed(tc.seed + dd.rank)
    np.random.seed(tc.seed + dd.rank)
    torch.manual_seed(tc.seed + dd.rank)
    torch.use_deterministic_algorithms(False)

    ds = dataset if dataset is not None else build_dataset(cfg, "train", train=True)
    sampler = SeededSampler(len(ds), dd.world, dd.rank, tc.seed)
    iters_per_epoch = max(1, sampler.per_rank // tc.batch_size)  # drop_last
    total_iters = tc.epochs * iters_per_epoch
    if tc.max_iters > 0:
        total_iters = min(total_iters, tc.max_iters) if tc.epochs > 0 else tc.max_iters
    loader_kwargs = dict(batch_size=tc.batch_size, sampler=sampler, collate_fn=collate_fn, drop_last=True,
                         num_workers=cfg.data.num_workers, pin_memory=dd.device.type == "cuda",
                         persistent_workers=False, generator=torch.Generator().manual_seed(tc.seed))

    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    model = build_model(cfg.model)
    if load_from:
        load_initial_weights(model, load_from, cfg, log)
    model.to(dd.device)
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)
    torch.manual_seed(tc.seed + dd.rank)
    if dd.enabled:
        ddp_kwargs = {"device_ids": [dd.device.index]} if dd.device.type == "cuda" else {}
        model = torch.nn.parallel.DistributedDataParallel(model, **ddp_kwargs)
    model.train()

    decay, no_decay = [], []
    for n, p in unwrap(model).named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr)
    sched = LRSchedule(tc.lr, tc.warmup_iters, tc.warmup_ratio, tc.lr_steps, iters_per_epoch, tc.lr_policy,
                       total_iters, tc.min_lr_ratio)
    amp_dtype = autocast_mode(dd.device, tc.amp)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    ema = ModelEMA(unwrap(model), tc.ema_decay) if tc.ema else None
    return Run(cfg, dd, work_dir, log, ds, sampler, loader_kwargs, iters_per_epoch, total_iters, model, opt, sched,
               amp_dtype, scaler, ema)


# ----------------------------------------------------------------------------- resume
def resume_from(run: Run, ck: Path) -> None:
    """Continue ``run`` from training checkpoint ``ck``: weights, optimizer moments, EMA, AMP scaler,
    position (step, epoch, iteration in it), RNG states; drops losses.jsonl records past it."""
    dd, log = run.dd, run.log
    tensors, _, _ = read_checkpoint(ck)
    unwrap(run.model).load_state_dict(tensors, strict=True)
    js = json.loads((ck / STATE_JSON).read_text())
    st = load_file(str(ck / STATE_TENSORS))
    optimizer_from_state(run.opt, {k: v for k, v in st.items() if k.startswith("optim.")}, js["optimizer"])
    if run.ema is not None:
        if not (ck / EMA_TENSORS).is_file():
            raise SystemExit(f"--resume {ck}: EMA enabled but the checkpoint has no {EMA_TENSORS}")
        run.ema.load(load_file(str(ck / EMA_TENSORS)), js["ema"])
    if run.scaler is not None and js.get("scaler"):
        run.scaler.load_state_dict(js["scaler"])
    run.step, run.epoch, run.start_in_epoch = js["step"], js["epoch"], js["iter_in_epoch"]
    rank_key = f"rank{dd.rank}." if js["world_size"] == dd.world else "rank0."
    if js.get("torch_threads", torch.get_num_threads()) != torch.get_num_threads():
        log(f"note: the run had {js['torch_threads']} torch threads, this one {torch.get_num_threads()}: "
            "reductions split differently, so the losses follow the run closely but not bitwise")
    if js["world_size"] != dd.world:
        log(f"warning: resuming a {js['world_size']}-process run on {dd.world} processes; "
            "data order and RNG streams will differ from an uninterrupted run")
    _restore_rng(st, rank_key, js["rng"][rank_key.rstrip(".")])
    log(f"resumed from {ck} at step {run.step} (epoch {run.epoch}, iteration {run.start_in_epoch} of it)")
    losses = run.work_dir / "losses.jsonl"
    if dd.main and losses.is_file():  # drop records past the checkpoint
        lines = [ln for ln in losses.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= run.step]
        atomic_write_bytes(losses, ("\n".join(lines) + ("\n" if lines else "")).encode(), fsync=True)


# ----------------------------------------------------------------------------- step
def epoch_batches(run: Run) -> Iterator[dict]:
    """The batches left in the current epoch (from ``run.start_in_epoch``), on the run's device."""
    run.sampler.set_epoch(run.epoch, run.start_in_epoch * run.cfg.train.batch_size)
    run.it_in_epoch = run.start_in_epoch
    for batch in DataLoader(SeededDataset(run.ds), **run.loader_kwargs):
        if run.step >= run.total_iters or run.it_in_epoch >= run.iters_per_epoch:
            return
        yield to_device(batch, run.dd.device)


def train_step(run: Run, batch: dict, lr: float) -> tuple[dict[str, float], torch.Tensor]:
    """One optimisation step at learning rate ``lr``: forward, losses, backward, clip, update, EMA.
    Returns (the losses as floats, "loss" their sum; the gradient norm before clipping)."""
    model, opt, scaler, tc = run.model, run.opt, run.scaler, run.cfg.train
    for g in opt.param_groups:
        g["lr"] = lr
    amp = torch.autocast(run.dd.device.type, dtype=run.amp_dtype) if run.amp_dtype else contextlib.nullcontext()
    with amp:
        losses = unwrap(model).losses(model(batch), batch)  # forward returns outputs
    loss = sum(losses.values())
    if not torch.isfinite(loss):
        raise FloatingPointError(f"step {run.step}: loss is {loss.item()} ({ {k: v.item() for k, v in losses.items()} })")
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
    else:
        loss.backward()
    grad_norm = (torch.nn.utils.clip_grad_norm_(unwrap(model).parameters(), tc.grad_clip)
                 if tc.grad_clip > 0 else torch.tensor(0.0))
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    if run.ema is not None:
        run.ema.update(model)
    vals = {k: float(v.detach()) for k, v in losses.items()}
    vals["loss"] = float(loss.detach())
    return vals, grad_norm


# ----------------------------------------------------------------------------- evaluate (the step's figures)
class Reporter:
    """Where a run's figures go (rank 0): losses.jsonl every step, the tqdm bar, and every
    ``log_interval`` steps the rank-mean losses to TensorBoard and (without a bar) the log."""

    def __init__(self, run: Run, progress: bool, resumed: bool):
        self.run, self.writer, self.bar = run, None, None
        self.losses_file = open(run.work_dir / "losses.jsonl", "a") if run.dd.main else None
        if run.dd.main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run.work_dir / "tb"), purge_step=run.step if resumed else None)
            except Exception as e:  # tensorboard missing or broken: keep training, say so
                run.log(f"TensorBoard disabled: {e}")
        if run.dd.main and progress:
            from tqdm import tqdm

            self.bar = tqdm(total=run.total_iters, initial=run.step, desc=run.cfg.name, unit="it", dynamic_ncols=True,
                            smoothing=0.1)
        self.t_log, self.n_log = time.time(), 0

    def __call__(self, vals: dict[str, float], lr: float, grad_norm: torch.Tensor) -> None:
        run, tc = self.run, self.run.cfg.train
        self.n_log += tc.batch_size * run.dd.world
        if self.losses_file is not None:
            self.losses_file.write(json.dumps({"step": run.step, "lr": lr, **vals}) + "\n")
            self.losses_file.flush()
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{vals['loss']:.4f}", lr=f"{lr:.2e}")
        if run.step % max(1, tc.log_interval) == 0 or run.step == run.total_iters:
            mean = run.dd.mean(vals)
            now = time.time()
            sps = self.n_log / max(now - self.t_log, 1e-9)
            self.t_log, self.n_log = now, 0
            if self.writer is not None:
                for k, v in mean.items():
                    self.writer.add_scalar(f"train/{k}", v, run.step)
                self.writer.add_scalar("train/lr", lr, run.step)
                self.writer.add_scalar("train/samples_per_s", sps, run.step)
                self.writer.add_scalar("train/grad_norm", float(grad_norm), run.step)
            if self.bar is None:
                run.log(f"step {run.step}/{run.total_iters} " + " ".join(f"{k}={v:.4f}" for k, v in mean.items())
                        + f" lr={lr:.3e} {sps:.2f} samples/s")

    def close(self) -> None:
        for f in (self.losses_file, self.bar, self.writer):
            if f is not None:
                f.close()


def log_start(run: Run) -> None:
    tc, dd = run.cfg.train, run.dd
    use_amp = run.amp_dtype is not None
    run.log(f"training {run.cfg.name}: {len(run.ds)} samples, {dd.world} process(es) on {dd.device}, "
            f"batch {tc.batch_size}/process, {run.iters_per_epoch} it/epoch, {run.total_iters} iterations, "
            f"lr {tc.lr_policy}, AMP {str(run.amp_dtype).replace('torch.', '') if use_amp else 'off'}"
            f"{' (no native bf16 on this CPU: fp32)' if tc.amp and not use_amp and dd.device.type == 'cpu' else ''}, "
            f"{'channels_last, ' if tc.channels_last else ''}"
            f"EMA {'on' if run.ema else 'off'}")


# ----------------------------------------------------------------------------- save
def save(run: Run, iter_in_epoch: int, epoch: int) -> Optional[Path]:
    """A resumable training checkpoint ``checkpoints/iter_<step>`` (every rank's RNG states gathered
    to rank 0, which writes it); its path on rank 0."""
    dd = run.dd
    rng_t = _rng_state_tensors("")
    rng_j = _rng_state_json()
    gathered = dd.all_gather_object((rng_t, rng_j)) if dd.enabled else [(rng_t, rng_j)]
    out = None
    if dd.main:
        all_t, all_j = {}, {}
        for r, (t, j) in enumerate(gathered):
            all_t.update({f"rank{r}.{k}": v.cpu() for k, v in t.items()})
            all_j[f"rank{r}"] = j
        out = save_training_checkpoint(run.work_dir / "checkpoints" / f"iter_{run.step:07d}", run.model, run.cfg,
                                       run.opt, run.ema, run.scaler, run.step, epoch, iter_in_epoch, all_t, all_j,
                                       dd.world)
        run.log(f"checkpoint {out}")
    dd.barrier()
    return out


def save_final(run: Run) -> None:
    """The deployable weights in final/: the EMA weights when EMA is on."""
    if run.dd.main:
        ema = run.ema
        save_checkpoint(run.work_dir / "final", unwrap(run.model), run.cfg, step=run.step,
                        extra_meta={"weights": "ema" if ema is not None else "model"},
                        state_dict=ema.state_dict() if ema is not None else None)
        run.log(f"final weights ({'EMA' if ema is not None else 'model'}) -> {run.work_dir / 'final'}")
    run.dd.barrier()


# ----------------------------------------------------------------------------- the loop
def train(cfg: Config, work_dir: Path, resume: Optional[str] = None, load_from: Optional[str] = None,
          device: Optional[str] = None, checkpoint_every: int = 0, progress: bool = True,
          dataset: Optional[Dataset] = None) -> dict:
    """Run training; returns a summary dict (steps, final checkpoint, last losses, timings)."""
    work_dir = Path(work_dir)
    # setup: work dir, seeds, data order, model, optimizer, schedule
    run = setup(cfg, work_dir, device, dataset, None if resume else (load_from or cfg.train.load_from))
    # resume: every state of the checkpoint, so the run continues as if never stopped
    if resume:
        resume_from(run, resolve_resume(resume, work_dir))
    run.it_in_epoch = run.start_in_epoch
    report = Reporter(run, progress, resumed=bool(resume))
    log_start(run)
    tc, last_losses, final_ck = cfg.train, {}, None
    t_start = time.time()
    try:
        while run.step < run.total_iters:
            for batch in epoch_batches(run):
                # step: forward, backward, update at this step's learning rate
                lr = run.sched(run.step)
                last_losses, grad_norm = train_step(run, batch, lr)
                run.step += 1
                run.it_in_epoch += 1
                # evaluate: the step's losses to losses.jsonl, TensorBoard, the log
                report(last_losses, lr, grad_norm)
                # save: a resumable checkpoint every checkpoint_every steps
                if checkpoint_every and run.step % checkpoint_every == 0 and run.step < run.total_iters:
                    save(run, run.it_in_epoch, run.epoch)
                if run.step >= run.total_iters:
                    break
            if run.it_in_epoch >= run.iters_per_epoch:  # epoch finished (save: every checkpoint_interval epochs)
                run.epoch += 1
                run.start_in_epoch = 0
                if tc.checkpoint_interval > 0 and run.epoch % tc.checkpoint_interval == 0 and run.step < run.total_iters:
                    save(run, 0, run.epoch)
            else:
                run.start_in_epoch = run.it_in_epoch
        # save: a resumable training checkpoint and the deployable weights
        final_ck = save(run, 0 if run.it_in_epoch >= run.iters_per_epoch else run.it_in_epoch, run.epoch)
        save_final(run)
    finally:
        report.close()
    summary = {"steps": run.step, "final": str(work_dir / "final"), "last_checkpoint": str(final_ck) if final_ck else None,
               "last_losses": last_losses, "wall_s": time.time() - t_start, "world_size": run.dd.world}
    if run.dd.main:
        atomic_write_bytes(work_dir / "train_summary.json", json.dumps(summary, indent=1).encode(), fsync=True)
    run.dd.close()
    return summary


def _main(argv) -> int:
    """The command line: the resume point and the data are checked before the work dir is written."""
    from priorocc_core.data.dataset import fit_loader_workers

    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    cfg, note = fit_loader_workers(cfg)
    if note:
        print(note, flush=True)
    work_dir = Path(args.work_dir or Path("work_dirs") / cfg.name)
    if args.resume:
        resolve_resume(args.resume, work_dir)
    ds = build_dataset(cfg, "train", train=True)
    train(cfg, work_dir, resume=args.resume, load_from=args.load_from, device=args.device,
          checkpoint_every=args.checkpoint_every, progress=not args.no_progress, dataset=ds)
    return 0


def main(argv=None) -> int:
    """Expected errors (config, checkpoint, data, import) as one line; --debug shows the traceback."""
    from priorocc_core import cli

    return cli.run("train.py", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
