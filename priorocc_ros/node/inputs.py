"""The node's inputs: one subscription per camera image and camera_info topic plus /tf and
/tf_static, and the approximate-time synchroniser that turns the images into sets.

``input_reliability:=auto`` re-subscribes an input whose publishers all offer reliable as reliable
(and back), without a gap (``adapt_reliability``). CameraInfo and TF go to the calibration part;
complete sets go to ``on_set`` (the runner's entry)."""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, Callable

from priorocc_ros.msgs import stamp_to_ns
from priorocc_ros.node.calibration import CalibrationSource
from priorocc_ros.node.counters import NodeCounters
from priorocc_ros.pipeline import PipelineOptions, SetError, check_image_size
from priorocc_ros.sync import SyncedSet, TimelineSynchronizer
from priorocc_ros.transport.base import INPUT_RELIABLE_QOS, RELIABLE_QOS, SENSOR_DATA_QOS, TF_STATIC_LISTENER_QOS, Transport

IMAGE_TYPES = {True: "sensor_msgs/msg/CompressedImage", False: "sensor_msgs/msg/Image"}
INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"


class _Input:
    """One input subscription of the node and its replacement state (adapt_reliability)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sub: Any = None
        self.reliability = "best_effort"
        self.gen = 0  # generation of the current subscription
        self.old_gen: int | None = None  # the replaced one, delivering until the new one delivers
        self.retiring: list = []  # replaced subscriptions to destroy
        self.last_stamp = -1  # newest header stamp delivered
        self.overlap_skip = False


def make_synchronizer(cameras: tuple[str, ...], p: dict[str, Any], info_cams: list[str],
                      on_set, on_incomplete, on_reset, on_reject) -> TimelineSynchronizer:
    """The synchroniser of the parameters slop, max_wait, sync_queue_size and missing_camera; CAM_FRONT (when
    present) is the reference stream; one timeline per pass of a looped bag (no set lost at a
    pass boundary)."""
    return TimelineSynchronizer(
        cameras, int(float(p["slop"]) * 1e9), queue_size=int(p["sync_queue_size"]),
        max_wait_ns=int(float(p["max_wait"]) * 1e9),
        reference="CAM_FRONT" if "CAM_FRONT" in cameras else None,
        on_set=on_set, on_incomplete=on_incomplete, info_streams=info_cams,
        on_reset=on_reset, on_reject=on_reject, degrade=p["missing_camera"] == "degrade")


class InputSubscriptions:
    """topics: {camera: (image topic, camera_info topic)}, resolved. p: the node's parameters
    (read live: slop and max_wait in messages, input_reliability). on_set(SyncedSet): a complete
    set. stopping(): true once the node closes (no subscription is made after that)."""

    def __init__(self, transport: Transport, cameras: tuple[str, ...], topics: dict[str, tuple[str, str]],
                 p: dict[str, Any], opts: PipelineOptions, calibration: CalibrationSource, counters: NodeCounters,
                 on_set: Callable[[SyncedSet], None], stopping: Callable[[], bool],
                 on_lost: Callable[[int], None] | None = None):
        self.t = transport
        self.log = transport.logger
        self.cameras = cameras
        self.p = p
        self.opts = opts
        self.calibration = calibration
        self.counters = counters
        self.on_lost = on_lost  # an image group that never became a set (the temporal history resets)
        self.stopping = stopping
        self.image_type = IMAGE_TYPES[bool(p["compressed"])]
        self.input_topics = {cam: it for cam, (it, _) in topics.items()}
        self.info_topics = {cam: ct for cam, (_, ct) in topics.items()}
        self._reject_logged: Counter = Counter()
        self._type_problems: dict[str, str] = {}
        self._on_set = on_set
        self.silent: set[str] = set()  # cameras missing from the last set (missing_camera:=degrade)
        self.sync = make_synchronizer(cameras, p, calibration.info_cams, self._set_cb, self._on_incomplete,
                                      self._on_reset, self._on_reject)
        self._subs = []
        # TF first: a transport that dispatches its readers in creation order then applies a
        # /tf_static that arrived with the first images before those images form a set
        self._subs.append(transport.create_subscription(TF_TYPE, "/tf_static", self._tf_cb(True),
                                                        TF_STATIC_LISTENER_QOS))
        self._subs.append(transport.create_subscription(TF_TYPE, "/tf", self._tf_cb(False), RELIABLE_QOS))
        self._qos_thread: threading.Thread | None = None
        # per (camera, "image" | "info"): its subscription (input_reliability may replace it)
        self._inputs: dict[tuple[str, str], _Input] = {(cam, kind): _Input() for cam in cameras
                                                       for kind in ("image", "info")}
        start = "reliable" if p["input_reliability"] == "reliable" else "best_effort"
        for cam, kind in self._inputs:
            self._subscribe(cam, kind, start)

    # ------------------------------------------------------------------ subscriptions
    def _subscribe(self, cam: str, kind: str, reliability: str) -> None:
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

    def _retire(self) -> None:
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

    def adapt_reliability(self, wait: bool = False) -> None:
        """``input_reliability:=auto``: an input subscribed best effort whose publishers all offer
        reliable is subscribed again as reliable (a best-effort reader of a reliable writer loses
        samples when its socket overflows: raw 1600 x 900 images, BENCHMARKS.md), and back to best
        effort when a best-effort publisher appears (a reliable reader would not match it). Called
        every diagnostics period; the graph is read here, the resubscriptions (tens of ms each on
        DDS) run on a helper thread so that the transport's thread keeps dispatching; ``wait``
        joins it (tests). Each switch is logged and counted."""
        if self.p["input_reliability"] != "auto" or self.stopping():
            return
        th = self._qos_thread
        if th is not None and th.is_alive():
            if wait:
                th.join()
            return
        self._retire()
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
                if self.stopping():
                    return
                try:
                    self._subscribe(cam, kind, want)
                except Exception as e:  # noqa: BLE001 - keep the subscription the node has
                    self.log.error(f"{cam}: could not resubscribe {topic} as {want}: {type(e).__name__}: {e}")
                    continue
                self.counters.count("input_qos_switches")
                self.log.info(f"{cam}: publishers of {topic} offer {', '.join(sorted(rels))}: subscribed {want} "
                              f"(parameter input_reliability:=auto)")
        self._qos_thread = threading.Thread(target=switch, name="priorocc-input-qos", daemon=True)
        self._qos_thread.start()
        if wait:
            self._qos_thread.join()

    def join(self, timeout: float) -> None:
        """Wait for a resubscription under way (after ``stopping()`` turned true)."""
        if self._qos_thread is not None:
            self._qos_thread.join(timeout)

    def reliabilities(self) -> Counter:
        return Counter(inp.reliability for inp in self._inputs.values())

    def subscribed_topics(self) -> dict[str, str]:
        """{resolved input topic: type} the node subscribes to."""
        out = {t: self.image_type for t in self.input_topics.values()}
        out.update({t: INFO_TYPE for t in self.info_topics.values()})
        out.update({self.t.resolve_topic("/tf"): TF_TYPE, self.t.resolve_topic("/tf_static"): TF_TYPE})
        return out

    # ------------------------------------------------------------------ callbacks (transport threads)
    def _image_cb(self, cam: str):
        def cb(msg: Any) -> None:
            self.counters.count("images_received")
            try:
                check_image_size(msg, f"{cam} ({self.input_topics[cam]})", self.opts.max_image_pixels,
                                 self.opts.jpeg_reduce or 1)  # 0 (auto): checked as a full-size decode
            except SetError as e:
                self.counters.count("images_rejected")
                self.counters.fail(e.kind, str(e), count_set=False)
                return
            try:
                t0 = time.perf_counter()
                self.sync.add(cam, stamp_to_ns(msg.header.stamp), msg)  # sets go to on_set
                self.counters.latency.add("sync", time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - a callback must never raise into the middleware
                self.counters.fail("sync", f"{cam}: synchroniser error: {type(e).__name__}: {e}", count_set=False)
        return cb

    def _info_cb(self, cam: str):
        def cb(msg: Any) -> None:
            self.calibration.add_camera_info(cam, msg)
            try:
                self.sync.add_info(cam, stamp_to_ns(msg.header.stamp), msg)
            except Exception as e:  # noqa: BLE001
                self.counters.fail("sync", f"{cam}: synchroniser error: {type(e).__name__}: {e}", count_set=False)
        return cb

    def _tf_cb(self, static: bool):
        return lambda msg: self.calibration.add_tf(msg, static)

    # ------------------------------------------------------------------ synchroniser events
    def _set_cb(self, s: SyncedSet) -> None:
        """A set (complete or degraded): a camera that goes silent is logged once (WARN), and
        once more when it is back; degraded sets are counted, per missing camera too."""
        gone, back = [], []
        with self.counters.lock:
            missing = set(s.missing)
            gone = sorted(missing - self.silent, key=self.cameras.index)
            back = sorted(self.silent - missing, key=self.cameras.index)
            self.silent = missing
        if s.missing:
            self.counters.count("degraded_sets")
            for m in s.missing:
                self.counters.count(f"degraded_without_{m}")
        for m in gone:
            self.log.warning(f"camera {m} ({self.input_topics[m]}) silent: no image within max_wait "
                             f"{self.p['max_wait']} s; sets run degraded without it, the region only it sees "
                             f"unknown (parameter missing_camera:=degrade)")
        for m in back:
            self.log.info(f"camera {m} ({self.input_topics[m]}) is back: complete sets again")
        self._on_set(s)

    def _on_incomplete(self, stamp_ns: int, missing: tuple[str, ...]) -> None:
        self.counters.count("incomplete_sets")
        if self.on_lost is not None:
            self.on_lost(stamp_ns)
        self.log.warning(f"incomplete image set at {stamp_ns * 1e-9:.3f} s: no image from "
                         f"{', '.join(f'{m} ({self.input_topics[m]})' for m in missing)} within slop {self.p['slop']} s")

    def _on_reset(self, newest_ns: int, stamp_ns: int) -> None:
        self.counters.count("time_resets")
        self.log.warning(f"time jumped back {(newest_ns - stamp_ns) * 1e-9:.3f} s (to {stamp_ns * 1e-9:.3f} s): "
                         f"synchroniser reset, pending images flushed (a bag played in a loop?)")

    def _on_reject(self, kind: str, cam: str, stamp_ns: int) -> None:
        key = (kind, cam)
        with self.counters.lock:
            self._reject_logged[key] += 1
            n = self._reject_logged[key]
        if n <= 3 or n % 100 == 0:
            why = "older than the last complete set" if kind == "late" else "same stamp as a pending image"
            self.log.warning(f"{cam} ({self.input_topics[cam]}): {kind} image at {stamp_ns * 1e-9:.3f} s ignored "
                             f"({why}); {n} so far")

    # ------------------------------------------------------------------ input type check
    def check_types(self) -> dict[str, str]:
        """{camera: problem} for image topics that have publishers of another type and brought
        no image (the subscription cannot match them). Logged at every diagnostics period;
        after close the last result."""
        if self.stopping():
            return self._type_problems
        problems: dict[str, str] = {}
        if self.counters.get("images_received") == 0:
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
