"""ROS 2 message classes for the ROS-free layer (rosbags' Humble type store) and helpers.

Every message the ROS-free layer builds is a rosbags dataclass (all fields as keywords,
numpy arrays for primitive arrays). ``new_msg`` fills the fields a caller leaves out with
ROS 2 defaults (0, "", False, empty arrays, default sub-messages), like rclpy constructors.
Functions that read messages use only standard field names, so they also accept rclpy
messages.
"""
from __future__ import annotations

import functools
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


def header(stamp_ns: int, frame_id: str) -> Any:
    return msg_class("std_msgs/msg/Header")(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def serialize(msg: Any, type_name: str | None = None) -> bytes:
    """CDR bytes of a rosbags message (what bags and DDS carry)."""
    tn = type_name or msg.__msgtype__
    return bytes(typestore().serialize_cdr(msg, tn))


def deserialize(data: bytes | memoryview, type_name: str) -> Any:
    return typestore().deserialize_cdr(data, type_name)
