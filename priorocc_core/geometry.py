"""Geometry as plain functions on 4x4 / 3x3 matrices (frames named as in docs/design.md).

Conventions
-----------
* ``a2b`` is a 4x4 homogeneous matrix mapping points in frame ``a`` to frame ``b``.
* ``K`` is the 3x3 pinhole intrinsic matrix; ``img_aug`` the 3x3 pixel-space matrix of the
  image augmentation (resize, crop, flip, rotate), applied after projection:
  ``pixel = img_aug @ K @ (ego2cam @ point)`` (then divide by depth).
* ``bev_aug`` is a 4x4 matrix applied to ego points (and to the occupancy ground truth).
* nuScenes quaternions are (w, x, y, z); pyquaternion does the conversion.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from pyquaternion import Quaternion


# --------------------------------------------------------------------------- matrices
def transform_from_quat(translation: Sequence[float], rotation_wxyz: Sequence[float]) -> np.ndarray:
    """nuScenes (translation, rotation quaternion w,x,y,z) -> (4, 4) float64 ``a2b``."""
    m = np.eye(4)
    m[:3, :3] = Quaternion(*rotation_wxyz).rotation_matrix
    m[:3, 3] = np.asarray(translation, dtype=np.float64)
    return m


def quat_from_transform(a2b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(4, 4) -> (translation (3,), quaternion (w, x, y, z) (4,))."""
    q = Quaternion(matrix=np.asarray(a2b[:3, :3], dtype=np.float64), atol=1e-6, rtol=1e-6)
    return np.asarray(a2b[:3, 3], dtype=np.float64), np.array([q.w, q.x, q.y, q.z])


