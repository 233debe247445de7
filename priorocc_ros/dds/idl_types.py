"""Cyclone DDS IDL classes generated from rosbags' ROS 2 message definitions.

Nothing here is written per message: ``idl_class("sensor_msgs/msg/Image")`` walks the field
definitions of rosbags' Humble type store (``typestore().fielddefs``) and builds a
``cyclonedds.idl.IdlStruct`` named as ``rmw_cyclonedds_cpp`` names it
(``sensor_msgs::msg::dds_::Image_``), with the same members in the same order, so its CDR
(XCDR1, what ROS 2 sends) is the ROS 2 wire format.

Type mapping (ROS 2 .msg -> cyclonedds.idl):
- ``bool`` -> ``bool``; ``byte``/``octet`` -> ``types.byte``; ``char``/``uint8`` -> ``types.uint8``;
  ints and floats -> the sized ``types.intN``/``uintN``/``float32``/``float64``;
  ``string`` -> ``str``, ``string<=N`` -> ``types.bounded_str[N]``.
- ``T[N]`` -> ``types.array[T, N]``; ``T[]`` / ``T[<=N]`` -> ``types.sequence[T(, N)]``.
- In the ``fast_bytes`` variant (see ``idl_class``), unbounded ``uint8[]``/``byte[]``/``char[]``
  -> Python ``bytes``: cyclonedds encodes ``bytes`` as a 4-byte length and the raw bytes,
  which is exactly CDR ``sequence<uint8>``, and copies them in one slice instead of one Python
  int per byte (Image.data, CompressedImage.data, PointCloud2.data). ``uint8[N]`` uses
  ``types.array[uint8, N]``, which cyclonedds handles as raw bytes in both variants.

``to_idl(msg, type_name)`` / ``from_idl(obj, type_name)`` convert between rosbags message
objects (numpy arrays for primitive arrays) and instances of these classes.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np
from cyclonedds.idl import IdlStruct, make_idl_struct
from cyclonedds.idl import types as t
from rosbags.interfaces import Nodetype

from priorocc_ros.dds.names import type_to_dds
from priorocc_ros.msgs import typestore

_BYTE_LIKE = {"uint8", "byte", "octet", "char"}

_IDL_BASE: dict[str, Any] = {
    "bool": bool,
    "byte": t.byte,
    "octet": t.byte,
    "char": t.uint8,  # ROS 2 char is an unsigned 8-bit integer
    "int8": t.int8,
    "uint8": t.uint8,
    "int16": t.int16,
    "uint16": t.uint16,
    "int32": t.int32,
    "uint32": t.uint32,
    "int64": t.int64,
    "uint64": t.uint64,
    "float32": t.float32,
    "float64": t.float64,
}

_NP_BASE: dict[str, Any] = {
    "bool": np.bool_, "byte": np.uint8, "octet": np.uint8, "char": np.uint8, "int8": np.int8,
    "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16, "int32": np.int32,
    "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64, "float32": np.float32,
    "float64": np.float64,
}


@functools.lru_cache(maxsize=None)
def _store(distro: str | None):
    """rosbags' type store: the project's (Humble) one, or ``distro``'s (e.g. "jazzy")."""
    if distro is None:
        return typestore()
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores(f"ros2_{distro}"))


def _fielddefs(type_name: str, distro: str | None = None) -> list:
    try:
        return _store(distro).fielddefs[type_name][1]
    except KeyError:
        raise KeyError(f"unknown ROS 2 message type {type_name!r} (not in rosbags' ROS 2 "
                       f"{distro or 'humble'} store)") from None


def _idl_type(desc: tuple, owner: str, field: str, fast_bytes: bool, distro: str | None = None) -> Any:
    kind, arg = desc
    if kind == Nodetype.BASE:
        base, bound = arg
        if base == "string":
            return t.bounded_str[bound] if bound else str
        if base in _IDL_BASE:
            return _IDL_BASE[base]
        raise TypeError(f"{owner}.{field}: base type {base!r} has no DDS mapping here")
    if kind == Nodetype.NAME:
        return idl_class(arg, fast_bytes, distro)
    if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        sub, length = arg
        if fast_bytes and kind == Nodetype.SEQUENCE and not length and sub[0] == Nodetype.BASE \
                and sub[1][0] in _BYTE_LIKE:
            return bytes
        sub_t = _idl_type(sub, owner, field, fast_bytes, distro)
        if kind == Nodetype.ARRAY:
            return t.array[sub_t, length]
        return t.sequence[sub_t, length] if length else t.sequence[sub_t]
    raise TypeError(f"{owner}.{field}: unsupported field description {desc!r}")


