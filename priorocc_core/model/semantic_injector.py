"""PriorOcc's SemanticInjector: an explicit 2D semantic prior between the image neck and
the view transformer.

SegHead:     (B*N, C, h, w) -> 3x3 conv (no bias) -> BN -> ReLU -> 1x1 conv -> (B*N, K, h, w)
FusionLayer: concat(features, logits) (B*N, C+K, h, w) -> 1x1 conv (no bias) -> BN -> ReLU
             -> (B*N, C, h, w)
loss_2d_seg: cross-entropy of the logits against 2D labels (ignore 255), weighted.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..classes import IGNORE


class SegHead(nn.Module):
    def __init__(self, in_channels: int, mid_channels: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, mid_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(mid_channels)
        self.classifier = nn.Conv2d(mid_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.relu(self.bn(self.conv(x))))


class FusionLayer(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels + num_classes, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, feats: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(torch.cat([feats, prior], dim=1))))


class SemanticInjector(nn.Module):
    """(B*N, C, h, w) -> (fused features (B*N, C, h, w), seg logits (B*N, K, h, w))."""

    def __init__(self, channels: int = 256, mid_channels: int = 256, num_classes: int = 17,
                 softmax_before_fusion: bool = False):
        super().__init__()
        self.seg_head = SegHead(channels, mid_channels, num_classes)
        self.fusion = FusionLayer(channels, num_classes, channels)
        self.softmax_before_fusion = softmax_before_fusion

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.seg_head(feats)
        prior = logits.softmax(dim=1) if self.softmax_before_fusion else logits
        return self.fusion(feats, prior), logits


def loss_2d_seg(logits: torch.Tensor, labels: torch.Tensor, resolution: str = "label") -> torch.Tensor:
    """Cross-entropy of 2D logits against labels (ignore 255).

    logits (B*N, K, h, w); labels (B*N, H, W) integer. ``resolution="label"`` upsamples the
    logits bilinearly to the label size (PriorOcc); ``"feature"`` nearest-downsamples labels.
    """
    labels = labels.long()
    if resolution == "label":
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=True)
    elif resolution == "feature":
        labels = F.interpolate(labels[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0].long()
    else:
        raise ValueError(f"injector.loss_resolution must be 'label' or 'feature', got {resolution!r}")
    if not (labels != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE)