def invert_rigid(a2b: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform, exact up to rounding."""
    b2a = np.eye(4, dtype=a2b.dtype)
    r = a2b[:3, :3]
    b2a[:3, :3] = r.T
    b2a[:3, 3] = -r.T @ a2b[:3, 3]
    return b2a


def img_aug_matrix(
    resize: float,
    crop_xy: tuple[float, float] = (0.0, 0.0),
    flip: bool = False,
    crop_w: float = 0.0,
    rotate_deg: float = 0.0,
    out_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """3x3 pixel-space augmentation, composed as FlashOCC's ``img_transform`` does it.

    resize (scale) -> crop (shift by -crop_xy) -> optional horizontal flip inside the crop of
    width ``crop_w`` -> rotation by ``rotate_deg`` about the centre of the (out_h, out_w) crop.
    """
    m = np.diag([resize, resize, 1.0])
    m[:2, 2] -= np.asarray(crop_xy, dtype=np.float64)
    if flip:
        f = np.array([[-1.0, 0.0, crop_w], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        m = f @ m
    if rotate_deg:
        if out_hw is None:
            raise ValueError("img_aug_matrix: rotate_deg needs out_hw (the crop size)")
        h = math.radians(rotate_deg)
        rot = np.array([[math.cos(h), math.sin(h)], [-math.sin(h), math.cos(h)]])
        centre = np.array([out_hw[1], out_hw[0]], dtype=np.float64) / 2.0
        r = np.eye(3)
        r[:2, :2] = rot
        r[:2, 2] = centre - rot @ centre
        m = r @ m
    return m


def bev_aug_matrix(flip_x: bool = False, flip_y: bool = False) -> np.ndarray:
    """4x4 BEV augmentation: flip_x negates x (ego forward), flip_y negates y."""
    m = np.eye(4)
    if flip_x:
        m[0, 0] = -1.0
    if flip_y:
        m[1, 1] = -1.0
    return m


def apply_bev_aug_to_grid(grid: np.ndarray, bev_aug: np.ndarray) -> np.ndarray:
    """Apply a flip-only ``bev_aug`` to a grid indexed [x, y, ...] on a range symmetric about 0."""
    out = grid
    if bev_aug[0, 0] < 0:
        out = out[::-1]
    if bev_aug[1, 1] < 0:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------- projection
def project_points(
    points_ego: np.ndarray, cam2ego: np.ndarray, K: np.ndarray, img_aug: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Project (P, 3) ego points into one camera.

    Returns (uv (P, 2) pixel coordinates, depth (P,) metres along the optical axis).
    """
    ego2cam = np.linalg.inv(cam2ego)
    pts = points_ego @ ego2cam[:3, :3].T + ego2cam[:3, 3]
    depth = pts[:, 2].copy()
    cam = pts @ K.T
    if img_aug is not None:
        cam = cam @ img_aug.T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = cam[:, :2] / cam[:, 2:3]
    return uv, depth


# --------------------------------------------------------------------------- lift-splat frustum
def depth_bin_centres(depth_bins: tuple[float, float, float], sid: bool = False) -> torch.Tensor:
    """(D,) float32 depth bin centres in metres: ``arange(start, stop, step)``, or with ``sid``
    (FlashOCC's spacing-increasing discretisation, STS) the same count D spaced geometrically,
    ``exp(log(start) + i / (D - 1) * log((stop - 1) / start))``, computed in float32 as FlashOCC does."""
    d = torch.arange(*depth_bins, dtype=torch.float32)
    if not sid:
        return d
    n_d = d.shape[0]
    i = torch.arange(n_d).float()
    start, stop = torch.tensor(depth_bins).float()[:2]
    return torch.exp(torch.log(start) + i / (n_d - 1) * torch.log((stop - 1) / start))


def create_frustum(
    depth_bins: tuple[float, float, float], input_hw: tuple[int, int], downsample: int, sid: bool = False
) -> torch.Tensor:
    """Frustum template laid out as FlashOCC's ``create_frustum``.

    depth_bins = (start, stop, step): bin centres ``arange(start, stop, step)`` (``sid``: spaced
    geometrically, :func:`depth_bin_centres`); pixel centres ``linspace(0, W_in - 1, W_feat)`` and
    ``linspace(0, H_in - 1, H_feat)``.
    Returns (D, fH, fW, 3) with last axis (u, v, d) in augmented-image pixels and metres.
    """
    h_in, w_in = input_hw
    fh, fw = h_in // downsample, w_in // downsample
    d = depth_bin_centres(depth_bins, sid).view(-1, 1, 1).expand(-1, fh, fw)
    n_d = d.shape[0]
    u = torch.linspace(0, w_in - 1, fw, dtype=torch.float32).view(1, 1, fw).expand(n_d, fh, fw)
    v = torch.linspace(0, h_in - 1, fh, dtype=torch.float32).view(1, fh, 1).expand(n_d, fh, fw)
    return torch.stack((u, v, d), -1)


def frustum_to_ego(
    frustum: torch.Tensor,
    cam2ego: torch.Tensor,
    K: torch.Tensor,
    img_aug: torch.Tensor,
    bev_aug: torch.Tensor,
) -> torch.Tensor:
    """Map frustum points to (augmented) ego coordinates.

    frustum (D, fH, fW, 3) (u, v, d); cam2ego (B, N, 4, 4); K (B, N, 3, 3);
    img_aug (B, N, 3, 3); bev_aug (B, 4, 4).  Returns (B, N, D, fH, fW, 3) metres.
    """
    b, n = cam2ego.shape[:2]
    f = frustum.to(cam2ego)
    uv1 = torch.cat([f[..., :2], torch.ones_like(f[..., :1])], -1)  # (D, fH, fW, 3)
    # undo the image augmentation: pixel in the original image, still homogeneous
    aug_inv = torch.linalg.inv(img_aug)  # (B, N, 3, 3)
    uv1 = torch.einsum("bnij,dhwj->bndhwi", aug_inv, uv1)
    pts = uv1[..., :2] / uv1[..., 2:3] * f[..., 2:3]  # (u*d, v*d)
    pts = torch.cat([pts, f[..., 2:3].expand_as(pts[..., :1])], -1)  # (B, N, D, fH, fW, 3)
    combine = cam2ego[..., :3, :3] @ torch.linalg.inv(K)  # (B, N, 3, 3) = R_c2e K^-1
    pts = torch.einsum("bnij,bndhwj->bndhwi", combine, pts) + cam2ego[..., :3, 3].view(b, n, 1, 1, 1, 3)
    pts = torch.einsum("bij,bndhwj->bndhwi", bev_aug[:, :3, :3], pts) + bev_aug[:, :3, 3].view(b, 1, 1, 1, 1, 3)
    return pts


def surround_rig(n: int, input_hw: tuple[int, int], focal: float, height: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic rig for tests, export and benchmarks: ``n`` cameras evenly spread in yaw at
    ``height`` metres, optical axes horizontal, principal point at the image centre.

    Returns (cam2ego (n, 4, 4), K (n, 3, 3)) float32, in network-input pixels."""
    h, w = input_hw
    K = torch.tensor([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1.0]])
    cam_axes = torch.tensor([[0, 0, 1.0], [-1, 0, 0], [0, -1, 0]])  # camera z forward -> ego x
    cams = []
    for i in range(n):
        yaw = 2 * math.pi * i / n
        rz = torch.tensor([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
        m = torch.eye(4)
        m[:3, :3] = rz @ cam_axes
        m[2, 3] = height
        cams.append(m)
    return torch.stack(cams), K.repeat(n, 1, 1)
