"""BEVDepth's camera-aware depth net (FlashOCC's ``DepthNet``, LSSViewTransformerBEVDepth / BEVStereo).

features (B*N, C_in, fH, fW), camera parameters (B*N, 27)
  -> reduce_conv 3x3                         (B*N, C_mid, fH, fW)
  -> context: SE gated by an MLP of the camera parameters, 1x1 conv -> (B*N, C_ctx, fH, fW)
  -> depth:   SE gated by another MLP; with stereo the cost volume (B*N, D, 4fH, 4fW), two stride-2
              convs -> (B*N, D, fH, fW), concatenated; three BasicBlocks, ASPP, 1x1 conv -> (B*N, D, fH, fW)
-> (B*N, D + C_ctx, fH, fW), depth logits first (as the plain 1x1 conv's output).

Module and parameter names follow FlashOCC's (``reduce_conv.0``, ``depth_mlp.fc1``,
``depth_se.conv_reduce``, ``depth_conv.3.aspp1.atrous_conv``, ``cost_volumn_net.0``, ...), so a
FlashOCC checkpoint's ``img_view_transformer.depth_net.*`` maps one to one (priorocc_core/importer.py).
The cost volume itself is geometry (:mod:`.stereo`); this module only takes it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .bev_encoder import BasicBlock

NUM_CAMERA_PARAMS = 27


def camera_params(cam2ego: torch.Tensor, K: torch.Tensor, img_aug: torch.Tensor, bev_aug: torch.Tensor) -> torch.Tensor:
    """BEVDepth's ``mlp_input``: cam2ego (B, N, 4, 4), K (B, N, 3, 3), img_aug (B, N, 3, 3) (its
    2x2 part is FlashOCC's post_rot, its last column post_tran), bev_aug (B, 4, 4) (its 3x3 part is
    FlashOCC's bda) -> (B, N, 27): fx, fy, cx, cy, the image augmentation's 2x3, bda's 2x2 and
    (2, 2), then cam2ego's first three rows."""
    b, n = cam2ego.shape[:2]
    bda = bev_aug[:, None, :3, :3].expand(b, n, 3, 3)
    p = torch.stack([K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2],
                     img_aug[..., 0, 0], img_aug[..., 0, 1], img_aug[..., 0, 2],
                     img_aug[..., 1, 0], img_aug[..., 1, 1], img_aug[..., 1, 2],
                     bda[..., 0, 0], bda[..., 0, 1], bda[..., 1, 0], bda[..., 1, 1], bda[..., 2, 2]], dim=-1)
    return torch.cat([p, cam2ego[..., :3, :].reshape(b, n, 12)], dim=-1).float()  # (B, N, 27)


class Mlp(nn.Module):
    """(B*N, 27) -> (B*N, C): fc1, ReLU, fc2."""

    def __init__(self, in_features: int, hidden: int, out_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SELayer(nn.Module):
    """x (B*N, C, fH, fW) gated per channel by sigmoid(expand(relu(reduce(x_se)))), x_se (B*N, C, 1, 1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, channels, 1)
        self.conv_expand = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, x_se: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv_expand(F.relu(self.conv_reduce(x_se))))


class ASPPBranch(nn.Module):
    """conv (no bias, dilated), BN, ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int):
        super().__init__()
        self.atrous_conv = nn.Conv2d(c_in, c_out, kernel, 1, 0 if kernel == 1 else dilation, dilation, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    """(B*N, C, fH, fW) -> (B*N, C, fH, fW): branches 1x1 and 3x3 dilated 6, 12, 18 plus the image
    mean, each to C_mid; concatenated, 1x1 conv back to C, BN, ReLU, dropout 0.5."""

    def __init__(self, channels: int, mid_channels: int):
        super().__init__()
        self.aspp1 = ASPPBranch(channels, mid_channels, 1, 1)
        self.aspp2 = ASPPBranch(channels, mid_channels, 3, 6)
        self.aspp3 = ASPPBranch(channels, mid_channels, 3, 12)
        self.aspp4 = ASPPBranch(channels, mid_channels, 3, 18)
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Conv2d(channels, mid_channels, 1, bias=False),
                                             nn.BatchNorm2d(mid_channels), nn.ReLU())
        self.conv1 = nn.Conv2d(5 * mid_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2, x3, x4 = self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x)
        x5 = F.interpolate(self.global_avg_pool(x), size=x4.shape[2:], mode="bilinear", align_corners=True)
        x = F.relu(self.bn1(self.conv1(torch.cat((x1, x2, x3, x4, x5), dim=1))))
        return self.dropout(x)


class DepthNet(nn.Module):
    """FlashOCC's DepthNet with use_dcn False and use_aspp True (its M2 / BEVDepth settings).

    stereo: the depth branch also takes a cost volume (B*N, D, 4fH, 4fW) (probabilities over the
    depth bins, :func:`.stereo.cost_volume`), brought to (fH, fW) by ``cost_volumn_net``."""

    def __init__(self, in_channels: int, mid_channels: int, context_channels: int, depth_channels: int,
                 aspp_mid_channels: int, stereo: bool = False):
        super().__init__()
        self.depth_channels, self.stereo = depth_channels, stereo
        self.reduce_conv = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 3, 1, 1), nn.BatchNorm2d(mid_channels),
                                         nn.ReLU(inplace=True))
        self.context_conv = nn.Conv2d(mid_channels, context_channels, 1)
        self.bn = nn.BatchNorm1d(NUM_CAMERA_PARAMS)
        self.depth_mlp = Mlp(NUM_CAMERA_PARAMS, mid_channels, mid_channels)
        self.depth_se = SELayer(mid_channels)
        self.context_mlp = Mlp(NUM_CAMERA_PARAMS, mid_channels, mid_channels)
        self.context_se = SELayer(mid_channels)
        c_depth, shortcut = mid_channels, None
        if stereo:
            c_depth += depth_channels
            shortcut = nn.Conv2d(c_depth, mid_channels, 1)
            self.cost_volumn_net = nn.Sequential(
                nn.Conv2d(depth_channels, depth_channels, 3, 2, 1), nn.BatchNorm2d(depth_channels),
                nn.Conv2d(depth_channels, depth_channels, 3, 2, 1), nn.BatchNorm2d(depth_channels))
        self.depth_conv = nn.Sequential(
            BasicBlock(c_depth, mid_channels, downsample=shortcut), BasicBlock(mid_channels, mid_channels),
            BasicBlock(mid_channels, mid_channels), ASPP(mid_channels, aspp_mid_channels),
            nn.Conv2d(mid_channels, depth_channels, 1))

    def forward(self, x: torch.Tensor, cam: torch.Tensor, cost: torch.Tensor | None = None) -> torch.Tensor:
        """x (B*N, C_in, fH, fW); cam (B*N, 27) camera parameters; cost (B*N, D, 4fH, 4fW) with
        stereo -> (B*N, D + C_ctx, fH, fW)."""
        if self.stereo != (cost is not None):
            raise ValueError(f"DepthNet(stereo={self.stereo}): cost volume {'missing' if self.stereo else 'given'}")
        cam = self.bn(cam)
        x = self.reduce_conv(x)  # (B*N, C_mid, fH, fW)
        context = self.context_conv(self.context_se(x, self.context_mlp(cam)[..., None, None]))
        depth = self.depth_se(x, self.depth_mlp(cam)[..., None, None])  # (B*N, C_mid, fH, fW)
        if cost is not None:
            depth = torch.cat([depth, self.cost_volumn_net(cost)], dim=1)  # (B*N, C_mid + D, fH, fW)
        return torch.cat([self.depth_conv(depth), context], dim=1)
