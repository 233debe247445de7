"""DDS message types generated from rosbags' definitions: names, CDR identity, QoS, config."""
from __future__ import annotations

import itertools
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from priorocc_ros.dds import idl_types, names
from benchmarks.local_dds import loopback_config, loopback_env, unique_domain_id
from priorocc_ros.dds.participant import CodecError, decode, encode, strip_padding
from priorocc_ros.dds.qos import to_cyclone_qos
from priorocc_ros.msgs import new_msg, typestore
from priorocc_ros.transport.base import RELIABLE_QOS, SENSOR_DATA_QOS, TF_STATIC_QOS

_COUNTER = itertools.count(1)

# Every type the node and the tools put on the wire.
NODE_TYPES = [
    "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/CameraInfo",
    "tf2_msgs/msg/TFMessage", "sensor_msgs/msg/PointCloud2", "visualization_msgs/msg/MarkerArray",
    "nav_msgs/msg/OccupancyGrid", "diagnostic_msgs/msg/DiagnosticArray", "rosgraph_msgs/msg/Clock",
]


@pytest.fixture
def dds_env(monkeypatch):
    """Loopback-only Cyclone with a domain id of its own for this test."""
    env = loopback_env(domain_id=unique_domain_id(os.getpid() * 7 + next(_COUNTER)))
    monkeypatch.setenv("CYCLONEDDS_URI", env["CYCLONEDDS_URI"])
    monkeypatch.setenv("ROS_DOMAIN_ID", env["ROS_DOMAIN_ID"])
    return env


def _header(frame="CAM_FRONT", sec=1_700_000_000, nsec=5):
    return new_msg("std_msgs/msg/Header", stamp=new_msg("builtin_interfaces/msg/Time", sec=sec, nanosec=nsec),
                   frame_id=frame)


def _samples():
    rng = np.random.default_rng(1)
    pt = new_msg("geometry_msgs/msg/Point", x=1.5, y=-2.0, z=0.25)
    marker = new_msg("visualization_msgs/msg/Marker", header=_header("base_link"), ns="car", id=3, type=6,
                     points=[pt, pt], colors=[new_msg("std_msgs/msg/ColorRGBA", r=1.0, a=1.0)] * 2,
                     scale=new_msg("geometry_msgs/msg/Vector3", x=0.4, y=0.4, z=0.4))
    fields = [new_msg("sensor_msgs/msg/PointField", name=n, offset=4 * i, datatype=7, count=1)
              for i, n in enumerate("xyz")]
    kv = new_msg("diagnostic_msgs/msg/KeyValue", key="sets_in", value="12")
    return {
        "sensor_msgs/msg/Image": new_msg("sensor_msgs/msg/Image", header=_header(), height=3, width=5,
                                         encoding="rgb8", step=15, data=rng.integers(0, 256, 45, dtype=np.uint8)),
        "sensor_msgs/msg/CompressedImage": new_msg("sensor_msgs/msg/CompressedImage", header=_header(),
                                                   format="jpeg",
                                                   data=rng.integers(0, 256, 1001, dtype=np.uint8)),
        "sensor_msgs/msg/CameraInfo": new_msg("sensor_msgs/msg/CameraInfo", header=_header(), height=900,
                                              width=1600, distortion_model="plumb_bob", d=np.zeros(5),
                                              k=np.arange(9.0), r=np.eye(3).ravel(), p=np.arange(12.0)),
        "tf2_msgs/msg/TFMessage": new_msg("tf2_msgs/msg/TFMessage", transforms=[
            new_msg("geometry_msgs/msg/TransformStamped", header=_header("base_link"), child_frame_id="CAM_FRONT",
                    transform=new_msg("geometry_msgs/msg/Transform",
                                      translation=new_msg("geometry_msgs/msg/Vector3", x=1.0, y=2.0, z=3.0),
                                      rotation=new_msg("geometry_msgs/msg/Quaternion", w=1.0)))]),
        "sensor_msgs/msg/PointCloud2": new_msg("sensor_msgs/msg/PointCloud2", header=_header("base_link"),
                                               height=1, width=4, fields=fields, point_step=12, row_step=48,
                                               data=rng.integers(0, 256, 48, dtype=np.uint8), is_dense=True),
        "visualization_msgs/msg/MarkerArray": new_msg("visualization_msgs/msg/MarkerArray", markers=[marker]),
        "nav_msgs/msg/OccupancyGrid": new_msg("nav_msgs/msg/OccupancyGrid", header=_header("base_link"),
                                              data=np.array([-1, 0, 100, 50], dtype=np.int8)),
        "diagnostic_msgs/msg/DiagnosticArray": new_msg("diagnostic_msgs/msg/DiagnosticArray", header=_header(),
                                                       status=[new_msg("diagnostic_msgs/msg/DiagnosticStatus",
                                                                       level=b"\x01"[0], name="priorocc",
                                                                       message="ok", values=[kv])]),
        "rosgraph_msgs/msg/Clock": new_msg("rosgraph_msgs/msg/Clock",
                                           clock=new_msg("builtin_interfaces/msg/Time", sec=7, nanosec=9)),
    }


