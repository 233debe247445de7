"""In-process transport for tests: publishers deliver to subscribers of the same topic.

Several ``LoopbackTransport`` objects sharing one ``LoopbackBus`` behave like nodes on one
ROS graph. Delivery is synchronous (inside ``publish``) by default, or through a queue
drained by a dispatcher thread (``LoopbackBus(queued=True)``), which is what a middleware
does. ``transient_local`` publishers keep their last ``depth`` messages for late subscribers.
Messages are rosbags' classes (``rosbags.typesys`` ROS 2 Humble store); they are passed by
reference, not serialised.
"""
from __future__ import annotations

import queue
import signal
import threading
import time
from collections import Counter, defaultdict, deque
from typing import Any, Callable

from priorocc_ros.msgs import msg_class
from priorocc_ros.transport.base import PollTimer, QoSProfile, Transport


class _ListLogger:
    """Logger that records (level, text) and optionally prints."""

    def __init__(self, name: str, echo: bool = False):
        self.name = name
        self.echo = echo
        self.records: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _log(self, level: str, msg: str) -> None:
        with self._lock:
            self.records.append((level, msg))
        if self.echo:
            print(f"[{level.upper()}] [{self.name}]: {msg}", flush=True)

    def info(self, msg: str) -> None:
        self._log("info", msg)

    def warning(self, msg: str) -> None:
        self._log("warning", msg)

    def error(self, msg: str) -> None:
        self._log("error", msg)

    def messages(self, level: str | None = None) -> list[str]:
        with self._lock:
            return [m for lv, m in self.records if level is None or lv == level]


