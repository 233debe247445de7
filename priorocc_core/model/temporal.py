"""Temporal BEV fusion (BEVDet4D / FlashOCC-4D): poses, the warp of a past BEV map into the
current key ego, the pre-process net and the explicit history of the sequential mode.

Frames (docs/design.md, "Temporal"): ``ego2global`` (B, 4, 4) is the pose of a frame's key ego
(the frame its cam2ego maps into); ``curr2adj`` = inv(adj ego2global) @ curr ego2global maps a
point of the current key ego to the same world point in a past frame's key ego. A BEV map is
(B, C, Dy, Dx); cell (y, x) <-> metres (x_min + x * step_x, y_min + y * step_y) as FlashOCC's
``gen_grid`` has it (the cell's corner: weights trained with FlashOCC's warp see the same one).

Nothing here keeps state: :class:`BEVHistory` is a frozen value that the caller passes in and
gets back (sequential mode); the empty history is a reset.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import PriorOccError
from .bev_encoder import BEVResNet
from .stereo import currcam2adjcam


class TemporalError(PriorOccError):
    """A temporal input that cannot be fused: pose, past frame or history that does not fit."""


# --------------------------------------------------------------------------- poses
def check_pose(ego2global, where: str, batch: int) -> torch.Tensor:
    """A (B, 4, 4) key-ego pose, finite and rigid (a proper rotation) -> float64; else TemporalError
    naming ``where``. The one pose check: the node's odometry (priorocc_ros/history.py) uses it too."""
    if ego2global is None:
        raise TemporalError(f"{where}: missing (a temporal model needs each frame's ego2global (B, 4, 4))")
    if not isinstance(ego2global, torch.Tensor) or tuple(ego2global.shape) != (batch, 4, 4):
        shape = tuple(ego2global.shape) if isinstance(ego2global, torch.Tensor) else type(ego2global).__name__
        raise TemporalError(f"{where}: expected a ({batch}, 4, 4) tensor, got {shape}")
    e = ego2global.detach().double()
    if not torch.isfinite(e).all():
        raise TemporalError(f"{where}: not finite (NaN or inf in the ego pose)")
    r = e[:, :3, :3]
    eye = torch.eye(3, dtype=e.dtype, device=e.device)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=e.dtype, device=e.device)
    if (r @ r.transpose(1, 2) - eye).abs().max() > 1e-3 or (torch.linalg.det(r) <= 0).any() \
            or (e[:, 3] - bottom).abs().max() > 1e-6:
        raise TemporalError(f"{where}: not a rigid transform (rotation not orthonormal, a reflection, "
                            f"or last row not 0 0 0 1)")
    return ego2global.double()


