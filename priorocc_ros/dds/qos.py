"""``QoSProfile`` (the transport interface's ROS 2 QoS) -> Cyclone DDS ``Qos``.

The mapping follows what ``rmw_cyclonedds_cpp`` does for a ROS 2 profile:
reliability, durability and ``KEEP_LAST(depth)`` history carry over one to one; data
representation is pinned to XCDR1 (classic CDR), the encoding ROS 2 puts on the wire.
A reliable writer waits at most ``max_blocking_ms`` when a slow reader's unacknowledged
data fills Cyclone's writer history (then the write fails and is counted, it never hangs).
"""
from __future__ import annotations

from cyclonedds.core import Policy, Qos
from cyclonedds.util import duration

from priorocc_ros.transport.base import QoSProfile


def to_cyclone_qos(profile: QoSProfile, max_blocking_ms: int = 100, user_data: bytes | None = None) -> Qos:
    """ROS 2 QoS profile -> cyclonedds Qos (usable for readers and writers); ``user_data``:
    the endpoint's USER_DATA (``dds.graph.endpoint_user_data``: the type hash)."""
    if profile.reliability == "reliable":
        reliability = Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=max_blocking_ms))
    elif profile.reliability == "best_effort":
        reliability = Policy.Reliability.BestEffort
    else:
        raise ValueError(f"unknown reliability {profile.reliability!r}")
    if profile.durability == "volatile":
        durability = Policy.Durability.Volatile
    elif profile.durability == "transient_local":
        durability = Policy.Durability.TransientLocal
    else:
        raise ValueError(f"unknown durability {profile.durability!r}")
    policies = [
        reliability,
        durability,
        Policy.History.KeepLast(int(profile.depth)),
        Policy.DataRepresentation(use_cdrv0_representation=True),
    ]
    if user_data:
        policies.append(Policy.Userdata(data=bytes(user_data)))
    return Qos(*policies)
