"""The occupancy node's behaviour, written once over ``transport.base.Transport``.

``OccupancyNodeCore(transport)`` declares the parameters, subscribes to the camera images,
camera_info, /tf and /tf_static, synchronises the six streams, runs inference on its own
thread (newest complete set wins), publishes the outputs of docs/design.md and /diagnostics.
``occupancy_node.py`` runs it over rclpy or Cyclone DDS; tests run it over the loopback
transport. All message objects here are rosbags-style (``priorocc_ros.msgs``).

Counters (also in /diagnostics, keys in brackets):
  sets_in      complete sets from the synchroniser            [sets_in]
  sets_out     sets whose outputs were published               [sets_out]
  sets_dropped stale sets replaced by newer ones (runner)       [sets_dropped]
  sets_failed  sets that raised (decode, calibration, size,
               inference), per kind in errors_<kind>            [sets_failed]
  Once the runner is idle: sets_out == sets_in - sets_dropped - sets_failed.
  incomplete_sets: groups of images that never formed a complete set (a camera missing).
"""
from __future__ import annotations

import gc
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from priorocc_ros import outputs
from priorocc_ros.calibration import CalibrationError, StaticCalibration, TfBuffer, camera_info_to_K, load_calibration_yaml
from priorocc_ros.msgs import header as make_header
from priorocc_ros.msgs import stamp_to_ns
from priorocc_ros.params import PARAMETERS
from priorocc_ros.pipeline import OccupancyPipeline, OutputOptions, SetError, check_image_size, output_topics
from priorocc_ros.runner import InferenceRunner
from priorocc_ros.sync import ApproximateTimeSynchronizer, SyncedSet
from priorocc_ros.transport.base import RELIABLE_QOS, SENSOR_DATA_QOS, TF_STATIC_LISTENER_QOS, Transport

DIAG_NAME = "priorocc: occupancy"
# DiagnosticStatus levels
OK, WARN, ERROR, STALE = 0, 1, 2, 3



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


class LatencyWindow:
    """Last ``n`` samples per stage (seconds); percentiles on demand. Thread safe."""

    def __init__(self, n: int = 1000):
        self._d: dict[str, deque] = {}
        self._n = n
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._d.setdefault(stage, deque(maxlen=self._n)).append(float(seconds))

    def percentiles(self, q=(50, 90, 99)) -> dict[str, dict[str, float]]:
        with self._lock:
            snap = {k: np.asarray(v) for k, v in self._d.items() if v}
        return {k: {f"p{p}": float(np.percentile(v, p)) for p in q} | {"n": int(v.size)} for k, v in snap.items()}


