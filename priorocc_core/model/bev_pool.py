"""BEV pooling with BEVPoolv2's semantics, in pure PyTorch (no compiled op, exportable).

Every frustum point (b, n, d, h, w) that falls inside the grid adds
``depth[b, n, d, h, w] * feat[b, n, h, w, :]`` to its voxel (b, z, y, x). What depends only
on geometry (which voxel each point hits) is computed once by :func:`pooling_indices` and can
be cached for a fixed camera rig; :func:`bev_pool` then does one gather + one index_add
(training, export) or one sparse x dense matrix product (inference).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

# torch flags sparse CSR as beta on every construction; the path is tested here (tests/test_bev_pool.py)
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


@dataclass
class PoolingIndices:
    """Geometry-only pooling plan for one (B, N, D, fH, fW) frustum layout.

    ranks_bev (P,): flat voxel index b*Dz*Dy*Dx + z*Dy*Dx + y*Dx + x of each kept point
    ranks_depth (P,): flat index into depth (B, N, D, fH, fW)
    ranks_feat (P,): flat index into feat (B, N, fH, fW)
    out_shape: (B, Dz, Dy, Dx)
    """

    ranks_bev: torch.Tensor
    ranks_depth: torch.Tensor
    ranks_feat: torch.Tensor
    out_shape: tuple[int, int, int, int]
    _csr: tuple | None = field(default=None, repr=False, compare=False)

    def to(self, device) -> "PoolingIndices":
        return PoolingIndices(self.ranks_bev.to(device), self.ranks_depth.to(device), self.ranks_feat.to(device), self.out_shape)

    def csr(self, n_feat: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pair (P,), crow (V+1,), col (nnz,)): the plan as a sparse voxel x feature-pixel matrix.

        Points of one pixel that land in the same voxel (different depth bins) share one
        matrix entry ``pair``; built once per plan, i.e. once per rig.
        """
        if self._csr is None or self._csr[0] != n_feat:
            b, dz, dy, dx = self.out_shape
            key = self.ranks_bev * n_feat + self.ranks_feat
            uniq, pair = torch.unique(key, sorted=True, return_inverse=True)  # row-major: voxel, then pixel
            rows = torch.div(uniq, n_feat, rounding_mode="floor")
            crow = torch.zeros(b * dz * dy * dx + 1, dtype=torch.int64, device=key.device)
            crow[1:] = torch.bincount(rows, minlength=b * dz * dy * dx).cumsum(0)
            self._csr = (n_feat, pair, crow, uniq - rows * n_feat)
        return self._csr[1:]


def pooling_indices(coords: torch.Tensor, lower: torch.Tensor, interval: torch.Tensor,
                    size_xyz: tuple[int, int, int]) -> PoolingIndices:
    """coords (B, N, D, fH, fW, 3) ego metres -> :class:`PoolingIndices`.

    Voxel index = ((coord - lower) / interval) truncated toward zero, as BEVPoolv2's
    ``voxel_pooling_prepare_v2`` does (``.long()``); points outside [0, size) are dropped.
    Points are sorted by voxel so that the scatter writes memory in order.
    """
    b, n, d, h, w, _ = coords.shape
    dx, dy, dz = size_xyz
    idx = ((coords - lower.to(coords)) / interval.to(coords)).long().view(-1, 3)  # (B*N*D*fH*fW, 3)
    kept = (idx[:, 0] >= 0) & (idx[:, 0] < dx) & (idx[:, 1] >= 0) & (idx[:, 1] < dy) & (idx[:, 2] >= 0) & (idx[:, 2] < dz)
    ranks_depth = torch.nonzero(kept, as_tuple=False).squeeze(1)
    idx = idx[ranks_depth]
    bid = ranks_depth // (n * d * h * w)
    # flat depth index -> flat feature index: drop the D axis
    rem = ranks_depth % (n * d * h * w)
    cam = rem // (d * h * w)
    pix = rem % (h * w)
    ranks_feat = (bid * n + cam) * (h * w) + pix
    ranks_bev = bid * (dz * dy * dx) + idx[:, 2] * (dy * dx) + idx[:, 1] * dx + idx[:, 0]
    order = torch.argsort(ranks_bev, stable=True)
    return PoolingIndices(ranks_bev[order], ranks_depth[order], ranks_feat[order], (b, dz, dy, dx))



class CameraMaskError(ValueError):
    """A camera mask that cannot be applied (wrong shape, or no camera left in a frame)."""


def drop_cameras(plan: PoolingIndices, keep: torch.Tensor, feat_hw: int) -> PoolingIndices:
    """Plan without the points of masked cameras: pooling with it is pooling with those cameras'
    features zeroed (their frustum points add nothing to any voxel), for every backend, since the
    exported graphs take the plan as inputs (no re-export per camera combination).

    plan of a (B, N) rig; keep (B, N) bool, True = the camera is used; feat_hw = fH * fW (the
    feature map's pixels per camera: ranks_feat = (b * N + n) * feat_hw + pixel)."""
    keep = torch.as_tensor(keep, dtype=torch.bool).to(plan.ranks_feat.device)
    b = plan.out_shape[0]
    if keep.dim() != 2 or keep.shape[0] != b:
        raise CameraMaskError(f"camera mask: shape {tuple(keep.shape)}, expected (B={b}, N) booleans")
    if not bool(keep.any(dim=1).all()):
        dead = [i for i in range(b) if not bool(keep[i].any())]
        raise CameraMaskError(f"camera mask drops every camera of frame(s) {dead}: nothing to compute occupancy from")
    kept = keep.reshape(-1)[torch.div(plan.ranks_feat, feat_hw, rounding_mode="floor")]  # (P,) point's camera kept
    return PoolingIndices(plan.ranks_bev[kept], plan.ranks_depth[kept], plan.ranks_feat[kept], plan.out_shape)


