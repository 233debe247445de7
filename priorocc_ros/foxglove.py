"""A live view for Foxglove (or Lichtblick) without ROS 2: the node's CDR over the Foxglove
WebSocket protocol.

``FoxgloveSink`` receives what the node already serialised for its transport (topic, ROS 2
type, CDR bytes, stamp) and serves it with the ``foxglove-sdk`` WebSocket server: one channel
per topic, schema encoding ``ros2msg`` (``msgs.ros2msg_definition``: the text rosbag2 puts
in MCAP, nested types included), message encoding ``cdr``. Nothing is encoded twice.

The node never waits for a viewer: ``publish`` appends to a bounded hand-off queue (the
oldest message is dropped and counted when it is full) and returns; one worker thread hands
the messages to the SDK, whose per-client outbox is bounded too (``backlog`` messages; the
SDK drops the oldest for a client that does not read). How many it dropped is not known here:
foxglove-sdk 0.30.3 keeps that number inside its Rust send path and only logs ``outbox for
client ADDR full``, at most once per 30 s for the whole process (one throttle shared by every
client); those lines are counted as ``foxglove_outbox_full`` (docs/ros.md). Counters go into ``counters`` (the transport's ``stats``,
which the node reports in /diagnostics as ``transport_foxglove_*``).

The server binds loopback (127.0.0.1) unless the caller names another host (``--foxglove-host``);
the protocol has no authentication. /tf_static is latched: a client that subscribes to it
gets the last ones again. The subprotocol is the SDK's ``foxglove.sdk.v1`` (identical to
``foxglove.websocket.v1`` but for the name; Foxglove and Lichtblick offer it).
"""
from __future__ import annotations

import logging
import re
import threading
from collections import Counter, deque
from typing import Any

from priorocc_ros.msgs import ros2msg_definition

LOOPBACK = "127.0.0.1"
TF_TYPE = "tf2_msgs/msg/TFMessage"
INPUT_TYPES = ("sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo")
# Per-client outbox of the SDK, in messages: a set is ~11 messages of up to ~2.6 MB (voxels),
# so a client that stops reading holds at most ~2 sets (docs/ros.md, "Watch it without ROS").
DEFAULT_BACKLOG = 24
DEFAULT_QUEUE = 64  # hand-off queue between the node's threads and the server's worker (~6 sets)
_SDK_LOGGER = "foxglove"


class _SdkLogBridge(logging.Handler):
    """The SDK's log records (Python logging, logger ``foxglove.*``) into the node's log, one
    line per event: a client connecting and leaving at info; a client's first problem (a
    malformed message, a connection cut mid-frame, a full outbox) as one warning naming it and
    what the SDK said, its later problems counted only (``foxglove_client_errors``,
    ``foxglove_outbox_full``: the SDK's full-outbox lines, at most one per 30 s for all clients
    together, so a count of reports, not of messages or clients); a problem naming no client
    once per distinct text."""

    _CLIENT = re.compile(r"client (\S+?:\d+)|from (\S+?:\d+)")

    def __init__(self, sink: "FoxgloveSink"):
        super().__init__(logging.INFO)
        self.sink = sink
        self.warned: set[str] = set()  # clients (address:port) whose problem is logged
        self.texts: set[str] = set()

    def _client(self, text: str) -> str | None:
        m = self._CLIENT.search(text)
        return (m.group(1) or m.group(2)).rstrip(":") if m else None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a log record must never raise into the SDK
            return
        s = self.sink
        client = self._client(text)
        if text.startswith("Registered client"):
            with s._lock:
                s.clients += 1
            s.log.info(f"foxglove: client {client} connected")
            return
        if text.startswith("Unregistered client"):
            with s._lock:
                s.clients -= 1
                s._wake.notify_all()
            s.log.info(f"foxglove: client {client} disconnected")
            return
        full = text.startswith("outbox for client") and text.endswith("full")
        if not full and record.levelno < logging.WARNING:
            return
        s._count("foxglove_outbox_full" if full else "foxglove_client_errors")
        if client is None:
            if text in self.texts or len(self.texts) > 1000:
                return
            self.texts.add(text)
        elif client in self.warned:
            return
        else:
            if len(self.warned) > 100_000:  # a bound on the memory of who was logged
                self.warned.clear()
            self.warned.add(client)
        if full:
            s.log.warning(f"foxglove: client {client} does not keep up: its outbox ({s.backlog} messages) is full, "
                          f"the oldest messages are dropped for it (the node is not slowed)")
        else:
            s.log.warning(f"foxglove: {text}")


