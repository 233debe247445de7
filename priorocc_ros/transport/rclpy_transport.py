"""The ROS 2 transport: a thin adapter from ``Transport`` to an rclpy node.

rclpy is imported lazily (inside ``RclpyTransport``), so this module imports on machines
without ROS 2. Messages cross the boundary as rosbags-style objects: ``RclpyConverter``
converts them to the rclpy classes and back, generically, field by field, from the ROS 2
message definitions in rosbags' type store (numpy uint8 arrays <-> ``array.array('B')``,
fixed-size numeric arrays as numpy arrays, ``byte`` fields as 1-byte ``bytes`` as rclpy
expects).

Verified here only against rclpy-like classes in the tests (no ROS 2 on the dev machine).
"""
from __future__ import annotations

import array
import importlib
import signal
import threading
from typing import Any, Callable

import numpy as np
from rosbags.interfaces import Nodetype

from priorocc_ros.msgs import msg_class, typestore
from priorocc_ros.transport.base import QoSProfile, Transport

_NP = {"bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8, "uint8": np.uint8,
       "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64,
       "uint64": np.uint64, "float32": np.float32, "float64": np.float64}
_TYPECODE = {"int8": "b", "uint8": "B", "int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
             "int64": "q", "uint64": "Q", "float32": "f", "float64": "d"}


def import_rclpy_msg(type_name: str) -> type:
    """'sensor_msgs/msg/Image' -> sensor_msgs.msg.Image (the rosidl-generated class)."""
    pkg, sub, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{sub}"), name)


class RclpyConverter:
    """rosbags-style message <-> rclpy message, driven by the message definitions."""

    def __init__(self, resolve: Callable[[str], type] = import_rclpy_msg):
        self.resolve = resolve
        self._cls: dict[str, type] = {}

    def rclpy_class(self, type_name: str) -> type:
        c = self._cls.get(type_name)
        if c is None:
            c = self._cls[type_name] = self.resolve(type_name)
        return c

    # ------------------------------------------------------------ rosbags -> rclpy
    def to_rclpy(self, obj: Any, type_name: str) -> Any:
        out = self.rclpy_class(type_name)()
        for name, (kind, arg) in typestore().fielddefs[type_name][1]:
            setattr(out, name, self._to_value(getattr(obj, name), kind, arg))
        return out

    def _to_value(self, v: Any, kind, arg) -> Any:
        if kind == Nodetype.NAME:
            return self.to_rclpy(v, arg)
        if kind == Nodetype.BASE:
            return self._base_to(v, arg[0])
        (sk, sa), length = arg
        if sk == Nodetype.NAME:
            return [self.to_rclpy(x, sa) for x in v]
        base = sa[0]
        if base in ("string", "wstring"):
            return [str(x) for x in v]
        if base == "byte":
            return [bytes([int(x)]) for x in np.asarray(v, dtype=np.uint8)]
        if base == "char":
            return [chr(int(x)) for x in np.asarray(v, dtype=np.uint8)] if kind == Nodetype.SEQUENCE else \
                np.asarray(v, dtype=np.uint8)
        if base == "bool":
            return [bool(x) for x in v]
        a = np.ascontiguousarray(np.asarray(v, dtype=_NP[base]))
        if kind == Nodetype.ARRAY:
            return a  # rclpy keeps fixed-size numeric arrays as numpy arrays
        out = array.array(_TYPECODE[base])
        out.frombytes(a.tobytes())
        return out

    @staticmethod
    def _base_to(v: Any, base: str) -> Any:
        if base == "byte":
            return bytes([int(v)])
        if base == "char":
            return chr(int(v)) if not isinstance(v, str) else v
        if base in ("string", "wstring"):
            return str(v)
        if base == "bool":
            return bool(v)
        if base in ("float32", "float64"):
            return float(v)
        return int(v)

    # ------------------------------------------------------------ rclpy -> rosbags
    def from_rclpy(self, obj: Any, type_name: str) -> Any:
        cls = msg_class(type_name)
        kw = {}
        for name, (kind, arg) in typestore().fielddefs[type_name][1]:
            kw[name] = self._from_value(getattr(obj, name), kind, arg)
        return cls(**kw)

    def _from_value(self, v: Any, kind, arg) -> Any:
        if kind == Nodetype.NAME:
            return self.from_rclpy(v, arg)
        if kind == Nodetype.BASE:
            base = arg[0]
            if base == "byte" and isinstance(v, (bytes, bytearray)):
                return int(v[0]) if len(v) else 0
            if base == "char" and isinstance(v, str):
                return ord(v) if v else 0
            return v
        (sk, sa), _ = arg
        if sk == Nodetype.NAME:
            return [self.from_rclpy(x, sa) for x in v]
        base = sa[0]
        if base in ("string", "wstring"):
            return list(v)
        dt = _NP[base]
        if isinstance(v, (bytes, bytearray, memoryview, array.array)):
            return np.frombuffer(v, dtype=dt).copy()
        if base in ("byte", "char"):
            return np.array([x[0] if isinstance(x, (bytes, bytearray)) else (ord(x) if isinstance(x, str) else x)
                             for x in v], dtype=np.uint8)
        return np.array(v, dtype=dt)


