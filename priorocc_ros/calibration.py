"""Calibration from ROS messages: CameraInfo -> K, TF -> cam2ego, and a YAML fallback.

Matrices follow docs/design.md: ``K`` (3, 3); ``cam2ego`` (4, 4) maps camera-frame points
(x right, y down, z forward, the optical frame nuScenes and ROS cameras use) to ``base_link``.
"""
from __future__ import annotations

import os
import threading
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml
from pyquaternion import Quaternion

from priorocc_core.atomic import atomic_write_bytes
from priorocc_ros.msgs import new_msg, ns_to_stamp, stamp_to_ns


class CalibrationError(ValueError):
    """Calibration that cannot be used (the message says which input and why)."""


# ----------------------------------------------------------------------------- CameraInfo
def camera_info_to_K(msg: Any, source: str = "camera_info") -> np.ndarray:
    """sensor_msgs/CameraInfo -> (3, 3) float64 K. Raises CalibrationError for an unusable K
    (not 9 finite numbers, zero focal length, K[2,2] != 1)."""
    k = np.asarray(list(msg.k) if not isinstance(msg.k, np.ndarray) else msg.k, dtype=np.float64)
    if k.size != 9:
        raise CalibrationError(f"{source}: CameraInfo.k has {k.size} values; expected 9")
    K = k.reshape(3, 3)
    if not np.all(np.isfinite(K)):
        raise CalibrationError(f"{source}: CameraInfo.k has non-finite values: {K.tolist()}")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or abs(K[2, 2] - 1.0) > 1e-6:
        raise CalibrationError(
            f"{source}: CameraInfo.k is not a valid camera matrix (need fx > 0, fy > 0, k[8] == 1), got {K.tolist()}")
    return K


