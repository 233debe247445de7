"""Procedural street scenes built from axis-aligned boxes on the Occ3D voxel lattice.

Every box edge lies on the 0.4 m lattice of the Occ3D grid and the ego vehicle stops at
lattice points at each keyframe (heading along the scene's road), so the voxelised ground
truth of a keyframe is exact: a voxel is occupied by a class iff the world is.

The ego's motion (build_scene's ``ego_speed``, ``turn_rate``): by default it drives straight
along its lane at a speed drawn per scene (5-7 voxels = 2.0-2.8 m per keyframe) and stops on
lattice points. A given speed that is not a whole number of voxels per keyframe, or a turn,
puts the ego between lattice points and at yaws off the road's axis; the labels are then
point-sampled at the voxel centres (the same rule, exact at lattice points). A turn is a
constant yaw rate on a circular arc whose chord is the lane: the ego starts and ends a scene
on its lane centre line, heading -Y/2 .. +Y/2 (Y = turn_rate x scene duration), and leaves the
line by the arc's sagitta in between (R (1 - cos(Y/2)), R = speed / yaw rate).

Scene-local frame (metres): x = 0.4 * u along the road, y = 0.4 * v across it (v < 0 on the
ego's right), z up with the Occ3D z lattice (layer k spans [-1 + 0.4 k, -0.6 + 0.4 k)).
The ground plane's top is at z = -0.6 (layer 0 is the ground), sidewalks are raised to
z = -0.2 (layers 0-1). Global frame = scene-local rotated by a multiple of 90 deg + offset.

Cross-section (v, voxels): road |v| < 15 (driving lanes |v| < 10, parking strips 10..15),
sidewalks 15..23, verge (terrain, trees, poles) 23..28, buildings / plazas / lots beyond.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ...config import GridConfig

# The world is built on the Occ3D grid's voxels, so its labels are the grid's (GridConfig, the one
# definition): 0.4 m voxels, z from -1.0 m, 16 layers, +-100 voxels around the ego.
_GRID = GridConfig()
VOXEL = _GRID.voxel_size
Z_MIN = _GRID.occ_origin[2]
NZ = _GRID.occ_size[2]
GROUND_TOP = Z_MIN + VOXEL  # top of layer 0
GRID_HALF = _GRID.occ_size[0] // 2  # the Occ3D grid spans +-GRID_HALF voxels around the ego
MARGIN = 280  # voxels of world beyond the ego path at each end (112 m)
KEYFRAME_S = 0.5  # seconds between keyframes (nuScenes' 2 Hz)
VH = 250  # half width of the scene in voxels (100 m)

# occupancy classes (classes.py)
OTHERS, BARRIER, BICYCLE, BUS, CAR, CONSTR, MOTO, PED, CONE, TRAILER, TRUCK = range(11)
DRIVE, OTHER_FLAT, SIDEWALK, TERRAIN, MANMADE, VEG, FREE = 11, 12, 13, 14, 15, 16, 17

# object classes -> nuScenes category names (annotated objects only)
CATEGORY_OF = {
    CAR: "vehicle.car",
    TRUCK: "vehicle.truck",
    BUS: "vehicle.bus.rigid",
    TRAILER: "vehicle.trailer",
    CONSTR: "vehicle.construction",
    MOTO: "vehicle.motorcycle",
    BICYCLE: "vehicle.bicycle",
    PED: "human.pedestrian.adult",
    CONE: "movable_object.trafficcone",
    BARRIER: "movable_object.barrier",
    OTHERS: "movable_object.pushable_pullable",
}

# part codes (appearance only)
P_BODY, P_GLASS, P_RIDER, P_ROOF = 0, 1, 2, 3


@dataclass
class WorldObject:
    """One object: parts as boxes in voxel units [lo, hi), velocity in voxels per keyframe."""

    obj_id: int
    cls: int
    lo: list  # list of (3,) int
    hi: list
    part: list
    vel: tuple[int, int] = (0, 0)
    yaw_flip: bool = False  # faces -u (oncoming)
    annotate: bool = False
    attribute: str = ""

    def bbox(self, k: int = 0) -> tuple[np.ndarray, np.ndarray]:
        lo = np.min(np.array(self.lo), 0)
        hi = np.max(np.array(self.hi), 0)
        off = np.array([self.vel[0] * k, self.vel[1] * k, 0])
        return lo + off, hi + off


@dataclass
class Scene:
    index: int
    seed: int
    n_u: int  # scene length in voxels
    ground: np.ndarray  # (n_u, 2 * VH) uint8 ground class at layer 0, [u, v + VH]
    objects: list = field(default_factory=list)
    ego_u0: int = MARGIN
    ego_v: int = -5
    ego_step: float = 6  # voxels per keyframe (0.5 s) along the path: 6 = 4.8 m/s
    heading_quarter: int = 0  # global yaw of the road = quarter * 90 deg
    origin: tuple[float, float] = (0.0, 0.0)  # global position of scene-local (0, 0)
    n_keyframes: int = 10
    yaw_rate: float = 0.0  # ego yaw rate, radians per keyframe (> 0 turns left); 0 = straight

    # ---------------------------------------------------------------- boxes
    def boxes(self, k: int, u_center: int | None = None, u_range: int | None = None):
        """All object boxes at keyframe k (dynamic objects moved).

        Returns (lo (M, 3) int, hi (M, 3) int, cls (M,), obj (M,), part (M,)) in voxels.
        """
        lo, hi, cls, obj, part = [], [], [], [], []
        for o in self.objects:
            off = np.array([o.vel[0] * k, o.vel[1] * k, 0])
            for a, b, p in zip(o.lo, o.hi, o.part):
                lo.append(np.asarray(a) + off)
                hi.append(np.asarray(b) + off)
                cls.append(o.cls)
                obj.append(o.obj_id)
                part.append(p)
        lo = np.array(lo, dtype=np.int64).reshape(-1, 3)
        hi = np.array(hi, dtype=np.int64).reshape(-1, 3)
        cls, obj, part = np.array(cls, np.int64), np.array(obj, np.int64), np.array(part, np.int64)
        if u_center is not None and len(lo):
            keep = (hi[:, 0] > u_center - u_range) & (lo[:, 0] < u_center + u_range)
            lo, hi, cls, obj, part = lo[keep], hi[keep], cls[keep], obj[keep], part[keep]
        return lo, hi, cls, obj, part

    # ---------------------------------------------------------------- ego motion
    def ego_yaw(self, k: float) -> float:
        """Ego yaw in the scene-local frame (radians) at (fractional) keyframe time k."""
        if self.yaw_rate == 0.0:
            return 0.0
        return self.yaw_rate * (k - (self.n_keyframes - 1) / 2)

    def ego_uv(self, k: float) -> tuple[float, float]:
        """Ego position (u, v) in voxels at (fractional) keyframe time k (module docstring)."""
        if self.yaw_rate == 0.0:
            return self.ego_u0 + self.ego_step * k, float(self.ego_v)
        w, kc = self.yaw_rate, (self.n_keyframes - 1) / 2
        r = self.ego_step / w  # signed turn radius, voxels
        u = self.ego_u0 + r * (np.sin(w * (k - kc)) + np.sin(w * kc))
        v = self.ego_v + r * (np.cos(w * kc) - np.cos(w * (k - kc)))
        return float(u), float(v)

    def ego_u(self, k: int) -> int:
        """The lattice column nearest the ego at keyframe k (where the world around it is cut)."""
        return int(round(self.ego_uv(k)[0]))

    # ---------------------------------------------------------------- ground truth
    def occupancy(self, k: int) -> np.ndarray:
        """Occ3D semantics (200, 200, 16) uint8 at keyframe k in the ego frame, index [x, y, z]:
        each voxel the class of the world's lattice voxel holding its centre (exact when the ego
        stands on a lattice point heading +u, as by default)."""
        e2l = self.ego2local(k)
        c = VOXEL * (np.arange(2 * GRID_HALF) + 0.5) + _GRID.occ_origin[0]  # ego x = y centres (square grid)
        cx, cy = np.meshgrid(c, c, indexing="ij")  # (X, Y)
        px = e2l[0, 0] * cx + e2l[0, 1] * cy + e2l[0, 3]
        py = e2l[1, 0] * cx + e2l[1, 1] * cy + e2l[1, 3]
        u, v = np.floor(px / VOXEL).astype(np.int64), np.floor(py / VOXEL).astype(np.int64)  # (X, Y) lattice
        u0, v0 = int(u.min()), int(v.min())
        du, dv = int(u.max()) - u0 + 1, int(v.max()) - v0 + 1
        vol = np.full((du, dv, NZ), FREE, dtype=np.uint8)  # the world's lattice around the ego
        vol[..., 0] = TERRAIN  # outside the generated map
        gu0, gu1 = max(u0, 0), min(u0 + du, self.n_u)
        gv0, gv1 = max(v0 + VH, 0), min(v0 + dv + VH, 2 * VH)
        if gu0 < gu1 and gv0 < gv1:
            vol[gu0 - u0 : gu1 - u0, gv0 - VH - v0 : gv1 - VH - v0, 0] = self.ground[gu0:gu1, gv0:gv1]
        lo, hi, cls, _, _ = self.boxes(k)
        for a, b, cl in zip(lo, hi, cls):
            a0, a1 = max(a[0] - u0, 0), min(b[0] - u0, du)
            b0, b1 = max(a[1] - v0, 0), min(b[1] - v0, dv)
            c0, c1 = max(a[2], 0), min(b[2], NZ)
            if a0 < a1 and b0 < b1 and c0 < c1:
                vol[a0:a1, b0:b1, c0:c1] = cl
        return vol[u - u0, v - v0]

    # ---------------------------------------------------------------- frames
    def local2global(self) -> np.ndarray:
        """(4, 4) scene-local -> global."""
        a = self.heading_quarter * np.pi / 2
        m = np.eye(4)
        m[:2, :2] = np.round(np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]))
        m[0, 3], m[1, 3] = self.origin
        return m

    def ego2local(self, k: float) -> np.ndarray:
        """(4, 4) ego -> scene-local at (fractional) keyframe time k (0.5 s per keyframe)."""
        m = np.eye(4)
        yaw = self.ego_yaw(k)
        if yaw != 0.0:
            m[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
        u, v = self.ego_uv(k)
        m[0, 3] = VOXEL * u
        m[1, 3] = VOXEL * v
        return m


# --------------------------------------------------------------------------- generation
class _Builder:
    def __init__(self, rng: np.random.Generator, n_u: int):
        self.rng = rng
        self.n_u = n_u
        self.objects: list[WorldObject] = []
        self.taken = np.zeros((n_u, 2 * VH), dtype=bool)  # static footprints

    def free(self, u0, u1, v0, v1) -> bool:
        if u0 < 0 or u1 > self.n_u or v0 < -VH or v1 > VH:
            return False
        return not self.taken[u0:u1, v0 + VH : v1 + VH].any()

    def add(self, cls, parts, vel=(0, 0), yaw_flip=False, annotate=None, attribute="", reserve=True):
        lo = [np.array(p[0], dtype=np.int64) for p in parts]
        hi = [np.array(p[1], dtype=np.int64) for p in parts]
        part = [p[2] if len(p) > 2 else P_BODY for p in parts]
        if annotate is None:
            annotate = cls in CATEGORY_OF
        o = WorldObject(len(self.objects), cls, lo, hi, part, tuple(vel), yaw_flip, annotate, attribute)
        self.objects.append(o)
        if reserve and vel == (0, 0):
            a, b = o.bbox()
            self.taken[max(a[0], 0) : b[0], a[1] + VH : b[1] + VH] = True
        return o


def _vehicle_parts(cls: int, u: int, v: int, z: int, flip: bool, rng) -> list:
    """Box parts of a vehicle whose footprint starts at (u, v), lying on layer z."""
    if cls == CAR:
        L, W = int(rng.integers(10, 13)), 5
        cab0 = u + (3 if flip else 2)
        return [((u, v, z), (u + L, v + W, z + 3)), ((cab0, v, z + 3), (cab0 + L - 5, v + W, z + 4), P_GLASS)]
    if cls == TRUCK:
        cab_l, box_l = 5, int(rng.integers(12, 18))
        if flip:
            return [((u, v, z), (u + cab_l, v + 6, z + 7), P_GLASS), ((u + cab_l, v, z), (u + cab_l + box_l, v + 6, z + 9))]
        return [((u, v, z), (u + box_l, v + 6, z + 9)), ((u + box_l, v, z), (u + box_l + cab_l, v + 6, z + 7), P_GLASS)]
    if cls == BUS:
        return [((u, v, z), (u + int(rng.integers(26, 31)), v + 7, z + 8))]
    if cls == TRAILER:
        return [((u, v, z), (u + int(rng.integers(20, 28)), v + 6, z + 9))]
    if cls == CONSTR:
        return [((u, v, z), (u + 12, v + 6, z + 6)), ((u + 2, v + 2, z + 6), (u + 12, v + 4, z + 8), P_ROOF)]
    if cls == MOTO:
        return [((u, v, z), (u + 5, v + 2, z + 3))]
    if cls == BICYCLE:
        return [((u, v, z), (u + 4, v + 1, z + 3))]
    raise ValueError(cls)


def _vehicle_len(parts) -> int:
    lo = min(p[0][0] for p in parts)
    hi = max(p[1][0] for p in parts)
    return hi - lo


def build_scene(seed: int, index: int, n_keyframes: int, ego_speed: float | None = None, turn_rate: float = 0.0,
                moving_objects: bool = True) -> Scene:
    """Generate scene ``index`` of the world with ``seed`` (deterministic).

    ego_speed: m/s along the path (None: drawn per scene, 5-7 voxels per keyframe = 4-5.6 m/s);
    turn_rate: deg/s, > 0 left (module docstring); moving_objects False leaves out every object
    that moves (traffic, cyclists, walking pedestrians): a static world around a moving ego.
    The defaults give the same scenes as before these options existed."""
    rng = np.random.default_rng([seed, index])
    ego_step = int(rng.integers(5, 8))  # drawn in any case: the options do not shift the random stream
    if ego_speed is not None:
        if not (np.isfinite(ego_speed) and ego_speed >= 0):
            raise ValueError(f"ego_speed {ego_speed!r}: expected a finite speed >= 0 m/s")
        ego_step = ego_speed * KEYFRAME_S / VOXEL
        if ego_step == int(ego_step):
            ego_step = int(ego_step)
    if not np.isfinite(turn_rate):
        raise ValueError(f"turn_rate {turn_rate!r}: expected a finite yaw rate in deg/s")
    yaw_rate = float(np.deg2rad(turn_rate) * KEYFRAME_S)
    n_u = 2 * MARGIN + int(np.ceil(ego_step * max(n_keyframes - 1, 0))) + 1
    b = _Builder(rng, n_u)
    ground = np.full((n_u, 2 * VH), TERRAIN, dtype=np.uint8)
    V = lambda v: v + VH  # noqa: E731

    ground[:, V(-15) : V(15)] = DRIVE
    ground[:, V(15) : V(23)] = SIDEWALK
    ground[:, V(-23) : V(-15)] = SIDEWALK
    # a cross street in view of the ego's path
    uc = int(MARGIN + rng.integers(-60, 60 + int(round(ego_step * n_keyframes))))
    cross = (uc, uc + 24)
    ground[cross[0] : cross[1], :] = DRIVE
    b.taken[cross[0] : cross[1], :] = True
    # sidewalks: raised boxes, split at the cross street
    for v0, v1 in ((15, 23), (-23, -15)):
        for u0, u1 in ((0, cross[0]), (cross[1], n_u)):
            if u1 > u0:
                b.add(SIDEWALK, [((u0, v0, 0), (u1, v1, 2))], annotate=False, reserve=False)
    # crossing zebra on the cross street is texture only; keep lanes free of static objects
    b.taken[:, V(-10) : V(10)] = True

    # --- verge: trees, hedges, poles, signs
    for side in (1, -1):
        vv0, vv1 = (23, 28) if side > 0 else (-28, -23)
        u = int(rng.integers(0, 8))
        while u < n_u - 8:
            r = rng.random()
            if r < 0.45:
                c = int(rng.integers(4, 7))
                cu, cv = u, vv0 + (5 - c) // 2
                trunk_h = int(rng.integers(5, 8))
                if b.free(cu, cu + c, vv0, vv1):
                    tu, tv = cu + c // 2, vv0 + 2
                    b.add(VEG, [((tu, tv, 1), (tu + 1, tv + 1, 1 + trunk_h)),
                                ((cu, cv, 1 + trunk_h), (cu + c, cv + c, 1 + trunk_h + int(rng.integers(4, 7))))],
                          annotate=False)
                u += c + int(rng.integers(3, 10))
            elif r < 0.7:
                L = int(rng.integers(8, 20))
                if b.free(u, u + L, vv0 + 1, vv0 + 4):
                    b.add(VEG, [((u, vv0 + 1, 1), (u + L, vv0 + 3, 1 + int(rng.integers(2, 4))))], annotate=False)
                u += L + int(rng.integers(2, 8))
            elif r < 0.85:
                if b.free(u, u + 1, vv0, vv0 + 1):
                    h = int(rng.integers(14, 20))
                    parts = [((u, vv0, 1), (u + 1, vv0 + 1, 1 + h))]
                    b.add(MANMADE, parts, annotate=False)
                u += int(rng.integers(6, 14))
            else:
                if b.free(u, u + 1, vv0, vv0 + 3):
                    b.add(MANMADE, [((u, vv0, 1), (u + 1, vv0 + 1, 8)), ((u, vv0, 8), (u + 1, vv0 + 3, 10), P_ROOF)],
                          annotate=False)
                u += int(rng.integers(8, 16))

    # --- blocks beyond the verge: buildings, plazas (other_flat), lots, construction
    constr_side = int(rng.choice([1, -1]))
    for side in (1, -1):
        u = 0
        made_constr = False
        while u < n_u:
            L = int(rng.integers(25, 70))
            u1 = min(u + L, n_u)
            if u < cross[1] and u1 > cross[0]:
                u1 = cross[0] if u < cross[0] else cross[1]
                if u1 <= u:
                    u = cross[1]
                    continue
            r = rng.random()
            near_ego = abs(u - MARGIN) < 150
            if side == constr_side and not made_constr and near_ego and u1 - u >= 25:
                made_constr = True
                _construction_site(b, ground, u, u1, side, rng)
            elif r < 0.6:
                depth = int(rng.integers(20, 50))
                h = int(rng.integers(12, 50))
                v0, v1 = (29, 29 + depth) if side > 0 else (-29 - depth, -29)
                if u1 - u > 6:
                    b.add(MANMADE, [((u + 1, v0, 1), (u1 - 1, v1, 1 + h))], annotate=False)
                    ground[u:u1, V(min(v0, v1) - 1) : V(max(v0, v1) + 1)] = OTHER_FLAT
            elif r < 0.8:
                _parking_lot(b, ground, u, u1, side, rng)
            else:
                # garden: terrain with bushes and trees
                for _ in range(int(rng.integers(2, 6))):
                    cu = int(rng.integers(u, max(u + 1, u1 - 6)))
                    cv = int(rng.integers(30, 60)) * side
                    c = int(rng.integers(3, 7))
                    if b.free(cu, cu + c, min(cv, cv + c), max(cv, cv + c)):
                        b.add(VEG, [((cu, cv, 1), (cu + c, cv + c, 1 + int(rng.integers(3, 12))))], annotate=False)
            u = u1 + (int(rng.integers(2, 8)) if rng.random() < 0.5 else 0)
            if u1 == cross[0]:
                u = cross[1]
    # background: a row of tall buildings / forest far from the road
    for side in (1, -1):
        u = 0
        while u < n_u:
            L = int(rng.integers(30, 90))
            v0 = 85 + int(rng.integers(0, 40))
            cls = MANMADE if rng.random() < 0.6 else VEG
            lo_v, hi_v = (v0, v0 + 30) if side > 0 else (-v0 - 30, -v0)
            if b.free(u, min(u + L, n_u), lo_v, hi_v):
                b.add(cls, [((u, lo_v, 1), (min(u + L, n_u), hi_v, 1 + int(rng.integers(20, 60))))], annotate=False)
            u += L + int(rng.integers(0, 20))

    # --- parking strips: parked cars, vans, trucks, motorcycles
    for side in (1, -1):
        v0 = 10 if side > 0 else -15
        u = int(rng.integers(0, 10))
        while u < n_u - 40:
            r = rng.random()
            cls = CAR if r < 0.65 else TRUCK if r < 0.75 else TRAILER if r < 0.8 else MOTO if r < 0.92 else BUS
            width = {CAR: 5, TRUCK: 6, TRAILER: 6, MOTO: 2, BUS: 7}[cls]
            vs = (15 - width - (1 if cls == MOTO else 0)) if side > 0 else (-15 + (1 if cls == MOTO else 0))
            parts = _vehicle_parts(cls, u, vs, 1, side > 0, rng)
            L = _vehicle_len(parts)
            free_strip = not (u < cross[1] + 2 and u + L > cross[0] - 2) and b.free(u, u + L, vs, vs + width)
            if free_strip and rng.random() < 0.7:
                b.add(cls, parts, yaw_flip=side > 0, attribute="vehicle.parked" if cls != MOTO else "cycle.without_rider")
            u += L + int(rng.integers(1, 12))

    # --- sidewalk furniture and static pedestrians / bicycles / bins
    for side in (1, -1):
        band = (15, 17) if side > 0 else (-17, -15)
        outer = (21, 23) if side > 0 else (-23, -21)
        for u in range(0, n_u - 5, 4):
            if cross[0] - 2 <= u <= cross[1] + 2:
                continue
            r = rng.random()
            vb = band if rng.random() < 0.5 else outer
            if r < 0.05:
                b.add(BICYCLE, [((u, vb[0], 2), (u + 4, vb[0] + 1, 5))], attribute="cycle.without_rider") \
                    if b.free(u, u + 4, vb[0], vb[0] + 1) else None
            elif r < 0.09:
                if b.free(u, u + 1, vb[0], vb[0] + 1):
                    b.add(OTHERS, [((u, vb[0], 2), (u + 1, vb[0] + 1, 5))])
            elif r < 0.11:
                if b.free(u, u + 2, vb[0], vb[0] + 2):
                    b.add(OTHERS, [((u, vb[0], 2), (u + 2, vb[0] + 2, 4))])
            elif r < 0.16:
                if b.free(u, u + 1, vb[0], vb[0] + 1):
                    b.add(PED, [((u, vb[0], 2), (u + 1, vb[0] + 1, 2 + int(rng.integers(4, 6))))],
                          attribute="pedestrian.standing")

    # --- moving traffic (lanes are free of static objects)
    ego_u0 = MARGIN
    span = int(round(ego_step * n_keyframes))
    # oncoming lane: v in [2, 7) (cars / trucks / buses), moving -u
    speed = int(rng.integers(4, 9))
    for _ in range(int(rng.integers(3, 7))):
        cls = int(rng.choice([CAR, CAR, CAR, TRUCK, BUS]))
        u = int(rng.integers(ego_u0 - 60, ego_u0 + span + 60 + speed * n_keyframes))
        parts = _vehicle_parts(cls, u, 2 if cls == CAR else 1, 1, True, rng)
        b.add(cls, parts, vel=(-speed, 0), yaw_flip=True, attribute="vehicle.moving", reserve=False)
    # same lane as the ego, ahead at the ego's speed; and one behind
    for du, cls in ((int(rng.integers(30, 45)), int(rng.choice([CAR, TRUCK]))), (-int(rng.integers(28, 40)), CAR)):
        parts = _vehicle_parts(cls, ego_u0 + du, -8, 1, False, rng)
        b.add(cls, parts, vel=(int(round(ego_step)), 0), attribute="vehicle.moving", reserve=False)
    # cyclists at the right edge of the ego lane, slower than the ego
    sp = int(rng.integers(1, 3))
    for _ in range(int(rng.integers(1, 3))):
        u = int(rng.integers(ego_u0 + 10, ego_u0 + span + 40))
        b.add(BICYCLE, [((u, -10, 1), (u + 4, -9, 4)), ((u + 1, -10, 4), (u + 2, -9, 6), P_RIDER)],
              vel=(sp, 0), attribute="cycle.with_rider", reserve=False)
    # walking pedestrians in the middle band of the sidewalks
    for side in (1, -1):
        for _ in range(int(rng.integers(3, 8))):
            u = int(rng.integers(ego_u0 - 80, ego_u0 + span + 80))
            sp = int(rng.choice([-1, 1]))
            v = int(rng.integers(17, 19) if sp > 0 else rng.integers(19, 21)) * side
            if cross[0] - 12 <= u <= cross[1] + 12:
                continue
            b.add(PED, [((u, v, 2), (u + 1, v + 1, 2 + int(rng.integers(4, 6))))], vel=(sp, 0),
                  attribute="pedestrian.moving", reserve=False)

    origin = (400.0 + 400.0 * index, 800.0 + 80.0 * (seed % 7))  # multiples of 0.4 m
    objects = b.objects
    if not moving_objects:  # ids are list positions: renumber what stays
        objects = [replace(o, obj_id=i) for i, o in enumerate(o for o in objects if o.vel == (0, 0))]
    return Scene(index, seed, n_u, ground, objects, ego_u0, -5, ego_step, int(rng.integers(0, 4)), origin, n_keyframes,
                 yaw_rate)


def _construction_site(b: _Builder, ground, u0, u1, side, rng):
    """Plaza of other_flat with a construction vehicle, barriers along the kerb and cones."""
    V = lambda v: v + VH  # noqa: E731
    v0, v1 = (29, 60) if side > 0 else (-60, -29)
    ground[u0:u1, V(v0) : V(v1)] = OTHER_FLAT
    cu = u0 + 4
    cv = 34 if side > 0 else -40
    if b.free(cu, cu + 12, cv, cv + 6):
        b.add(CONSTR, _vehicle_parts(CONSTR, cu, cv, 1, False, rng), attribute="vehicle.parked")
    vb = 28 if side > 0 else -29
    for u in range(u0, u1 - 5, 6):
        if b.free(u, u + 5, vb, vb + 1):
            b.add(BARRIER, [((u, vb, 1), (u + 5, vb + 1, 3))])
    # cones along the parking strip line
    ps = (10, 15) if side > 0 else (-15, -10)
    vc = 11 if side > 0 else -12
    for u in range(u0, u1, 5):
        if b.free(u, u + 1, vc, vc + 1):
            b.add(CONE, [((u, vc, 1), (u + 1, vc + 1, 3))])
    # keep parked vehicles out of the strip beside the site
    b.taken[u0:u1, V(ps[0]) : V(ps[1])] = True


def _parking_lot(b: _Builder, ground, u0, u1, side, rng):
    V = lambda v: v + VH  # noqa: E731
    v0, v1 = (29, 55) if side > 0 else (-55, -29)
    ground[u0:u1, V(v0) : V(v1)] = OTHER_FLAT
    for u in range(u0 + 1, u1 - 6, 7):
        for vv in ((31, 43) if side > 0 else (-42, -54)):
            if rng.random() < 0.6:
                cls = CAR if rng.random() < 0.85 else TRUCK
                # cars parked across the lot: footprint along v
                L = int(rng.integers(10, 13)) if cls == CAR else 16
                if b.free(u, u + 5, vv, vv + L):
                    parts = [((u, vv, 1), (u + 5, vv + L, 3 if cls == CAR else 8)),
                             ((u, vv + 2, 3 if cls == CAR else 8), (u + 5, vv + L - 3, 4 if cls == CAR else 8), P_GLASS)]
                    parts = [p for p in parts if p[1][2] > p[0][2]]
                    b.add(cls, parts, attribute="vehicle.parked")


def build_world(seed: int, n_scenes: int, n_keyframes: int, **motion) -> list[Scene]:
    """``motion``: build_scene's ego_speed, turn_rate, moving_objects."""
    return [build_scene(seed, i, n_keyframes, **motion) for i in range(n_scenes)]
