"""Images -> features: torchvision ResNet (stages C4, C5) and a one-level FPN at stride 16.

Module layout matches FlashOCC's ``img_backbone`` (mmdet ResNet, whose layer names are
torchvision's) and ``img_neck`` (CustomFPN with ``out_ids=[0]``), so their weights load.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.checkpoint import checkpoint

_RESNETS = {
    18: torchvision.models.resnet18,
    34: torchvision.models.resnet34,
    50: torchvision.models.resnet50,
    101: torchvision.models.resnet101,
}


def resnet_stage_channels(depth: int) -> tuple[int, int, int, int]:
    """Output channels of stages C2..C5 of a torchvision ResNet."""
    return (64, 128, 256, 512) if depth in (18, 34) else (256, 512, 1024, 2048)


def stage0_shape(depth: int, input_hw: tuple[int, int]) -> tuple[int, int, int]:
    """(C_2, H/4, W/4) of stage C2's output (:meth:`ResNetBackbone.stage0`): the stem's conv and
    max-pool each halve the size, rounding up."""
    h, w = input_hw
    return resnet_stage_channels(depth)[0], ((h + 1) // 2 + 1) // 2, ((w + 1) // 2 + 1) // 2


class ResNetBackbone(nn.Module):
    """torchvision ResNet without its classifier; returns the stages in ``out_indices``.

    Input (B*N, 3, H, W) -> list of (B*N, C_i, H/2^(i+2), W/2^(i+2)); indices 2, 3 = C4, C5.
    Randomly initialised: weights come from :func:`load_resnet_weights` (the model builder's job).
    """

    def __init__(self, depth: int = 50, out_indices=(2, 3), with_cp: bool = False):
        super().__init__()
        if depth not in _RESNETS:
            raise ValueError(f"backbone.depth must be one of {sorted(_RESNETS)}, got {depth}")
        net = _RESNETS[depth](weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_indices = tuple(out_indices)
        self.with_cp = with_cp
        self.out_channels = [resnet_stage_channels(depth)[i] for i in self.out_indices]

    def stage0(self, x: torch.Tensor) -> torch.Tensor:
        """Only the stem and stage C2: (B*N, 3, H, W) -> (B*N, C_2, H/4, W/4), the stride-4 features
        BEVStereo4D's extra reference frame needs (its ``extract_stereo_ref_feat``)."""
        return self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            if self.with_cp and x.requires_grad:
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
            if i in self.out_indices:
                outs.append(x)
            if i >= max(self.out_indices):
                break
        return outs


def load_resnet_weights(backbone: ResNetBackbone, path: str | Path) -> ResNetBackbone:
    """Load a local torchvision ResNet checkpoint (``state_dict`` or a bare one; its ``fc.*`` classifier
    is not used) into ``backbone``; every backbone tensor must come from the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone.pretrained: no file {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    missing, _ = backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False)
    if missing:
        raise ValueError(f"backbone.pretrained {path}: missing tensors {missing[:5]}...")
    return backbone


class CustomFPN(nn.Module):
    """FlashOCC's CustomFPN with one output (level 0): lateral 1x1 convs, top-down nearest
    upsampling and sum, one 3x3 output conv. [(B*N, 1024, H/16, W/16), (B*N, 2048, H/32, W/32)]
    -> (B*N, 256, H/16, W/16).
    """

    def __init__(self, in_channels=(1024, 2048), out_channels: int = 256):
        super().__init__()
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList([nn.Conv2d(out_channels, out_channels, 3, padding=1)])

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], mode="nearest")
        return self.fpn_convs[0](laterals[0])
