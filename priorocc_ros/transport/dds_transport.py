"""The occupancy node over Cyclone DDS directly (no ROS 2 install needed).

Wire-compatible with ROS 2 nodes on ``rmw_cyclonedds_cpp``: topics ``rt/<name>``, types
``pkg::msg::dds_::T_`` generated from rosbags' message definitions, XCDR1 encoding, QoS as
ROS 2 defines it (``priorocc_ros.dds``). Domain: ``ROS_DOMAIN_ID`` (default 0); Cyclone
configuration: ``CYCLONEDDS_URI`` as usual.

Execution model (like rclpy's single-threaded executor): ``spin()`` runs, on the calling
thread, a loop over one Cyclone ``WaitSet`` holding a read condition per subscription and a
guard condition for wake-ups; it takes every available sample, decodes it (rosbags message,
numpy arrays for primitive arrays) and calls the subscription's callback, and fires due
timers. A sample that does not decode, or a callback that raises, is logged and counted
(``stats``) and the loop goes on. ``publish`` may be called from any thread.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections import Counter
from typing import Any, Callable

from cyclonedds.core import DDSException, GuardCondition, WaitSet

from priorocc_ros.dds.participant import CodecError, DdsContext, DdsReader, DdsWriter, encode
from priorocc_ros.msgs import msg_class, stamp_to_ns
from priorocc_ros.transport.base import PollTimer, QoSProfile, Transport

CLOCK_QOS = QoSProfile("best_effort", "volatile", 1)  # rclcpp::ClockQoS / rclpy TimeSource
_SPIN_POLL_S = 0.1  # longest wait between checks of the stop flag (signals, shutdown)


class _Logger:
    """info/warning/error (+debug) in the ROS 2 console format, on stderr."""

    def __init__(self, name: str, level: int = logging.INFO):
        self._log = logging.getLogger(f"priorocc.dds.{name}")
        if not self._log.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(f"[%(levelname)s] [%(created).6f] [{name}]: %(message)s"))
            self._log.addHandler(handler)
            self._log.propagate = False
        self._log.setLevel(level)

    def debug(self, msg: str) -> None:
        self._log.debug(msg)

    def info(self, msg: str) -> None:
        self._log.info(msg)

    def warning(self, msg: str) -> None:
        self._log.warning(msg)

    warn = warning

    def error(self, msg: str) -> None:
        self._log.error(msg)


def _alive(sample: Any) -> bool:
    """A discovery sample of an endpoint that still exists (not disposed / without writers)."""
    from cyclonedds.core import InstanceState

    info = getattr(sample, "sample_info", None)
    return info is None or info.instance_state == InstanceState.Alive


class _Subscription:
    def __init__(self, reader: DdsReader, callback: Callable[[Any], None]):
        self.reader = reader
        self.callback = callback
        self.received = 0
        self.decode_errors = 0




class DdsPublisher:
    """``publish(msg)`` from any thread; a write Cyclone refuses (e.g. a reliable reader too
    slow for longer than the blocking time) is logged and counted, not raised."""

    def __init__(self, transport: "DdsTransport", writer: DdsWriter):
        self._transport = transport
        self.writer = writer
        self.topic = writer.topic
        self.type_name = writer.type_name
        self.published = 0

    def publish(self, msg: Any) -> None:
        t0 = time.perf_counter()
        data = encode(msg, self.type_name, self.writer.codec)
        t1 = time.perf_counter()
        self._transport._add_codec_time("encode", t1 - t0, len(data))
        try:
            self.writer.write_cdr(data)
            self._transport._add_codec_time("write", time.perf_counter() - t1, 0)
            self.published += 1
            self._transport.tap_out(self.topic, self.type_name, data, msg)
        except DDSException as exc:
            self._transport._count("publish_errors")
            self._transport.logger.warning(f"publish on {self.topic} failed: {exc}")

    def get_subscription_count(self) -> int:
        return self.writer.matched_count()


class DdsTransport(Transport):
    """A node on Cyclone DDS.

    ``parameters``: values for ``declare_parameter`` (what ``-p name:=value`` gives in ROS 2);
    strings are converted to the type of the declared default. ``use_sim_time`` (a parameter,
    as in ROS 2) makes ``now_ns`` follow ``/clock``. ``domain_id``: default ``ROS_DOMAIN_ID``.
    ``codec``: ``"cdr"`` (rosbags' serialiser, default) or ``"idl"`` (cyclonedds' own).
    ``max_sample_bytes``: samples larger than this are dropped before decoding (logged,
    counted as ``oversized``); None = no limit. The node applies its own image limits too.
    """

    def __init__(self, name: str = "priorocc", parameters: dict[str, Any] | None = None,
                 domain_id: int | None = None, codec: str = "cdr", namespace: str = "/",
                 max_sample_bytes: int | None = None):
        self.name = name
        self.namespace = namespace
        self.max_sample_bytes = max_sample_bytes
        self.logger = _Logger(name)
        self._overrides = dict(parameters or {})
        self.parameters: dict[str, Any] = {}
        self.stats: Counter = Counter()
        self.codec_time: Counter = Counter()  # seconds / counts / bytes per codec stage
        self._stats_lock = threading.Lock()
        self._ctx = DdsContext(domain_id=domain_id, codec=codec, node=(namespace, name))
        self._waitset = WaitSet(self._ctx.participant)
        self._guard = GuardCondition(self._ctx.participant)
        self._waitset.attach(self._guard)
        self._subs: list[_Subscription] = []
        self._timers: list[PollTimer] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._spinning = threading.Event()
        self._closed = False
        self._spin_thread: threading.Thread | None = None
        self._close_in_spin = False
        self._sim_time_ns: int | None = None
        self.use_sim_time = bool(self.declare_parameter("use_sim_time", False))
        if self.use_sim_time:
            self._sim_time_ns = 0
            self.create_subscription("rosgraph_msgs/msg/Clock", "/clock", self._on_clock, CLOCK_QOS)
        self.logger.info(f"DDS transport up: domain {self._ctx.domain_id}, codec {codec}"
                         + (", sim time from /clock" if self.use_sim_time else ""))

    # ------------------------------------------------------------------ interface
    def resolve_topic(self, topic: str) -> str:
        from priorocc_ros.transport.base import resolve_topic
        return self.remap(resolve_topic(topic, self.name, self.namespace))  # remaps: -r FROM:=TO

    def create_subscription(self, type_name: str, topic: str, callback: Callable[[Any], None],
                            qos: QoSProfile) -> _Subscription:
        msg_class(type_name)  # unknown types fail here
        reader = self._ctx.reader(type_name, self.resolve_topic(topic), qos)
        sub = _Subscription(reader, callback)
        with self._lock:
            self._subs.append(sub)
            self._waitset.attach(reader.condition)
        self._guard.set(True)  # let a running spin() see the new condition
        return sub

    def create_publisher(self, type_name: str, topic: str, qos: QoSProfile) -> DdsPublisher:
        msg_class(type_name)  # unknown types fail here
        return DdsPublisher(self, self._ctx.writer(type_name, self.resolve_topic(topic), qos))

    def publisher_types(self, topic: str) -> set[str] | None:
        """Types of the publishers discovered on ``topic`` (DCPSPublication; issue 15)."""
        from priorocc_ros.dds.names import dds_to_type

        pubs = self._publications(topic)
        return None if pubs is None else {dds_to_type(s.type_name) or s.type_name for s in pubs}

    def _publications(self, topic: str) -> list | None:
        """DCPSPublication samples of the publishers discovered on ``topic`` (None: unknown)."""
        from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication

        from priorocc_ros.dds.names import topic_to_dds

        try:
            if getattr(self, "_pub_reader", None) is None:
                self._pub_reader = BuiltinDataReader(self._ctx.participant, BuiltinTopicDcpsPublication)
            want = topic_to_dds(self.resolve_topic(topic))
            own = self._ctx.participant.guid
            return [s for s in self._pub_reader.read(N=1024) if s.topic_name == want and s.participant_key != own
                    and _alive(s)]
        except Exception:  # noqa: BLE001 - discovery data is a diagnostic aid only
            return None

    def publisher_reliabilities(self, topic: str) -> set[str] | None:
        """Reliabilities the publishers discovered on ``topic`` offer (DCPSPublication QoS)."""
        from cyclonedds.core import Policy

        pubs = self._publications(topic)
        if pubs is None:
            return None
        return {"reliable" if isinstance(s.qos[Policy.Reliability], Policy.Reliability.Reliable) else "best_effort"
                for s in pubs}

    def destroy_subscription(self, sub: _Subscription) -> None:
        with self._lock:
            if sub not in self._subs:
                return
            self._subs.remove(sub)
            self._waitset.detach(sub.reader.condition)
        self._ctx.delete_reader(sub.reader)

    def user_parameter_names(self) -> set[str]:
        return set(self._overrides)

    # on_set_parameters: not offered. This transport has no parameter services (ros2 param
    # neither lists nor sets its parameters): they are fixed by -p / --params-file at start.

    def declare_parameter(self, name: str, default: Any, spec: Any = None) -> Any:
        value = self._overrides.get(name, default)
        if isinstance(value, str) and default is not None and not isinstance(default, str):
            value = _coerce(name, value, default)
        self.parameters[name] = value
        return value

    def now_ns(self) -> int:
        if self.use_sim_time:
            return int(self._sim_time_ns or 0)
        return time.time_ns()

    def create_timer(self, period_s: float, callback: Callable[[], None]) -> PollTimer:
        timer = PollTimer(period_s, callback)
        with self._lock:
            self._timers.append(timer)
        self._guard.set(True)
        return timer

    def spin(self) -> None:
        """Dispatch callbacks and timers until ``shutdown()`` or SIGINT/SIGTERM."""
        if self._closed or self._stop.is_set():
            raise RuntimeError("spin() after shutdown()")
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        self._spinning.set()
        self._spin_thread = threading.current_thread()
        try:
            while not self._stop.is_set():
                self.spin_once(self._next_wait_s())
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._spinning.clear()
            self._spin_thread = None
            if self._close_in_spin:
                self._close()
        # Like rclpy: after spin() returns the node still publishes (final diagnostics);
        # shutdown() releases it.

    def spin_once(self, timeout_s: float = 0.0) -> int:
        """Wait up to ``timeout_s`` for data, dispatch it and due timers; returns callbacks run."""
        try:
            self._waitset.wait(max(0, int(timeout_s * 1e9)))
        except DDSException:
            if self._stop.is_set():
                return 0
            raise
        self._guard.set(False)
        ran = 0
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            if self._stop.is_set():
                break
            ran += self._dispatch(sub)
        ran += self._fire_timers()
        return ran

    def shutdown(self) -> None:
        """Stop ``spin`` (from any thread or a signal handler) and release DDS resources."""
        self._stop.set()
        try:
            self._guard.set(True)
        except Exception:  # noqa: BLE001 - participant already gone
            pass
        if self._spin_thread is threading.current_thread():
            self._close_in_spin = True  # called from a callback: spin() closes on its way out
            return
        if self._spinning.is_set():
            # let spin() leave its loop before the participant goes away
            deadline = time.monotonic() + 2.0
            while self._spinning.is_set() and time.monotonic() < deadline:
                time.sleep(0.005)
        self._close()

    # ------------------------------------------------------------------ internals
    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self.logger.info(f"signal {signal.Signals(signum).name}: shutting down")
        self._stop.set()
        try:
            self._guard.set(True)
        except Exception:  # noqa: BLE001
            pass

    def _on_clock(self, msg: Any) -> None:
        self._sim_time_ns = stamp_to_ns(msg.clock)

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def _add_codec_time(self, kind: str, seconds: float, nbytes: int) -> None:
        with self._stats_lock:
            self.codec_time[kind] += seconds
            self.codec_time[kind + "_n"] += 1
            self.codec_time[kind + "_bytes"] += nbytes

    def codec_summary(self) -> str:
        """One line: samples, bytes and seconds spent in decode / encode / DDS write."""
        with self._stats_lock:
            c = dict(self.codec_time)
        parts = []
        for kind in ("decode", "encode", "write"):
            n = int(c.get(kind + "_n", 0))
            if n:
                parts.append(f"{kind} {n} samples {c.get(kind + '_bytes', 0) / 1e6:.1f} MB "
                             f"{c[kind] * 1e3:.1f} ms")
        return "transport codec: " + (", ".join(parts) if parts else "nothing sent or received")

    def _dispatch(self, sub: _Subscription) -> int:
        ran = 0
        while not self._stop.is_set():
            samples = sub.reader.take_raw(64)
            if not samples:
                break
            for sample in samples:
                if self.max_sample_bytes is not None and len(sample.data) > self.max_sample_bytes:
                    self._count("oversized")
                    self.logger.warning(f"dropped a {len(sample.data)}-byte sample on {sub.reader.topic}: "
                                        f"over max_sample_bytes={self.max_sample_bytes}")
                    continue
                try:
                    t0 = time.perf_counter()
                    msg = sub.reader.decode(sample)
                    self._add_codec_time("decode", time.perf_counter() - t0, len(sample.data))
                except CodecError as exc:
                    sub.decode_errors += 1
                    self._count("decode_errors")
                    self.logger.warning(f"dropped a sample on {sub.reader.topic}: {exc}")
                    continue
                sub.received += 1
                self._count("received")
                self.tap_in(sub.reader.topic, sub.reader.type_name, sample.data, msg)
                try:
                    sub.callback(msg)
                except Exception as exc:  # noqa: BLE001 - a callback bug must not kill the node
                    self._count("callback_errors")
                    self.logger.error(f"callback for {sub.reader.topic} raised {type(exc).__name__}: {exc}")
                ran += 1
        return ran

    def _next_wait_s(self) -> float:
        with self._lock:
            due = [t.next_t for t in self._timers if not t.cancelled]
        wait = _SPIN_POLL_S
        if due:
            wait = min(wait, max(0.0, min(due) - time.monotonic()))
        return wait

    def _fire_timers(self) -> int:
        now = time.monotonic()
        ran = 0
        with self._lock:
            timers = [t for t in self._timers if not t.cancelled]
        for t in timers:
            if now >= t.next_t:
                # Skip missed periods rather than bursting (like rclpy timers).
                t.next_t += t.period_s * max(1, int((now - t.next_t) // t.period_s) + 1)
                try:
                    t.callback()
                except Exception as exc:  # noqa: BLE001
                    self._count("callback_errors")
                    self.logger.error(f"timer callback raised {type(exc).__name__}: {exc}")
                ran += 1
        return ran

    def _close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.logger.info(self.codec_summary()
                             + (f"; counters: {dict(self.stats)}" if self.stats else ""))
            self._subs.clear()
            for t in self._timers:
                t.cancel()
        self._ctx.close()

    @property
    def domain_id(self) -> int:
        return self._ctx.domain_id


def _coerce(name: str, value: str, default: Any) -> Any:
    """String parameter override -> the default's type (bool, int, float, list)."""
    try:
        if isinstance(default, bool):
            low = value.strip().lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, (list, tuple)):
            items = [v.strip() for v in value.strip().strip("[]").split(",") if v.strip()]
            if default and not isinstance(default[0], str):
                return type(default)(_coerce(name, v, default[0]) for v in items)
            return type(default)(v.strip("'\"") for v in items)
    except ValueError as exc:
        raise ValueError(f"parameter {name!r}: cannot read {value!r} as {type(default).__name__}: {exc}") from None
    return value
