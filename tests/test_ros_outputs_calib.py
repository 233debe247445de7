"""Output message builders, calibration (CameraInfo, TF, YAML) and the transports."""
import importlib
import sys

import numpy as np
import pytest

from priorocc_core.classes import FREE, OCC_COLORS
from priorocc_core.geometry import transform_from_quat
from priorocc_ros import outputs
from priorocc_ros.calibration import (CalibrationError, CameraCalibration, StaticCalibration, TfBuffer,
                                      camera_info_to_K, load_calibration_yaml, make_camera_info,
                                      matrix_to_transform_stamped, save_calibration_yaml)
from priorocc_ros.msgs import deserialize, header, new_msg, serialize, stamp_to_ns
from priorocc_ros.transport import RELIABLE_QOS, SENSOR_DATA_QOS, TF_STATIC_QOS, QoSProfile, resolve_topic
from priorocc_ros.transport.loopback import LoopbackBus, LoopbackTransport

STAMP = 1_700_000_000_123_456_789


def occ_sample():
    occ = np.full((200, 200, 16), FREE, np.uint8)
    occ[0, 0, 0] = 4  # car at the minimum corner
    occ[199, 100, 15] = 7  # pedestrian at the top
    occ[50, 60, 0] = 11  # driveable surface only: free column for the BEV
    return occ


def test_pointcloud2_fields_positions_labels_colours():
    pc = outputs.voxels_to_pointcloud2(occ_sample(), header(STAMP, "base_link"))
    pc = deserialize(serialize(pc), "sensor_msgs/msg/PointCloud2")  # survives CDR
    assert pc.header.frame_id == "base_link" and stamp_to_ns(pc.header.stamp) == STAMP
    assert [(f.name, f.offset, f.datatype) for f in pc.fields] == [
        ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("rgb", 12, 7), ("label", 16, 6)]
    a = outputs.pointcloud2_to_array(pc)
    assert pc.width == 3 and pc.height == 1 and pc.row_step == 3 * pc.point_step
    by_label = {int(r["label"]): r for r in a}
    assert set(by_label) == {4, 7, 11}
    car = by_label[4]
    assert (car["x"], car["y"], car["z"]) == pytest.approx((-39.8, -39.8, -0.8), abs=1e-5)
    ped = by_label[7]
    assert (ped["x"], ped["y"], ped["z"]) == pytest.approx((39.8, 0.2, 5.2), abs=1e-5)
    assert np.array_equal(outputs.unpack_rgb_float(a["rgb"]), OCC_COLORS[a["label"]])
    with pytest.raises(ValueError, match="shape"):
        outputs.voxels_to_pointcloud2(np.zeros((10, 10, 10), np.uint8), header(0, "b"))


def test_markers_one_cube_list_per_class():
    ma = outputs.voxels_to_markers(occ_sample(), header(STAMP, "base_link"))
    ma = deserialize(serialize(ma), "visualization_msgs/msg/MarkerArray")
    add = {m.id: m for m in ma.markers if m.action == 0}
    assert set(add) == {4, 7, 11}
    assert {m.id for m in ma.markers if m.action == 2} == set(range(17)) - {4, 7, 11}
    car = add[4]
    assert car.type == 6 and car.header.frame_id == "base_link" and car.scale.x == pytest.approx(0.4)
    assert (car.color.r, car.color.g, car.color.b) == pytest.approx(tuple(OCC_COLORS[4] / 255.0))
    assert [(p.x, p.y, p.z) for p in car.points] == [pytest.approx((-39.8, -39.8, -0.8))]
    solid = np.full((200, 200, 16), FREE, np.uint8)
    solid[10:13, 10:13, 0:3] = 15
    m = [x for x in outputs.voxels_to_markers(solid, header(0, "b")).markers if x.action == 0][0]
    assert len(m.points) == 26  # the enclosed centre voxel is left out


def test_occupancy_grid_layout_and_states():
    occ = occ_sample()
    vis = np.ones((200, 200), bool)
    vis[120, 130] = False
    g = outputs.voxels_to_occupancy_grid(occ, header(STAMP, "base_link"), visible=vis)
    assert (g.info.width, g.info.height, g.info.resolution) == (200, 200, pytest.approx(0.4))
    assert (g.info.origin.position.x, g.info.origin.position.y) == (-40.0, -40.0)
    grid = np.asarray(g.data).reshape(200, 200)  # [row = y, col = x]
    assert grid[0, 0] == 100 and grid[100, 199] == 100  # obstacles
    assert grid[60, 50] == 0  # driveable surface only: free
    assert grid[130, 120] == -1  # not seen by any camera
    assert (grid == 0).sum() == 200 * 200 - 3


