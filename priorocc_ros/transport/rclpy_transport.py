"""The ROS 2 transport: a thin adapter from ``Transport`` to an rclpy node.

Messages cross rclpy as serialized CDR, never field by field: ``publish`` serialises the
node's rosbags message (``msgs.serialize``, numpy buffers, milliseconds for a 40,000-voxel
MarkerArray) and hands the bytes to ``rclpy.Publisher.publish(bytes)``; subscriptions are
created with ``raw=True`` and their bytes are deserialised by rosbags. rclpy's generated
classes are used only as type support (the type name and hash on the wire).

Each callback runs inside a guard: a sample that does not deserialise or a callback that
raises is logged and counted (``stats``: ``decode_errors``, ``callback_errors``; the node adds
them to /diagnostics) and the node goes on, as the DDS transport does (rclpy's executors
would re-raise it from ``spin_once`` and stop the node).

rclpy is imported lazily (inside ``RclpyTransport``), so this module imports on machines
without ROS 2. Verified on a real ROS 2 Jazzy (tests/test_ros2_real.py).
"""
from __future__ import annotations

import importlib
import signal
import threading
from collections import Counter
from typing import Any, Callable

from priorocc_ros.msgs import deserialize, msg_class, serialize
from priorocc_ros.transport.base import QoSProfile, Transport


def rclpy_type_support(type_name: str) -> type:
    """'sensor_msgs/msg/Image' -> sensor_msgs.msg.Image (the rosidl-generated class)."""
    pkg, sub, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{sub}"), name)


