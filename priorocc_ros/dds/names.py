"""ROS 2 <-> DDS names, as ``rmw_cyclonedds_cpp`` forms them.

- topic ``/a/b`` -> DDS topic ``rt/a/b`` (``rt`` = ROS topic prefix; services use ``rq``/``rr``).
- type ``pkg/msg/T`` -> DDS type ``pkg::msg::dds_::T_``.
"""
from __future__ import annotations

TOPIC_PREFIX = "rt"


def topic_to_dds(topic: str) -> str:
    """``/CAM_FRONT/camera_info`` -> ``rt/CAM_FRONT/camera_info`` (absolute names only)."""
    if not topic.startswith("/") or topic == "/" or "//" in topic or topic.endswith("/"):
        raise ValueError(f"ROS 2 topic must be a fully qualified name like '/a/b', got {topic!r}")
    return TOPIC_PREFIX + topic


def dds_to_topic(dds_topic: str) -> str | None:
    """``rt/a/b`` -> ``/a/b``; None for DDS topics that are not ROS 2 topics."""
    if dds_topic.startswith(TOPIC_PREFIX + "/"):
        return dds_topic[len(TOPIC_PREFIX):]
    return None


def type_to_dds(type_name: str) -> str:
    """``sensor_msgs/msg/Image`` -> ``sensor_msgs::msg::dds_::Image_``."""
    parts = type_name.split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"ROS 2 type must look like 'pkg/msg/Name', got {type_name!r}")
    pkg, kind, name = parts
    return f"{pkg}::{kind}::dds_::{name}_"


def dds_to_type(dds_type: str) -> str | None:
    """``sensor_msgs::msg::dds_::Image_`` -> ``sensor_msgs/msg/Image``; None if not a ROS 2 type."""
    parts = dds_type.split("::")
    if len(parts) != 4 or parts[2] != "dds_" or not parts[3].endswith("_"):
        return None
    return f"{parts[0]}/{parts[1]}/{parts[3][:-1]}"
