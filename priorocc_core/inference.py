"""Camera images in, occupancy out: the one entry point the node, the replay and the demo use.

    predictor = OccupancyPredictor.from_checkpoint("model_dir")
    pred = predictor.predict(images, K, cam2ego)   # N (H, W, 3) uint8 RGB, (N, 3, 3), (N, 4, 4)
    pred.occupancy  # (200, 200, 16) uint8 class per voxel, index [x, y, z]
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint
from .config import Config
from .preprocess import prepare_camera


@dataclass
class Prediction:
    occupancy: np.ndarray  # (Dx, Dy, Dz) uint8 labels
    seg2d: np.ndarray | None  # (N, H_in, W_in) uint8 labels at network-input size, or None
    img_aug: np.ndarray  # (N, 3, 3) original pixels -> network-input pixels
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


class OccupancyPredictor:
    """Preprocess -> network -> labels, for one synchronised set of N camera images.

    ``fused_resize`` (False: FlashOCC's exact pixels): resize + crop in one Pillow call, see
    :func:`priorocc_core.preprocess.resize_crop_fused` (BENCHMARKS.md: speed and voxel agreement)."""

    fused_resize: bool = False

    def __init__(self, model: torch.nn.Module, cfg: Config, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.cfg = cfg
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path, device: str = "cpu") -> "OccupancyPredictor":
        model, cfg, _ = load_checkpoint(path, device)
        return cls(model, cfg, device)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.cfg.model.image.cameras)

    def preprocess(self, images: Sequence[np.ndarray], K: np.ndarray, cam2ego: np.ndarray) -> dict:
        """N (H, W, 3) uint8 RGB images + calibration -> a batch of one sample."""
        n = len(self.cameras)
        if len(images) != n:
            raise ValueError(f"predict: expected {n} images ({', '.join(self.cameras)}), got {len(images)}")
        K = np.asarray(K, dtype=np.float64)
        cam2ego = np.asarray(cam2ego, dtype=np.float64)
        if K.shape != (n, 3, 3) or cam2ego.shape != (n, 4, 4):
            raise ValueError(f"predict: expected K (N,3,3) and cam2ego (N,4,4) for N={n}, got {K.shape} and {cam2ego.shape}")
        imgs, augs = [], []
        for i, img in enumerate(images):
            img = np.asarray(img)
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise ValueError(f"predict: image {i} ({self.cameras[i]}) must be (H, W, 3) uint8 RGB, "
                                 f"got {img.shape} {img.dtype}")
            x, aug, _ = prepare_camera(img, self.cfg.model.image, fused=self.fused_resize)
            imgs.append(x)
            augs.append(aug)
        f32 = dict(dtype=torch.float32, device=self.device)
        return dict(
            imgs=torch.stack(imgs)[None].to(self.device),
            cam2ego=torch.as_tensor(cam2ego, **f32)[None],
            K=torch.as_tensor(K, **f32)[None],
            img_aug=torch.as_tensor(np.stack(augs), **f32)[None],
            bev_aug=torch.eye(4, **f32)[None],
        )

    def run_network(self, batch: dict) -> dict:
        """A batch from :meth:`preprocess` -> dict(occ (1, Dx, Dy, Dz) integer labels,
        seg_logits (1, N, K, h, w) or None). Backends override this (see backends.py)."""
        out = self.model(batch)
        return dict(occ=out["occ"], seg_logits=out["seg_logits"])

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], K: np.ndarray, cam2ego: np.ndarray) -> Prediction:
        t0 = time.perf_counter()
        batch = self.preprocess(images, K, cam2ego)
        t1 = time.perf_counter()
        out = self.run_network(batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t2 = time.perf_counter()
        occ = out["occ"][0].to(torch.uint8).cpu().numpy()
        seg = None
        if out["seg_logits"] is not None:
            h, w = self.cfg.model.image.input_size
            logits = F.interpolate(out["seg_logits"][0].float(), size=(h, w), mode="bilinear", align_corners=True)
            seg = logits.argmax(1).to(torch.uint8).cpu().numpy()
        t3 = time.perf_counter()
        return Prediction(occ, seg, batch["img_aug"][0].cpu().numpy().astype(np.float64),
                          {"preprocess": t1 - t0, "model": t2 - t1, "postprocess": t3 - t2})