def test_camera_visibility_of_a_ring_covers_the_far_field():
    from tests.ros_helpers import nuscenes_like_rig

    K, c2e = nuscenes_like_rig((900, 1600))
    vis = outputs.camera_visibility(c2e, K, [(900, 1600)] * 6)
    assert vis[199, 100] and vis[0, 100] and vis[100, 199]  # front, back, left
    assert not vis[100, 100]  # under the car


def test_seg_overlay_blends_classes():
    img = np.full((90, 160, 3), 100, np.uint8)
    aug = np.diag([0.5, 0.5, 1.0])
    seg = np.full((45, 80), 255, np.uint8)
    seg[:10] = 4
    ov = outputs.seg_overlay(img, aug, seg, alpha=1.0)
    assert ov.shape == (45, 80, 3)
    assert np.array_equal(ov[0, 0], OCC_COLORS[4]) and np.array_equal(ov[40, 40], [100, 100, 100])
    assert outputs.seg_overlay(img, aug, seg, scale=0.5).shape == (22, 40, 3)


def test_diagnostics_message():
    d = outputs.diagnostics(header(STAMP, "base_link"), "priorocc", "priorocc", 1, "warn", {"a": 1, "b": 0.5})
    d = deserialize(serialize(d), "diagnostic_msgs/msg/DiagnosticArray")
    assert d.status[0].level == 1 and outputs.diagnostics_values(d) == {"a": "1", "b": "0.5"}


def test_camera_info_K_and_zero_K():
    K = np.array([[1266.4, 0, 816.3], [0, 1266.4, 491.5], [0, 0, 1]])
    info = make_camera_info(K, 1600, 900, header(0, "CAM_FRONT"))
    assert np.array_equal(camera_info_to_K(info), K)
    assert np.allclose(np.asarray(info.p).reshape(3, 4)[:, :3], K)
    info.k = np.zeros(9)
    with pytest.raises(CalibrationError, match="CAM_FRONT camera_info: CameraInfo.k is not a valid camera matrix"):
        camera_info_to_K(info, "CAM_FRONT camera_info")


def test_tf_buffer_chains_static_and_dynamic():
    b = TfBuffer()
    cam2base = transform_from_quat([1.7, 0.01, 1.5], [0.5, -0.5, 0.5, -0.5])
    base2map = transform_from_quat([400.0, 1100.0, 0.0], [0.57, -0.01, 0.01, -0.82])
    b.set_tf_message(new_msg("tf2_msgs/msg/TFMessage",
                             transforms=[matrix_to_transform_stamped(cam2base, "base_link", "CAM_FRONT", 0)]), True)
    for t, dx in ((1000, 0.0), (2000, 1.0)):
        m = base2map.copy()
        m[0, 3] += dx
        b.set_transform(matrix_to_transform_stamped(m, "map", "base_link", t), False)
    assert np.allclose(b.lookup("base_link", "CAM_FRONT"), cam2base, atol=1e-9)
    assert np.allclose(b.lookup("CAM_FRONT", "base_link"), np.linalg.inv(cam2base), atol=1e-9)
    got = b.lookup("map", "CAM_FRONT", stamp_ns=1900)
    want = base2map.copy()
    want[0, 3] += 1.0
    assert np.allclose(got, want @ cam2base, atol=1e-6)
    with pytest.raises(CalibrationError, match="no transform from 'CAM_BACK' to 'base_link'"):
        b.lookup("base_link", "CAM_BACK")


def test_calibration_yaml_round_trip(tmp_path):
    m = transform_from_quat([1.0, 2.0, 3.0], [0.5, -0.5, 0.5, -0.5])
    cal = StaticCalibration(cameras={"CAM_FRONT": CameraCalibration("CAM_FRONT", m, np.eye(3) * 2, 1600, 900)})
    save_calibration_yaml(cal, tmp_path / "c.yaml")
    back = load_calibration_yaml(tmp_path / "c.yaml")
    assert np.allclose(back.cameras["CAM_FRONT"].cam2ego, m, atol=1e-9)
    (tmp_path / "bad.yaml").write_text("cameras: {CAM_FRONT: {frame_id: x}}\n")
    with pytest.raises(CalibrationError, match="bad.yaml, camera CAM_FRONT: needs 'cam2ego'"):
        load_calibration_yaml(tmp_path / "bad.yaml")