def test_names_follow_rmw_cyclonedds():
    assert names.topic_to_dds("/CAM_FRONT/camera_info") == "rt/CAM_FRONT/camera_info"
    assert names.dds_to_topic("rt/priorocc/voxels") == "/priorocc/voxels"
    assert names.dds_to_topic("DCPSPublication") is None
    assert names.type_to_dds("sensor_msgs/msg/Image") == "sensor_msgs::msg::dds_::Image_"
    assert names.dds_to_type("visualization_msgs::msg::dds_::MarkerArray_") == "visualization_msgs/msg/MarkerArray"
    with pytest.raises(ValueError, match="fully qualified"):
        names.topic_to_dds("relative/name")
    with pytest.raises(ValueError, match="pkg/msg/Name"):
        names.type_to_dds("Image")


@pytest.mark.parametrize("type_name", NODE_TYPES)
def test_generated_class_matches_rosbags_definition(type_name):
    cls = idl_types.idl_class(type_name)
    assert cls.__idl_typename__ == names.type_to_dds(type_name)
    fielddefs = typestore().fielddefs[type_name][1]
    assert list(cls.__annotations__) == [n for n, _ in fielddefs]  # same members, same order


@pytest.mark.parametrize("type_name", NODE_TYPES)
def test_idl_serialisation_is_byte_identical_to_rosbags_cdr(type_name):
    """cyclonedds' serialiser over the generated classes == rosbags' CDR (what ROS 2 bags hold),
    in both the ROS-declared variant and the fast bytes variant; and both decode back."""
    msg = _samples()[type_name]
    ref = bytes(typestore().serialize_cdr(msg, type_name))
    assert ref[:4] == b"\x00\x01\x00\x00"  # XCDR1 little endian, as ROS 2 sends
    for fast in (False, True):
        obj = idl_types.to_idl(msg, type_name, fast_bytes=fast)
        assert isinstance(obj, idl_types.idl_class(type_name, fast))
        assert obj.serialize(use_version_2=False) == ref, (type_name, fast)
    for codec in ("cdr", "idl"):
        wire = encode(msg, type_name, codec)
        assert len(wire) % 4 == 0 and strip_padding(wire) == ref
        back = decode(wire, type_name, codec)
        assert bytes(typestore().serialize_cdr(back, type_name)) == ref


def test_byte_payload_round_trips_as_numpy():
    msg = _samples()["sensor_msgs/msg/CompressedImage"]
    for codec in ("cdr", "idl"):
        back = decode(encode(msg, "sensor_msgs/msg/CompressedImage", codec), "sensor_msgs/msg/CompressedImage", codec)
        assert isinstance(back.data, np.ndarray) and back.data.dtype == np.uint8
        assert back.data.tobytes() == msg.data.tobytes()
        assert back.header.frame_id == "CAM_FRONT" and back.header.stamp.nanosec == 5


