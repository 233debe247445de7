"""BEV -> encoded BEV: FlashOCC's CustomResNet (residual BEV backbone) and FPN_LSS neck.

(B, C_bev, 200, 200) -> [(B, 2C, 100, 100), (B, 4C, 50, 50), (B, 8C, 25, 25)]
-> FPN_LSS: upsample level 2 x4, concat level 0, two 3x3 convs, upsample x2, 3x3 + 1x1 conv
-> (B, C_enc, 200, 200).
"""
from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """mmdet's BasicBlock (conv1/bn1/conv2/bn2 + downsample) as CustomResNet uses it."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class BEVResNet(nn.Module):
    """CustomResNet: per stage one strided BasicBlock (3x3 strided conv as shortcut) + more blocks."""

    def __init__(self, in_channels: int, num_channels=(128, 256, 512), num_layer=(2, 2, 2), strides=(2, 2, 2)):
        super().__init__()
        layers, c = [], in_channels
        for ch, nl, st in zip(num_channels, num_layer, strides):
            blocks = [BasicBlock(c, ch, st, downsample=nn.Conv2d(c, ch, 3, st, 1))]
            blocks += [BasicBlock(ch, ch) for _ in range(nl - 1)]
            layers.append(nn.Sequential(*blocks))
            c = ch
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class FPNLSS(nn.Module):
    """FPN_LSS with input levels (0, 2), scale 4, extra x2 upsample (FlashOCC's defaults)."""

    def __init__(self, in_channels: int, out_channels: int, scale_factor: int = 4, levels=(0, 2)):
        super().__init__()
        self.levels = levels
        self.up = nn.Upsample(scale_factor=scale_factor, mode="bilinear", align_corners=True)
        mid = out_channels * 2
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        )
        self.up2 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(mid, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 1),
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        low, high = feats[self.levels[0]], feats[self.levels[1]]
        x = torch.cat([low, self.up(high)], dim=1)  # (B, C0 + C2, 100, 100)
        return self.up2(self.conv(x))  # (B, C_enc, 200, 200)