def parameter_descriptor(spec: Any):
    """rcl_interfaces ParameterDescriptor of a ``params.ParamSpec`` (None: an empty one): its
    description, range (floating point or integer), choices as additional_constraints, and
    read_only unless the parameter applies live. The type is rclpy's, from the default."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    d = ParameterDescriptor()
    if spec is None:
        return d
    d.description = spec.description
    d.read_only = not spec.live
    d.additional_constraints = spec.constraints
    if spec.range is not None and isinstance(spec.default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]), to_value=float(spec.range[1]),
                                                     step=0.0)]
    elif spec.range is not None and isinstance(spec.default, int) and not isinstance(spec.default, bool):
        d.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=0)]
    return d


class _RawPublisher:
    def __init__(self, pub, type_name: str, transport: "RclpyTransport", topic: str):
        self._pub, self._tn, self._t, self._topic = pub, type_name, transport, topic

    def publish(self, msg: Any) -> None:
        data = serialize(msg, self._tn)
        self._pub.publish(data)
        self._t.tap_out(self._topic, self._tn, data, msg)


class RclpyTransport(Transport):
    """An rclpy node. Parameters come from ``--ros-args -p name:=value`` / launch files;
    ``use_sim_time`` is rclpy's own parameter. ``args``: the full command line (rclpy takes
    its ``--ros-args`` part)."""

    def __init__(self, node_name: str = "priorocc", args: list[str] | None = None):
        import rclpy
        from rclpy.callback_groups import ReentrantCallbackGroup
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.node import Node

        self._rclpy = rclpy
        if not rclpy.ok():
            # rclpy's own SIGINT handler would invalidate the context before the node's final
            # diagnostics; without it SIGINT is a KeyboardInterrupt that ends spin() cleanly
            from rclpy.signals import SignalHandlerOptions

            rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node(node_name)
        self.name = self.node.get_name()
        self.logger = self.node.get_logger()  # has info / warning / error
        self.stats: Counter = Counter()
        self._stats_lock = threading.Lock()
        self._group = ReentrantCallbackGroup()
        self._executor = MultiThreadedExecutor(num_threads=4)
        self._executor.add_node(self.node)
        self._stopped = threading.Event()
        self._closed = False

    def _qos(self, q: QoSProfile):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile as RQoS, ReliabilityPolicy

        return RQoS(history=HistoryPolicy.KEEP_LAST, depth=q.depth,
                    reliability=ReliabilityPolicy.RELIABLE if q.reliability == "reliable"
                    else ReliabilityPolicy.BEST_EFFORT,
                    durability=DurabilityPolicy.TRANSIENT_LOCAL if q.durability == "transient_local"
                    else DurabilityPolicy.VOLATILE)

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def guarded(self, what: str, fn: Callable[..., None]) -> Callable[..., None]:
        """``fn`` wrapped so that an exception is logged and counted, never raised into rclpy."""
        def run(*a: Any) -> None:
            try:
                fn(*a)
            except Exception as exc:  # noqa: BLE001 - one bad message must not stop the node
                self._count("callback_errors")
                self.logger.error(f"callback for {what} raised {type(exc).__name__}: {exc}")
        return run

    def create_subscription(self, type_name, topic, callback, qos):
        msg_class(type_name)  # unknown types fail here, with the type's name

        def on_bytes(data: bytes) -> None:
            try:
                msg = deserialize(data, type_name)
            except Exception as exc:  # noqa: BLE001
                self._count("decode_errors")
                self.logger.warning(f"dropped a {len(data)}-byte sample on {topic}: not a {type_name}: "
                                    f"{type(exc).__name__}: {exc}")
                return
            self.tap_in(topic, type_name, data, msg)
            callback(msg)

        return self.node.create_subscription(rclpy_type_support(type_name), topic,
                                             self.guarded(topic, on_bytes), self._qos(qos),
                                             callback_group=self._group, raw=True)

    def create_publisher(self, type_name, topic, qos):
        msg_class(type_name)
        pub = self.node.create_publisher(rclpy_type_support(type_name), topic, self._qos(qos))
        return _RawPublisher(pub, type_name, self, pub.topic_name)

    def resolve_topic(self, topic: str) -> str:
        """rcl's resolution: the node's namespace, ``~``, and the --ros-args remaps."""
        return self.node.resolve_topic_name(topic)

    def publisher_types(self, topic: str) -> set[str] | None:
        """Types offered by the publishers on ``topic`` (the ROS graph; issue 15)."""
        try:
            name = self.node.resolve_topic_name(topic)
            return {i.topic_type for i in self.node.get_publishers_info_by_topic(name)}
        except Exception:  # noqa: BLE001 - a diagnostic aid only
            return None

    def publisher_reliabilities(self, topic: str) -> set[str] | None:
        """Reliabilities the publishers on ``topic`` offer (the ROS graph's endpoint QoS)."""
        try:
            from rclpy.qos import ReliabilityPolicy

            name = self.node.resolve_topic_name(topic)
            return {"reliable" if i.qos_profile.reliability == ReliabilityPolicy.RELIABLE else "best_effort"
                    for i in self.node.get_publishers_info_by_topic(name)}
        except Exception:  # noqa: BLE001 - then the node keeps its subscription as it is
            return None

    def destroy_subscription(self, sub) -> None:
        self.node.destroy_subscription(sub)

    def declare_parameter(self, name, default, spec=None):
        """Declared with a ParameterDescriptor from ``spec`` (description, range, read-only), so
        that ``ros2 param describe`` shows it and rclpy refuses what it excludes. A user value of
        the wrong type or out of range: ValueError naming the parameter."""
        from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

        if self.node.has_parameter(name):
            return self.node.get_parameter(name).value
        try:
            return self.node.declare_parameter(name, default, parameter_descriptor(spec)).value
        except InvalidParameterTypeException as e:
            raise ValueError(f"parameter {name}: {e}") from None
        except InvalidParameterValueException as e:
            raise ValueError(f"parameter {name}: {e}" + (f" ({spec.constraints})" if spec is not None else "")) from None

    def user_parameter_names(self) -> set[str]:
        """What --ros-args -p / --params-file / the launch file gave this node (rclpy keeps the
        overrides of undeclared parameters without a public accessor)."""
        return set(getattr(self.node, "_parameter_overrides", {}) or {})

    def on_set_parameters(self, callback) -> bool:
        from rcl_interfaces.msg import SetParametersResult

        def on_set(params) -> "SetParametersResult":
            try:
                reason = callback({p.name: p.value for p in params})
            except Exception as e:  # noqa: BLE001 - refuse rather than raise into rclpy
                reason = f"{type(e).__name__}: {e}"
            return SetParametersResult(successful=reason is None, reason=reason or "")

        self.node.add_on_set_parameters_callback(on_set)
        return True

    def now_ns(self) -> int:
        return int(self.node.get_clock().now().nanoseconds)

    def create_timer(self, period_s, callback):
        """A timer on the steady clock: it fires while a bag (and sim time) is paused."""
        from rclpy.clock import Clock, ClockType

        return self.node.create_timer(float(period_s), self.guarded("timer", callback),
                                      callback_group=self._group, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        if threading.current_thread() is threading.main_thread():
            # SIGINT too: a KeyboardInterrupt raised wherever the main thread happens to be inside
            # rclpy's executor can be swallowed there, and the node then spins on until killed
            # (seen once per full test run: `ros2 run` ignored SIGINT for 15 s)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, _f: (self.logger.info(f"signal {signal.Signals(signum).name}: "
                                                                        f"shutting down"), self._stopped.set()))
        try:
            while self._rclpy.ok() and not self._stopped.is_set():
                try:
                    self._executor.spin_once(timeout_sec=0.1)
                except (KeyboardInterrupt, ExternalShutdownException):
                    raise
                except Exception as exc:  # noqa: BLE001 - e.g. a raising rclpy-internal callback
                    self._count("callback_errors")
                    self.logger.error(f"executor: {type(exc).__name__}: {exc}")
        except (KeyboardInterrupt, ExternalShutdownException):
            pass

    def shutdown(self) -> None:
        """Stop ``spin`` (from another thread) and release the node; idempotent."""
        self._stopped.set()
        if self._closed:
            return
        self._closed = True
        try:
            self._executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            if self._rclpy.ok():
                self._rclpy.try_shutdown()
