"""Cyclone DDS participant, topics, writers and readers carrying ROS 2 messages.

``DdsContext`` owns one ``DomainParticipant`` (domain ``ROS_DOMAIN_ID``, default 0, like ROS 2)
and creates, per ROS 2 topic, a DDS topic named and typed as ``rmw_cyclonedds_cpp`` does
(``rt/<topic>``, ``pkg::msg::dds_::T_`` from ``idl_types.idl_class``).

Two codecs turn rosbags message objects into CDR bytes and back:

- ``"cdr"`` (default, the hot path): rosbags' own CDR (de)serialiser (numpy-backed: primitive
  arrays and ``uint8[]`` payloads are copied as buffers, never as per-element Python objects);
  the bytes go to Cyclone unchanged through the DataWriter of the generated IDL type.
- ``"idl"``: convert to the generated ``IdlStruct`` and let cyclonedds-python serialise it.

Both produce identical bytes (tests check it: ``tests/test_dds_types.py``). The generated
IDL type is what Cyclone registers for the topic in either case (type name, XTypes type
information for discovery).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from cyclonedds._clayer import ddspy_take, ddspy_write, ddspy_write_ts
from cyclonedds.core import DDSException, InstanceState, Policy, Qos, ReadCondition, SampleState, ViewState
from cyclonedds.domain import DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic

from priorocc_ros.dds import graph
from priorocc_ros.dds.idl_types import from_idl, idl_class, to_idl
from priorocc_ros.dds.names import topic_to_dds, type_to_dds
from priorocc_ros.dds.qos import to_cyclone_qos
from priorocc_ros.msgs import serialize, typestore
from priorocc_ros.transport.base import QoSProfile

ANY_STATE = SampleState.Any | ViewState.Any | InstanceState.Any
CODECS = ("cdr", "idl")


def domain_id_from_env() -> int:
    """``ROS_DOMAIN_ID`` (0 when unset), validated to 0..232."""
    raw = os.environ.get("ROS_DOMAIN_ID", "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"ROS_DOMAIN_ID must be an integer 0..232, got {raw!r}") from None
    if not 0 <= value <= 232:
        raise ValueError(f"ROS_DOMAIN_ID must be in 0..232, got {value}")
    return value


class CodecError(ValueError):
    """CDR bytes that do not decode as the topic's type (or a message that does not encode)."""


def _pad4(data) -> bytes | bytearray | memoryview:
    """Pad CDR to a multiple of 4 bytes as DDS requires, recording the number of padding bytes
    in the low two bits of the encapsulation options (XTypes 7.6.3.1.2, what Cyclone's C
    serialiser does), so a receiver can restore the exact original bytes (``strip_padding``).
    Any bytes-like input; returned unchanged (no copy) when already aligned."""
    n = len(data)
    pad = (-n) % 4
    if pad == 0 or n < 4:
        return data
    out = bytearray(n + pad)  # one copy; the tail is already zero
    out[:n] = data
    out[3] = (out[3] & 0xFC) | pad
    return out


def strip_padding(data: bytes) -> bytes:
    """Undo ``_pad4``: drop the trailing padding the encapsulation options announce and clear
    those bits (bytes as the publisher's serialiser produced them, e.g. as stored in a bag)."""
    if len(data) < 4:
        return data
    pad = data[3] & 0x03
    if not pad or len(data) - 4 < pad:
        return data
    out = bytearray(data[: len(data) - pad])
    out[3] &= 0xFC
    return bytes(out)


def encode(msg: Any, type_name: str, codec: str = "cdr") -> bytes | bytearray | memoryview:
    """rosbags message -> CDR (bytes-like) with the 4-byte encapsulation header (XCDR1, little
    endian), padded to 4 bytes."""
    try:
        if codec == "cdr":
            return _pad4(serialize(msg, type_name))
        if codec == "idl":
            return _pad4(to_idl(msg, type_name).serialize(use_version_2=False))
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise CodecError(f"cannot encode {type(msg).__name__} as {type_name}: {exc}") from exc
    raise ValueError(f"unknown codec {codec!r}; expected one of {CODECS}")


def decode(data: bytes, type_name: str, codec: str = "cdr") -> Any:
    """CDR bytes (with header) -> rosbags message."""
    if len(data) < 4:
        raise CodecError(f"{type_name}: sample of {len(data)} bytes has no CDR header")
    try:
        if codec == "cdr":
            return typestore().deserialize_cdr(data, type_name)
        if codec == "idl":
            return from_idl(idl_class(type_name, True).deserialize(data), type_name)
    except Exception as exc:  # noqa: BLE001
        raise CodecError(f"{type_name}: {len(data)}-byte sample does not decode: {exc}") from exc
    raise ValueError(f"unknown codec {codec!r}; expected one of {CODECS}")


@dataclass
class RawSample:
    data: bytes  # CDR with header
    source_timestamp_ns: int
    publication_handle: int


class DdsWriter:
    """Writes rosbags messages (or raw CDR) on one ROS 2 topic."""

    def __init__(self, ctx: "DdsContext", type_name: str, topic: str, qos: QoSProfile):
        self.type_name, self.topic, self.qos = type_name, topic, qos
        self.codec = ctx.codec
        self._writer = DataWriter(ctx.participant, ctx.topic(type_name, topic),
                                  qos=to_cyclone_qos(qos, user_data=graph.endpoint_user_data(type_name, ctx.distro)))
        self.guid = self._writer.guid.bytes
        self._lock = threading.Lock()

    def write_cdr(self, data: bytes, timestamp_ns: int | None = None) -> None:
        """Write already-serialised CDR (header included), e.g. straight from a bag."""
        data = _pad4(data)
        with self._lock:
            ret = ddspy_write(self._writer._ref, data) if timestamp_ns is None \
                else ddspy_write_ts(self._writer._ref, data, int(timestamp_ns))
        if ret < 0:
            raise DDSException(ret, f"writing {self.type_name} on {self.topic}")

    def publish(self, msg: Any) -> None:
        self.write_cdr(encode(msg, self.type_name, self.codec))

    def matched_count(self) -> int:
        return len(self._writer.get_matched_subscriptions())


