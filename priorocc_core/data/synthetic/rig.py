"""The camera / lidar rig of the synthetic world: the real nuScenes rig, or a built-in preset.

Read from the real keyframe in ``../shared/data/nuscenes-real`` through nuscenes-devkit when
it is there; otherwise from the same numbers kept here as constants (calibration of
v1.0-mini scene-0061, vehicle n015: camera -> ego translation, rotation (w, x, y, z),
intrinsics at 1600 x 900, and each sensor's time offset from the LIDAR_TOP keyframe).
Presets (:func:`rig_preset`, ``make_synthetic --rig-preset``): ``robot4``, a small robot with
four wide cameras (front, left, back, right; 100 deg horizontal field of view, 0.8 m high), and
``front1``, the nuScenes front camera alone. Their cameras keep nuScenes channel names (the
dataset's camera names); the model's ``model.image.cameras`` lists them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...classes import CAMERAS
from ...geometry import quat_from_transform, transform_from_quat

SRC_HW = (900, 1600)

# channel: (translation, rotation wxyz, (fx, cx, cy), time offset to LIDAR_TOP in microseconds)
_BUILTIN = {
    "CAM_FRONT_LEFT": ([1.52387798135, 0.494631336551, 1.50932822144],
                       [0.6757265034669446, -0.6736266522251881, 0.21214015046209478, -0.21122827103904068],
                       (1272.5979470598488, 826.6154927353808, 479.75165386361925), -43107),
    "CAM_FRONT": ([1.70079118954, 0.0159456324149, 1.51095763913],
                  [0.4998015430569128, -0.5030316162024876, 0.4997798114386805, -0.49737083824542755],
                  (1266.417203046554, 816.2670197447984, 491.50706579294757), -35491),
    "CAM_FRONT_RIGHT": ([1.5508477543, -0.493404796419, 1.49574800619],
                        [0.2060347966337182, -0.2026940577919598, 0.6824507824531167, -0.6713610884174485],
                        (1260.8474446004698, 807.968244525554, 495.3344268742088), -27612),
    "CAM_BACK_LEFT": ([1.03569100218, 0.484795032713, 1.59097014818],
                      [0.6924185592174665, -0.7031619420114925, -0.11648342771943819, 0.11203317912370753],
                      (1256.7414812095406, 792.1125740759628, 492.7757465151356), -528),
    "CAM_BACK": ([0.0283260309358, 0.00345136761476, 1.57910346144],
                 [0.5037872666382278, -0.49740249788611096, -0.4941850223835201, 0.5045496097725578],
                 (809.2209905677063, 829.2196003259838, 481.77842384512485), -10426),
    "CAM_BACK_RIGHT": ([1.0148780988, -0.480568219723, 1.56239545128],
                       [0.12280980120078765, -0.132400842670559, -0.7004305821388234, 0.690496031265798],
                       (1259.5137405846733, 807.2529053838625, 501.19579884916527), -20058),
}
_BUILTIN_LIDAR = ([0.943713, 0.0, 1.84023],
                  [0.7077955119163518, -0.006492242056004365, 0.010646214713995808, -0.7063073142877817])


@dataclass
class SensorCalib:
    channel: str
    translation: list[float]  # sensor -> ego, metres
    rotation: list[float]  # sensor -> ego, quaternion (w, x, y, z)
    K: np.ndarray | None  # (3, 3) at SRC_HW, cameras only
    time_offset_us: int  # sensor timestamp - LIDAR_TOP timestamp

    @property
    def sensor2ego(self) -> np.ndarray:
        return transform_from_quat(self.translation, self.rotation)


@dataclass
class Rig:
    cameras: dict[str, SensorCalib]
    lidar: SensorCalib
    source: str  # where the numbers came from

    def K_at(self, channel: str, hw: tuple[int, int]) -> np.ndarray:
        """Intrinsics scaled from 1600 x 900 to an image of size hw = (H, W)."""
        k = self.cameras[channel].K.copy()
        sy, sx = hw[0] / SRC_HW[0], hw[1] / SRC_HW[1]
        k[0] *= sx
        k[1] *= sy
        return k


def _yaw_camera(channel: str, yaw_deg: float, xyz: tuple[float, float, float], hfov_deg: float,
                time_offset_us: int) -> SensorCalib:
    """A level camera looking along ``yaw_deg`` (0 = forward, 90 = left) at ``xyz`` metres, with
    ``hfov_deg`` horizontal field of view on the 1600 x 900 source image."""
    yaw = np.deg2rad(yaw_deg)
    rz = np.array([[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
    opt2body = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # optical (x right, y down, z fwd)
    cam2ego = np.eye(4)
    cam2ego[:3, :3] = rz @ opt2body
    cam2ego[:3, 3] = xyz
    t, q = quat_from_transform(cam2ego)
    f = (SRC_HW[1] / 2) / np.tan(np.deg2rad(hfov_deg) / 2)
    K = np.array([[f, 0.0, SRC_HW[1] / 2], [0.0, f, SRC_HW[0] / 2], [0.0, 0.0, 1.0]])
    return SensorCalib(channel, t.tolist(), q.tolist(), K, time_offset_us)


RIG_PRESETS = ("nuscenes", "robot4", "front1")


def rig_preset(name: str, real_root: str | Path | None = None) -> Rig:
    """A built-in rig by name (RIG_PRESETS); ``nuscenes`` is :func:`load_rig`."""
    base = load_rig(real_root)
    if name == "nuscenes":
        return base
    if name == "front1":
        return Rig({"CAM_FRONT": base.cameras["CAM_FRONT"]}, base.lidar, f"preset front1 (CAM_FRONT of {base.source})")
    if name == "robot4":
        cams = {ch: _yaw_camera(ch, yaw, (0.3 * np.cos(np.deg2rad(yaw)), 0.3 * np.sin(np.deg2rad(yaw)), 0.8), 100.0, off)
                for ch, yaw, off in (("CAM_FRONT", 0.0, 0), ("CAM_FRONT_LEFT", 90.0, -5000),
                                     ("CAM_BACK", 180.0, -10000), ("CAM_FRONT_RIGHT", -90.0, -15000))}
        return Rig(cams, base.lidar, "preset robot4 (4 cameras, 100 deg, 0.8 m high)")
    raise ValueError(f"rig preset {name!r}: expected one of {', '.join(RIG_PRESETS)}")


def default_real_root() -> Path:
    env = os.environ.get("PRIOROCC_SHARED_DATA")
    if env:
        return Path(env) / "nuscenes-real"
    return Path(__file__).resolve().parents[4] / "shared" / "data" / "nuscenes-real"


def builtin_rig() -> Rig:
    cams = {}
    for ch, (t, r, (f, cx, cy), off) in _BUILTIN.items():
        K = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
        cams[ch] = SensorCalib(ch, list(t), list(r), K, off)
    lidar = SensorCalib("LIDAR_TOP", list(_BUILTIN_LIDAR[0]), list(_BUILTIN_LIDAR[1]), None, 0)
    return Rig(cams, lidar, "built-in constants (nuScenes v1.0-mini scene-0061 calibration)")


def load_rig(real_root: str | Path | None = None) -> Rig:
    """The rig of the real keyframe read with nuscenes-devkit, or :func:`builtin_rig` if absent."""
    root = Path(real_root) if real_root is not None else default_real_root()
    if not (root / "v1.0-mini" / "sample.json").is_file():
        return builtin_rig()
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)
    sample = nusc.sample[0]
    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    cams = {}
    for ch in CAMERAS:
        sd = nusc.get("sample_data", sample["data"][ch])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        cams[ch] = SensorCalib(
            ch, list(cs["translation"]), list(cs["rotation"]), np.array(cs["camera_intrinsic"], dtype=np.float64),
            int(sd["timestamp"] - lidar_sd["timestamp"]),
        )
    cs = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
    lidar = SensorCalib("LIDAR_TOP", list(cs["translation"]), list(cs["rotation"]), None, 0)
    return Rig(cams, lidar, f"nuscenes-devkit: {root}")
