"""Benchmark / test inputs: the real nuScenes keyframe in ../shared/data, or a synthetic rig."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from priorocc_core.classes import CAMERAS
from priorocc_core.geometry import transform_from_quat

ROOT = Path(__file__).resolve().parents[1]
REAL_ROOT = ROOT.parent / "shared" / "data" / "nuscenes-real"


def load_real_keyframe(dataroot: str | Path = REAL_ROOT) -> dict:
    """The one real keyframe: dict(jpegs list of 6 bytes, images list of 6 (900, 1600, 3) uint8 RGB,
    K (6, 3, 3), cam2ego (6, 4, 4) float64), cameras in CAMERAS order."""
    from nuscenes.nuscenes import NuScenes

    dataroot = Path(dataroot)
    if not (dataroot / "v1.0-mini").is_dir():
        raise FileNotFoundError(f"{dataroot}: expected the nuScenes v1.0-mini tables of the real keyframe "
                                "(see ../shared/data/README.md)")
    nusc = NuScenes(version="v1.0-mini", dataroot=str(dataroot), verbose=False)
    sample = nusc.sample[0]
    jpegs, images, Ks, c2e = [], [], [], []
    for cam in CAMERAS:
        sd = nusc.get("sample_data", sample["data"][cam])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        data = (dataroot / sd["filename"]).read_bytes()
        jpegs.append(data)
        images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        Ks.append(np.asarray(cs["camera_intrinsic"], dtype=np.float64))
        c2e.append(transform_from_quat(cs["translation"], cs["rotation"]))
    return dict(jpegs=jpegs, images=images, K=np.stack(Ks), cam2ego=np.stack(c2e), token=sample["token"])


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