class LoopbackBus:
    """The shared 'graph': topic -> subscriptions, plus latched messages."""

    def __init__(self, queued: bool = False):
        self.queued = queued
        self._lock = threading.RLock()
        self._subs: dict[str, list[tuple[str, Callable[[Any], None]]]] = defaultdict(list)
        self._pub_types: dict[str, set[str]] = defaultdict(set)  # topic -> types its publishers offer
        self._pub_rels: dict[str, set[str]] = defaultdict(set)  # topic -> reliabilities its publishers offer
        self._latched: dict[str, deque] = {}
        self.published: dict[str, list[Any]] = defaultdict(list)  # every message, for assertions
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if queued:
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._dispatch, name="loopback-dispatch", daemon=True)
            self._thread.start()

    def add_publisher(self, topic: str, type_name: str, reliability: str = "reliable") -> None:
        with self._lock:
            self._pub_types[topic].add(type_name)
            self._pub_rels[topic].add(reliability)

    def publisher_reliabilities(self, topic: str) -> set[str]:
        with self._lock:
            return set(self._pub_rels.get(topic, ()))

    def publisher_types(self, topic: str) -> set[str]:
        with self._lock:
            return set(self._pub_types.get(topic, ()))

    def subscribe(self, topic: str, type_name: str, callback: Callable[[Any], None]) -> None:
        """As in DDS, a subscription matches only publishers of its own type (others: silence)."""
        with self._lock:
            self._subs[topic].append((type_name, callback))
            latched = [m for tn, m in self._latched.get(topic, ()) if tn == type_name]
        for msg in latched:
            self._deliver(callback, msg)

    def unsubscribe(self, topic: str, callback: Callable[[Any], None]) -> None:
        with self._lock:
            self._subs[topic] = [s for s in self._subs[topic] if s[1] is not callback]

    def publish(self, topic: str, type_name: str, msg: Any, qos: QoSProfile) -> None:
        with self._lock:
            self._pub_types[topic].add(type_name)
            self.published[topic].append(msg)
            if qos.durability == "transient_local":
                self._latched.setdefault(topic, deque(maxlen=qos.depth)).append((type_name, msg))
            callbacks = [cb for tn, cb in self._subs.get(topic, ()) if tn == type_name]
        for cb in callbacks:
            self._deliver(cb, msg)

    def _deliver(self, cb: Callable[[Any], None], msg: Any) -> None:
        if self._queue is not None:
            self._queue.put((cb, msg))
        else:
            cb(msg)

    def _dispatch(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            if item is None:
                return
            cb, msg = item
            try:
                cb(msg)
            finally:
                self._queue.task_done()

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued message has been delivered (queued mode)."""
        if self._queue is None:
            return
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                raise TimeoutError("loopback bus did not drain")
            time.sleep(0.002)

    def close(self) -> None:
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)


class _LoopbackPublisher:
    def __init__(self, bus: LoopbackBus, topic: str, type_name: str, qos: QoSProfile):
        self.bus, self.topic, self.type_name, self.qos = bus, topic, type_name, qos
        bus.add_publisher(topic, type_name, qos.reliability)

    def publish(self, msg: Any) -> None:
        self.bus.publish(self.topic, self.type_name, msg, self.qos)




class LoopbackTransport(Transport):
    """A node on a ``LoopbackBus``.

    ``parameters``: user overrides for ``declare_parameter``. ``clock_ns``: a callable giving
    the node time (default wall clock); tests can pass a fake clock. Timers fire from
    ``spin()`` or explicitly via ``fire_timers()``.
    """

    def __init__(self, name: str = "priorocc", bus: LoopbackBus | None = None,
                 parameters: dict[str, Any] | None = None, clock_ns: Callable[[], int] | None = None,
                 echo_log: bool = False, remaps: dict[str, str] | None = None):
        """remaps: {resolved from-topic: to-topic}, as ``--ros-args -r`` (``base.parse_remaps``)."""
        self.name = name
        self.remaps = dict(remaps or {})
        self.bus = bus if bus is not None else LoopbackBus()
        self.parameters_override = dict(parameters or {})
        self.parameters: dict[str, Any] = {}
        self.logger = _ListLogger(name, echo=echo_log)
        self._clock_ns = clock_ns or time.time_ns
        self._timers: list[PollTimer] = []
        self._stop = threading.Event()
        self._subs: list[tuple[str, Callable]] = []
        self.stats: Counter = Counter()

    def create_subscription(self, type_name, topic, callback, qos):
        msg_class(type_name)  # unknown types fail here
        topic = self.resolve_topic(topic)
        self.bus.subscribe(topic, type_name, callback)
        self._subs.append((topic, callback))
        return (topic, callback)

    def create_publisher(self, type_name, topic, qos):
        msg_class(type_name)  # unknown types fail here
        return _LoopbackPublisher(self.bus, self.resolve_topic(topic), type_name, qos)

    def publisher_types(self, topic: str) -> set[str]:
        return self.bus.publisher_types(topic)

    def publisher_reliabilities(self, topic: str) -> set[str]:
        return self.bus.publisher_reliabilities(self.resolve_topic(topic))

    def destroy_subscription(self, sub: object) -> None:
        topic, callback = sub  # type: ignore[misc]
        self.bus.unsubscribe(topic, callback)
        self._subs = [s for s in self._subs if s[1] is not callback]

    def declare_parameter(self, name, default, spec=None):
        value = self.parameters_override.get(name, default)
        self.parameters[name] = value
        return value

    def user_parameter_names(self) -> set[str]:
        return set(self.parameters_override)

    def on_set_parameters(self, callback) -> bool:
        self._on_set = callback
        return True

    def set_parameters(self, changes: dict[str, Any]) -> str | None:
        """A live change as ``ros2 param set`` makes it: None (applied) or the refusal's reason."""
        unknown = [n for n in changes if n not in self.parameters]
        if unknown:
            return f"parameter {unknown[0]!r} is not declared"
        cb = getattr(self, "_on_set", None)
        reason = cb(dict(changes)) if cb is not None else None
        if reason is None:
            self.parameters.update(changes)
        return reason

    def now_ns(self) -> int:
        return int(self._clock_ns())

    def create_timer(self, period_s, callback):
        t = PollTimer(period_s, callback)
        self._timers.append(t)
        return t

    def fire_timers(self) -> None:
        """Run every timer callback once, now."""
        for t in list(self._timers):
            if not t.cancelled:
                t.callback()

    def spin(self) -> None:
        prev = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                prev[sig] = signal.signal(sig, lambda *_: self._stop.set())
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for t in list(self._timers):
                    if not t.cancelled and now >= t.next_t:
                        t.next_t = now + t.period_s
                        t.callback()
                self._stop.wait(0.01)
        finally:
            for sig, h in prev.items():
                signal.signal(sig, h)

    def shutdown(self) -> None:
        self._stop.set()
        for topic, cb in self._subs:
            self.bus.unsubscribe(topic, cb)
        self._subs.clear()
        for t in self._timers:
            t.cancel()