def curr2adj_from_poses(curr_ego2global: torch.Tensor, adj_ego2global: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4) key-ego poses of the current and a past frame -> curr2adj (B, 4, 4) float64."""
    return torch.linalg.inv(adj_ego2global.double()) @ curr_ego2global.double()


def adjcam2currego(adj_cam2ego: torch.Tensor, adj_ego2global: torch.Tensor,
                   curr_ego2global: torch.Tensor) -> torch.Tensor:
    """Past cameras straight into the current key ego (FlashOCC's sensor2keyegos):
    adj_cam2ego (B, N, 4, 4), poses (B, 4, 4) -> (B, N, 4, 4) in adj_cam2ego's dtype."""
    adj2curr = torch.linalg.inv(curr_ego2global.double()) @ adj_ego2global.double()  # (B, 4, 4)
    return (adj2curr[:, None] @ adj_cam2ego.double()).to(adj_cam2ego.dtype)


def augment_curr2adj(curr2adj: torch.Tensor, bev_aug: torch.Tensor) -> torch.Tensor:
    """The same motion between augmented ego frames: bev_aug @ curr2adj @ inv(bev_aug), (B, 4, 4)
    float32 (every frame's BEV map was pooled with the same bev_aug, as FlashOCC's bda)."""
    a = bev_aug.double()
    return (a @ curr2adj.double() @ torch.linalg.inv(a)).float()


# --------------------------------------------------------------------------- warp
def curr2adj_cells(curr2adj: torch.Tensor, lower_xy: tuple[float, float],
                   step_xy: tuple[float, float]) -> torch.Tensor:
    """curr2adj (B, 4, 4) metres -> (B, 3, 3) mapping homogeneous (x, y, 1) cell indices of the
    current BEV map to those of the past one (z dropped: the BEV maps are collapsed)."""
    plane = curr2adj[:, [0, 1, 3]][:, :, [0, 1, 3]]  # (B, 3, 3)
    (x0, y0), (sx, sy) = lower_xy, step_xy
    cell2m = curr2adj.new_tensor([[sx, 0.0, x0], [0.0, sy, y0], [0.0, 0.0, 1.0]])
    m2cell = curr2adj.new_tensor([[1.0 / sx, 0.0, -x0 / sx], [0.0, 1.0 / sy, -y0 / sy], [0.0, 0.0, 1.0]])
    return m2cell @ plane @ cell2m


def warp_bev(adj_bev: torch.Tensor, curr2adj: torch.Tensor, lower_xy: tuple[float, float],
             step_xy: tuple[float, float]) -> torch.Tensor:
    """FlashOCC's shift_feature: a past BEV map (B, C, Dy, Dx) resampled (bilinear) at the cells
    of the current key ego; curr2adj (B, 4, 4) float32 (augmented, see :func:`augment_curr2adj`).
    Cells that fall outside the past grid are zero. Runs in fp32 -> (B, C, Dy, Dx) in adj_bev's dtype."""
    b, _, dy, dx = adj_bev.shape
    t = curr2adj_cells(curr2adj.float(), lower_xy, step_xy)  # (B, 3, 3)
    xs = torch.arange(dx, dtype=torch.float32, device=adj_bev.device).view(1, dx).expand(dy, dx)
    ys = torch.arange(dy, dtype=torch.float32, device=adj_bev.device).view(dy, 1).expand(dy, dx)
    cells = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, dy * dx, 3)  # (1, Dy*Dx, 3) (x, y, 1)
    src = (cells @ t.transpose(1, 2))[..., :2]  # (B, Dy*Dx, 2) past-map cell indices (x, y)
    norm = torch.tensor([dx - 1.0, dy - 1.0], device=adj_bev.device)
    grid = (src / norm * 2.0 - 1.0).view(b, dy, dx, 2)  # align_corners=True: -1 and 1 are cell centres 0, D-1
    out = F.grid_sample(adj_bev.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.to(adj_bev.dtype)


# --------------------------------------------------------------------------- pre-process net
def build_pre_process(channels: int, num_layer: int) -> BEVResNet:
    """FlashOCC's pre_process CustomResNet (numC_input = num_channels = C_bev, stride 1, one
    stage): names ``layers.0.<i>.*`` as FlashOCC's ``pre_process_net.layers.0.<i>.*``."""
    return BEVResNet(channels, (channels,), (num_layer,), (1,))


# --------------------------------------------------------------------------- history
def history_key(model_cfg: dict, weight: torch.Tensor) -> str:
    """Identity of what produced a history: the model config (grid, cameras, input size, channels,
    temporal settings) and the bytes of the depth net that lifts features into BEV."""
    h = hashlib.sha1(json.dumps(model_cfg, sort_keys=True, default=str).encode())
    h.update(weight.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True, eq=False)  # eq=False: identity comparison (tensor fields have no plain ==)
class BEVHistory:
    """Past frames' BEV features for the sequential mode, most recent first, at most num_adj.

    feats: each (B, C_bev, Dy, Dx), after the pre-process net, in the key ego where it was
    computed (un-warped, as BEVDet4D's sequential mode caches them); ego2global: each (B, 4, 4)
    float64 pose of that key ego; stamps: each (B,) float64 seconds (NaN when not given);
    bev_aug: (B, 4, 4) shared by all frames; key: :func:`history_key` of the model that produced
    it ("" for the empty history, which any model accepts). Missing frames (a scene's start, a
    reset) are the current frame repeated, as FlashOCC's datasets do.

    Stereo models (model.temporal.stereo) also keep what the next frame's cost volume needs from
    the most recent frame: stereo_feats (B*N, C_2, H/4, W/4), its stride-4 backbone features, and
    stereo_cam2ego (B, N, 4, 4), its cameras in its key ego (its pose is ego2global[0]); None
    otherwise."""

    key: str = ""
    feats: tuple[torch.Tensor, ...] = ()
    ego2global: tuple[torch.Tensor, ...] = ()
    stamps: tuple[torch.Tensor, ...] = ()
    bev_aug: torch.Tensor | None = None
    stereo_feats: torch.Tensor | None = None
    stereo_cam2ego: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.feats)

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors held."""
        ts = [*self.feats, *self.ego2global, *self.stamps] + [t for t in (self.bev_aug, self.stereo_feats,
                                                                         self.stereo_cam2ego) if t is not None]
        return sum(t.numel() * t.element_size() for t in ts)


def reset_history() -> BEVHistory:
    """The empty history: the next frame's past frames are that frame repeated."""
    return BEVHistory()