def bev_pool(depth: torch.Tensor, feat: torch.Tensor, plan: PoolingIndices) -> torch.Tensor:
    """depth (B, N, D, fH, fW), feat (B, N, fH, fW, C) -> (B, C, Dz, Dy, Dx) sums.

    Inference (no autograd, not tracing / exporting / compiling): :func:`bev_pool_sparse`.
    Otherwise (training, export): :func:`bev_pool_index_add` (differentiable, exportable).
    """
    if (not (torch.is_grad_enabled() and (depth.requires_grad or feat.requires_grad))
            and not torch.onnx.is_in_onnx_export() and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling() and depth.dtype == feat.dtype):
        return bev_pool_sparse(depth, feat, plan)
    return bev_pool_index_add(depth, feat, plan)


def bev_pool_index_add(depth: torch.Tensor, feat: torch.Tensor, plan: PoolingIndices) -> torch.Tensor:
    """Gather + index_add: writes a (P, C) intermediate. Shapes as :func:`bev_pool`."""
    c = feat.shape[-1]
    b, dz, dy, dx = plan.out_shape
    # index_select, not ``x[ranks]``: the backward of advanced indexing on CPU (index_put_ with
    # accumulate) adds with atomics across threads, so its sums depend on thread timing and a
    # training run would not repeat bitwise (tests/test_train.py::test_resume_continues_exactly);
    # index_select's backward (index_add_) sums in a fixed order. Same forward values.
    d = depth.reshape(-1).index_select(0, plan.ranks_depth)  # (P,)
    vals = d.unsqueeze(1) * feat.reshape(-1, c).index_select(0, plan.ranks_feat)  # (P, C)
    out = torch.zeros(b * dz * dy * dx, c, dtype=vals.dtype, device=vals.device)
    if torch.onnx.is_in_onnx_export():
        # index_add exports as ScatterElements without reduction (duplicates overwrite);
        # scatter_add exports as ScatterElements(reduction="add") from opset 16
        out = out.scatter_add(0, plan.ranks_bev.unsqueeze(1).expand(-1, c), vals)
    else:
        out = out.index_add(0, plan.ranks_bev, vals)
    return out.view(b, dz, dy, dx, c).permute(0, 4, 1, 2, 3)


def bev_pool_sparse(depth: torch.Tensor, feat: torch.Tensor, plan: PoolingIndices) -> torch.Tensor:
    """One sparse (voxels x feature pixels) CSR matrix holding the summed depth weights, times the
    dense (pixels, C) features: no (P, C) intermediate. Its structure comes from the plan (once
    per rig); per frame only the P weights are gathered. Shapes as :func:`bev_pool`; no autograd."""
    c = feat.shape[-1]
    b, dz, dy, dx = plan.out_shape
    n_feat = feat.numel() // c
    pair, crow, col = plan.csr(n_feat)
    w = depth.reshape(-1)[plan.ranks_depth]
    if pair.numel() != col.numel():  # sum the depth bins of one pixel that share a voxel
        w = torch.zeros(col.numel(), dtype=w.dtype, device=w.device).index_add_(0, pair, w)
    else:
        w = torch.empty_like(w).index_copy_(0, pair, w)
    mat = torch.sparse_csr_tensor(crow, col, w, (b * dz * dy * dx, n_feat), check_invariants=False)
    out = mat @ feat.reshape(n_feat, c)  # (V, C)
    return out.view(b, dz, dy, dx, c).permute(0, 4, 1, 2, 3)


def bev_pool_cumsum_reference(coords: torch.Tensor, depth: torch.Tensor, feat: torch.Tensor,
                              lower: torch.Tensor, interval: torch.Tensor,
                              size_xyz: tuple[int, int, int]) -> torch.Tensor:
    """Lift-splat-shoot's "cumsum trick", written from its paper's description, as a reference.

    Per frame: lift every point's feature (depth x context), bin by voxel, sort by voxel, take
    a cumulative sum and the differences at voxel boundaries. Same output as :func:`bev_pool`.
    """
    b, n, d, h, w, _ = coords.shape
    c = feat.shape[-1]
    dx, dy, dz = size_xyz
    x = depth.unsqueeze(-1) * feat.unsqueeze(2)  # (B, N, D, fH, fW, C)
    x = x.reshape(-1, c)
    idx = ((coords - lower.to(coords)) / interval.to(coords)).long().view(-1, 3)
    bid = torch.arange(b, device=coords.device).view(b, 1).expand(b, n * d * h * w).reshape(-1)
    kept = (idx[:, 0] >= 0) & (idx[:, 0] < dx) & (idx[:, 1] >= 0) & (idx[:, 1] < dy) & (idx[:, 2] >= 0) & (idx[:, 2] < dz)
    x, idx, bid = x[kept], idx[kept], bid[kept]
    ranks = bid * (dz * dy * dx) + idx[:, 2] * (dy * dx) + idx[:, 1] * dx + idx[:, 0]
    order = ranks.argsort()
    x, ranks = x[order], ranks[order]
    x = x.cumsum(0)
    last = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    last[:-1] = ranks[1:] != ranks[:-1]
    x, ranks = x[last], ranks[last]
    x = torch.cat([x[:1], x[1:] - x[:-1]])
    out = torch.zeros(b * dz * dy * dx, c, dtype=x.dtype, device=x.device)
    out[ranks] = x
    return out.view(b, dz, dy, dx, c).permute(0, 4, 1, 2, 3)