class DdsReader:
    """Takes samples of one ROS 2 topic as raw CDR or decoded rosbags messages."""

    def __init__(self, ctx: "DdsContext", type_name: str, topic: str, qos: QoSProfile):
        self.type_name, self.topic, self.qos = type_name, topic, qos
        self.codec = ctx.codec
        self.reader = DataReader(ctx.participant, ctx.topic(type_name, topic),
                                 qos=to_cyclone_qos(qos, user_data=graph.endpoint_user_data(type_name, ctx.distro)))
        self.guid = self.reader.guid.bytes
        self.condition = ReadCondition(self.reader, ANY_STATE)

    def take_raw(self, max_samples: int = 64) -> list[RawSample]:
        ret = ddspy_take(self.reader._ref, ANY_STATE, max_samples)
        if isinstance(ret, int):
            raise DDSException(ret, f"taking {self.type_name} from {self.topic}")
        return [RawSample(bytes(data), int(info.source_timestamp), int(info.publication_handle))
                for data, info in ret if info.valid_data]

    def decode(self, sample: RawSample) -> Any:
        return decode(sample.data, self.type_name, self.codec)

    def matched_count(self) -> int:
        return len(self.reader.get_matched_publications())


class DdsContext:
    """One DDS participant plus the topics created on it (one per ROS 2 topic name).

    The participant announces itself as ``rmw_cyclonedds_cpp`` does (``dds.graph``): enclave
    in its USER_DATA, type hash in every endpoint's. ``node=(namespace, name)`` also publishes
    ``ros_discovery_info`` listing that node with every reader and writer created here, so
    ``ros2 node list`` / ``ros2 node info`` show it. ``distro``: graph layout to announce
    (default ``graph.graph_distro()``: Jazzy unless ``ROS_DISTRO=humble``).
    """

    def __init__(self, domain_id: int | None = None, codec: str = "cdr",
                 node: tuple[str, str] | None = None, distro: str | None = None):
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}; expected one of {CODECS}")
        self.codec = codec
        self.distro = distro or graph.graph_distro()
        if self.distro not in graph.DISTROS:
            raise ValueError(f"distro {self.distro!r}: expected one of {graph.DISTROS}")
        self.domain_id = domain_id_from_env() if domain_id is None else int(domain_id)
        self.participant = DomainParticipant(self.domain_id, qos=Qos(Policy.Userdata(data=graph.PARTICIPANT_USER_DATA)))
        self._topics: dict[str, tuple[Topic, str]] = {}
        self._lock = threading.Lock()
        self.node = node
        self._readers: list[bytes] = []
        self._writers: list[bytes] = []
        self._discovery = None
        if node is not None:
            tp = Topic(self.participant, graph.DISCOVERY_TOPIC, idl_class(graph.DISCOVERY_TYPE, distro=self.distro))
            self._discovery = DataWriter(self.participant, tp, qos=to_cyclone_qos(
                graph.DISCOVERY_QOS, user_data=graph.endpoint_user_data(graph.DISCOVERY_TYPE, self.distro)))
            self._announce()

    def _announce(self) -> None:
        """Publish this participant's node and endpoints on ros_discovery_info."""
        if self._discovery is None:
            return
        with self._lock:
            ns, name = self.node
            data = graph.participant_entities_info(self.participant.guid.bytes,
                                                   [(ns, name, list(self._readers), list(self._writers))], self.distro)
        ret = ddspy_write(self._discovery._ref, _pad4(data))
        if ret < 0:
            raise DDSException(ret, "writing ros_discovery_info")

    def topic(self, type_name: str, topic: str) -> Topic:
        dds_name = topic_to_dds(topic)
        with self._lock:
            known = self._topics.get(dds_name)
            if known is not None:
                if known[1] != type_name:
                    raise TypeError(f"topic {topic} already carries {known[1]}, cannot also carry {type_name}")
                return known[0]
            tp = Topic(self.participant, dds_name, idl_class(type_name))
            self._topics[dds_name] = (tp, type_name)
            return tp

    def writer(self, type_name: str, topic: str, qos: QoSProfile) -> DdsWriter:
        w = DdsWriter(self, type_name, topic, qos)
        self._writers.append(w.guid)
        self._announce()
        return w

    def reader(self, type_name: str, topic: str, qos: QoSProfile) -> DdsReader:
        r = DdsReader(self, type_name, topic, qos)
        self._readers.append(r.guid)
        self._announce()
        return r

    def delete_reader(self, r: DdsReader) -> None:
        """Delete a reader made by ``reader`` and take it out of ros_discovery_info."""
        with self._lock:
            if r.guid in self._readers:
                self._readers.remove(r.guid)
        try:
            r.condition.__del__()
            r.reader.__del__()  # dds_delete
        except Exception:  # noqa: BLE001 - already deleted with the participant
            pass
        self._announce()

    @staticmethod
    def dds_type_name(type_name: str) -> str:
        return type_to_dds(type_name)

    def close(self) -> None:
        """Delete the participant and everything created on it."""
        part = getattr(self, "participant", None)
        if part is not None:
            self.participant = None
            self._discovery = None
            self._topics.clear()
            try:
                part.__del__()  # dds_delete on the participant deletes its children
            except Exception:  # noqa: BLE001 - already deleted
                pass