def check_history(history: BEVHistory, key: str, num_adj: int, bev_shape: tuple, bev_aug: torch.Tensor,
                  stereo_shape: tuple | None = None) -> None:
    """TemporalError unless ``history`` can be fused with a current BEV map of ``bev_shape`` (B, C, Dy, Dx);
    a stereo model also needs stereo features of ``stereo_shape`` (B*N, C_2, H/4, W/4)."""
    if not isinstance(history, BEVHistory):
        raise TemporalError(f"history: expected a BEVHistory (or None for the non-sequential mode), got "
                            f"{type(history).__name__}")
    if len(history) == 0:
        return
    if history.key != key:
        raise TemporalError(f"history: produced by another model or grid (key {history.key}, this model {key}); "
                            "pass reset_history() to start again")
    if len(history) > num_adj or not (len(history.ego2global) == len(history.stamps) == len(history)):
        raise TemporalError(f"history: {len(history)} frames, {len(history.ego2global)} poses, {len(history.stamps)} "
                            f"stamps (this model keeps {num_adj} frames, one pose and stamp each)")
    for i, f in enumerate(history.feats):
        if tuple(f.shape) != tuple(bev_shape):
            raise TemporalError(f"history.feats[{i}]: shape {tuple(f.shape)}, expected {tuple(bev_shape)} "
                                "(batch, C_bev, Dy, Dx of this frame)")
    if history.bev_aug is None or not torch.equal(history.bev_aug.to(bev_aug), bev_aug):
        raise TemporalError("history.bev_aug: differs from this frame's bev_aug (all frames share one)")
    for i, e in enumerate(history.ego2global):
        check_pose(e, f"history.ego2global[{i}]", bev_shape[0])
    if stereo_shape is not None:
        f, c = history.stereo_feats, history.stereo_cam2ego
        b, n = bev_shape[0], stereo_shape[0] // bev_shape[0]
        if f is None or tuple(f.shape) != tuple(stereo_shape) or c is None or tuple(c.shape) != (b, n, 4, 4):
            got = "none" if f is None else tuple(f.shape)
            raise TemporalError(f"history.stereo_feats: {got}, expected {tuple(stereo_shape)} with stereo_cam2ego "
                                f"({b}, {n}, 4, 4) (the previous frame's stride-4 features and cameras, same rig)")


