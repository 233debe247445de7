"""Features -> BEV: lift-splat-shoot with FlashOCC's LSSViewTransformer layout.

depth_net: one 1x1 conv (B*N, C_in, fH, fW) -> (B*N, D + C_bev, fH, fW), depth logits first.
The depth distribution (softmax over D) times the context features is pooled into the ego
grid (:mod:`.bev_pool`) and z is collapsed: (B, C_bev, Dy, Dx).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GridConfig
from ..geometry import create_frustum, frustum_to_ego
from .bev_pool import PoolingIndices, bev_pool, pooling_indices


class LSSViewTransformer(nn.Module):
    def __init__(self, grid: GridConfig, input_size: tuple[int, int], in_channels: int = 256,
                 out_channels: int = 64, downsample: int = 16):
        super().__init__()
        self.grid = grid
        self.downsample = downsample
        self.out_channels = out_channels
        self.register_buffer("frustum", create_frustum(grid.depth, input_size, downsample), persistent=False)
        self.D = self.frustum.shape[0]
        self.depth_net = nn.Conv2d(in_channels, self.D + out_channels, 1)
        self.register_buffer("grid_lower", torch.tensor([grid.x[0], grid.y[0], grid.z[0]]), persistent=False)
        self.register_buffer("grid_interval", torch.tensor([grid.x[2], grid.y[2], grid.z[2]]), persistent=False)
        self.size_xyz = grid.size_xyz
        self.cache_geometry = True  # reuse pooling indices while the geometry stays the same
        self._cache_key: torch.Tensor | None = None
        self._cache_plan: PoolingIndices | None = None

    # ------------------------------------------------------------------ geometry
    def ego_coords(self, cam2ego, K, img_aug, bev_aug) -> torch.Tensor:
        """(B, N, D, fH, fW, 3) ego coordinates of the frustum points."""
        return frustum_to_ego(self.frustum, cam2ego, K, img_aug, bev_aug)

    def plan(self, cam2ego, K, img_aug, bev_aug) -> PoolingIndices:
        """Pooling indices for this geometry; cached when it equals the previous call's."""
        key = torch.cat([cam2ego.flatten(), K.flatten(), img_aug.flatten(), bev_aug.flatten()]).detach()
        if (self.cache_geometry and self._cache_plan is not None and self._cache_key is not None
                and self._cache_key.shape == key.shape and self._cache_key.device == key.device
                and torch.equal(self._cache_key, key)):
            return self._cache_plan
        with torch.no_grad():
            coords = self.ego_coords(cam2ego.float(), K.float(), img_aug.float(), bev_aug.float())
            plan = pooling_indices(coords, self.grid_lower, self.grid_interval, self.size_xyz)
        if self.cache_geometry:
            self._cache_key, self._cache_plan = key, plan
        return plan

    # ------------------------------------------------------------------ forward
    def forward(self, feats: torch.Tensor, cam2ego, K, img_aug, bev_aug, plan: PoolingIndices | None = None):
        """feats (B, N, C_in, fH, fW) -> (bev (B, C_bev, Dy, Dx), depth (B*N, D, fH, fW))."""
        b, n, c, h, w = feats.shape
        x = self.depth_net(feats.reshape(b * n, c, h, w))  # (B*N, D + C_bev, fH, fW)
        depth = x[:, : self.D].softmax(dim=1)  # (B*N, D, fH, fW)
        context = x[:, self.D : self.D + self.out_channels]  # (B*N, C_bev, fH, fW)
        if plan is None:
            plan = self.plan(cam2ego, K, img_aug, bev_aug)
        context = context.view(b, n, self.out_channels, h, w).permute(0, 1, 3, 4, 2)  # (B, N, fH, fW, C)
        # sums in fp32 even when the network runs in bf16 / fp16 (no-op in fp32)
        bev = bev_pool(depth.view(b, n, self.D, h, w).float(), context.float(), plan).to(x.dtype)  # (B, C, Dz, Dy, Dx)
        bev = torch.cat(bev.unbind(dim=2), dim=1)  # collapse z: (B, C*Dz, Dy, Dx)
        return bev, depth

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
        bins = (t - (start - step)) / step
        bins = torch.where((bins < self.D + 1) & (bins >= 0), bins, torch.zeros_like(bins))
        onehot = F.one_hot(bins.long(), num_classes=self.D + 1)[..., 1:].reshape(-1, self.D).float()
        pred = depth.permute(0, 2, 3, 1).reshape(-1, self.D)
        fg = onehot.max(dim=1).values > 0
        if not fg.any():
            return depth.sum() * 0.0
        pred = pred[fg].float().clamp(1e-6, 1 - 1e-6)
        return F.binary_cross_entropy(pred, onehot[fg], reduction="sum") / fg.sum().clamp(min=1)
