"""Rendering the synthetic world: cameras (RGB, exact labels, distance) and the lidar.

Appearance carries the semantics: each class has its own colour family and procedural
texture (lane markings, paving tiles, facades with windows, foliage noise, car glass and
wheels, cone stripes, ...), per-object colour variation, Lambertian shading from a fixed
sun, distance haze and sensor noise; geometry carries depth through perspective, shading
and haze.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..raycast import cast_camera, cast_rays
from ...config import GridConfig
from .world import FREE, GROUND_TOP, NZ, TERRAIN, VH, VOXEL, Z_MIN, Scene

IGNORE = 255
_SUN = torch.tensor([0.35, 0.45, 0.82])
_SUN = _SUN / _SUN.norm()
_SKY_HORIZON = torch.tensor([0.78, 0.84, 0.90])
_SKY_ZENITH = torch.tensor([0.33, 0.52, 0.82])

# base colours per class (RGB 0-1): a naturalistic palette
_BASE = torch.tensor(
    [
        [0.45, 0.28, 0.52],  # 0 others (bins / crates)
        [0.85, 0.85, 0.85],  # 1 barrier (striped below)
        [0.15, 0.15, 0.17],  # 2 bicycle
        [0.90, 0.74, 0.16],  # 3 bus
        [0.60, 0.60, 0.62],  # 4 car (per-object colour below)
        [0.92, 0.68, 0.08],  # 5 construction vehicle
        [0.55, 0.08, 0.08],  # 6 motorcycle
        [0.30, 0.30, 0.50],  # 7 pedestrian (clothes below)
        [1.00, 0.40, 0.04],  # 8 traffic cone
        [0.47, 0.39, 0.31],  # 9 trailer
        [0.82, 0.82, 0.84],  # 10 truck
        [0.27, 0.27, 0.29],  # 11 driveable surface
        [0.58, 0.51, 0.40],  # 12 other flat
        [0.66, 0.63, 0.59],  # 13 sidewalk
        [0.36, 0.47, 0.21],  # 14 terrain
        [0.62, 0.55, 0.48],  # 15 manmade
        [0.16, 0.42, 0.14],  # 16 vegetation
    ]
)
_CAR_PAINT = torch.tensor(
    [[0.85, 0.85, 0.87], [0.08, 0.08, 0.10], [0.58, 0.59, 0.62], [0.62, 0.08, 0.08],
     [0.12, 0.24, 0.55], [0.12, 0.32, 0.20], [0.75, 0.72, 0.62], [0.35, 0.35, 0.38]]
)
_FACADE = torch.tensor(
    [[0.60, 0.30, 0.24], [0.80, 0.74, 0.60], [0.52, 0.52, 0.55], [0.42, 0.46, 0.56],
     [0.72, 0.66, 0.55], [0.66, 0.62, 0.58]]
)
_CLOTHES = torch.tensor(
    [[0.70, 0.12, 0.12], [0.15, 0.30, 0.65], [0.85, 0.85, 0.80], [0.20, 0.55, 0.25],
     [0.85, 0.62, 0.15], [0.25, 0.25, 0.28]]
)
_GLASS = torch.tensor([0.16, 0.20, 0.25])
_TYRE = torch.tensor([0.07, 0.07, 0.07])
# lidar intensity per class (0-100)
_INTENSITY = np.array([20, 60, 15, 40, 35, 40, 25, 10, 80, 30, 35, 8, 12, 14, 6, 25, 4], dtype=np.float32)


def _hash(ix: torch.Tensor, iy: torch.Tensor, iz: torch.Tensor) -> torch.Tensor:
    """Integer lattice hash -> uniform [0, 1) noise (deterministic on every device)."""
    h = ix * 73856093 ^ iy * 19349663 ^ iz * 83492791
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF).float() / 65535.0


def _noise(p: torch.Tensor, scale: float) -> torch.Tensor:
    q = torch.floor(p * scale).long()
    return _hash(q[:, 0], q[:, 1], q[:, 2])


def _frac(x: torch.Tensor) -> torch.Tensor:
    return x - torch.floor(x)


@dataclass
class BoxTable:
    """The boxes of one keyframe in scene-local metres."""

    lo: np.ndarray  # (M, 3) float64
    hi: np.ndarray
    cls: np.ndarray  # (M,) int
    obj: np.ndarray
    part: np.ndarray

    @classmethod
    def from_scene(cls, scene: Scene, k: int, u_range: int = 320) -> "BoxTable":
        lo, hi, c, o, p = scene.boxes(k, scene.ego_u(k), u_range)
        return cls(_to_m(lo), _to_m(hi), c, o, p)


def _to_m(a: np.ndarray) -> np.ndarray:
    m = a.astype(np.float64) * VOXEL
    m[:, 2] = Z_MIN + a[:, 2] * VOXEL
    return m


def ground_class(scene: Scene, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Ground class at scene-local (x, y) metres (terrain outside the generated map)."""
    u = torch.floor(x / VOXEL).long()
    v = torch.floor(y / VOXEL).long() + VH
    g = torch.from_numpy(scene.ground).to(x.device)
    inside = (u >= 0) & (u < g.shape[0]) & (v >= 0) & (v < g.shape[1])
    out = torch.full_like(u, TERRAIN)
    out[inside] = g[u[inside], v[inside]].long()
    return out