class OccupancyNodeCore:
    """The node. ``predictor`` may be injected (tests); otherwise it is loaded from the
    ``checkpoint`` parameter with priorocc_core.inference.OccupancyPredictor."""

    def __init__(self, transport: Transport, predictor: Any | None = None,
                 parameters: dict[str, Any] | None = None, block: bool = False):
        """parameters: defaults overriding PARAMETERS (the transport's user values still win).
        block: the synchroniser waits for the runner instead of dropping sets (offline replay)."""
        self.t = transport
        self.log = transport.logger
        self._block = block
        defaults = dict(PARAMETERS)
        defaults.update(parameters or {})
        self.p = {k: transport.declare_parameter(k, v) for k, v in defaults.items()}
        p = self.p
        if predictor is None:
            if not p["checkpoint"]:
                raise ValueError("parameter 'checkpoint' is required (a checkpoint directory)")
            from priorocc_core.backends import make_predictor

            predictor = make_predictor(p["checkpoint"], backend=p["backend"], precision=p["precision"],
                                       device=p["device"])
            self.log.info(f"loaded checkpoint {p['checkpoint']} ({p['backend']} {p['precision']}) on {p['device']}")
        self.cameras = tuple(p["cameras"])
        self.opts = OutputOptions(
            frame_id=p["base_frame"], publish_voxels=bool(p["publish_voxels"]),
            publish_markers=bool(p["publish_markers"]), publish_bev=bool(p["publish_bev"]),
            publish_overlay=bool(p["publish_overlay"]), overlay_alpha=float(p["overlay_alpha"]),
            overlay_scale=float(p["overlay_scale"]), bev_unknown_from_cameras=bool(p["bev_unknown_from_cameras"]),
            jpeg_reduce=int(p["jpeg_reduce"]), max_image_pixels=int(p["max_image_pixels"]))
        self.pipeline = OccupancyPipeline(predictor, self.cameras, self.opts)
        self.calib: StaticCalibration | None = None
        if p["calibration_file"]:
            self.calib = load_calibration_yaml(p["calibration_file"])
            self.log.info(f"calibration fallback from {p['calibration_file']}: {sorted(self.calib.cameras)}")

        self._lock = threading.Lock()
        self.counters: Counter = Counter()
        self.errors: Counter = Counter()
        self.last_error = ""
        self.latency = LatencyWindow()
        self._out_times: deque = deque(maxlen=200)
        self._cams = {c: _CamState() for c in self.cameras}
        self.tf = TfBuffer()
        self._closed = False

        self.sync = ApproximateTimeSynchronizer(
            self.cameras, int(float(p["slop"]) * 1e9), queue_size=int(p["sync_queue_size"]),
            max_wait_ns=int(float(p["max_wait"]) * 1e9),
            reference="CAM_FRONT" if "CAM_FRONT" in self.cameras else None,
            on_incomplete=self._on_incomplete)
        self.runner = InferenceRunner(self._process, queue_size=int(p["queue_size"]), block=block,
                                      on_error=self._on_error, on_drop=self._on_drop)

        # publishers
        self.pubs = {key: transport.create_publisher(tn, topic, RELIABLE_QOS)
                     for key, (tn, topic) in output_topics(self.cameras, self.opts).items()}
        self.diag_pub = transport.create_publisher("diagnostic_msgs/msg/DiagnosticArray", "/diagnostics",
                                                   RELIABLE_QOS)
        # subscriptions
        image_type = "sensor_msgs/msg/CompressedImage" if p["compressed"] else "sensor_msgs/msg/Image"
        pattern = p["image_topic"] or ("/{camera}/image_rect_compressed" if p["compressed"] else "/{camera}/image_rect")
        self.input_topics: dict[str, str] = {}
        self._subs = []
        for cam in self.cameras:
            it, ct = pattern.format(camera=cam), p["camera_info_topic"].format(camera=cam)
            self.input_topics[cam] = it
            self._subs.append(transport.create_subscription(image_type, it, self._image_cb(cam), SENSOR_DATA_QOS))
            self._subs.append(transport.create_subscription("sensor_msgs/msg/CameraInfo", ct, self._info_cb(cam),
                                                            SENSOR_DATA_QOS))
        self._subs.append(transport.create_subscription("tf2_msgs/msg/TFMessage", "/tf", self._tf_cb(False),
                                                        RELIABLE_QOS))
        self._subs.append(transport.create_subscription("tf2_msgs/msg/TFMessage", "/tf_static", self._tf_cb(True),
                                                        TF_STATIC_LISTENER_QOS))
        self._diag_timer = transport.create_timer(float(p["diagnostics_period"]), self.publish_diagnostics)
        # Move the long-lived heap (torch, the model, message classes) out of the garbage
        # collector's reach: building a MarkerArray allocates ~10^5 small objects per set, and
        # full collections over the model's heap made that 5x slower (measured, see docs/ros.md).
        gc.collect()
        gc.freeze()
        self.log.info(f"subscribed to {len(self.cameras)} cameras ({image_type.split('/')[-1]}, {pattern}), "
                      f"slop {p['slop']} s; publishing {sorted(self.pubs)} in frame {self.opts.frame_id}")

    # ------------------------------------------------------------------ callbacks (transport threads)
    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def _fail(self, kind: str, message: str, count_set: bool) -> None:
        with self._lock:
            self.errors[kind] += 1
            if count_set:
                self.counters["sets_failed"] += 1
            self.last_error = message
        self.log.warning(message)

    def _image_cb(self, cam: str):
        def cb(msg: Any) -> None:
            self._count("images_received")
            try:
                check_image_size(msg, f"{cam} ({self.input_topics[cam]})", self.opts.max_image_pixels)
            except SetError as e:
                self._count("images_rejected")
                self._fail(e.kind, str(e), count_set=False)
                return
            try:
                t0 = time.perf_counter()
                sets = self.sync.add(cam, stamp_to_ns(msg.header.stamp), msg)
                self.latency.add("sync", time.perf_counter() - t0)
                for s in sets:
                    self._on_set(s)
            except Exception as e:  # noqa: BLE001 - a callback must never raise into the middleware
                self._fail("sync", f"{cam}: synchroniser error: {type(e).__name__}: {e}", count_set=False)
        return cb

    def _info_cb(self, cam: str):
        def cb(msg: Any) -> None:
            st = self._cams[cam]
            stamp = stamp_to_ns(msg.header.stamp)
            try:
                K = camera_info_to_K(msg, f"{cam} camera_info")
            except CalibrationError as e:
                st.add(_Info(stamp, None, str(e), msg.header.frame_id))
                if st.last_error != str(e):  # log once per distinct problem
                    self._fail("camera_info", str(e), count_set=False)
                else:
                    self._count("camera_info_invalid")
                st.last_error = str(e)
                return
            st.last_error = ""
            st.add(_Info(stamp, K, "", msg.header.frame_id))
        return cb

    def _tf_cb(self, static: bool):
        def cb(msg: Any) -> None:
            try:
                self.tf.set_tf_message(msg, static)
            except CalibrationError as e:
                self._fail("tf", str(e), count_set=False)
        return cb

    # ------------------------------------------------------------------ synchroniser events
    def _on_set(self, s: SyncedSet) -> None:
        self._count("sets_in")
        self.runner.submit((s, time.perf_counter(), time.time_ns()))

    def _on_incomplete(self, stamp_ns: int, missing: tuple[str, ...]) -> None:
        self._count("incomplete_sets")
        self.log.warning(f"incomplete image set at {stamp_ns * 1e-9:.3f} s: no image from {', '.join(missing)} "
                         f"within slop {self.p['slop']} s")

    def _on_drop(self, item: Any) -> None:
        self._count("sets_dropped")

    def _on_error(self, item: Any, e: BaseException) -> None:
        if isinstance(e, SetError):
            self._fail(e.kind, str(e), count_set=True)
        else:
            self._fail("internal", f"set failed: {type(e).__name__}: {e}", count_set=True)

    # ------------------------------------------------------------------ inference thread
    def calibration_for(self, stamp_ns: int, image_msgs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, 3) K and (N, 4, 4) cam2ego for a set: CameraInfo + TF, YAML as fallback."""
        Ks, c2e = [], []
        base = self.opts.frame_id
        for cam, msg in zip(self.cameras, image_msgs):
            fb = self.calib.cameras.get(cam) if self.calib is not None else None
            info = self._cams[cam].nearest(stamp_to_ns(msg.header.stamp))
            K = info.K if info is not None else None
            if K is None:
                if fb is not None and fb.K is not None:
                    K = fb.K
                else:
                    why = info.error if info is not None else "no camera_info received yet"
                    raise SetError("calibration", f"{cam}: no valid intrinsics ({why})")
            frame = (info.frame_id if info is not None else "") or msg.header.frame_id or (fb.frame_id if fb else cam)
            try:
                m = self.tf.lookup(base, frame, stamp_ns)
            except CalibrationError as e:
                if fb is None:
                    raise SetError("calibration", f"{cam}: no extrinsics: {e}; no calibration_file entry") from e
                m = fb.cam2ego
            Ks.append(K)
            c2e.append(m)
        return np.stack(Ks), np.stack(c2e)

    def _calibration_waiting(self, stamp_ns: int, image_msgs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """``calibration_for``, waiting up to ``calibration_wait`` seconds for CameraInfo / TF that
        are still on their way, as tf2's MessageFilter does (on the real ROS 2 the first set of a
        bag can complete ~60-80 ms before /tf_static's reliable sample and some CameraInfos are
        dispatched). Offline (``block``) the order is the bag's, so nothing is on its way."""
        deadline = time.monotonic() + (0.0 if self._block else float(self.p["calibration_wait"]))
        while True:
            try:
                return self.calibration_for(stamp_ns, image_msgs)
            except SetError as e:
                if e.kind != "calibration" or time.monotonic() >= deadline or self._closed:
                    raise
                time.sleep(0.01)

    def _process(self, item: tuple[SyncedSet, float, int]) -> None:
        s, t_set, wall_set = item
        t0 = time.perf_counter()
        self.latency.add("queue", t0 - t_set)
        K, cam2ego = self._calibration_waiting(s.stamp_ns, s.items)
        res = self.pipeline.run(s.stamp_ns, s.items, K, cam2ego)
        t1 = time.perf_counter()
        for key, msg in res.messages.items():
            pub = self.pubs.get(key)
            if pub is not None:
                pub.publish(msg)
        t2 = time.perf_counter()
        for k, v in res.timings.items():
            self.latency.add(k, v)
        self.latency.add("publish", t2 - t1)
        self.latency.add("total", t2 - t_set)
        age = (self.t.now_ns() - s.stamp_ns) * 1e-9
        if 0.0 <= age < 60.0:  # meaningful with a live or simulated clock only
            self.latency.add("stamp_to_publish", age)
        with self._lock:
            self.counters["sets_out"] += 1
            self.counters["occupied_voxels_last"] = res.num_occupied
            self._out_times.append(time.monotonic())

    # ------------------------------------------------------------------ diagnostics
    def stats(self) -> dict[str, Any]:
        with self._lock:
            c = dict(self.counters)
            errs = dict(self.errors)
            last_error = self.last_error
            times = list(self._out_times)
        d: dict[str, Any] = {k: c.get(k, 0) for k in ("sets_in", "sets_out", "sets_dropped", "sets_failed",
                                                      "incomplete_sets", "images_received", "images_rejected")}
        sync = self.sync.stats
        d.update(late_messages=sync.late, duplicate_messages=sync.duplicate,
                 superseded_messages=sync.superseded, sync_overflow=sync.overflow)
        for k, v in errs.items():
            d[f"errors_{k}"] = v
        d["rate_hz"] = (len(times) - 1) / (times[-1] - times[0]) if len(times) >= 2 and times[-1] > times[0] else 0.0
        d["runner_dropped"] = self.runner.stats.dropped
        for k, v in dict(getattr(self.t, "stats", {})).items():  # samples not decoded, callbacks that raised
            d[f"transport_{k}"] = v
        for stage, ps in self.latency.percentiles().items():
            for q, v in ps.items():
                if q != "n":
                    d[f"latency_{stage}_{q}_ms"] = v * 1e3
        d["last_error"] = last_error
        return d

    def publish_diagnostics(self) -> None:
        st = self.stats()
        failed = st["sets_failed"] + st["images_rejected"]
        level = OK
        msg = "ok"
        if st["sets_in"] == 0:
            level, msg = WARN, "waiting for complete image sets"
        if failed or st["sets_dropped"] or st["incomplete_sets"]:
            level = WARN
            msg = (f"{st['sets_out']}/{st['sets_in']} sets published, {st['sets_dropped']} dropped, "
                   f"{st['sets_failed']} failed, {st['incomplete_sets']} incomplete")
        values = {k: v for k, v in st.items()}
        diag = outputs.diagnostics(make_header(self.t.now_ns(), self.opts.frame_id), DIAG_NAME, self.t.name,
                                   level, msg, values)
        try:
            self.diag_pub.publish(diag)
        except Exception as e:  # noqa: BLE001 - diagnostics must never take the node down
            self.log.error(f"publishing diagnostics failed: {e}")

    # ------------------------------------------------------------------ lifecycle
    def wait_idle(self, timeout: float | None = None) -> bool:
        return self.runner.wait_idle(timeout)

    def close(self, drain: bool = True) -> None:
        """Stop inference (processing what is queued when ``drain``), publish final diagnostics."""
        if self._closed:
            return
        self._closed = True
        self.runner.stop(drain=drain)
        if not drain:
            with self._lock:
                self.counters["sets_dropped"] = self.runner.stats.dropped
        self.publish_diagnostics()
