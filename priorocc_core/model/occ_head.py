"""Encoded BEV -> voxel logits: FlashOCC's channel-to-height head (BEVOCCHead2D).

(B, C_enc, Dy, Dx) -> 3x3 conv + ReLU -> permute (B, Dx, Dy, C) -> Linear C->2C, Softplus,
Linear 2C->Dz*K -> view (B, Dx, Dy, Dz, K), indexed [x, y, z, class].
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..classes import IGNORE

# Occ3D-nuScenes voxel counts per class (FlashOCC's nusc_class_frequencies), for class balance.
NUSC_CLASS_FREQUENCIES = np.array([
    944004, 1897170, 152386, 2391677, 16957802, 724139, 189027, 2074468, 413451, 2384460,
    5916653, 175883646, 4275424, 51393615, 61411620, 105975596, 116424404, 1892500630,
], dtype=np.float64)


class OccHead2D(nn.Module):
    def __init__(self, in_dim: int = 256, out_dim: int = 256, dz: int = 16, num_classes: int = 18,
                 use_mask: bool = True, class_balance: bool = False, class_weights=()):
        super().__init__()
        self.dz, self.num_classes, self.use_mask = dz, num_classes, use_mask
        self.final_conv = nn.Conv2d(in_dim, out_dim, 3, padding=1)
        self.predicter = nn.Sequential(nn.Linear(out_dim, out_dim * 2), nn.Softplus(), nn.Linear(out_dim * 2, num_classes * dz))
        weights = torch.from_numpy(1.0 / np.log(NUSC_CLASS_FREQUENCIES[:num_classes] + 0.001)).float()
        if len(class_weights):
            if len(class_weights) != num_classes:
                raise ValueError(f"head.class_weights has {len(class_weights)} values, expected num_classes = {num_classes}")
            weights, class_balance = torch.tensor([float(w) for w in class_weights]), True
        self.register_buffer("class_weights", weights if class_balance else None, persistent=False)

    def forward(self, bev: torch.Tensor) -> torch.Tensor:
        """bev (B, C, Dy, Dx) -> logits (B, Dx, Dy, Dz, K)."""
        x = F.relu(self.final_conv(bev)).permute(0, 3, 2, 1)  # (B, Dx, Dy, C)
        b, dx, dy = x.shape[:3]
        return self.predicter(x).view(b, dx, dy, self.dz, self.num_classes)

    def loss(self, logits: torch.Tensor, voxel_semantics: torch.Tensor, mask_camera: torch.Tensor | None) -> torch.Tensor:
        """Cross-entropy over voxels inside ``mask_camera`` (all voxels when use_mask is off),
        averaged over their count (or their summed class weights with class balance)."""
        target = voxel_semantics.long().reshape(-1)
        pred = logits.reshape(-1, self.num_classes).float()
        if self.use_mask and mask_camera is not None:
            w = mask_camera.reshape(-1).float()
        else:
            w = torch.ones_like(target, dtype=torch.float32)
        w = w * (target != IGNORE).float()
        tgt = torch.where(target == IGNORE, torch.zeros_like(target), target)
        ce = F.cross_entropy(pred, tgt, weight=self.class_weights, reduction="none")
        if self.class_weights is not None:
            denom = (self.class_weights[tgt] * w).sum()
        else:
            denom = w.sum()
        return (ce * w).sum() / denom.clamp(min=1.0)