class _Logger:
    def __init__(self, rcl_logger):
        self._l = rcl_logger

    def info(self, msg: str) -> None:
        self._l.info(msg)

    def warning(self, msg: str) -> None:
        self._l.warning(msg)

    def error(self, msg: str) -> None:
        self._l.error(msg)


class _Publisher:
    def __init__(self, pub, conv: RclpyConverter, type_name: str):
        self._pub, self._conv, self._tn = pub, conv, type_name

    def publish(self, msg: Any) -> None:
        self._pub.publish(self._conv.to_rclpy(msg, self._tn))


class RclpyTransport(Transport):
    """An rclpy node. Parameters come from ``--ros-args -p name:=value`` / launch files;
    ``use_sim_time`` is rclpy's own parameter."""

    def __init__(self, node_name: str = "priorocc", args: list[str] | None = None):
        import rclpy
        from rclpy.callback_groups import ReentrantCallbackGroup
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.node import Node

        self._rclpy = rclpy
        if not rclpy.ok():
            rclpy.init(args=args)
        self.node = Node(node_name)
        self.name = self.node.get_name()
        self.logger = _Logger(self.node.get_logger())
        self.conv = RclpyConverter()
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

    def msg_type(self, type_name: str) -> type:
        return self.conv.rclpy_class(type_name)

    def create_subscription(self, type_name, topic, callback, qos):
        conv = self.conv

        def cb(m):
            callback(conv.from_rclpy(m, type_name))

        return self.node.create_subscription(self.msg_type(type_name), topic, cb, self._qos(qos),
                                             callback_group=self._group)

    def create_publisher(self, type_name, topic, qos):
        pub = self.node.create_publisher(self.msg_type(type_name), topic, self._qos(qos))
        return _Publisher(pub, self.conv, type_name)

    def publisher_types(self, topic: str) -> set[str] | None:
        """Types offered by the publishers on ``topic`` (the ROS graph; issue 15)."""
        try:
            name = self.node.resolve_topic_name(topic)
            return {i.topic_type for i in self.node.get_publishers_info_by_topic(name)}
        except Exception:  # noqa: BLE001 - a diagnostic aid only
            return None

    def declare_parameter(self, name, default):
        if self.node.has_parameter(name):
            return self.node.get_parameter(name).value
        return self.node.declare_parameter(name, default).value

    def now_ns(self) -> int:
        return int(self.node.get_clock().now().nanoseconds)

    def create_timer(self, period_s, callback):
        return self.node.create_timer(float(period_s), callback, callback_group=self._group)

    def spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self._stopped.set())
        try:
            while self._rclpy.ok() and not self._stopped.is_set():
                self._executor.spin_once(timeout_sec=0.1)
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
