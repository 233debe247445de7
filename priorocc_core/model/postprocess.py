"""Network outputs -> labels, written once (the model, the exported graph, evaluation, backends).

occ_labels: logits (B, Dx, Dy, Dz, K) -> (B, Dx, Dy, Dz) class per voxel (argmax).
seg_labels: 2D logits (..., K, h, w) -> (..., H, W) class per pixel: bilinear upsampling
            (align_corners=True, as PriorOcc's SegHead loss does) then argmax.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def occ_labels(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1)


def seg_labels(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    lead = logits.shape[:-3]
    x = logits.reshape(-1, *logits.shape[-3:]).float()
    x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
    return x.argmax(1).view(*lead, *size)
