"""The transport interface the occupancy node is written against.

The node's behaviour (``priorocc_ros.node_core.OccupancyNodeCore``) never touches rclpy or
DDS directly; it talks to one ``Transport``:

- ``rclpy_transport.RclpyTransport``: a real ROS 2 node (rclpy imported lazily).
- ``dds_transport.DdsTransport``: Cyclone DDS directly, wire-compatible with ROS 2 on
  ``rmw_cyclonedds_cpp``.
- ``loopback.LoopbackTransport``: in-process, for tests.

Message objects handed to callbacks and to ``Publisher.publish`` are rosbags messages
(``priorocc_ros.msgs.msg_class``: every field a keyword, numpy arrays for primitive arrays) in
every transport; rclpy and DDS carry them as CDR bytes, so the same code serves every transport.
"""
from __future__ import annotations

import abc
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from priorocc_ros.msgs import log_stamp_ns

RELIABILITIES = ("reliable", "best_effort")
DURABILITIES = ("volatile", "transient_local")


@dataclass(frozen=True)
class QoSProfile:
    """ROS 2 QoS, history KEEP_LAST with ``depth``."""

    reliability: str  # "reliable" | "best_effort"
    durability: str  # "volatile" | "transient_local"
    depth: int

    def __post_init__(self) -> None:
        if self.reliability not in RELIABILITIES:
            raise ValueError(f"QoSProfile.reliability must be one of {RELIABILITIES}, got {self.reliability!r}")
        if self.durability not in DURABILITIES:
            raise ValueError(f"QoSProfile.durability must be one of {DURABILITIES}, got {self.durability!r}")
        if int(self.depth) < 1:
            raise ValueError(f"QoSProfile.depth must be >= 1, got {self.depth!r}")


# rclpy.qos.qos_profile_sensor_data: best effort, keep last 5, volatile.
SENSOR_DATA_QOS = QoSProfile("best_effort", "volatile", 5)
# The sensor-data depth, reliable: the node's image / camera_info subscriptions when their publishers
# all offer reliable (node parameter input_reliability).
INPUT_RELIABLE_QOS = QoSProfile("reliable", "volatile", 5)
# rclpy default for publishers/subscriptions: reliable, keep last 10, volatile.
RELIABLE_QOS = QoSProfile("reliable", "volatile", 10)
# /tf_static as tf2_ros StaticTransformBroadcaster publishes it: reliable, transient local, keep last 1.
TF_STATIC_QOS = QoSProfile("reliable", "transient_local", 1)
# /tf_static as tf2_ros TransformListener subscribes to it (DynamicListenerQoS / StaticListenerQoS):
# depth 100, so the latched messages of several static broadcasters all arrive.
TF_STATIC_LISTENER_QOS = QoSProfile("reliable", "transient_local", 100)


class PollTimer:
    """A timer for transports whose spin loop polls it: ``next_t`` (time.monotonic) is when
    ``callback`` is due next; the loop calls it and adds ``period_s``."""

    def __init__(self, period_s: float, callback: Callable[[], None]):
        if period_s <= 0:
            raise ValueError(f"timer period must be > 0 s, got {period_s}")
        self.period_s = float(period_s)
        self.callback = callback
        self.next_t = time.monotonic() + self.period_s
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Publisher(Protocol):
    def publish(self, msg: Any) -> None: ...


class Logger(Protocol):
    def info(self, msg: str) -> None: ...

    def warning(self, msg: str) -> None: ...

    def error(self, msg: str) -> None: ...


