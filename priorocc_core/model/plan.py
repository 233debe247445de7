"""The pooling plan of a camera rig, built in one place.

Which BEV voxel every frustum point falls in depends only on the geometry (cam2ego, K,
img_aug, bev_aug), the grid and the frustum. :class:`PoolingPlanner` turns geometry into a
:class:`~.bev_pool.PoolingIndices` and keeps the last one while the geometry stays the same
(a fixed rig: one plan for a whole drive). The model's view transformer, the ONNX exporter, every
inference backend and the benchmark all get their plan from here; the exported graph takes the
plan as inputs (see :mod:`priorocc_core.export`).

Its tensors are plain attributes, not module buffers: a model cast to bf16 / fp16 keeps the
geometry in fp32 (bf16 would move points across voxels).
"""
from __future__ import annotations

import torch

from ..config import GridConfig, ModelConfig
from ..geometry import create_frustum, frustum_to_ego
from .bev_pool import PoolingIndices, drop_cameras, pooling_indices


class PoolingPlanner:
    def __init__(self, grid: GridConfig, input_size: tuple[int, int], downsample: int, sid: bool = False):
        self.frustum = create_frustum(grid.depth, tuple(input_size), downsample, sid)  # (D, fH, fW, 3) (u, v, d)
        self.lower = torch.tensor([grid.x[0], grid.y[0], grid.z[0]], dtype=torch.float32)
        self.interval = torch.tensor([grid.x[2], grid.y[2], grid.z[2]], dtype=torch.float32)
        self.size_xyz = grid.size_xyz  # (Dx, Dy, Dz) of the pooling grid
        self.cache = True
        self._key: torch.Tensor | None = None
        self._plan: PoolingIndices | None = None

    @classmethod
    def from_config(cls, m: ModelConfig) -> "PoolingPlanner":
        return cls(m.grid, tuple(m.image.input_size), m.view_transformer.downsample, m.view_transformer.sid)

    @property
    def num_depth_bins(self) -> int:
        return self.frustum.shape[0]

    def ego_coords(self, cam2ego, K, img_aug, bev_aug) -> torch.Tensor:
        """(B, N, D, fH, fW, 3) ego metres of the frustum points (fp32)."""
        return frustum_to_ego(self.frustum, cam2ego.float(), K.float(), img_aug.float(), bev_aug.float())

    @torch.no_grad()
    def __call__(self, cam2ego, K, img_aug, bev_aug) -> PoolingIndices:
        """cam2ego (B, N, 4, 4), K (B, N, 3, 3), img_aug (B, N, 3, 3), bev_aug (B, 4, 4) -> plan on
        their device; the previous plan when the geometry is unchanged."""
        key = torch.cat([cam2ego.flatten(), K.flatten(), img_aug.flatten(), bev_aug.flatten()]).detach().float()
        if (self.cache and self._plan is not None and self._key is not None and self._key.shape == key.shape
                and self._key.device == key.device and torch.equal(self._key, key)):
            return self._plan
        plan = pooling_indices(self.ego_coords(cam2ego, K, img_aug, bev_aug), self.lower, self.interval, self.size_xyz)
        if self.cache:
            self._key, self._plan = key, plan
        return plan

    def masked(self, plan: PoolingIndices, keep) -> PoolingIndices:
        """``plan`` without the points of the cameras where keep (B, N) is False (a camera that
        sent nothing: :func:`.bev_pool.drop_cameras`); the plan itself when every camera is kept
        (bitwise the unmasked path). CameraMaskError when a frame keeps no camera."""
        if keep is None or bool(torch.as_tensor(keep, dtype=torch.bool).all()):
            return plan
        return drop_cameras(plan, keep, self.frustum.shape[1] * self.frustum.shape[2])