def history_inputs(history: BEVHistory, key: str, num_adj: int, bev_shape: tuple, ego2global: torch.Tensor,
                   bev_aug: torch.Tensor, stereo_shape: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A checked history -> what :func:`fuse_past` (and the exported graph) takes:
    prev (B, A, C, Dy, Dx) (zeros where missing), valid (A,) float32 (1 = a past frame, 0 = missing:
    the current frame stands in), curr2adj (B, A, 4, 4) float32 augmented (identity pose where
    missing). A = num_adj, B, C, Dy, Dx = bev_shape."""
    check_history(history, key, num_adj, bev_shape, bev_aug, stereo_shape)
    k, dev = len(history), bev_aug.device
    missing = num_adj - k
    zeros = [torch.zeros(bev_shape, dtype=torch.float32, device=dev)] * missing
    prev = torch.stack([f.to(dev, torch.float32) for f in history.feats] + zeros, dim=1)  # (B, A, C, Dy, Dx)
    valid = torch.tensor([1.0] * k + [0.0] * missing, device=dev)
    poses = [e.to(dev) for e in history.ego2global] + [ego2global] * missing
    curr2adj = torch.stack([augment_curr2adj(curr2adj_from_poses(ego2global, e), bev_aug) for e in poses], dim=1)
    return prev, valid, curr2adj


def stereo_inputs(history: BEVHistory, cam2ego: torch.Tensor, ego2global: torch.Tensor, stereo_shape: tuple,
                  stereo_grid, K: torch.Tensor, img_aug: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A checked stereo history (:func:`check_history`) -> what the stereo model's sequential network
    (and its graph) takes besides :func:`history_inputs`: prev4 (B*N, C_2, H/4, W/4) (zeros when the
    history is empty), prev4_valid (1,) (0: this frame's own features stand in, the repeated frame of
    a scene's start), grid = stereo_grid(currcam2adjcam, K, img_aug) of this frame against the
    previous one (against itself when empty). cam2ego (B, N, 4, 4), ego2global (B, 4, 4): this frame's."""
    if len(history):
        prev4, adj_cams, adj_pose, v = history.stereo_feats, history.stereo_cam2ego, history.ego2global[0], 1.0
    else:
        prev4, adj_cams, adj_pose, v = torch.zeros(stereo_shape, device=cam2ego.device), cam2ego, ego2global, 0.0
    grid = stereo_grid(currcam2adjcam(cam2ego, ego2global, adj_cams.to(cam2ego.device), adj_pose.to(cam2ego.device)),
                       K, img_aug)
    return prev4.float(), torch.tensor([v], device=cam2ego.device), grid


def fuse_past(bev: torch.Tensor, prev: torch.Tensor, valid: torch.Tensor, curr2adj: torch.Tensor,
              lower_xy: tuple[float, float], step_xy: tuple[float, float], current_last: bool = False) -> torch.Tensor:
    """The BEV encoder's input of the sequential mode and of the exported graph: bev (B, C, Dy, Dx)
    current; prev (B, A, C, Dy, Dx) past maps in their own key egos; valid (A,) (0: the current
    map stands in); curr2adj (B, A, 4, 4) -> (B, (A+1) C, Dy, Dx), current first, then t-1, t-2, ...
    (``current_last``: t-A, ..., t-1, current, the order of BEVStereo4D, :func:`frame_order`)."""
    b, c, dy, dx = bev.shape
    a = prev.shape[1]
    v = valid.to(bev.dtype).view(1, a, 1, 1, 1)
    past = v * prev.to(bev.dtype) + (1.0 - v) * bev[:, None]  # (B, A, C, Dy, Dx)
    warped = warp_bev(past.flatten(0, 1), curr2adj.flatten(0, 1), lower_xy, step_xy)  # (B*A, C, Dy, Dx)
    return torch.cat(frame_order(bev, list(warped.view(b, a, c, dy, dx).unbind(1)), current_last), dim=1)


def frame_order(bev: torch.Tensor, past: list[torch.Tensor], current_last: bool) -> list[torch.Tensor]:
    """The order of the frames' maps in the BEV encoder's input: past (t-1 first) -> [current, t-1,
    ..., t-A] (BEVDet4D), or with ``current_last`` [t-A, ..., t-1, current] (BEVStereo4D walks its
    frames from the oldest, and its published weights expect that order)."""
    return list(past[::-1]) + [bev] if current_last else [bev] + list(past)


def push_history(history: BEVHistory, key: str, num_adj: int, bev: torch.Tensor, ego2global: torch.Tensor,
                 stamp: torch.Tensor, bev_aug: torch.Tensor, stereo_feats: torch.Tensor | None = None,
                 stereo_cam2ego: torch.Tensor | None = None) -> BEVHistory:
    """The history after this frame: its BEV map first, the oldest frames dropped beyond num_adj;
    a stereo model's stride-4 features and cameras of this frame replace the previous ones."""
    return BEVHistory(key, ((bev.detach(),) + history.feats)[:num_adj],
                      ((ego2global.double(),) + history.ego2global)[:num_adj],
                      ((stamp.double(),) + history.stamps)[:num_adj], bev_aug.detach().float(),
                      None if stereo_feats is None else stereo_feats.detach(),
                      None if stereo_cam2ego is None else stereo_cam2ego.detach().double())


def frame_stamp(stamp, batch: int, device) -> torch.Tensor:
    """(B,) float64 seconds of a frame; NaN when not given."""
    if stamp is None:
        return torch.full((batch,), math.nan, dtype=torch.float64, device=device)
    s = torch.as_tensor(stamp, dtype=torch.float64, device=device).reshape(-1)
    if s.numel() != batch:
        raise TemporalError(f"batch['stamp']: expected {batch} values, got {s.numel()}")
    return s
