"""Shared pieces of the DDS command-line tools (play, record, topics).

- ``qos_for(topic, type_name)``: the QoS a ROS 2 publisher of that topic kind uses.
- ``GraphWatcher``: the live ROS 2 topics (name, type, writers' QoS) from DDS built-in topic
  discovery (``DCPSPublication``), i.e. what ``ros2 topic list -t`` shows.
- ``StopFlag``: SIGINT/SIGTERM -> a flag the tools' loops poll (they never block longer than
  a fraction of a second, so a signal stops them promptly).
"""
from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from typing import Any

from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication
from cyclonedds.core import InstanceState, Policy

from priorocc_ros.dds.names import dds_to_topic, dds_to_type
from priorocc_ros.transport.base import RELIABLE_QOS, SENSOR_DATA_QOS, TF_STATIC_QOS, QoSProfile

SENSOR_TYPES = {
    "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CompressedImage",
    "sensor_msgs/msg/CameraInfo",
    "sensor_msgs/msg/PointCloud2",
}
TF_QOS = QoSProfile("reliable", "volatile", 100)  # tf2_ros TransformBroadcaster


def qos_for(topic: str, type_name: str) -> QoSProfile:
    """ROS 2 QoS by topic kind: /tf_static latched, /tf reliable depth 100, sensor streams
    sensor-data (best effort, keep last 5), everything else reliable keep last 10."""
    if topic == "/tf_static":
        return TF_STATIC_QOS
    if topic == "/tf":
        return TF_QOS
    if type_name in SENSOR_TYPES:
        return SENSOR_DATA_QOS
    return RELIABLE_QOS


class StopFlag:
    """Set by SIGINT/SIGTERM (installed from the main thread) or by ``set()``."""

    def __init__(self, install: bool = True):
        self._event = threading.Event()
        self.signal_name: str | None = None
        if install and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._handler)

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        self.signal_name = signal.Signals(signum).name
        self._event.set()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


@dataclass
class TopicInfo:
    topic: str  # ROS 2 name, e.g. /CAM_FRONT/camera_info
    type_name: str  # ROS 2 type, e.g. sensor_msgs/msg/CameraInfo ("" if not a ROS 2 type)
    writers: dict[str, Any] = field(default_factory=dict)  # writer key -> cyclonedds Qos

    def writer_qos(self) -> QoSProfile | None:
        """The most demanding QoS every known writer satisfies (what a reader should request)."""
        if not self.writers:
            return None
        reliable = all(_is_reliable(q) for q in self.writers.values())
        latched = all(_is_transient_local(q) for q in self.writers.values())
        return QoSProfile("reliable" if reliable else "best_effort",
                          "transient_local" if latched else "volatile", 1 if latched else 10)


def _policy(qos: Any, name: str) -> Any:
    if qos is None:
        return None
    for p in qos:
        if type(p).__qualname__.startswith(name) or repr(p).startswith(f"Policy.{name}"):
            return p
    return None


def _is_reliable(qos: Any) -> bool:
    p = _policy(qos, "Reliability")
    return p is not None and isinstance(p, Policy.Reliability.Reliable)


def _is_transient_local(qos: Any) -> bool:
    p = _policy(qos, "Durability")
    return p is not None and repr(p) == repr(Policy.Durability.TransientLocal)


class GraphWatcher:
    """Tracks live DDS writers of ROS 2 topics through the ``DCPSPublication`` built-in topic.

    ``poll()`` reads the built-in reader (non-blocking) and returns the topics known so far.
    Writers of this process's own participant are included (Cyclone reports local ones too);
    pass ``ignore_participant`` (a participant GUID) to leave them out.
    """

    def __init__(self, participant: Any, ignore_participant: Any | None = None):
        self._reader = BuiltinDataReader(participant, BuiltinTopicDcpsPublication)
        self._ignore = ignore_participant
        self.topics: dict[str, TopicInfo] = {}

    def poll(self) -> dict[str, TopicInfo]:
        for sample in self._reader.take(256):
            key = str(sample.key)
            alive = sample.sample_info.instance_state == InstanceState.Alive
            topic = dds_to_topic(sample.topic_name) if sample.topic_name else None
            if not alive or topic is None:
                # a writer went away (disposal samples carry only the key), or not a ROS topic
                for ti in self.topics.values():
                    ti.writers.pop(key, None)
                continue
            if self._ignore is not None and str(sample.participant_key) == str(self._ignore):
                continue
            ti = self.topics.setdefault(topic, TopicInfo(topic, dds_to_type(sample.type_name) or ""))
            ti.writers[key] = sample.qos
        return {t: ti for t, ti in self.topics.items() if ti.writers}

    def close(self) -> None:
        self._reader = None
