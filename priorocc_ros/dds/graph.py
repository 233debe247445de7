"""The ROS 2 graph on plain DDS, announced as ``rmw_cyclonedds_cpp`` (Jazzy) announces it.

A ROS 2 node on Cyclone DDS is visible to ``ros2 node list`` / ``ros2 node info`` and to
every other node's graph cache through three things, all reproduced here (facts read from
rmw_cyclonedds ``rmw_node.cpp`` and rmw_dds_common, Jazzy):

- the participant's USER_DATA ``enclave=/;``;
- each reader's / writer's USER_DATA ``typehash=RIHS01_<sha256>;``: the type's ROS
  Interface Hash. A Jazzy peer that finds none logs ``Failed to parse type hash ...`` per
  topic. ``type_hash`` computes it from rosbags' Jazzy message definitions with ROS 2's
  rule that a ``.msg`` ``char`` is an IDL ``uint8`` (rosbags 0.11 hashes ``char`` as char, which
  is wrong for e.g. rmw_dds_common/Gid); tests compare every hash with the one real rclpy
  reports (``tests/test_ros2_real.py``);
- a ``rmw_dds_common/msg/ParticipantEntitiesInfo`` sample on the DDS topic
  ``ros_discovery_info`` (no ``rt/`` prefix; reliable, transient local, keep last 1): the
  participant's GID and, per node, its name, namespace and the GIDs of its readers and
  writers (GID = the 16-byte DDS GUID in Jazzy; Humble's Gid has 24 bytes, the GUID first).
"""
from __future__ import annotations

import functools
import os

from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_typestore

from priorocc_ros.transport.base import QoSProfile

DISCOVERY_TOPIC = "ros_discovery_info"
DISCOVERY_TYPE = "rmw_dds_common/msg/ParticipantEntitiesInfo"
DISCOVERY_QOS = QoSProfile("reliable", "transient_local", 1)
PARTICIPANT_USER_DATA = b"enclave=/;"
DISTROS = ("jazzy", "humble")


def graph_distro() -> str:
    """The ROS 2 distribution whose graph layout to announce: ``ROS_DISTRO`` when it is
    Humble, else Jazzy (the layout of Jazzy and later)."""
    return "humble" if os.environ.get("ROS_DISTRO", "").strip().lower() == "humble" else "jazzy"


@functools.lru_cache(maxsize=None)
def _hash_store():
    """rosbags' Jazzy definitions with ``char`` as ``uint8`` (what rosidl's IDL says)."""
    src = get_typestore(Stores.ROS2_JAZZY)

    def fix(desc):
        kind, arg = desc
        if kind == Nodetype.BASE:
            return (kind, ("uint8", 0)) if arg[0] == "char" else desc
        if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            return (kind, (fix(arg[0]), arg[1]))
        return desc

    store = get_typestore(Stores.EMPTY)
    store.register({name: (consts, [(f, fix(d)) for f, d in fields])
                    for name, (consts, fields) in src.fielddefs.items()})
    return store


@functools.lru_cache(maxsize=None)
def type_hash(type_name: str) -> str:
    """``RIHS01_<hex sha256>`` of ROS 2 message ``type_name`` as Jazzy computes it."""
    try:
        return _hash_store().hash_rihs01(type_name)
    except KeyError:
        raise KeyError(f"no Jazzy definition of {type_name!r} to hash") from None


def endpoint_user_data(type_name: str, distro: str = "jazzy") -> bytes | None:
    """USER_DATA of a reader / writer of ``type_name`` (None: Humble announces none)."""
    return f"typehash={type_hash(type_name)};".encode() if distro == "jazzy" else None


def gid(guid_bytes: bytes, distro: str = "jazzy") -> bytes:
    """A DDS GUID (16 bytes) as the rmw_dds_common/Gid ``data`` of ``distro``."""
    if len(guid_bytes) != 16:
        raise ValueError(f"a DDS GUID has 16 bytes, got {len(guid_bytes)}")
    return guid_bytes if distro == "jazzy" else guid_bytes + bytes(8)


def participant_entities_info(participant_guid: bytes, nodes: list[tuple[str, str, list[bytes], list[bytes]]],
                              distro: str = "jazzy") -> bytes:
    """CDR of ParticipantEntitiesInfo: ``nodes`` = [(namespace, name, reader GUIDs, writer GUIDs)]."""
    import numpy as np

    store = get_typestore(Stores(f"ros2_{distro}"))
    Gid = store.types["rmw_dds_common/msg/Gid"]
    Node = store.types["rmw_dds_common/msg/NodeEntitiesInfo"]

    def g(guid: bytes):
        return Gid(data=np.frombuffer(gid(guid, distro), dtype=np.uint8).copy())

    msg = store.types[DISCOVERY_TYPE](
        gid=g(participant_guid),
        node_entities_info_seq=[Node(node_namespace=ns, node_name=name, reader_gid_seq=[g(r) for r in readers],
                                     writer_gid_seq=[g(w) for w in writers]) for ns, name, readers, writers in nodes])
    return bytes(store.serialize_cdr(msg, DISCOVERY_TYPE))
