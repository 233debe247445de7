"""The real nuScenes keyframe (v1.0-mini tables, sample 0): six JPEGs with their calibration.

Used for calibration (``priorocc_quantize --real``), benchmarks and tests; its folder is an
argument (the repository's copy lives in ../shared/data/nuscenes-real, see its README).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..classes import CAMERAS
from ..geometry import transform_from_quat


def load_real_keyframe(dataroot: str | Path) -> dict:
    """``dataroot`` holding v1.0-mini -> dict(jpegs list of 6 bytes, images list of 6 (900, 1600, 3) uint8
    RGB, K (6, 3, 3), cam2ego (6, 4, 4) float64, token), cameras in CAMERAS order.

    Raises FileNotFoundError naming the folder when the tables are not there."""
    dataroot = Path(dataroot)
    if not (dataroot / "v1.0-mini").is_dir():
        raise FileNotFoundError(f"{dataroot}: expected the nuScenes v1.0-mini tables of the real keyframe "
                                "(see ../shared/data/README.md)")
    from nuscenes.nuscenes import NuScenes

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