def test_qos_and_topic_resolution():
    assert SENSOR_DATA_QOS == QoSProfile("best_effort", "volatile", 5)
    assert RELIABLE_QOS == QoSProfile("reliable", "volatile", 10)
    assert TF_STATIC_QOS == QoSProfile("reliable", "transient_local", 1)
    with pytest.raises(ValueError):
        QoSProfile("sometimes", "volatile", 1)
    assert resolve_topic("~/voxels", "priorocc") == "/priorocc/voxels"
    assert resolve_topic("/CAM_FRONT/camera_info", "priorocc") == "/CAM_FRONT/camera_info"
    assert resolve_topic("bev", "priorocc", "/car1") == "/car1/bev"


def test_loopback_delivers_and_latches():
    bus = LoopbackBus()
    a, b = LoopbackTransport("a", bus), LoopbackTransport("b", bus, parameters={"x": 3})
    got = []
    pub = a.create_publisher("std_msgs/msg/Header", "/tf_static_like", TF_STATIC_QOS)
    pub.publish(header(1, "f"))  # before anyone subscribes
    b.create_subscription("std_msgs/msg/Header", "/tf_static_like", got.append, TF_STATIC_QOS)
    a.create_publisher("std_msgs/msg/Header", "~/out", RELIABLE_QOS).publish(header(2, "g"))
    b.create_subscription("std_msgs/msg/Header", "/a/out", got.append, RELIABLE_QOS)
    a.create_publisher("std_msgs/msg/Header", "~/out", RELIABLE_QOS).publish(header(3, "g"))
    assert [stamp_to_ns(h.stamp) for h in got] == [1, 3]
    assert b.declare_parameter("x", 1) == 3 and b.declare_parameter("y", "d") == "d"
    # another type on the topic: as in DDS, no match (no delivery, no exception), but visible
    a.create_publisher("sensor_msgs/msg/Image", "/a/out", RELIABLE_QOS).publish(new_msg("sensor_msgs/msg/Image"))
    assert len(got) == 2 and b.publisher_types("/a/out") == {"std_msgs/msg/Header", "sensor_msgs/msg/Image"}


# --------------------------------------------------------------------------- node entry point and launch file
def test_node_module_imports_without_rclpy_and_launch_file_parses():
    import priorocc_ros.occupancy_node as node
    import priorocc_ros.transport.rclpy_transport  # noqa: F401 - imports rclpy lazily

    ap = node.build_parser()
    a = ap.parse_args(["--transport", "dds", "-p", "slop:=0.05", "-p", "cameras:=[CAM_FRONT]"])
    assert dict(a.param) == {"slop": 0.05, "cameras": ["CAM_FRONT"]}
    if importlib.util.find_spec("rclpy") is None:
        assert "rclpy" not in sys.modules
    # the launch file: valid Python whose imports are ROS 2 launch packages
    import ast
    from pathlib import Path

    src = (Path(__file__).resolve().parents[1] / "launch" / "occupancy.launch.py").read_text()
    tree = ast.parse(src)
    mods = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {"launch", "launch_ros"} <= mods
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)


def test_marker_points_serialise_in_one_slice_byte_identical_to_rosbags():
    """msgs.serialize's MarkerArray fast path (PointList spliced in as bytes) gives exactly
    rosbags' generic CDR, for markers after strings of every length mod 4, one-point markers,
    DELETE markers and plain-list points. Mutation: the sentinel's 24 bytes left in the output
    (pos = at) -> bytes differ. (In Marker the points length always ends 8-aligned, after the
    8-aligned pose, so the padded branch is not reached by this type.)"""
    from priorocc_core.classes import FREE
    from priorocc_ros.msgs import PointList, msg_class, typestore

    rng = np.random.default_rng(1)
    occ = np.full((200, 200, 16), FREE, np.uint8)
    occ[:40, :50, 4] = rng.integers(1, 11, size=(40, 50))
    occ[7, 7, 12] = 12  # one-point marker
    ma = outputs.voxels_to_markers(occ, header(STAMP, "base_link"))
    assert any(isinstance(m.points, PointList) and len(m.points) > 1 for m in ma.markers)
    Marker = msg_class("visualization_msgs/msg/Marker")
    for ns in ("", "a", "ab", "abcde"):  # shifts the alignment of what follows
        extra = new_msg("visualization_msgs/msg/Marker", ns=ns, points=PointList(rng.normal(size=(5, 3))),
                        text="x" * len(ns), type=Marker.CUBE_LIST)
        arr = new_msg("visualization_msgs/msg/MarkerArray", markers=[extra] + list(ma.markers) + [extra])
        assert serialize(arr) == bytes(typestore().serialize_cdr(arr, "visualization_msgs/msg/MarkerArray")), ns
    back = deserialize(serialize(ma), "visualization_msgs/msg/MarkerArray")
    for a, b in zip(ma.markers, back.markers):
        assert [(p.x, p.y, p.z) for p in a.points] == [(p.x, p.y, p.z) for p in b.points]