class Transport(abc.ABC):
    """What the node needs from a middleware. One instance = one node.

    Topic names: absolute (``/CAM_FRONT/camera_info``) or private (``~/voxels``); a transport
    resolves ``~/x`` to ``/<node_name>/x`` (``resolve_topic`` below does it for transports
    without their own resolution).
    """

    name: str  # node name, e.g. "priorocc"
    logger: Logger
    # samples that did not decode and callbacks that raised (logged, then the node goes on);
    # keys "decode_errors", "callback_errors"; the node reports them in /diagnostics
    stats: Counter

    @abc.abstractmethod
    def create_subscription(self, type_name: str, topic: str, callback: Callable[[Any], None],
                            qos: QoSProfile) -> object:
        """Subscribe; ``callback(msg)`` runs on a transport thread (never the inference thread)."""

    @abc.abstractmethod
    def create_publisher(self, type_name: str, topic: str, qos: QoSProfile) -> Publisher:
        """A publisher; ``publish`` is safe to call from any thread."""

    @abc.abstractmethod
    def declare_parameter(self, name: str, default: Any, spec: Any = None) -> Any:
        """Declare a parameter; return its value (the user's override, else ``default``).
        spec: its ``params.ParamSpec`` (description, range, read-only) where the middleware
        shows it (rclpy: ParameterDescriptor, ``ros2 param describe``)."""

    @abc.abstractmethod
    def now_ns(self) -> int:
        """Node clock in nanoseconds (sim time from /clock when use_sim_time)."""

    @abc.abstractmethod
    def create_timer(self, period_s: float, callback: Callable[[], None]) -> object:
        """Call ``callback()`` every ``period_s`` seconds until shutdown."""

    @abc.abstractmethod
    def spin(self) -> None:
        """Block until ``shutdown()`` or SIGINT/SIGTERM."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop spinning and release the middleware's resources (idempotent)."""

    # ----- helpers shared by implementations -----
    remaps: dict[str, str] = {}  # ROS-style remapping rules (resolved from-topic -> to-topic)
    # A viewer (priorocc_ros.foxglove.FoxgloveSink) or None: transports that serialise hand it
    # the CDR bytes they made for a publication (``tap_out``) or took for a subscription
    # (``tap_in``); it queues them and returns, so nothing is encoded twice or waited for.
    cdr_tap: Any = None

    def tap_out(self, topic: str, type_name: str, data: Any, msg: Any) -> None:
        tap = self.cdr_tap
        if tap is not None:
            tap.publish(topic, type_name, data, log_stamp_ns(msg, self.now_ns()))

    def tap_in(self, topic: str, type_name: str, data: Any, msg: Any) -> None:
        tap = self.cdr_tap
        if tap is not None:
            tap.publish_input(topic, type_name, data, log_stamp_ns(msg, self.now_ns()))

    def resolve_topic(self, topic: str) -> str:
        return self.remap(resolve_topic(topic, self.name))

    def remap(self, resolved: str) -> str:
        """Apply the ``-r from:=to`` rules to a resolved topic name (as rcl does)."""
        return self.remaps.get(resolved, resolved)

    def user_parameter_names(self) -> set[str]:
        """Names of the parameters the user gave (command line, params file, launch), declared
        or not: the node reports those it does not know."""
        return set()

    def on_set_parameters(self, callback: Callable[[dict[str, Any]], str | None]) -> bool:
        """Have ``callback({name: value})`` decide on live parameter changes (a reason string
        refuses them, None accepts; accepted values are then the parameters' values). False:
        this transport offers no live parameter changes."""
        return False

    def publisher_types(self, topic: str) -> set[str] | None:
        """Types offered by the publishers currently on ``topic`` (None = not known here)."""
        return None

    def publisher_reliabilities(self, topic: str) -> set[str] | None:
        """Reliabilities ("reliable" / "best_effort") the publishers currently on ``topic``
        offer (None = not known here)."""
        return None

    def destroy_subscription(self, sub: object) -> None:
        """Stop a subscription made by ``create_subscription`` (its callback is not called again
        once this returns)."""
        raise NotImplementedError(f"{type(self).__name__} cannot destroy subscriptions")

    def error_counts(self) -> dict[str, int]:
        """Messages the transport dropped before any callback saw them (undecodable, oversized)
        or whose callback raised; keys as the transport counts them."""
        st = getattr(self, "stats", None)
        if not st:
            return {}
        return {k: int(v) for k, v in dict(st).items() if k in ("decode_errors", "callback_errors", "oversized")}


def parse_remaps(rules: list[str] | tuple[str, ...], node_name: str, namespace: str = "/") -> dict[str, str]:
    """``["from:=to", ...]`` (ROS 2 ``--ros-args -r``) -> {resolved from: resolved to}.
    ValueError naming the rule when it is not ``from:=to``."""
    out = {}
    for r in rules:
        if ":=" not in r or not r.split(":=", 1)[0] or not r.split(":=", 1)[1]:
            raise ValueError(f"remap rule {r!r}: expected FROM:=TO, e.g. -r /CAM_FRONT/camera_info:=/front/info")
        a, b = r.split(":=", 1)
        out[resolve_topic(a, node_name, namespace)] = resolve_topic(b, node_name, namespace)
    return out


def resolve_topic(topic: str, node_name: str, namespace: str = "/") -> str:
    """ROS 2 name resolution for the forms the node uses: ``~/x`` -> ``/<ns>/<node>/x``,
    ``x`` -> ``/<ns>/x``, ``/x`` unchanged."""
    if not topic:
        raise ValueError("empty topic name")
    ns = namespace.rstrip("/")
    if topic.startswith("~"):
        rest = topic[1:].lstrip("/")
        return f"{ns}/{node_name}/{rest}" if rest else f"{ns}/{node_name}"
    if topic.startswith("/"):
        return topic
    return f"{ns}/{topic}"
