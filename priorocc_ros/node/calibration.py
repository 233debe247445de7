"""Where a set's calibration comes from: the CameraInfo nearest each image's stamp (or the one
the synchroniser put into the set), TF (``/tf_static`` + ``/tf``) and, as a fallback, the YAML
``calibration_file``. ``CalibrationSource.for_set`` gives (N, 3, 3) K, (N, 4, 4) cam2ego and the
expected image size per camera."""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from priorocc_ros.calibration import (CalibrationError, StaticCalibration, TfBuffer, camera_info_geometry,
                                      load_calibration_yaml)
from priorocc_ros.msgs import stamp_to_ns
from priorocc_ros.node.counters import NodeCounters
from priorocc_ros.pipeline import SetError
from priorocc_ros.sync import SyncedSet


@dataclass
class _Info:
    stamp_ns: int
    K: np.ndarray | None  # None = invalid (error says why)
    error: str
    frame_id: str


class _CamState:
    """Recent CameraInfo of one camera; a set uses the one nearest its image's stamp."""

    def __init__(self, history: int = 32):
        self.infos: deque = deque(maxlen=history)
        self.lock = threading.Lock()
        self.last_error = ""

    def add(self, info: _Info) -> None:
        with self.lock:
            self.infos.append(info)

    def nearest(self, stamp_ns: int) -> _Info | None:
        with self.lock:
            if not self.infos:
                return None
            return min(self.infos, key=lambda i: abs(i.stamp_ns - stamp_ns))


class CalibrationSource:
    """cameras: the model's slots; info_topics: {camera: resolved camera_info topic} (messages);
    calibration_file: YAML fallback ('' = none); base_frame: the TF target frame."""

    def __init__(self, cameras: tuple[str, ...], info_topics: dict[str, str], calibration_file: str,
                 base_frame: str, counters: NodeCounters, log):
        self.cameras = cameras
        self.info_topics = info_topics
        self.base_frame = base_frame
        self.counters = counters
        self.tf = TfBuffer()
        self.calib: StaticCalibration | None = None
        if calibration_file:
            self.calib = load_calibration_yaml(calibration_file)
            log.info(f"calibration fallback from {calibration_file}: {sorted(self.calib.cameras)}")
        self._cams = {c: _CamState() for c in cameras}
        # cameras whose K may come from the calibration file do not wait for a CameraInfo
        self.info_cams = [c for c in cameras
                          if not (self.calib is not None and c in self.calib.cameras
                                  and self.calib.cameras[c].K is not None)]

    # ------------------------------------------------------------------ inputs (transport threads)
    def add_camera_info(self, cam: str, msg: Any) -> None:
        """Keep a CameraInfo (an invalid one is counted and logged once per distinct problem)."""
        st = self._cams[cam]
        stamp = stamp_to_ns(msg.header.stamp)
        try:
            K, _ = camera_info_geometry(msg, f"{cam} camera_info ({self.info_topics[cam]})")
        except CalibrationError as e:
            st.add(_Info(stamp, None, str(e), msg.header.frame_id))
            self.counters.count("camera_info_invalid")
            if st.last_error != str(e):
                self.counters.fail("camera_info", str(e), count_set=False)
            st.last_error = str(e)
        else:
            st.last_error = ""
            st.add(_Info(stamp, K, "", msg.header.frame_id))

    def add_tf(self, msg: Any, static: bool) -> None:
        for err in self.tf.set_tf_message(msg, static):
            self.counters.count("tf_rejected")
            self.counters.fail("tf", f"{'/tf_static' if static else '/tf'}: rejected {err}", count_set=False)

    # ------------------------------------------------------------------ per set (runner thread)
    def for_set(self, s: SyncedSet, max_wait_s: float) -> tuple[np.ndarray, np.ndarray, list]:
        """(N, 3, 3) K of the images as published, (N, 4, 4) cam2ego and the expected (h, w)
        per camera (None = unknown) for a set: its CameraInfos + TF, YAML as fallback.
        max_wait_s: the parameter, named in the error. A camera missing from a degraded set
        (item None) gets NaN placeholders here: the stages use its last known calibration."""
        Ks, c2e, hws = [], [], []
        for i, (cam, msg) in enumerate(zip(self.cameras, s.items)):
            if msg is None:
                Ks.append(np.full((3, 3), np.nan))
                c2e.append(np.full((4, 4), np.nan))
                hws.append(None)
                continue
            fb = self.calib.cameras.get(cam) if self.calib is not None else None
            info_msg = s.infos[i] if s.infos else None
            frame = msg.header.frame_id
            K, hw = None, None
            if info_msg is not None:
                try:
                    K, hw = camera_info_geometry(info_msg, f"{cam} camera_info ({self.info_topics[cam]})")
                except CalibrationError as e:
                    if fb is None or fb.K is None:
                        raise SetError("calibration", f"{cam}: no valid intrinsics ({e})") from e
                frame = info_msg.header.frame_id or frame
            if K is None:
                info = None if cam in self.info_cams else self._cams[cam].nearest(stamp_to_ns(msg.header.stamp))
                if info is not None and info.K is not None:
                    K = info.K
                elif fb is not None and fb.K is not None:
                    K = fb.K
                    if fb.width and fb.height:
                        hw = (int(fb.height), int(fb.width))
                else:
                    raise SetError("calibration", f"{cam}: no valid intrinsics (no CameraInfo on "
                                                  f"{self.info_topics[cam]} within max_wait {max_wait_s} s "
                                                  f"of the image, no calibration_file K)")
            frame = frame or (fb.frame_id if fb else cam)
            try:
                m = self.tf.lookup(self.base_frame, frame, s.stamp_ns)
            except CalibrationError as e:
                if fb is None:
                    raise SetError("calibration", f"{cam}: no extrinsics: {e}; no calibration_file entry") from e
                m = fb.cam2ego
            Ks.append(K)
            c2e.append(m)
            hws.append(hw)
        return np.stack(Ks), np.stack(c2e), hws

    def for_set_waiting(self, s: SyncedSet, max_wait_s: float, wait_s: float,
                        stop: Callable[[], bool]) -> tuple[np.ndarray, np.ndarray, list]:
        """``for_set``, waiting up to ``wait_s`` seconds (parameter calibration_wait) for TF (and
        a CameraInfo the set did not carry) still on their way, as tf2's MessageFilter does (on
        the real ROS 2 the first set of a bag can complete ~60-80 ms before /tf_static's reliable
        sample is dispatched). ``stop()`` true: give up now (shutdown)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self.for_set(s, max_wait_s)
            except SetError as e:
                if e.kind != "calibration" or time.monotonic() >= deadline or stop():
                    raise
                time.sleep(0.01)