def render_camera(scene: Scene, boxes: BoxTable, cam2local: np.ndarray, K: np.ndarray, hw: tuple[int, int],
                  noise_seed: int = 0) -> dict:
    """Render one camera.

    Returns dict: rgb (H, W, 3) uint8; label (H, W) uint8 (Occ3D class 0-16, 255 sky);
    t (H, W) float32 distance along the unit ray (inf = sky); dirs (H, W, 3) unit rays in
    scene-local frame; origin (3,); obj (H, W) int64 object id (-1 ground / sky).
    """
    h, w = hw
    r = cast_camera(cam2local, K, hw, boxes.lo, boxes.hi, ground_z=GROUND_TOP)
    t, idx, axis, dirs, origin = r["t"], r["idx"], r["axis"], r["dirs"], r["origin"]
    hit = torch.isfinite(t)
    box_hit = idx >= 0
    p = torch.from_numpy(origin).float() + dirs * t.unsqueeze(-1)

    label = torch.full((h, w), IGNORE, dtype=torch.int64)
    rgb = torch.zeros((h, w, 3))
    # --- ground pixels
    gmask = hit & ~box_hit
    pg = p[gmask]
    gcls = ground_class(scene, pg[:, 0], pg[:, 1])
    label[gmask] = gcls
    rgb[gmask] = _shade_ground(gcls, pg)
    # --- box pixels
    ids = idx[box_hit]
    pb = p[box_hit]
    lo = torch.from_numpy(boxes.lo).float()[ids]
    hi = torch.from_numpy(boxes.hi).float()[ids]
    c = torch.from_numpy(boxes.cls)[ids]
    label[box_hit] = c
    rgb[box_hit] = _shade_boxes(c, torch.from_numpy(boxes.part)[ids], torch.from_numpy(boxes.obj)[ids], pb, lo, hi,
                                dirs[box_hit], axis[box_hit])
    # --- haze and sky
    tt = torch.where(hit, t, torch.zeros_like(t))
    fog = (1 - torch.exp(-tt / 260.0)).unsqueeze(-1)
    up = dirs[..., 2].clamp(0, 1).unsqueeze(-1)
    sky = _SKY_HORIZON + (_SKY_ZENITH - _SKY_HORIZON) * (up * 2.5).clamp(0, 1)
    rgb = torch.where(hit.unsqueeze(-1), rgb * (1 - fog) + sky * fog, sky)
    gen = torch.Generator().manual_seed(int(noise_seed) & 0x7FFFFFFF)
    rgb = rgb * 255.0 + torch.randn(rgb.shape, generator=gen) * 2.0
    obj = torch.full((h, w), -1, dtype=torch.int64)
    obj[box_hit] = torch.from_numpy(boxes.obj)[ids]
    return dict(
        rgb=rgb.clamp(0, 255).round().to(torch.uint8).numpy(),
        label=label.to(torch.uint8).numpy(),
        t=t,
        dirs=dirs,
        origin=origin,
        obj=obj,
    )


