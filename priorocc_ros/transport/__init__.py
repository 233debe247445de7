"""Transports the occupancy node runs over (see ``base.Transport``).

``rclpy_transport`` (ROS 2), ``dds_transport`` (Cyclone DDS, no ROS 2 needed) and
``loopback`` (in-process, tests). Import the implementation modules directly; this package
imports neither rclpy nor cyclonedds.
"""
from priorocc_ros.transport.base import (
    RELIABLE_QOS,
    SENSOR_DATA_QOS,
    TF_STATIC_LISTENER_QOS,
    TF_STATIC_QOS,
    Publisher,
    QoSProfile,
    Transport,
    resolve_topic,
)

__all__ = [
    "QoSProfile",
    "SENSOR_DATA_QOS",
    "RELIABLE_QOS",
    "TF_STATIC_QOS",
    "TF_STATIC_LISTENER_QOS",
    "Publisher",
    "Transport",
    "resolve_topic",
]
