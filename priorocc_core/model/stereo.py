"""BEVStereo4D's temporal stereo cost volume as plain tensor functions (FlashOCC M2's depth prior).

Each depth bin d of each stride-4 pixel of the current frame is a 3D point in its camera; that
point, seen from the same camera at the previous frame (``currcam2adjcam``), falls on a pixel of
the previous frame's stride-4 features. The cost of bin d is the L1 distance between the current
feature and the previous one sampled there, summed over channels in groups of four; a bin whose
point lands outside the previous image (or behind its camera) costs ``bias`` more. softmax(-cost)
over the bins is the cost volume (B*N, D, fH4, fW4), which the depth net takes
(:class:`.depth_net.DepthNet`). Frames: docs/design.md, "Stereo depth".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

GROUP_SIZE = 4  # channels per L1 group (FlashOCC's group_size)


def currcam2adjcam(curr_cam2ego: torch.Tensor, curr_ego2global: torch.Tensor, adj_cam2ego: torch.Tensor,
                   adj_ego2global: torch.Tensor) -> torch.Tensor:
    """FlashOCC's ``curr2adjsensor``: each current camera into the same camera at a previous frame.
    cam2ego (B, N, 4, 4) in each frame's key ego, ego2global (B, 4, 4) -> (B, N, 4, 4) float32
    = inv(adj ego2global @ adj cam2ego) @ curr ego2global @ curr cam2ego, in float64."""
    curr = curr_ego2global.double()[:, None] @ curr_cam2ego.double()  # (B, N, 4, 4) camera -> global
    adj = adj_ego2global.double()[:, None] @ adj_cam2ego.double()
    return (torch.linalg.inv(adj) @ curr).float()


def currpix2adjgrid(frustum: torch.Tensor, curr2adj: torch.Tensor, K: torch.Tensor, img_aug: torch.Tensor,
                    image_hw: tuple[int, int]) -> torch.Tensor:
    """FlashOCC's DepthNet.gen_grid: where each (bin, stride-4 pixel) of the current image lands in
    the previous image, as a ``grid_sample`` grid.

    frustum (D, h, w, 3) (u, v, d) at stride 4 (augmented pixels, metres); curr2adj (B, N, 4, 4)
    (:func:`currcam2adjcam`); K, img_aug (B, N, 3, 3) of the current frame (both frames are taken
    to share them, as FlashOCC does); image_hw = (4h, 4w) -> (B*N, D*h, w, 2) normalised
    (align_corners=True), points behind the previous camera (depth < 1e-3) at -2 (outside)."""
    b, n = curr2adj.shape[:2]
    d, h, w, _ = frustum.shape
    post_rot, post_tran = img_aug[..., :2, :2], img_aug[..., :2, 2]  # (B, N, 2, 2), (B, N, 2)
    uv = frustum[..., :2] - post_tran.view(b, n, 1, 1, 1, 2)  # (B, N, D, h, w, 2) undo the augmentation
    uv = (torch.linalg.inv(post_rot).view(b, n, 1, 1, 1, 2, 2) @ uv.unsqueeze(-1)).squeeze(-1)
    depth = frustum[..., 2:3].expand(b, n, d, h, w, 1)
    pts = torch.cat([uv * depth, depth], dim=-1).unsqueeze(-1)  # (B, N, D, h, w, 3, 1) (u d, v d, d)
    combine = curr2adj[..., :3, :3] @ torch.linalg.inv(K)  # (B, N, 3, 3) pixel -> current camera -> previous camera
    pts = combine.view(b, n, 1, 1, 1, 3, 3) @ pts + curr2adj[..., :3, 3].view(b, n, 1, 1, 1, 3, 1)
    behind = pts[..., 2, 0] < 1e-3  # (B, N, D, h, w)
    pts = K.view(b, n, 1, 1, 1, 3, 3) @ pts
    uv = pts[..., :2, :] / pts[..., 2:3, :]  # (B, N, D, h, w, 2, 1) previous-image pixels
    uv = (post_rot.view(b, n, 1, 1, 1, 2, 2) @ uv).squeeze(-1) + post_tran.view(b, n, 1, 1, 1, 2)
    hi, wi = image_hw
    px = uv[..., 0] / (wi - 1.0) * 2.0 - 1.0
    py = uv[..., 1] / (hi - 1.0) * 2.0 - 1.0
    px = torch.where(behind, torch.full_like(px, -2.0), px)
    py = torch.where(behind, torch.full_like(py, -2.0), py)
    return torch.stack([px, py], dim=-1).view(b * n, d * h, w, 2)


def cost_volume(prev: torch.Tensor, curr: torch.Tensor, grid: torch.Tensor, bias: float) -> torch.Tensor:
    """FlashOCC's calculate_cost_volumn: prev, curr (B*N, C, h, w) stride-4 features of the
    previous and the current frame; grid (B*N, D*h, w, 2) (:func:`currpix2adjgrid`) ->
    softmax over D of minus the matching cost, (B*N, D, h, w). Groups of GROUP_SIZE channels are
    sampled one at a time (memory); where the sampled first channel of the last group is exactly 0
    (outside the previous image) the cost gets ``bias`` more, as there."""
    bn, c, h, w = curr.shape
    d = grid.shape[1] // h
    grid = grid.to(curr.dtype)
    cost = torch.zeros(bn, d, h, w, dtype=curr.dtype, device=curr.device)
    warped = None
    for g in range(c // GROUP_SIZE):
        sl = slice(g * GROUP_SIZE, (g + 1) * GROUP_SIZE)
        warped = F.grid_sample(prev[:, sl], grid, align_corners=True, padding_mode="zeros")  # (B*N, G, D*h, w)
        cost = cost + (curr[:, sl].unsqueeze(2) - warped.view(bn, GROUP_SIZE, d, h, w)).abs().sum(dim=1)
    if bias != 0 and warped is not None:
        cost = cost + bias * (warped[:, 0].view(bn, d, h, w) == 0).to(cost.dtype)
    return (-cost).softmax(dim=1)