def _shade_ground(cls: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    base = _BASE[cls.clamp(0, 16)]
    n1, n2 = _noise(p, 20.0), _noise(p, 1.3)
    col = base * (0.82 + 0.22 * n1 + 0.12 * n2).unsqueeze(-1)
    x, y = p[:, 0], p[:, 1]
    road = cls == 11
    centre = road & (y.abs() < 0.12) & (_frac(x / 6.0) < 0.5)
    edge = road & ((y.abs() - 4.0).abs() < 0.08)
    col[centre | edge] = torch.tensor([0.88, 0.88, 0.84])
    flat = cls == 12
    stripes = flat & (_frac(x / 2.8) < 0.05)
    col[stripes] = torch.tensor([0.85, 0.85, 0.80])
    terr = cls == 14
    col[terr] = col[terr] * (0.75 + 0.5 * _noise(p[terr], 6.0)).unsqueeze(-1)
    sun = float(_SUN[2])
    return col * (0.5 + 0.5 * sun)


def _shade_boxes(cls, part, obj, p, lo, hi, dirs, axis) -> torch.Tensor:
    n = torch.zeros_like(p)
    sign = -torch.sign(dirs.gather(1, axis[:, None]).squeeze(1))
    n.scatter_(1, axis[:, None], sign[:, None])
    lambert = (n @ _SUN).clamp(min=0)
    shade = 0.45 + 0.55 * lambert
    zrel = p[:, 2] - lo[:, 2]
    height = hi[:, 2] - lo[:, 2]
    along = torch.where(axis == 1, p[:, 0], p[:, 1])  # horizontal coordinate on a vertical face
    vertical = axis != 2
    small = ((hi[:, 0] - lo[:, 0]) < 0.9) & ((hi[:, 1] - lo[:, 1]) < 0.9)
    n1 = _noise(p, 12.0)
    col = _BASE[cls].clone()
    oh = obj * 2654435761 % 8

    def put(mask, colour):
        if mask.any():
            col[mask] = colour if colour.dim() == 1 else colour[mask]

    # vehicles: paint per object, glass, tyres
    car = cls == 4
    put(car, _CAR_PAINT[oh % 8])
    truck = cls == 10
    put(truck & (part == 1), _CAR_PAINT[oh % 8])
    for c in (4, 10, 3, 9, 5, 6):
        put((cls == c) & vertical & (zrel < 0.35), _TYRE)
    put(car & (part == 1) & vertical, _GLASS)
    put(truck & (part == 1) & vertical & (zrel > 1.4), _GLASS)
    bus = cls == 3
    put(bus & vertical & (zrel > 1.3) & (zrel < 2.6) & (_frac(along / 1.6) > 0.1), _GLASS)
    trailer = cls == 9
    put(trailer & vertical & (_frac(along / 0.8) < 0.12), torch.tensor([0.30, 0.25, 0.20]))
    constr = cls == 5
    put(constr & (part == 3), torch.tensor([0.25, 0.25, 0.25]))
    put(constr & vertical & (zrel > 1.2) & (zrel < 1.5), torch.tensor([0.1, 0.1, 0.1]))
    # people and bikes
    ped = cls == 7
    put(ped, _CLOTHES[oh % 6])
    put(ped & (zrel < 0.8), torch.tensor([0.18, 0.18, 0.28]))
    put(ped & (zrel > height - 0.3), torch.tensor([0.80, 0.63, 0.52]))
    bike = cls == 2
    put(bike & (part == 2), _CLOTHES[oh % 6])
    put(bike & (part != 2) & (zrel > 0.5) & (zrel < 0.8), torch.tensor([0.75, 0.75, 0.78]))
    moto = cls == 6
    put(moto & (zrel > 0.8), torch.tensor([0.12, 0.12, 0.12]))
    # street furniture
    cone = cls == 8
    put(cone & (zrel > 0.35) & (zrel < 0.5), torch.tensor([0.95, 0.95, 0.95]))
    barrier = cls == 1
    put(barrier & (_frac(along / 0.8) < 0.5), torch.tensor([0.80, 0.10, 0.10]))
    others = cls == 0
    put(others & (zrel > height - 0.15), torch.tensor([0.20, 0.20, 0.22]))
    # buildings: facades with windows, roofs, metal poles and signs
    mm = cls == 15
    put(mm, _FACADE[oh % 6])
    win = mm & vertical & ~small & (zrel > 1.2) & (_frac(along / 2.0) > 0.3) & (_frac(along / 2.0) < 0.75) \
        & (_frac((zrel - 1.2) / 3.2) > 0.25) & (_frac((zrel - 1.2) / 3.2) < 0.75)
    put(win, _GLASS + 0.1 * n1[:, None] * torch.ones(3))
    put(mm & ~vertical & ~small, torch.tensor([0.33, 0.33, 0.35]))
    put(mm & small, torch.tensor([0.45, 0.46, 0.48]))
    put(mm & (part == 3), torch.tensor([0.15, 0.35, 0.70]))
    # vegetation: foliage noise, trunks
    veg = cls == 16
    leaf = _noise(p, 7.0)
    put(veg, _BASE[16] * (0.55 + 0.8 * leaf)[:, None] + torch.tensor([0.05, 0.0, 0.0]) * _noise(p, 2.0)[:, None])
    put(veg & small, torch.tensor([0.33, 0.24, 0.15]))
    # raised sidewalk: kerb faces lighter, tiles on top
    sw = cls == 13
    put(sw & ~vertical & ((_frac(p[:, 0] / 0.8) < 0.05) | (_frac(p[:, 1] / 0.8) < 0.05)), torch.tensor([0.45, 0.44, 0.42]))
    put(sw & vertical, torch.tensor([0.75, 0.74, 0.72]))
    col = col * (0.9 + 0.2 * n1).unsqueeze(-1)
    return (col * shade.unsqueeze(-1)).clamp(0, 1)


# --------------------------------------------------------------------------- lidar
def lidar_directions(n_beams: int = 32, n_azimuth: int = 1084) -> torch.Tensor:
    """Unit ray directions (n_beams * n_azimuth, 3) of a 32-beam spinning lidar (sensor frame),
    beam-major; elevations -30.67 .. +10.67 deg as the nuScenes HDL-32E."""
    el = torch.deg2rad(torch.linspace(-30.67, 10.67, n_beams, dtype=torch.float64))
    az = torch.linspace(0, 2 * np.pi, n_azimuth + 1, dtype=torch.float64)[:-1]
    e, a = torch.meshgrid(el, az, indexing="ij")
    d = torch.stack([torch.cos(e) * torch.cos(a), torch.cos(e) * torch.sin(a), torch.sin(e)], -1)
    return d.reshape(-1, 3).float()


def render_lidar(scene: Scene, boxes: BoxTable, lidar2local: np.ndarray, max_range: float = 70.0,
                 n_beams: int = 32, n_azimuth: int = 1084) -> dict:
    """Cast the lidar. Returns dict: points (P, 5) float32 in the lidar frame (x, y, z,
    intensity, ring); t (R,) distance per ray (inf = none); dirs (R, 3) local; origin (3,);
    box (R,) hit box index (-1 ground / none); cls (R,) class (255 none)."""
    d_s = lidar_directions(n_beams, n_azimuth)
    R = torch.from_numpy(lidar2local[:3, :3]).float()
    d = d_s @ R.T
    o = torch.from_numpy(lidar2local[:3, 3]).float()
    # only boxes that can be within range
    centre = lidar2local[:3, 3]
    near = (np.maximum(boxes.lo - centre, 0) ** 2 + np.maximum(centre - boxes.hi, 0) ** 2).sum(1) < max_range ** 2
    sel = np.nonzero(near)[0]
    t, ib = cast_rays(o, d, boxes.lo[sel], boxes.hi[sel])
    ib = torch.where(ib >= 0, torch.from_numpy(sel)[ib.clamp(min=0)], ib)
    dz = d[:, 2]
    tg = (GROUND_TOP - o[2]) / torch.where(dz < -1e-9, dz, torch.full_like(dz, -1e-9))
    tg = torch.where((dz < -1e-9) & (tg > 0), tg, torch.full_like(tg, float("inf")))
    ground = tg < t
    t = torch.where(ground, tg, t)
    ib = torch.where(ground, torch.full_like(ib, -1), ib)
    t = torch.where(t <= max_range, t, torch.full_like(t, float("inf")))
    hit = torch.isfinite(t)
    cls = torch.full(t.shape, IGNORE, dtype=torch.int64)
    bh = hit & (ib >= 0)
    cls[bh] = torch.from_numpy(boxes.cls)[ib[bh]]
    gh = hit & (ib < 0)
    pg = o + d[gh] * t[gh, None]
    cls[gh] = ground_class(scene, pg[:, 0], pg[:, 1])
    ring = torch.arange(n_beams).repeat_interleave(n_azimuth)
    pts_s = d_s[hit] * t[hit, None]
    inten = torch.from_numpy(_INTENSITY)[cls[hit]]
    points = torch.cat([pts_s, inten[:, None], ring[hit, None].float()], 1).numpy().astype(np.float32)
    return dict(points=points, t=t, dirs=d, origin=o, box=ib, cls=cls, hit=hit)


# --------------------------------------------------------------------------- visibility masks
def voxel_centres_ego(grid: GridConfig = GridConfig()) -> torch.Tensor:
    """(X, Y, Z, 3) voxel centres in the ego frame of ``grid`` (the Occ3D grid by default)."""
    v = grid.voxel_size
    axes = [o + v * (torch.arange(n, dtype=torch.float64) + 0.5) for o, n in zip(grid.occ_origin, grid.occ_size)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)


def _voxel_index(p_ego: torch.Tensor, shape, grid: GridConfig = GridConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    lo = torch.tensor(grid.occ_origin, dtype=p_ego.dtype)
    ijk = torch.floor((p_ego - lo) / grid.voxel_size).long()
    ok = (ijk >= 0).all(-1) & (ijk[:, 0] < shape[0]) & (ijk[:, 1] < shape[1]) & (ijk[:, 2] < shape[2])
    return ijk[ok], ok


def camera_visibility(sem: np.ndarray, render: dict, K: np.ndarray, cam2local: np.ndarray, ego2local: np.ndarray,
                      centres: torch.Tensor) -> np.ndarray:
    """Voxels of the ego grid this camera observes: free voxels in front of the first hit
    along their pixel's ray, and the occupied voxel at each pixel's hit. -> (X, Y, Z) bool."""
    shape = sem.shape
    h, w = render["t"].shape
    local = centres.reshape(-1, 3) @ torch.from_numpy(ego2local[:3, :3]).T + torch.from_numpy(ego2local[:3, 3])
    w2c = torch.from_numpy(np.linalg.inv(cam2local))
    pc = local @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[:, 2]
    front = z > 0.1
    uv = (pc[:, :2] / z.clamp(min=1e-6)[:, None]) * torch.tensor([K[0, 0], K[1, 1]]) + torch.tensor([K[0, 2], K[1, 2]])
    col = torch.floor(uv[:, 0]).long()
    row = torch.floor(uv[:, 1]).long()
    inside = front & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    dist = pc.norm(dim=-1)
    t_pix = torch.full_like(dist, -1.0)
    t_pix[inside] = render["t"][row[inside], col[inside]].double()
    free = torch.from_numpy(sem.reshape(-1) == FREE)
    vis = (inside & free & (dist < t_pix)).reshape(shape)
    # occupied voxels at the hits
    t = render["t"]
    hit = torch.isfinite(t)
    p_local = torch.from_numpy(render["origin"]) + render["dirs"][hit].double() * (t[hit].double() + 0.01)[:, None]
    l2e = torch.from_numpy(np.linalg.inv(ego2local))
    p_ego = p_local @ l2e[:3, :3].T + l2e[:3, 3]
    ijk, _ = _voxel_index(p_ego, shape)
    vis[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
    return vis.numpy()


def lidar_visibility(shape, lidar: dict, ego2local: np.ndarray, step: float = 0.2, max_range: float = 57.0,
                     chunk: int = 8192) -> np.ndarray:
    """Voxels the lidar observes: free voxels its rays pass through and the voxels they hit."""
    vis = torch.zeros(shape, dtype=torch.bool)
    l2e = torch.from_numpy(np.linalg.inv(ego2local)).float()
    o = lidar["origin"] @ l2e[:3, :3].T + l2e[:3, 3]
    d = lidar["dirs"] @ l2e[:3, :3].T
    t = lidar["t"]
    t_end = torch.where(torch.isfinite(t), t, torch.full_like(t, max_range)).clamp(max=max_range)  # grid: <= 57 m
    s = torch.arange(step, max_range, step)
    for i in range(0, len(t), chunk):
        te = t_end[i : i + chunk]
        ss = s[None, :].expand(len(te), -1)
        keep = ss < (te[:, None] - 0.02)
        pts = o + d[i : i + chunk, None, :] * ss[..., None]
        ijk, _ = _voxel_index(pts[keep].double(), shape)
        vis[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
    hit = torch.isfinite(t)
    ph = o + d[hit] * (t[hit] + 0.01)[:, None]
    ijk, _ = _voxel_index(ph.double(), shape)
    vis[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
    return vis.numpy()