class _Listener:
    """SDK server callbacks (they run on the SDK's threads: they only queue work)."""

    def __init__(self, sink: "FoxgloveSink"):
        self.sink = sink

    def on_subscribe(self, client: Any, channel: Any) -> None:
        s = self.sink
        with s._lock:
            s.subscribers[channel.topic] += 1
            s._wake.notify_all()
        if channel.topic == "/tf_static":
            s._relatch()

    def on_unsubscribe(self, client: Any, channel: Any) -> None:
        s = self.sink
        with s._lock:
            s.subscribers[channel.topic] -= 1


class FoxgloveSink:
    """Serves CDR messages on ``ws://host:port`` (port 0: any free one, see ``port``).

    ``logger``: the node's (info / warning / error). ``counters``: where drops are counted (the
    transport's ``stats``). ``inputs``: also serve the input images and camera_info handed to
    ``publish_input`` (/tf and /tf_static always). Raises OSError naming host and port when the
    server cannot bind."""

    def __init__(self, port: int, host: str = LOOPBACK, logger: Any = None, counters: Counter | None = None,
                 inputs: bool = False, backlog: int = DEFAULT_BACKLOG, queue_size: int = DEFAULT_QUEUE,
                 name: str = "priorocc"):
        import foxglove

        if backlog < 1 or queue_size < 1:
            raise ValueError(f"FoxgloveSink: backlog and queue_size must be >= 1, got {backlog}, {queue_size}")
        self.log = logger if logger is not None else logging.getLogger("priorocc.foxglove")
        self.counters = counters if counters is not None else Counter()
        self.inputs = bool(inputs)
        self.backlog = int(backlog)
        self.clients = 0
        self.subscribers: Counter = Counter()  # topic -> subscriptions now
        self._fg = foxglove
        self._lock = threading.Lock()
        self._queue: deque = deque()
        self._queue_size = int(queue_size)
        self._wake = threading.Condition(self._lock)
        self._channels: dict[str, tuple[str, Any]] = {}  # topic -> (type, channel)
        self._latched: deque = deque(maxlen=8)  # last /tf_static messages (type, data, stamp)
        self._closed = False
        self._failed_topics: set[str] = set()
        self._ctx = foxglove.Context()
        self._bridge = _SdkLogBridge(self)
        sdk_log = logging.getLogger(_SDK_LOGGER)
        sdk_log.addHandler(self._bridge)
        sdk_log.setLevel(logging.INFO)
        sdk_log.propagate = False  # the bridge logs what matters, once
        try:
            self.server = foxglove.start_server(name=name, host=host, port=int(port), context=self._ctx,
                                                server_listener=_Listener(self), message_backlog_size=self.backlog)
        except Exception as e:  # noqa: BLE001 - the SDK raises its own error types
            sdk_log.removeHandler(self._bridge)
            raise OSError(f"--foxglove {port} --foxglove-host {host}: cannot start the Foxglove server: {e}") from None
        self.host, self.port = host, int(self.server.port)
        self.url = f"ws://{host}:{self.port}"
        self._worker = threading.Thread(target=self._run, name="foxglove-sink", daemon=True)
        self._worker.start()
        self.log.info(f"foxglove: serving on {self.url}" + ("" if host == LOOPBACK else
                      f" (host {host}: reachable from other machines, no authentication)"))

    # ------------------------------------------------------------------ what the node calls
    def advertise(self, topic: str, type_name: str) -> None:
        """Make the channel now (clients see it before its first message)."""
        with self._lock:
            self._channel(topic, type_name)

    def publish(self, topic: str, type_name: str, data: bytes | bytearray | memoryview, stamp_ns: int) -> None:
        """Queue one message (CDR with its 4-byte header) for every subscribed client; never
        blocks: a full hand-off queue drops its oldest message (counted ``foxglove_dropped``)."""
        with self._lock:
            if self._closed:
                return
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self.counters["foxglove_dropped"] += 1
            self._queue.append((topic, type_name, data, int(stamp_ns)))
            self._wake.notify_all()

    def serves_input(self, type_name: str) -> bool:
        """/tf and /tf_static always, images and camera_info with ``inputs``."""
        return type_name == TF_TYPE or (self.inputs and type_name in INPUT_TYPES)

    def advertise_all(self, outputs: dict[str, str], inputs: dict[str, str]) -> None:
        """Channels for every output and every input served ({topic: type}), before their first
        message, so a client that connects early misses none."""
        for topic, ty in outputs.items():
            self.advertise(topic, ty)
        for topic, ty in inputs.items():
            if self.serves_input(ty):
                self.advertise(topic, ty)

    def publish_input(self, topic: str, type_name: str, data: bytes | bytearray | memoryview, stamp_ns: int) -> None:
        """An input the node received, when ``serves_input``; anything else is ignored."""
        if self.serves_input(type_name):
            self.publish(topic, type_name, data, stamp_ns)

    def wait_for_subscribers(self, topics: Any, n: int, timeout: float) -> bool:
        """Wait until every topic of ``topics`` has ``n`` subscriptions (``--foxglove-wait``:
        an offline replay starts when its viewers listen). False after ``timeout`` s."""
        import time

        deadline = time.monotonic() + timeout
        with self._lock:
            while any(self.subscribers[t] < n for t in topics):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(min(left, 0.5))
        return True

    def linger(self, timeout: float) -> bool:
        """Keep serving until every client has left, at most ``timeout`` s (``--foxglove-linger``:
        a finished replay waits for its viewers to take the last sets). True when all left."""
        import time

        deadline = time.monotonic() + timeout
        with self._lock:
            while self.clients > 0 or self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(min(left, 0.5))
        return True

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"foxglove_clients": self.clients, "foxglove_queued": len(self._queue),
                    **{k: int(v) for k, v in self.counters.items() if k.startswith("foxglove_")}}

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (up to ``timeout`` s), then stop the server (waiting at most
        ``timeout`` s more: a client that does not read cannot hold the node's shutdown)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.notify_all()
        self._worker.join(timeout)
        # the SDK's stop waits for every client to take its outbox: a stalled one never does,
        # so stop runs aside and shutdown goes on after ``timeout``
        stopper = threading.Thread(target=self.server.stop, name="foxglove-stop", daemon=True)
        stopper.start()
        stopper.join(timeout)
        if stopper.is_alive():
            self.log.warning(f"foxglove: server did not stop within {timeout:.0f} s (a client that does not read); "
                             f"leaving it to the process exit")
        logging.getLogger(_SDK_LOGGER).removeHandler(self._bridge)

    # ------------------------------------------------------------------ internals
    def _count(self, key: str) -> None:
        with self._lock:
            self.counters[key] += 1

    def _channel(self, topic: str, type_name: str) -> Any | None:
        """The channel of ``topic`` (made on first use; lock held). None when ``topic`` already
        carries another type (logged once)."""
        have = self._channels.get(topic)
        if have is not None:
            if have[0] == type_name:
                return have[1]
            if topic not in self._failed_topics:
                self._failed_topics.add(topic)
                self.log.error(f"foxglove: {topic} is served as {have[0]}; a {type_name} on it is not sent")
            return None
        schema = self._fg.Schema(name=type_name, encoding="ros2msg", data=ros2msg_definition(type_name).encode())
        ch = self._fg.Channel(topic, schema=schema, message_encoding="cdr", context=self._ctx)
        self._channels[topic] = (type_name, ch)
        return ch

    def _relatch(self) -> None:
        with self._lock:
            for ty, data, stamp in self._latched:
                self._queue.append(("/tf_static", ty, data, stamp, True))
            self._wake.notify_all()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._wake.wait()  # publish and close notify
                if not self._queue:
                    return  # closed and sent
                item = self._queue.popleft()
                topic, type_name, data, stamp = item[:4]
                if topic == "/tf_static" and len(item) == 4:
                    self._latched.append((type_name, data, stamp))
                ch = self._channel(topic, type_name)
            if ch is None:
                continue
            try:
                ch.log(bytes(data), log_time=stamp)
            except Exception as e:  # noqa: BLE001 - a viewer must never take the node down
                self._count("foxglove_errors")
                if topic not in self._failed_topics:
                    self._failed_topics.add(topic)
                    self.log.error(f"foxglove: sending on {topic} failed: {type(e).__name__}: {e}")


# ---------------------------------------------------------------------- command lines
def add_arguments(ap: Any) -> None:
    """``--foxglove PORT``, ``--foxglove-host``, ``--foxglove-inputs`` (occupancy_node, priorocc_replay)."""
    ap.add_argument("--foxglove", type=int, default=None, metavar="PORT",
                    help="serve every output topic live over the Foxglove WebSocket protocol on PORT "
                         "(0: any free port; the log names it); open ws://HOST:PORT in Foxglove or Lichtblick")
    ap.add_argument("--foxglove-host", default=LOOPBACK, metavar="ADDR",
                    help="address the Foxglove server binds (default 127.0.0.1, this machine only; "
                         "0.0.0.0 or a LAN address serves other machines, without authentication)")
    ap.add_argument("--foxglove-inputs", action="store_true",
                    help="also serve the input images and camera_info (/tf and /tf_static are always served)")


def sink_from_args(args: Any, transport: Any, name: str = "priorocc") -> FoxgloveSink | None:
    """The sink the arguments ask for, tapped into ``transport`` (None without ``--foxglove``).
    OSError with one line when the port cannot be bound."""
    if args.foxglove is None:
        return None
    if not 0 <= args.foxglove <= 65535:
        raise ValueError(f"--foxglove {args.foxglove}: expected a TCP port 0..65535")
    sink = FoxgloveSink(args.foxglove, host=args.foxglove_host, logger=transport.logger, counters=transport.stats,
                        inputs=args.foxglove_inputs, name=name)
    transport.cdr_tap = sink
    return sink