@functools.lru_cache(maxsize=None)
def idl_class(type_name: str, fast_bytes: bool = False, distro: str | None = None) -> type[IdlStruct]:
    """The IdlStruct class for ROS 2 message ``type_name`` (``pkg/msg/Name``), cached.

    ``fast_bytes=False``: members exactly as ROS 2's IDL declares them (``uint8[]`` is
    ``sequence<uint8>``); this is the class the DDS topic is registered with, so Cyclone's
    type information matches ROS 2's. cyclonedds-python serialises such a sequence one
    Python int per byte.
    ``fast_bytes=True``: the same type (same name, same CDR bytes) with unbounded byte
    sequences declared as Python ``bytes``, which cyclonedds-python copies as one slice; used
    by the ``idl`` codec. (cyclonedds cannot build XTypes type objects for ``bytes`` members,
    hence two variants.)
    ``distro``: take the definition from that distribution's store (default: the project's
    Humble store; the ROS graph types of ``dds.graph`` differ between distributions).
    """
    fields = {name: _idl_type(desc, type_name, name, fast_bytes, distro)
              for name, desc in _fielddefs(type_name, distro)}
    dds_name = type_to_dds(type_name)
    cls = make_idl_struct(dds_name.rsplit("::", 1)[-1], dds_name, fields)
    cls.__ros_type__ = type_name
    return cls


# ---------------------------------------------------------------- conversions


def _to_idl_conv(desc: tuple, fast_bytes: bool) -> Callable[[Any], Any]:
    kind, arg = desc
    if kind == Nodetype.BASE:
        base = arg[0]
        if base == "string":
            return str
        if base == "bool":
            return bool
        if base in ("float32", "float64"):
            return float
        return int
    if kind == Nodetype.NAME:
        return _to_idl_fn(arg, fast_bytes)
    sub, length = arg
    if sub[0] == Nodetype.BASE and sub[1][0] in _BYTE_LIKE and (fast_bytes or kind == Nodetype.ARRAY):
        return lambda v: v.tobytes() if isinstance(v, np.ndarray) else bytes(v)
    if sub[0] == Nodetype.BASE and sub[1][0] in _NP_BASE:
        return lambda v: v.tolist() if isinstance(v, np.ndarray) else list(v)
    conv = _to_idl_conv(sub, fast_bytes)
    return lambda v: [conv(x) for x in v]


@functools.lru_cache(maxsize=None)
def _to_idl_fn(type_name: str, fast_bytes: bool) -> Callable[[Any], IdlStruct]:
    cls = idl_class(type_name, fast_bytes)
    convs = [(name, _to_idl_conv(desc, fast_bytes)) for name, desc in _fielddefs(type_name)]

    def conv(msg: Any) -> IdlStruct:
        return cls(**{name: c(getattr(msg, name)) for name, c in convs})

    return conv


def _from_idl_conv(desc: tuple) -> Callable[[Any], Any]:
    kind, arg = desc
    if kind == Nodetype.BASE:
        return lambda v: v
    if kind == Nodetype.NAME:
        return _from_idl_fn(arg)
    sub, length = arg
    if sub[0] == Nodetype.BASE and sub[1][0] in _NP_BASE:
        dtype = _NP_BASE[sub[1][0]]
        if sub[1][0] in _BYTE_LIKE:
            return lambda v: np.frombuffer(v, dtype=np.uint8) if isinstance(v, (bytes, bytearray)) \
                else np.asarray(v, dtype=np.uint8)
        return lambda v: np.asarray(v, dtype=dtype)
    conv = _from_idl_conv(sub)
    return lambda v: [conv(x) for x in v]


@functools.lru_cache(maxsize=None)
def _from_idl_fn(type_name: str) -> Callable[[IdlStruct], Any]:
    cls = typestore().types[type_name]
    convs = [(name, _from_idl_conv(desc)) for name, desc in _fielddefs(type_name)]

    def conv(obj: IdlStruct) -> Any:
        return cls(**{name: c(getattr(obj, name)) for name, c in convs})

    return conv


def to_idl(msg: Any, type_name: str, fast_bytes: bool = True) -> IdlStruct:
    """rosbags message (or any object with the ROS field names) -> IdlStruct instance
    (of ``idl_class(type_name, fast_bytes)``)."""
    return _to_idl_fn(type_name, fast_bytes)(msg)


def from_idl(obj: IdlStruct, type_name: str) -> Any:
    """IdlStruct instance (either variant) -> rosbags message (numpy arrays for primitive arrays)."""
    return _from_idl_fn(type_name)(obj)
