"""Benchmark / test inputs: the real nuScenes keyframe in ../shared/data (loaded by
:mod:`priorocc_core.data.real_keyframe`), a synthetic rig, a tiny random checkpoint."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from priorocc_core.data.real_keyframe import load_real_keyframe

ROOT = Path(__file__).resolve().parents[1]
REAL_ROOT = ROOT.parent / "shared" / "data" / "nuscenes-real"
TINY_CONFIG = ROOT / "training" / "configs" / "tiny.yaml"


def frame_inputs(kind: str) -> dict:
    """The benchmark frame: ``"real"`` (the real keyframe, FileNotFoundError when absent) or synthetic."""
    if kind == "real":
        return load_real_keyframe(REAL_ROOT)
    return synthetic_frame(seed=0)


def make_tiny_checkpoint(out: str | Path, seed: int = 0) -> Path:
    """Randomly initialised model from training/configs/tiny.yaml, saved as a checkpoint."""
    import torch

    from priorocc_core.checkpoint import save_checkpoint
    from priorocc_core.config import load_config
    from priorocc_core.model import build_model

    torch.manual_seed(seed)
    cfg = load_config(TINY_CONFIG)
    save_checkpoint(out, build_model(cfg.model), cfg)
    return Path(out)


def synthetic_frame(n: int = 6, hw: tuple[int, int] = (900, 1600), seed: int = 0) -> dict:
    """A nuScenes-like rig (N cameras evenly spread in yaw, 1.5 m high) and smooth random images."""
    rng = np.random.default_rng(seed)
    h, w = hw
    K = np.array([[1266.0 * w / 1600, 0, w / 2], [0, 1266.0 * w / 1600, h / 2], [0, 0, 1]])
    cams = []
    for i in range(n):
        yaw = 2 * np.pi * i / n
        rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        m = np.eye(4)
        m[:3, :3] = rz @ np.array([[0, 0, 1.0], [-1, 0, 0], [0, -1, 0]])
        m[2, 3] = 1.5
        cams.append(m)
    images = []
    for _ in range(n):
        small = rng.integers(0, 256, (h // 50 + 1, w // 50 + 1, 3), dtype=np.uint8)
        images.append(np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR)))
    jpegs = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        jpegs.append(buf.getvalue())
    return dict(jpegs=jpegs, images=images, K=K[None].repeat(n, 0), cam2ego=np.stack(cams), token="synthetic")
