"""The occupancy node's behaviour, written once over ``transport.base.Transport``.

``OccupancyNodeCore(transport)`` declares the parameters, subscribes to the camera images,
camera_info, /tf and /tf_static, synchronises the six streams, runs each set through three
stages in their own threads (decode, inference, messages + publish; newest complete set wins at
the entry, runner.py), publishes the outputs of docs/design.md and /diagnostics.
``occupancy_node.py`` runs it over rclpy or Cyclone DDS; tests run it over the loopback
transport. All message objects here are rosbags-style (``priorocc_ros.msgs``).

Counters (also in /diagnostics, keys in brackets):
  sets_in      complete sets from the synchroniser            [sets_in]
  sets_out     sets whose outputs were published               [sets_out]
  sets_dropped stale sets replaced by newer ones (runner)       [sets_dropped]
  sets_failed  sets that raised (decode, calibration, size,
               inference), per kind in errors_<kind>            [sets_failed]
  incomplete_sets: groups of images that never formed a complete set (a camera missing).
  groups_in    every group the synchroniser closed (complete or incomplete)   [groups_in]
  in_progress  sets queued for or inside one of the three stages                [in_progress]
  Invariant (checked, in /diagnostics as ``invariant`` / ``unaccounted``):
      groups_in = sets_out + sets_dropped + sets_failed + incomplete_sets + in_progress
  and at shutdown (``close``) in_progress is 0: pending groups are flushed and counted.
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
from priorocc_ros.calibration import CalibrationError, StaticCalibration, TfBuffer, camera_info_geometry, load_calibration_yaml
from priorocc_ros.msgs import header as make_header
from priorocc_ros.msgs import stamp_to_ns
from priorocc_ros.params import PARAMETERS
from priorocc_ros.pipeline import OccupancyPipeline, PipelineOptions, SetError, check_image_size, output_topics
from priorocc_ros.runner import InferenceRunner
from priorocc_ros.sync import ApproximateTimeSynchronizer, SyncedSet
from priorocc_ros.transport.base import (INPUT_RELIABLE_QOS, RELIABLE_QOS, SENSOR_DATA_QOS, TF_STATIC_LISTENER_QOS,
                                         Transport)

DIAG_NAME = "priorocc: occupancy"
# DiagnosticStatus levels
OK, WARN, ERROR, STALE = 0, 1, 2, 3


IMAGE_TYPES = {True: "sensor_msgs/msg/CompressedImage", False: "sensor_msgs/msg/Image"}
INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"


class ParameterError(ValueError):
    """A parameter value the node cannot use (the message names the parameter)."""


def fill_pattern(name: str, pattern: str, camera: str) -> str:
    """``pattern.format(camera=camera)`` with an error naming the parameter."""
    try:
        topic = pattern.format(camera=camera)
    except (ValueError, KeyError, IndexError, AttributeError) as e:
        raise ParameterError(f"parameter {name}={pattern!r} is not a topic pattern with {{camera}} "
                             f"({type(e).__name__}: {e}); e.g. '/{{camera}}/camera_info'") from None
    if not topic:
        raise ParameterError(f"parameter {name}={pattern!r} gives an empty topic")
    return topic


def camera_names(p: dict[str, Any]) -> tuple[str, ...]:
    """The recording's camera name per model slot (parameter camera_names, default the slots)."""
    cams = tuple(str(c) for c in p["cameras"])
    names = [str(n) for n in (p.get("camera_names") or [])]
    if not names or names == [""]:
        return cams
    if len(names) != len(cams):
        raise ParameterError(f"parameter camera_names has {len(names)} names for {len(cams)} cameras {list(cams)}; "
                             f"expected one recording camera name per model camera, in the model's order")
    return tuple(names)