def camera_info_geometry(msg: Any, source: str = "camera_info") -> tuple[np.ndarray, tuple[int, int] | None]:
    """CameraInfo -> (K of the image actually published, its expected (height, width) or None).

    As ROS defines it (sensor_msgs/CameraInfo, image_geometry's PinholeCameraModel): ``k``,
    ``width`` and ``height`` describe the full-resolution sensor; the published image is the
    ``roi`` of it (all zeros = the full image), binned by ``binning_x`` x ``binning_y`` (0 = 1).
    K: principal point moved by the ROI offset, then fx, cx / binning_x and fy, cy / binning_y.
    Expected size: roi size // binning (None when width/height are 0: size unknown)."""
    K = camera_info_to_K(msg, source)
    bx = int(getattr(msg, "binning_x", 0) or 1)
    by = int(getattr(msg, "binning_y", 0) or 1)
    roi = getattr(msg, "roi", None)
    ox, oy, rw, rh = (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)) if roi is not None \
        else (0, 0, 0, 0)
    W, H = int(msg.width), int(msg.height)
    if (ox, oy, rw, rh) == (0, 0, 0, 0):
        rw, rh = W, H
    if W and H and (ox + rw > W or oy + rh > H):
        raise CalibrationError(f"{source}: CameraInfo.roi {rw}x{rh}+{ox}+{oy} lies outside the {W}x{H} image")
    K = K.copy()
    K[0, 2] -= ox
    K[1, 2] -= oy
    K[0, :] /= bx
    K[1, :] /= by
    hw = (rh // by, rw // bx) if rw and rh else None
    return K, hw


def make_camera_info(K: np.ndarray, width: int, height: int, header: Any,
                     distortion: Iterable[float] = ()) -> Any:
    """(3, 3) K -> sensor_msgs/CameraInfo (rectified images: R = I, P = [K | 0])."""
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    d = np.asarray(list(distortion), dtype=np.float64)
    return new_msg("sensor_msgs/msg/CameraInfo", header=header, height=int(height), width=int(width),
                   distortion_model="plumb_bob", d=d if d.size else np.zeros(5),
                   k=K.reshape(-1).copy(), r=np.eye(3).reshape(-1), p=P.reshape(-1))


# ----------------------------------------------------------------------------- TF
# tf2's BufferCore rejects a rotation whose quaternion norm is off by more than this
# (TF_DENORMALIZED_QUATERNION); it renormalises smaller deviations.
QUATERNION_NORM_TOLERANCE = 1e-2


def transform_msg_to_matrix(t: Any, source: str = "TF") -> np.ndarray:
    """geometry_msgs/Transform -> (4, 4) float64 (child -> parent). CalibrationError for a
    non-finite translation or rotation, or a quaternion that is not unit (as tf2 rejects it)."""
    q = t.rotation
    qv = np.array([q.w, q.x, q.y, q.z], dtype=np.float64)
    tv = np.array([t.translation.x, t.translation.y, t.translation.z], dtype=np.float64)
    if not (np.all(np.isfinite(qv)) and np.all(np.isfinite(tv))):
        raise CalibrationError(f"{source}: non-finite transform (translation {tv.tolist()}, rotation xyzw "
                               f"{[q.x, q.y, q.z, q.w]}); expected finite numbers")
    norm = float(np.linalg.norm(qv))
    if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise CalibrationError(f"{source}: rotation quaternion has norm {norm:.6g} (xyzw {[q.x, q.y, q.z, q.w]}); "
                               f"expected a unit quaternion (|norm - 1| <= {QUATERNION_NORM_TOLERANCE}, as tf2)")
    m = np.eye(4)
    m[:3, :3] = Quaternion(qv / norm).rotation_matrix
    m[:3, 3] = tv
    return m


def interpolate_transform(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    """(4, 4) rigid transforms ``a`` -> ``b`` at fraction ``w`` in [0, 1]: translation linear,
    rotation slerp (as tf2 interpolates)."""
    qa = Quaternion(matrix=a[:3, :3], atol=1e-6, rtol=1e-6)
    qb = Quaternion(matrix=b[:3, :3], atol=1e-6, rtol=1e-6)
    m = np.eye(4)
    m[:3, :3] = Quaternion.slerp(qa, qb, float(w)).rotation_matrix
    m[:3, 3] = (1.0 - w) * a[:3, 3] + w * b[:3, 3]
    return m


def matrix_to_transform_stamped(child2parent: np.ndarray, parent: str, child: str, stamp_ns: int) -> Any:
    """(4, 4) child -> parent matrix -> geometry_msgs/TransformStamped."""
    m = np.asarray(child2parent, dtype=np.float64)
    q = Quaternion(matrix=m[:3, :3], atol=1e-6, rtol=1e-6)
    if q.w < 0:
        q = -q
    return new_msg(
        "geometry_msgs/msg/TransformStamped",
        header=new_msg("std_msgs/msg/Header", stamp=ns_to_stamp(stamp_ns), frame_id=parent),
        child_frame_id=child,
        transform=new_msg(
            "geometry_msgs/msg/Transform",
            translation=new_msg("geometry_msgs/msg/Vector3", x=float(m[0, 3]), y=float(m[1, 3]), z=float(m[2, 3])),
            rotation=new_msg("geometry_msgs/msg/Quaternion", x=float(q.x), y=float(q.y), z=float(q.z), w=float(q.w)),
        ),
    )


def _strip(frame: str) -> str:
    return frame[1:] if frame.startswith("/") else frame


class TfBuffer:
    """A small tf2 buffer: static and time-stamped transforms, lookups along the tree.

    ``lookup(target, source, stamp_ns)`` returns the (4, 4) ``source2target`` matrix; dynamic
    edges use the sample nearest to ``stamp_ns`` within ``max_age_ns`` (the node only needs
    static camera extrinsics; dynamic edges are for completeness). Thread safe.
    """

    def __init__(self, cache_ns: int = 10_000_000_000):
        self.cache_ns = int(cache_ns)
        self._lock = threading.Lock()
        self._static: dict[str, tuple[str, np.ndarray]] = {}
        self._dynamic: dict[str, tuple[str, list[int], list[np.ndarray]]] = {}

    def set_transform(self, ts: Any, static: bool) -> None:
        parent, child = _strip(ts.header.frame_id), _strip(ts.child_frame_id)
        where = f"TF {parent!r} <- {child!r}{' (static)' if static else ''}"
        if not parent or not child or parent == child:
            raise CalibrationError(f"{where}: invalid frames parent={parent!r} child={child!r}")
        m = transform_msg_to_matrix(ts.transform, where)
        with self._lock:
            if static:
                self._static[child] = (parent, m)
                return
            stamp = stamp_to_ns(ts.header.stamp)
            p, stamps, mats = self._dynamic.setdefault(child, (parent, [], []))
            if p != parent:
                self._dynamic[child] = (parent, [], [])
                p, stamps, mats = self._dynamic[child]
            i = bisect_left(stamps, stamp)
            if i < len(stamps) and stamps[i] == stamp:
                mats[i] = m
            else:
                stamps.insert(i, stamp)
                mats.insert(i, m)
            while stamps and stamps[-1] - stamps[0] > self.cache_ns:
                stamps.pop(0)
                mats.pop(0)

    def set_tf_message(self, msg: Any, static: bool) -> list[str]:
        """tf2_msgs/TFMessage -> every valid transform in it; returns one error line per
        rejected transform (the others are kept)."""
        errors = []
        for ts in msg.transforms:
            try:
                self.set_transform(ts, static)
            except CalibrationError as e:
                errors.append(str(e))
        return errors

    def _edge(self, child: str, stamp_ns: int | None, max_age_ns: int,
              interpolate: bool = False) -> tuple[str, np.ndarray] | None:
        if child in self._static:
            return self._static[child]
        if child in self._dynamic:
            parent, stamps, mats = self._dynamic[child]
            if not stamps:
                return None
            if stamp_ns is None:
                return parent, mats[-1]
            i = bisect_left(stamps, stamp_ns)
            if interpolate:  # tf2's rule: between two samples (or on one); never extrapolate
                if i < len(stamps) and stamps[i] == stamp_ns:
                    return parent, mats[i]
                if i == 0 or i == len(stamps) or stamps[i] - stamps[i - 1] > max_age_ns:
                    return None
                w = (stamp_ns - stamps[i - 1]) / (stamps[i] - stamps[i - 1])
                return parent, interpolate_transform(mats[i - 1], mats[i], w)
            cands = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
            j = min(cands, key=lambda j: abs(stamps[j] - stamp_ns))
            if abs(stamps[j] - stamp_ns) > max_age_ns:
                return None
            return parent, mats[j]
        return None

    def newest_stamp(self) -> int | None:
        """Stamp of the newest dynamic (``/tf``) sample of any edge; None before the first."""
        with self._lock:
            return max((st[-1] for _, st, _ in self._dynamic.values() if st), default=None)

    def _chain(self, frame: str, stamp_ns, max_age_ns, interpolate: bool = False) -> list[tuple[str, np.ndarray]]:
        """[(frame, frame2root)] for every ancestor, starting with frame itself."""
        out = [(frame, np.eye(4))]
        seen = {frame}
        cur, acc = frame, np.eye(4)
        while True:
            e = self._edge(cur, stamp_ns, max_age_ns, interpolate)
            if e is None:
                return out
            parent, m = e
            if parent in seen:
                raise CalibrationError(f"TF: loop at frame {parent!r}")
            acc = m @ acc
            out.append((parent, acc))
            seen.add(parent)
            cur = parent

    def lookup(self, target: str, source: str, stamp_ns: int | None = None,
               max_age_ns: int = 500_000_000, interpolate: bool = False) -> np.ndarray:
        """(4, 4) ``source2target``; CalibrationError when the frames are not connected.

        Dynamic edges: the sample nearest ``stamp_ns`` within ``max_age_ns``; with ``interpolate``
        (odometry), tf2's rule instead: interpolated between the two samples around ``stamp_ns``
        (at most ``max_age_ns`` apart), never extrapolated past the newest or before the oldest."""
        target, source = _strip(target), _strip(source)
        with self._lock:
            sc = self._chain(source, stamp_ns, max_age_ns, interpolate)
            tc = self._chain(target, stamp_ns, max_age_ns, interpolate)
        tmap = {f: m for f, m in tc}
        for f, s2f in sc:
            if f in tmap:
                return np.linalg.inv(tmap[f]) @ s2f
        raise CalibrationError(f"TF: no transform from {source!r} to {target!r} (frames not connected)")

    def can_transform(self, target: str, source: str, stamp_ns: int | None = None) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
            return True
        except CalibrationError:
            return False


# ----------------------------------------------------------------------------- YAML fallback
@dataclass
class CameraCalibration:
    frame_id: str
    cam2ego: np.ndarray  # (4, 4)
    K: np.ndarray | None = None  # (3, 3), used when no valid CameraInfo arrives
    width: int | None = None
    height: int | None = None


@dataclass
class StaticCalibration:
    """Per-camera extrinsics (and optionally intrinsics) in ``base_frame``."""

    base_frame: str = "base_link"
    cameras: dict[str, CameraCalibration] = field(default_factory=dict)


def _matrix(v: Any, shape: tuple[int, int], where: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.size != shape[0] * shape[1]:
        raise CalibrationError(f"{where}: expected {shape[0]}x{shape[1]} numbers, got {a.size}")
    return a.reshape(shape)


def load_calibration_yaml(path: str | os.PathLike) -> StaticCalibration:
    """Read a calibration file::

        base_frame: base_link
        cameras:
          CAM_FRONT:
            frame_id: CAM_FRONT
            translation: [x, y, z]            # camera -> base_frame
            rotation: [w, x, y, z]            # quaternion, nuScenes order
            # or cam2ego: 4x4 nested list instead of translation/rotation
            K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]   # optional
            width: 1600                        # optional
            height: 900                        # optional
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise CalibrationError(f"calibration file {p}: cannot read YAML ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), dict):
        raise CalibrationError(f"calibration file {p}: expected a mapping with a 'cameras' mapping")
    calib = StaticCalibration(base_frame=str(data.get("base_frame", "base_link")))
    for cam, c in data["cameras"].items():
        where = f"calibration file {p}, camera {cam}"
        if not isinstance(c, dict):
            raise CalibrationError(f"{where}: expected a mapping")
        if "cam2ego" in c:
            m = _matrix(c["cam2ego"], (4, 4), where + " cam2ego")
        elif "translation" in c and "rotation" in c:
            from priorocc_core.geometry import transform_from_quat

            m = transform_from_quat(c["translation"], c["rotation"])
        else:
            raise CalibrationError(f"{where}: needs 'cam2ego' or 'translation' + 'rotation'")
        K = _matrix(c["K"], (3, 3), where + " K") if c.get("K") is not None else None
        calib.cameras[str(cam)] = CameraCalibration(
            frame_id=str(c.get("frame_id", cam)), cam2ego=m, K=K,
            width=c.get("width"), height=c.get("height"))
    return calib


def save_calibration_yaml(calib: StaticCalibration, path: str | os.PathLike) -> None:
    """Write ``calib`` in the format ``load_calibration_yaml`` reads (atomically)."""
    from priorocc_core.geometry import quat_from_transform

    cams = {}
    for cam, c in calib.cameras.items():
        t, q = quat_from_transform(c.cam2ego)
        d: dict[str, Any] = {"frame_id": c.frame_id, "translation": t.tolist(), "rotation": q.tolist()}
        if c.K is not None:
            d["K"] = np.asarray(c.K).tolist()
        if c.width:
            d["width"], d["height"] = int(c.width), int(c.height)
        cams[cam] = d
    atomic_write_bytes(path, yaml.safe_dump({"base_frame": calib.base_frame, "cameras": cams}, sort_keys=False).encode())
