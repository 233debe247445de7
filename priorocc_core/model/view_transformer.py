"""Features -> BEV: lift-splat-shoot with FlashOCC's LSSViewTransformer layout.

depth_net (B*N, C_in, fH, fW) -> (B*N, D + C_bev, fH, fW), depth logits first: one 1x1 conv
(``depth_net: conv``, LSSViewTransformer) or BEVDepth's camera-aware DepthNet (``camera_aware``,
:mod:`.depth_net`; with stereo it also takes the cost volume of :mod:`.stereo`).
The depth distribution (softmax over D) times the context features is pooled into the ego
grid (:mod:`.bev_pool`, with the plan of :mod:`.plan`) and z is collapsed: (B, C_bev*Dz, Dy, Dx).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GridConfig
from ..geometry import create_frustum
from .bev_pool import PoolingIndices, bev_pool
from .depth_net import DepthNet
from .plan import PoolingPlanner

DEPTH_NETS = ("conv", "camera_aware")
STEREO_DOWNSAMPLE = 4  # the cost volume's stride (ResNet stage 0)


class LSSViewTransformer(nn.Module):
    def __init__(self, grid: GridConfig, input_size: tuple[int, int], in_channels: int = 256,
                 out_channels: int = 64, downsample: int = 16, sid: bool = False, depth_net: str = "conv",
                 aspp_mid_channels: int = 96, stereo: bool = False):
        super().__init__()
        if depth_net not in DEPTH_NETS:
            raise ValueError(f"view_transformer.depth_net: {depth_net!r}; expected one of {DEPTH_NETS}")
        if stereo and depth_net != "camera_aware":
            raise ValueError("model.temporal.stereo needs view_transformer.depth_net: camera_aware (BEVStereo4D's "
                             "cost volume feeds BEVDepth's DepthNet)")
        self.grid = grid
        self.downsample = downsample
        self.out_channels = out_channels
        self.sid = sid
        self.planner = PoolingPlanner(grid, input_size, downsample, sid)
        self.D = self.planner.num_depth_bins
        self.camera_aware = depth_net == "camera_aware"
        if self.camera_aware:
            self.depth_net = DepthNet(in_channels, in_channels, out_channels, self.D, aspp_mid_channels, stereo)
        else:
            self.depth_net = nn.Conv2d(in_channels, self.D + out_channels, 1)
        # stereo: the (D, H/4, W/4, 3) frustum of the cost volume (FlashOCC's cv_frustum); a plain attribute (fp32)
        self.cv_frustum = create_frustum(grid.depth, tuple(input_size), STEREO_DOWNSAMPLE, sid) if stereo else None

    def depth_net_fingerprint(self) -> torch.Tensor:
        """One tensor that changes with the depth net's weights (a history's key, temporal.history_key)."""
        if not self.camera_aware:
            return self.depth_net.weight
        return torch.cat([p.detach().flatten() for p in self.depth_net.parameters()])

    # ------------------------------------------------------------------ forward
    def forward(self, feats: torch.Tensor, plan: PoolingIndices, cam: torch.Tensor | None = None,
                cost: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B*N, C_in, fH, fW), plan of a (B, N) rig -> (bev (B, Dz*C_bev, Dy, Dx), depth (B*N, D, fH, fW)).
        The camera-aware depth net also takes cam (B*N, 27) (:func:`.depth_net.camera_params`) and,
        with stereo, cost (B*N, D, 4fH, 4fW) (:func:`.stereo.cost_volume`).

        The plan's flat ranks index depth as (B*N, D, fH, fW) and features as (B*N, fH, fW):
        no (B, N) split is needed here."""
        if self.camera_aware:
            if cam is None:
                raise ValueError("view_transformer: the camera-aware depth net needs the camera parameters")
            x = self.depth_net(feats, cam, cost)  # (B*N, D + C_bev, fH, fW)
        else:
            x = self.depth_net(feats)  # (B*N, D + C_bev, fH, fW)
        depth = x[:, : self.D].softmax(dim=1)  # (B*N, D, fH, fW)
        context = x[:, self.D : self.D + self.out_channels].permute(0, 2, 3, 1)  # (B*N, fH, fW, C)
        # sums in fp32 even when the network runs in bf16 / fp16 (no-op in fp32)
        bev = bev_pool(depth.float(), context.float(), plan).to(x.dtype)  # (B, C, Dz, Dy, Dx)
        return torch.cat(bev.unbind(dim=2), dim=1), depth  # collapse z as FlashOCC: channels z*C + c

    # ------------------------------------------------------------------ depth supervision
    def depth_loss(self, depth: torch.Tensor, depth_target: torch.Tensor) -> torch.Tensor:
        """BEVDepth-style loss. depth (B*N, D, fH, fW) probabilities; depth_target (B, N, H, W)
        metres, 0 where unknown. Each feature cell's target is the nearest lidar depth in its
        stride x stride patch, one-hot over the depth bins; binary cross-entropy over cells
        with a target."""
        b, n, H, W = depth_target.shape
        s = self.downsample
        t = depth_target.view(b * n, H // s, s, W // s, s).permute(0, 1, 3, 2, 4).reshape(b * n, H // s, W // s, s * s)
        t = torch.where(t > 0, t, torch.full_like(t, 1e5)).min(dim=-1).values  # (B*N, fH, fW)
        start, stop, step = self.grid.depth
        if self.sid:  # FlashOCC's get_downsampled_gt_depth with sid: log-spaced bin index + 1
            bins = (torch.log(t) - torch.log(torch.tensor(float(start)))) * (self.D - 1) / torch.log(
                torch.tensor(stop - 1.0) / start) + 1.0
        else:
            bins = (t - (start - step)) / step
        bins = torch.where((bins < self.D + 1) & (bins >= 0), bins, torch.zeros_like(bins))
        onehot = F.one_hot(bins.long(), num_classes=self.D + 1)[..., 1:].reshape(-1, self.D).float()
        pred = depth.permute(0, 2, 3, 1).reshape(-1, self.D)
        fg = onehot.max(dim=1).values > 0
        if not fg.any():
            return depth.sum() * 0.0
        pred = pred[fg].float().clamp(1e-6, 1 - 1e-6)
        return F.binary_cross_entropy(pred, onehot[fg], reduction="sum") / fg.sum().clamp(min=1)