def input_topics(p: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """{model camera: (image topic, camera_info topic)} from the parameters (before remapping)."""
    pattern = p["image_topic"] or ("/{camera}/image_rect_compressed" if p["compressed"] else "/{camera}/image_rect")
    return {cam: (fill_pattern("image_topic", pattern, rec),
                  fill_pattern("camera_info_topic", p["camera_info_topic"], rec))
            for cam, rec in zip(tuple(p["cameras"]), camera_names(p))}


@dataclass
class _Info:
    stamp_ns: int
    K: np.ndarray | None  # None = invalid (error says why)
    error: str
    frame_id: str


@dataclass
class _InFlight:
    """A set between the runner's stages: decoded images, then the prediction."""
    s: SyncedSet
    t_set: float
    imgs: list
    K: np.ndarray  # (N, 3, 3) of the decoded images
    cam2ego: np.ndarray  # (N, 4, 4)
    timings: dict
    prepared: Any = None  # Predictor.prepare's result (None: predict does it all)
    pred: Any = None


class _Input:
    """One input subscription of the node and its replacement state (adapt_input_reliability)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sub: Any = None
        self.reliability = "best_effort"
        self.gen = 0  # generation of the current subscription
        self.old_gen: int | None = None  # the replaced one, delivering until the new one delivers
        self.retiring: list = []  # replaced subscriptions to destroy
        self.last_stamp = -1  # newest header stamp delivered
        self.overlap_skip = False


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
    ``checkpoint`` parameter with priorocc_core.backends.make_predictor."""

    def __init__(self, transport: Transport, predictor: Any | None = None,
                 parameters: dict[str, Any] | None = None, block: bool = False, latency_window: int = 1000):
        """parameters: defaults overriding PARAMETERS (the transport's user values still win).
        block: the synchroniser waits for the runner instead of dropping sets (offline replay).
        latency_window: samples kept per latency stage. ParameterError for unusable parameters."""
        self.t = transport
        self.log = transport.logger
        self._block = block
        defaults = dict(PARAMETERS)
        defaults.update(parameters or {})
        self.p = {k: transport.declare_parameter(k, v) for k, v in defaults.items()}
        p = self.p
        self.cameras = tuple(str(c) for c in p["cameras"])
        topics = input_topics(p)  # ParameterError before anything heavy
        pc = getattr(predictor, "cameras", None)
        if predictor is None:
            if not p["checkpoint"]:
                raise ParameterError("parameter 'checkpoint' is required (a checkpoint directory)")
            from priorocc_core.backends import make_predictor

            predictor = make_predictor(p["checkpoint"], backend=p["backend"], precision=p["precision"],
                                       device=p["device"])
            pc = getattr(predictor, "cameras", None)
        if pc is not None and tuple(pc) != self.cameras:
            raise ParameterError(f"parameter cameras={list(self.cameras)} must be the model's cameras in its order "
                                 f"{list(pc)}; map your recording's camera names with camera_names (docs/ros.md)")
        if p["preprocess"] not in ("exact", "fast"):
            raise ParameterError(f"parameter 'preprocess' must be 'exact' or 'fast', got {p['preprocess']!r}")
        predictor.fused_resize = p["preprocess"] == "fast"
        choice = getattr(predictor, "choice", None)
        # what runs and why, for the log and /diagnostics (injected test predictors may have none)
        self.backend_info = choice.as_dict() if choice is not None else {"backend": "injected"}
        if p["checkpoint"]:
            self.log.info(f"loaded checkpoint {p['checkpoint']}: " +
                          ", ".join(f"{k} {v}" for k, v in self.backend_info.items()))
        self.opts = PipelineOptions(
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
        self.latency = LatencyWindow(latency_window)
        self._out_times: deque = deque(maxlen=200)
        self._cams = {c: _CamState() for c in self.cameras}
        self.tf = TfBuffer()
        self._closed = False
        self._diag_prev: dict[str, int] = {}
        self._type_problems: dict[str, str] = {}
        self._reject_logged: Counter = Counter()

        # cameras whose K may come from the calibration file do not wait for a CameraInfo
        self._info_cams = info_cams = [c for c in self.cameras
                     if not (self.calib is not None and c in self.calib.cameras and self.calib.cameras[c].K is not None)]
        self.sync = ApproximateTimeSynchronizer(
            self.cameras, int(float(p["slop"]) * 1e9), queue_size=int(p["sync_queue_size"]),
            max_wait_ns=int(float(p["max_wait"]) * 1e9),
            reference="CAM_FRONT" if "CAM_FRONT" in self.cameras else None,
            on_set=self._on_set, on_incomplete=self._on_incomplete, info_streams=info_cams,
            on_reset=self._on_reset, on_reject=self._on_reject)
        stages = (self._stage_decode, self._stage_infer, self._stage_publish)
        if not p["pipelined"]:
            stages = (lambda item: self._stage_publish(self._stage_infer(self._stage_decode(item))),)
        self.runner = InferenceRunner(stages,
                                      queue_size=int(p["queue_size"]), block=block,
                                      on_error=self._on_error, on_drop=self._on_drop)

        # publishers
        self._outputs = output_topics(self.cameras, self.opts)
        self.pubs = {key: transport.create_publisher(tn, topic, RELIABLE_QOS)
                     for key, (tn, topic) in self._outputs.items()}
        self.diag_pub = transport.create_publisher("diagnostic_msgs/msg/DiagnosticArray", "/diagnostics",
                                                   RELIABLE_QOS)
        # subscriptions
        if p["input_reliability"] not in ("auto", "best_effort", "reliable"):
            raise ParameterError(f"parameter 'input_reliability' must be auto, best_effort or reliable, "
                                 f"got {p['input_reliability']!r}")
        self.image_type = IMAGE_TYPES[bool(p["compressed"])]
        self.input_topics: dict[str, str] = {}
        self.info_topics: dict[str, str] = {}
        self._subs = []
        # TF first: a transport that dispatches its readers in creation order then applies a
        # /tf_static that arrived with the first images before those images form a set
        self._subs.append(transport.create_subscription(TF_TYPE, "/tf_static", self._tf_cb(True),
                                                        TF_STATIC_LISTENER_QOS))
        self._subs.append(transport.create_subscription(TF_TYPE, "/tf", self._tf_cb(False), RELIABLE_QOS))
        for cam in self.cameras:
            it, ct = topics[cam]
            self.input_topics[cam] = transport.resolve_topic(it)
            self.info_topics[cam] = transport.resolve_topic(ct)
        self._qos_thread: threading.Thread | None = None
        # per (camera, "image" | "info"): its subscription (input_reliability may replace it)
        self._inputs: dict[tuple[str, str], _Input] = {(cam, kind): _Input() for cam in self.cameras
                                                       for kind in ("image", "info")}
        start = "reliable" if p["input_reliability"] == "reliable" else "best_effort"
        for cam, kind in self._inputs:
            self._subscribe_input(cam, kind, start)
        self._diag_timer = transport.create_timer(float(p["diagnostics_period"]), self.publish_diagnostics)
        # Move the long-lived heap (torch, the model, message classes) out of the garbage
        # collector's reach: building a MarkerArray allocates ~10^5 small objects per set, and
        # full collections over the model's heap made that 5x slower (measured, see docs/ros.md).
        gc.collect()
        gc.freeze()
        self.log.info(f"subscribed to {len(self.cameras)} cameras ({self.image_type.split('/')[-1]}: "
                      f"{', '.join(self.input_topics.values())}), slop {p['slop']} s; "
                      f"publishing {sorted(self.pubs)} in frame {self.opts.frame_id}")

    # ------------------------------------------------------------------ input subscriptions
    def _subscribe_input(self, cam: str, kind: str, reliability: str) -> None:
        """(Re)subscribe one input. A replaced subscription keeps delivering until the new one
        brings its first message (no gap while the new reader is matched); the new one's
        messages already delivered by the old (stamp not newer) are skipped, not counted twice."""
        inp = self._inputs[cam, kind]
        inner = self._image_cb(cam) if kind == "image" else self._info_cb(cam)
        qos = SENSOR_DATA_QOS if reliability == "best_effort" else INPUT_RELIABLE_QOS
        topic = self.input_topics[cam] if kind == "image" else self.info_topics[cam]
        with inp.lock:
            inp.gen += 1
            gen = inp.gen
            if inp.sub is not None:
                inp.retiring.append(inp.sub)
                inp.old_gen = gen - 1
                inp.overlap_skip = True  # the new reader's backlog that the old one delivered is skipped

        def cb(msg: Any) -> None:
            stamp = stamp_to_ns(msg.header.stamp)
            with inp.lock:
                if gen == inp.gen:
                    if inp.old_gen is not None:  # first message of the new subscription: the old one stops
                        inp.old_gen = None
                        if stamp <= inp.last_stamp:
                            return
                    elif stamp <= inp.last_stamp and inp.overlap_skip:
                        return
                    inp.overlap_skip = False
                elif gen != inp.old_gen:
                    return  # a retired subscription
                inp.last_stamp = max(inp.last_stamp, stamp)
            inner(msg)
        sub = self.t.create_subscription(self.image_type if kind == "image" else INFO_TYPE, topic, cb, qos)
        with inp.lock:
            inp.sub, inp.reliability = sub, reliability

    def _retire_inputs(self) -> None:
        """Destroy subscriptions replaced by a newer one that has delivered (outside callbacks)."""
        for inp in self._inputs.values():
            with inp.lock:
                if inp.old_gen is not None or not inp.retiring:
                    continue
                old, inp.retiring = inp.retiring, []
            for sub in old:
                try:
                    self.t.destroy_subscription(sub)
                except Exception as e:  # noqa: BLE001 - its callbacks are ignored anyway
                    self.log.warning(f"could not destroy a replaced subscription: {type(e).__name__}: {e}")

    def adapt_input_reliability(self, wait: bool = False) -> None:
        """``input_reliability:=auto``: an input subscribed best effort whose publishers all offer
        reliable is subscribed again as reliable (a best-effort reader of a reliable writer loses
        samples when its socket overflows: raw 1600 x 900 images, BENCHMARKS.md), and back to best
        effort when a best-effort publisher appears (a reliable reader would not match it). Called
        every diagnostics period; the graph is read here, the resubscriptions (tens of ms each on
        DDS) run on a helper thread so that the transport's thread keeps dispatching; ``wait``
        joins it (tests). Each switch is logged and counted."""
        if self.p["input_reliability"] != "auto" or self._closed:
            return
        th = self._qos_thread
        if th is not None and th.is_alive():
            if wait:
                th.join()
            return
        self._retire_inputs()
        todo = []
        for (cam, kind), inp in list(self._inputs.items()):
            topic = self.input_topics[cam] if kind == "image" else self.info_topics[cam]
            rels = self.t.publisher_reliabilities(topic)
            if not rels:
                continue
            want = "reliable" if rels == {"reliable"} else "best_effort"
            if want != inp.reliability and inp.old_gen is None:  # changed, and no switch under way
                todo.append((cam, kind, topic, want, rels))
        if not todo:
            return

        def switch() -> None:
            for cam, kind, topic, want, rels in todo:
                if self._closed:
                    return
                try:
                    self._subscribe_input(cam, kind, want)
                except Exception as e:  # noqa: BLE001 - keep the subscription the node has
                    self.log.error(f"{cam}: could not resubscribe {topic} as {want}: {type(e).__name__}: {e}")
                    continue
                self._count("input_qos_switches")
                self.log.info(f"{cam}: publishers of {topic} offer {', '.join(sorted(rels))}: subscribed {want} "
                              f"(parameter input_reliability:=auto)")
        self._qos_thread = threading.Thread(target=switch, name="priorocc-input-qos", daemon=True)
        self._qos_thread.start()
        if wait:
            self._qos_thread.join()

    # ------------------------------------------------------------------ public hooks (replay, tools)
    def subscribed_topics(self) -> dict[str, str]:
        """{resolved input topic: type} the node subscribes to."""
        out = {t: self.image_type for t in self.input_topics.values()}
        out.update({t: INFO_TYPE for t in self.info_topics.values()})
        out.update({self.t.resolve_topic("/tf"): TF_TYPE, self.t.resolve_topic("/tf_static"): TF_TYPE})
        return out

    def published_topics(self) -> dict[str, str]:
        """{resolved output topic: type}, /diagnostics included."""
        out = {self.t.resolve_topic(topic): tn for tn, topic in self._outputs.values()}
        out[self.t.resolve_topic("/diagnostics")] = "diagnostic_msgs/msg/DiagnosticArray"
        return out

    def flush(self) -> None:
        """End of input: sets that can still complete go to inference, the rest are counted
        incomplete (the synchroniser's callbacks do both)."""
        self.sync.flush()

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
                check_image_size(msg, f"{cam} ({self.input_topics[cam]})", self.opts.max_image_pixels,
                                 self.opts.jpeg_reduce or 1)  # 0 (auto): checked as a full-size decode
            except SetError as e:
                self._count("images_rejected")
                self._fail(e.kind, str(e), count_set=False)
                return
            try:
                t0 = time.perf_counter()
                self.sync.add(cam, stamp_to_ns(msg.header.stamp), msg)  # sets go to _on_set
                self.latency.add("sync", time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - a callback must never raise into the middleware
                self._fail("sync", f"{cam}: synchroniser error: {type(e).__name__}: {e}", count_set=False)
        return cb

    def _info_cb(self, cam: str):
        def cb(msg: Any) -> None:
            st = self._cams[cam]
            stamp = stamp_to_ns(msg.header.stamp)
            try:
                K, _ = camera_info_geometry(msg, f"{cam} camera_info ({self.info_topics[cam]})")
            except CalibrationError as e:
                st.add(_Info(stamp, None, str(e), msg.header.frame_id))
                self._count("camera_info_invalid")
                if st.last_error != str(e):  # log once per distinct problem
                    self._fail("camera_info", str(e), count_set=False)
                st.last_error = str(e)
            else:
                st.last_error = ""
                st.add(_Info(stamp, K, "", msg.header.frame_id))
            try:
                self.sync.add_info(cam, stamp, msg)
            except Exception as e:  # noqa: BLE001
                self._fail("sync", f"{cam}: synchroniser error: {type(e).__name__}: {e}", count_set=False)
        return cb

    def _tf_cb(self, static: bool):
        def cb(msg: Any) -> None:
            for err in self.tf.set_tf_message(msg, static):
                self._count("tf_rejected")
                self._fail("tf", f"{'/tf_static' if static else '/tf'}: rejected {err}", count_set=False)
        return cb

    # ------------------------------------------------------------------ synchroniser events
    def _on_set(self, s: SyncedSet) -> None:
        self._count("sets_in")
        try:
            self.runner.submit((s, time.perf_counter(), time.time_ns()))
        except RuntimeError:  # runner stopped (shutdown): counted, not lost
            self._on_drop(s)

    def _on_incomplete(self, stamp_ns: int, missing: tuple[str, ...]) -> None:
        self._count("incomplete_sets")
        self.log.warning(f"incomplete image set at {stamp_ns * 1e-9:.3f} s: no image from "
                         f"{', '.join(f'{m} ({self.input_topics[m]})' for m in missing)} within slop {self.p['slop']} s")

    def _on_reset(self, newest_ns: int, stamp_ns: int) -> None:
        self._count("time_resets")
        self.log.warning(f"time jumped back {(newest_ns - stamp_ns) * 1e-9:.3f} s (to {stamp_ns * 1e-9:.3f} s): "
                         f"synchroniser reset, pending images flushed (a bag played in a loop?)")

    def _on_reject(self, kind: str, cam: str, stamp_ns: int) -> None:
        key = (kind, cam)
        with self._lock:
            self._reject_logged[key] += 1
            n = self._reject_logged[key]
        if n <= 3 or n % 100 == 0:
            why = "older than the last complete set" if kind == "late" else "same stamp as a pending image"
            self.log.warning(f"{cam} ({self.input_topics[cam]}): {kind} image at {stamp_ns * 1e-9:.3f} s ignored "
                             f"({why}); {n} so far")

    def _on_drop(self, item: Any) -> None:
        self._count("sets_dropped")

    def _on_error(self, item: Any, e: BaseException) -> None:
        if isinstance(e, SetError):
            self._fail(e.kind, str(e), count_set=True)
        else:
            self._fail("internal", f"set failed: {type(e).__name__}: {e}", count_set=True)

    # ------------------------------------------------------------------ inference thread
    def calibration_for(self, s: SyncedSet) -> tuple[np.ndarray, np.ndarray, list]:
        """(N, 3, 3) K of the images as published, (N, 4, 4) cam2ego and the expected (h, w)
        per camera (None = unknown) for a set: its CameraInfos + TF, YAML as fallback."""
        Ks, c2e, hws = [], [], []
        base = self.opts.frame_id
        for i, (cam, msg) in enumerate(zip(self.cameras, s.items)):
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
                info = None if cam in self._info_cams else self._cams[cam].nearest(stamp_to_ns(msg.header.stamp))
                if info is not None and info.K is not None:
                    K = info.K
                elif fb is not None and fb.K is not None:
                    K = fb.K
                    if fb.width and fb.height:
                        hw = (int(fb.height), int(fb.width))
                else:
                    raise SetError("calibration", f"{cam}: no valid intrinsics (no CameraInfo on "
                                                  f"{self.info_topics[cam]} within max_wait {self.p['max_wait']} s "
                                                  f"of the image, no calibration_file K)")
            frame = frame or (fb.frame_id if fb else cam)
            try:
                m = self.tf.lookup(base, frame, s.stamp_ns)
            except CalibrationError as e:
                if fb is None:
                    raise SetError("calibration", f"{cam}: no extrinsics: {e}; no calibration_file entry") from e
                m = fb.cam2ego
            Ks.append(K)
            c2e.append(m)
            hws.append(hw)
        return np.stack(Ks), np.stack(c2e), hws

    def _calibration_waiting(self, s: SyncedSet) -> tuple[np.ndarray, np.ndarray, list]:
        """``calibration_for``, waiting up to ``calibration_wait`` seconds for TF (and a CameraInfo
        the set did not carry) still on their way, as tf2's MessageFilter does (on the real ROS 2
        the first set of a bag can complete ~60-80 ms before /tf_static's reliable sample is
        dispatched). Offline (``block``) the order is the bag's, so nothing is on its way."""
        deadline = time.monotonic() + (0.0 if self._block else float(self.p["calibration_wait"]))
        while True:
            try:
                return self.calibration_for(s)
            except SetError as e:
                if e.kind != "calibration" or time.monotonic() >= deadline or self._closed:
                    raise
                time.sleep(0.01)

    # Three stages, each in its own runner thread (runner.py): decode of set k+1 and the messages
    # of set k-1 overlap the inference of set k.
    def _stage_decode(self, item: tuple[SyncedSet, float, int]) -> _InFlight:
        s, t_set, _ = item
        t0 = time.perf_counter()
        self.latency.add("queue", t0 - t_set)
        K, cam2ego, hws = self._calibration_waiting(s)
        imgs, Kd = self.pipeline.decode(s.items, K, hws)
        f = _InFlight(s, t_set, imgs, Kd, cam2ego, {"decode": time.perf_counter() - t0})
        f.prepared = self.pipeline.prepare(imgs, Kd, cam2ego)  # preprocessing + plan, off the inference thread
        return f

    def _stage_infer(self, f: _InFlight) -> _InFlight:
        t0 = time.perf_counter()
        f.pred = self.pipeline.predict(f.imgs, f.K, f.cam2ego, f.prepared)
        f.prepared = None
        f.timings["model"] = time.perf_counter() - t0
        return f

    def _stage_publish(self, f: _InFlight) -> None:
        s = f.s
        t0 = time.perf_counter()
        msgs = self.pipeline.build(s.stamp_ns, f.pred, f.imgs, f.K, f.cam2ego)
        f.timings["build"] = time.perf_counter() - t0
        res = self.pipeline.result(s.stamp_ns, f.pred, msgs, f.timings)
        if self.runner.gave_up:
            return  # shutdown stopped waiting for this set: it is counted dropped already
        t1 = time.perf_counter()
        for key, msg in res.messages.items():
            pub = self.pubs.get(key)
            if pub is not None:
                pub.publish(msg)
        t2 = time.perf_counter()
        for k, v in res.timings.items():
            self.latency.add(k, v)
        self.latency.add("publish", t2 - t1)
        self.latency.add("total", t2 - f.t_set)
        age = (self.t.now_ns() - s.stamp_ns) * 1e-9
        if 0.0 <= age < 60.0:  # meaningful with a live or simulated clock only
            self.latency.add("stamp_to_publish", age)
        with self._lock:
            self.counters["sets_out"] += 1
            self.counters["occupied_voxels_last"] = res.num_occupied
            self._out_times.append(time.monotonic())

    # ------------------------------------------------------------------ input type check
    def check_input_types(self) -> dict[str, str]:
        """{camera: problem} for image topics that have publishers of another type and brought
        no image (the subscription cannot match them). Logged at every diagnostics period."""
        with self._lock:
            received = self.counters["images_received"]
        problems: dict[str, str] = {}
        if received == 0:
            for cam, topic in self.input_topics.items():
                types = self.t.publisher_types(topic)
                if types and self.image_type not in types:
                    want = "true" if "sensor_msgs/msg/CompressedImage" in types else "false"
                    problems[cam] = (f"{topic} is published as {', '.join(sorted(types))} but the node subscribes "
                                     f"{self.image_type}: set parameter compressed:={want}")
        self._type_problems = problems
        if problems:
            first = next(iter(problems.values()))
            self.log.error(f"no images: {len(problems)} camera topic(s) carry another type; {first}")
        return problems

    # ------------------------------------------------------------------ diagnostics
    def stats(self) -> dict[str, Any]:
        with self._lock:
            c = dict(self.counters)
            errs = dict(self.errors)
            last_error = self.last_error
            times = list(self._out_times)
        d: dict[str, Any] = {k: c.get(k, 0) for k in ("sets_in", "sets_out", "sets_dropped", "sets_failed",
                                                      "incomplete_sets", "images_received", "images_rejected",
                                                      "camera_info_invalid", "tf_rejected", "time_resets",
                                                      "input_qos_switches")}
        rel = Counter(inp.reliability for inp in self._inputs.values())
        d["inputs_reliable"] = f"{rel['reliable']}/{len(self._inputs)}"
        sync = self.sync.stats
        d.update(late_messages=sync.late, duplicate_messages=sync.duplicate,
                 superseded_messages=sync.superseded, sync_overflow=sync.overflow,
                 sets_awaiting_camera_info=self.sync.awaiting_info(), camera_info_timeouts=sync.info_timeouts)
        for k, v in errs.items():
            d[f"errors_{k}"] = v
        for k, v in self.t.error_counts().items():
            d[f"transport_{k}"] = v
        in_progress = self.runner.in_progress()
        d["in_progress"] = in_progress
        d["groups_in"] = sync.sets + sync.incomplete
        d["unaccounted"] = d["groups_in"] - (d["sets_out"] + d["sets_dropped"] + d["sets_failed"]
                                             + d["incomplete_sets"] + in_progress)
        d["invariant"] = (f"groups_in {d['groups_in']} = out {d['sets_out']} + dropped {d['sets_dropped']} + "
                          f"failed {d['sets_failed']} + incomplete {d['incomplete_sets']} + in_progress {in_progress}")
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

    # counters that, when they grow, mean inputs are being dropped (diagnostics go WARN)
    _LOSS_KEYS = ("sets_dropped", "sets_failed", "incomplete_sets", "images_rejected", "camera_info_invalid",
                  "tf_rejected", "late_messages", "duplicate_messages", "time_resets", "camera_info_timeouts")

    def publish_diagnostics(self) -> None:
        self.adapt_input_reliability()
        problems = self.check_input_types() if not self._closed else self._type_problems
        st = self.stats()
        loss = {k: st[k] for k in self._LOSS_KEYS}
        loss.update({k: v for k, v in st.items() if k.startswith("transport_")})
        grew = {k: v - self._diag_prev.get(k, 0) for k, v in loss.items() if v > self._diag_prev.get(k, 0)}
        self._diag_prev = loss
        level, msg = OK, f"ok: {st['sets_out']}/{st['sets_in']} sets published"
        if st["sets_in"] == 0:
            level, msg = WARN, "waiting for complete image sets"
        if grew:
            level = WARN
            msg = (f"dropping inputs: " + ", ".join(f"{k} +{v}" for k, v in sorted(grew.items()))
                   + f"; {st['sets_out']}/{st['sets_in']} sets published")
        if st["unaccounted"] and st["in_progress"] == 0 and self.runner.idle():
            level, msg = ERROR, f"counters do not add up: {st['invariant']}"
        if problems:
            level, msg = ERROR, "no images: " + next(iter(problems.values()))
            st["input_type_problems"] = "; ".join(f"{c}: {v}" for c, v in problems.items())
        diag = outputs.diagnostics(make_header(self.t.now_ns(), self.opts.frame_id), DIAG_NAME, self.t.name,
                                   level, msg, {**self.backend_info, **st})
        try:
            self.diag_pub.publish(diag)
        except Exception as e:  # noqa: BLE001 - diagnostics must never take the node down
            self.log.error(f"publishing diagnostics failed: {e}")

    # ------------------------------------------------------------------ lifecycle
    def wait_idle(self, timeout: float | None = None) -> bool:
        return self.runner.wait_idle(timeout)

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Flush the synchroniser (complete sets go to inference, the rest are counted
        incomplete), stop inference (processing what is queued when ``drain``, else counting it
        dropped; a set still running after ``timeout`` s is counted dropped) and publish the
        final diagnostics: nothing is left uncounted."""
        if self._closed:
            return
        try:
            self.flush()
        except Exception as e:  # noqa: BLE001
            self.log.error(f"flushing the synchroniser failed: {e}")
        self._closed = True
        if self._qos_thread is not None:
            self._qos_thread.join(5.0)  # no subscription is made after close
        self.runner.stop(drain=drain, timeout=timeout)
        self.publish_diagnostics()
        st = self.stats()
        if st["unaccounted"]:
            self.log.error(f"counters do not add up at shutdown: {st['invariant']}")
