"""ROS 2 message classes for the ROS-free layer (rosbags' Humble type store) and helpers.

Every message the ROS-free layer builds is a rosbags dataclass (all fields as keywords,
numpy arrays for primitive arrays). ``new_msg`` fills the fields a caller leaves out with
ROS 2 defaults (0, "", False, empty arrays, default sub-messages), like rclpy constructors.
Functions that read messages use only standard field names, so they also accept rclpy
messages.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_typestore

_NP_BASE = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8, "uint8": np.uint8,
    "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32,
    "int64": np.int64, "uint64": np.uint64, "float32": np.float32, "float64": np.float64,
}


@functools.lru_cache(maxsize=1)
def typestore():
    """The rosbags type store for ROS 2 Humble (message classes, CDR (de)serialisation)."""
    return get_typestore(Stores.ROS2_HUMBLE)


def msg_class(type_name: str) -> type:
    try:
        return typestore().types[type_name]
    except KeyError:
        raise KeyError(f"unknown ROS 2 message type {type_name!r}") from None


def _default_for(desc: tuple) -> Any:
    kind, arg = desc
    if kind == Nodetype.BASE:
        base = arg[0]
        if base == "string" or base == "wstring":
            return ""
        if base == "bool":
            return False
        if base in ("float32", "float64"):
            return 0.0
        return 0
    if kind == Nodetype.NAME:
        return new_msg(arg)
    if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        (sub_kind, sub_arg), length = arg
        n = length if kind == Nodetype.ARRAY else 0
        if sub_kind == Nodetype.BASE and sub_arg[0] in _NP_BASE:
            return np.zeros(n, dtype=_NP_BASE[sub_arg[0]])
        return [_default_for((sub_kind, sub_arg)) for _ in range(n)]
    raise TypeError(f"unsupported field description {desc!r}")


def new_msg(type_name: str, **fields: Any) -> Any:
    """Construct ``type_name`` with ``fields``; omitted fields get ROS 2 defaults."""
    cls = msg_class(type_name)
    given = set(fields)
    fielddefs = typestore().fielddefs[type_name][1]
    names = {n for n, _ in fielddefs}
    unknown = set(fields) - names
    if unknown:
        raise TypeError(f"{type_name} has no field(s) {sorted(unknown)}; fields are {sorted(names)}")
    for name, desc in fielddefs:
        if name not in fields:
            fields[name] = _default_for(desc)
    if type_name == "geometry_msgs/msg/Quaternion" and "w" not in given:
        fields["w"] = 1.0  # ROS 2's default is the identity rotation
    return cls(**fields)


def ns_to_stamp(ns: int) -> Any:
    """Nanoseconds -> builtin_interfaces/Time."""
    ns = int(ns)
    return msg_class("builtin_interfaces/msg/Time")(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (rosbags or rclpy) -> nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def log_stamp_ns(msg: Any, fallback: int) -> int:
    """The stamp a message is logged at: its header's, a MarkerArray's first marker's, a
    TFMessage's first transform's; ``fallback`` for messages with none."""
    h = getattr(msg, "header", None)
    if h is not None:
        return stamp_to_ns(h.stamp)
    for field in ("markers", "transforms"):
        items = getattr(msg, field, None)
        if items:
            return stamp_to_ns(items[0].header.stamp)
    return fallback


@functools.lru_cache(maxsize=None)
def ros2msg_definition(type_name: str) -> str:
    """The complete ``ros2msg`` text of ``type_name`` as rosbag2 writes it into MCAP schemas:
    its own fields, then one ``====...\nMSG: pkg/Type`` block per nested type (the same
    generator writes the schemas of every bag this package writes, so bags and the Foxglove
    live view carry one definition)."""
    msg_class(type_name)  # KeyError naming an unknown type
    return typestore().generate_msgdef(type_name, ros_version=2)[0]


def header(stamp_ns: int, frame_id: str) -> Any:
    return msg_class("std_msgs/msg/Header")(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


class PointList(Sequence):
    """A ``geometry_msgs/Point[]`` field value backed by ``xyz``, one (N, 3) float64 array.

    Reads as the list of Points rosbags and every reader expect (len, iteration, indexing and
    slicing give Point objects, made only when accessed, so building a 40,000-voxel MarkerArray
    runs no per-voxel Python); ``serialize`` copies ``xyz`` into the CDR in one slice."""

    __slots__ = ("xyz",)

    def __init__(self, xyz: np.ndarray):
        a = np.ascontiguousarray(xyz, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 3:
            raise ValueError(f"PointList: expected (N, 3) coordinates, got shape {a.shape}")
        self.xyz = a

    def __len__(self) -> int:
        return len(self.xyz)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return PointList(self.xyz[i])
        x, y, z = self.xyz[i].tolist()
        return msg_class("geometry_msgs/msg/Point")(x=x, y=y, z=z)

    def __eq__(self, other) -> bool:
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __repr__(self) -> str:
        return f"PointList({len(self)} points)"


def _serialize_marker_array(msg: Any) -> bytes | None:
    """MarkerArray CDR with PointList points spliced in as bytes (identical to rosbags' own).

    Each long PointList is replaced by one sentinel point with a bit pattern of its own; in the
    serialised bytes the sentinel's 24 bytes sit right after the sequence length (and its
    padding to 8, which is the same for any non-empty sequence); they are replaced by the
    length N and the N * 24 bytes of ``xyz``. N * 24 is a multiple of 8, so every later field
    keeps its alignment."""
    Point = msg_class("geometry_msgs/msg/Point")
    swaps, markers = [], []
    for i, m in enumerate(msg.markers):
        pts = m.points
        if isinstance(pts, PointList) and len(pts) > 1:
            tag = np.array([np.nan, float(i), -7.0e300 - i], np.float64)
            tag.view(np.uint64)[0] = 0x7FF8_D00D_0000_0000 + i  # a NaN payload of this marker
            swaps.append((tag.tobytes(), pts.xyz))
            m = dataclasses.replace(m, points=[Point(x=tag[0], y=tag[1], z=tag[2])])
        markers.append(m)
    if not swaps:
        return None
    data = bytes(typestore().serialize_cdr(type(msg)(markers=markers), "visualization_msgs/msg/MarkerArray"))
    parts, pos = [], 0
    for tag, xyz in swaps:
        at = data.find(tag, pos)
        one, zero = (1).to_bytes(4, "little"), bytes(4)
        if at >= 4 and data[at - 4:at] == one:
            count_at = at - 4  # the uint32 length right before the first point
        elif at >= 8 and data[at - 8:at - 4] == one and data[at - 4:at] == zero:
            count_at = at - 8  # the length, then 4 bytes of padding to 8
        else:
            return None  # not where expected (never seen): the generic serialiser decides
        parts += [data[pos:count_at], len(xyz).to_bytes(4, "little"), data[count_at + 4:at], xyz.tobytes()]
        pos = at + 24
    parts.append(data[pos:])
    return b"".join(parts)


def serialize(msg: Any, type_name: str | None = None) -> bytes:
    """CDR bytes of a rosbags message (what bags and DDS carry)."""
    tn = type_name or msg.__msgtype__
    if tn == "visualization_msgs/msg/MarkerArray":
        fast = _serialize_marker_array(msg)
        if fast is not None:
            return fast
    return bytes(typestore().serialize_cdr(msg, tn))


def deserialize(data: bytes | memoryview, type_name: str) -> Any:
    return typestore().deserialize_cdr(data, type_name)