def test_fast_variant_uses_bytes_and_declared_variant_uses_sequence():
    fast = idl_types.idl_class("sensor_msgs/msg/Image", True)
    plain = idl_types.idl_class("sensor_msgs/msg/Image", False)
    assert fast.__annotations__["data"] is bytes
    assert plain.__annotations__["data"] is not bytes
    # both carry the same DDS type name
    assert fast.__idl_typename__ == plain.__idl_typename__ == "sensor_msgs::msg::dds_::Image_"


def test_truncated_or_garbage_sample_raises_codec_error():
    wire = encode(_samples()["sensor_msgs/msg/CameraInfo"], "sensor_msgs/msg/CameraInfo")
    for codec in ("cdr", "idl"):
        with pytest.raises(CodecError, match="CameraInfo"):
            decode(wire[: len(wire) // 2], "sensor_msgs/msg/CameraInfo", codec)
        with pytest.raises(CodecError, match="no CDR header"):
            decode(b"\x00\x01", "sensor_msgs/msg/CameraInfo", codec)


def test_unknown_type_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown ROS 2 message type"):
        idl_types.idl_class("no_pkg/msg/Nothing")


def test_qos_mapping():
    def policies(q):
        return {repr(p).split("(")[0] for p in q}

    sensor = to_cyclone_qos(SENSOR_DATA_QOS)
    assert "Policy.Reliability.BestEffort" in policies(sensor)
    assert "Policy.Durability.Volatile" in policies(sensor)
    assert "Policy.History.KeepLast(depth=5)" in [repr(p) for p in sensor]
    static = to_cyclone_qos(TF_STATIC_QOS)
    assert "Policy.Durability.TransientLocal" in policies(static)
    assert "Policy.Reliability.Reliable" in policies(static)
    assert "Policy.History.KeepLast(depth=1)" in [repr(p) for p in static]
    reliable = [repr(p) for p in to_cyclone_qos(RELIABLE_QOS)]
    assert "Policy.History.KeepLast(depth=10)" in reliable
    assert any("use_cdrv0_representation=True, use_xcdrv2_representation=False" in r for r in reliable)


def test_loopback_config_is_loopback_only():
    root = ET.fromstring(loopback_config())
    dom = root.find("Domain")
    assert dom.get("Id") == "any"
    assert [n.get("name") for n in dom.iter("NetworkInterface")] == ["lo"]
    assert dom.find("General/AllowMulticast").text == "false"
    assert [p.get("Address") for p in dom.iter("Peer")] == ["127.0.0.1"]
    env = loopback_env(domain_id=17, base={})
    assert env["ROS_DOMAIN_ID"] == "17" and env["CYCLONEDDS_URI"].startswith("<CycloneDDS>")
    assert all(0 < unique_domain_id(s) <= 232 for s in (0, 1, 231, 232, 10**6))


def test_parallel_workers_draw_domain_ids_from_disjoint_slices(monkeypatch):
    """Under ``pytest -n 2`` (tests/conftest.py) worker i of n gets PRIOROCC_DDS_DOMAIN_SLICE=i/n:
    the two workers' domain ids never meet, whatever seeds they use, and all stay in 1..232.
    Mutation: ``domain_slice`` ignoring the variable -> the sets intersect and this fails."""
    seeds = range(0, 5000, 7)
    ids = []
    for i in (0, 1):
        monkeypatch.setenv("PRIOROCC_DDS_DOMAIN_SLICE", f"{i}/2")
        ids.append({unique_domain_id(s) for s in seeds})
    assert not ids[0] & ids[1]
    assert all(0 < d <= 232 for d in ids[0] | ids[1]) and min(len(ids[0]), len(ids[1])) > 100
    monkeypatch.setenv("PRIOROCC_DDS_DOMAIN_SLICE", "2 of 2")
    with pytest.raises(ValueError, match="PRIOROCC_DDS_DOMAIN_SLICE.*'2 of 2'"):
        unique_domain_id(1)


def test_participant_starts_with_loopback_config(dds_env):
    """Cyclone accepts the config (an invalid one makes participant creation fail)."""
    from priorocc_ros.dds.participant import DdsContext

    ctx = DdsContext()
    try:
        assert ctx.domain_id == int(dds_env["ROS_DOMAIN_ID"])
    finally:
        ctx.close()
