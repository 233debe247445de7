"""The node's behaviour (OccupancyNodeCore over the loopback transport) and offline replay,
with the tiny model: outputs, frame ids, stamps, sizes, and bad input counted, not fatal."""

import numpy as np
import pytest

from priorocc_core.classes import CAMERAS
from priorocc_ros.bagio import bag_topics, read_messages
from priorocc_ros.calibration import make_camera_info, matrix_to_transform_stamped
from priorocc_ros.image_codec import decode_image, encode_compressed
from priorocc_ros.msgs import header, new_msg, stamp_to_ns
from priorocc_ros.outputs import diagnostics_values, pointcloud2_to_array
from tests.ros_helpers import make_tiny_checkpoint, nuscenes_like_rig, write_camera_bag
from priorocc_ros.transport.base import SENSOR_DATA_QOS, TF_STATIC_QOS
from priorocc_ros.transport.loopback import LoopbackBus, LoopbackTransport

OUTPUT_TOPICS = ["/priorocc/voxels", "/priorocc/markers", "/priorocc/bev"] + [
    f"/priorocc/seg_overlay/{c}" for c in CAMERAS]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def predictor(ckpt):
    from priorocc_core.backends import make_predictor

    return make_predictor(ckpt)


def check_outputs(msgs_by_topic, stamps, input_hw=(64, 176)):
    for topic in OUTPUT_TOPICS:
        got = msgs_by_topic[topic]
        assert len(got) == len(stamps), topic
        for (t, m), s in zip(got, stamps):
            hdr = m.markers[0].header if topic.endswith("markers") else m.header
            assert hdr.frame_id == "base_link", topic
            assert stamp_to_ns(hdr.stamp) == s == t, topic
            if topic.endswith("voxels"):
                a = pointcloud2_to_array(m)
                assert len(a) == m.width and np.all(a["label"] <= 16)
                assert np.all(np.abs(a["x"]) < 40) and np.all((a["z"] > -1) & (a["z"] < 5.4))
            elif topic.endswith("bev"):
                assert (m.info.width, m.info.height) == (200, 200) and len(m.data) == 40000
                assert set(np.unique(m.data)) <= {-1, 0, 100}
            elif "seg_overlay" in topic:
                assert (m.height, m.width) == input_hw and decode_image(m).shape == (*input_hw, 3)
            else:
                assert all(mk.type == 6 for mk in m.markers)


# --------------------------------------------------------------------------- live node (loopback)
def _publish_set(pub_t, k, K, bad=None, hw=(90, 160)):
    rng = np.random.default_rng(k)
    stamps = []
    for i, cam in enumerate(CAMERAS):
        t = 1_700_000_000_000_000_000 + k * 83_333_333 + i * 5_000_000
        stamps.append(t)
        hdr = header(t, cam)
        info = make_camera_info(K[i], hw[1], hw[0], hdr)
        img = encode_compressed((rng.random((*hw, 3)) * 255).astype(np.uint8), hdr)
        if bad == "corrupt_jpeg" and cam == "CAM_BACK":
            img.data = img.data[: len(img.data) // 3]
        if bad == "zero_K" and cam == "CAM_FRONT":
            info.k = np.zeros(9)
        if bad == "wrong_encoding" and cam == "CAM_FRONT_LEFT":
            img = new_msg("sensor_msgs/msg/CompressedImage", header=hdr, format="jpeg",
                          data=np.frombuffer(b"\x00\x01garbage", np.uint8))
        pub_t.create_publisher("sensor_msgs/msg/CameraInfo", f"/{cam}/camera_info", SENSOR_DATA_QOS).publish(info)
        pub_t.create_publisher("sensor_msgs/msg/CompressedImage", f"/{cam}/image_rect_compressed",
                               SENSOR_DATA_QOS).publish(img)
    return stamps[1]  # CAM_FRONT is the set's stamp


def test_node_core_publishes_every_output_and_survives_bad_input(predictor):
    from priorocc_ros.node_core import OccupancyNodeCore

    bus = LoopbackBus()
    node_t = LoopbackTransport("priorocc", bus)
    core = OccupancyNodeCore(node_t, predictor=predictor, parameters={"queue_size": 10})
    pub_t = LoopbackTransport("player", bus)
    K, c2e = nuscenes_like_rig((90, 160))
    pub_t.create_publisher("tf2_msgs/msg/TFMessage", "/tf_static", TF_STATIC_QOS).publish(
        new_msg("tf2_msgs/msg/TFMessage",
                transforms=[matrix_to_transform_stamped(c2e[i], "base_link", c, 0) for i, c in enumerate(CAMERAS)]))
    good = []
    for k, bad in enumerate([None, "corrupt_jpeg", None, "zero_K", None, "wrong_encoding", None]):
        s = _publish_set(pub_t, k, K, bad)
        if bad is None:
            good.append(s)
        assert core.wait_idle(60)
    core.close()
    st = core.stats()
    assert st["sets_in"] == 7 and st["sets_out"] == 4 and st["sets_failed"] == 3 and st["sets_dropped"] == 0
    assert st["errors_decode"] == 2 and st["errors_calibration"] == 1 and st["errors_camera_info"] == 1
    assert st["sets_out"] == st["sets_in"] - st["sets_dropped"] - st["sets_failed"]
    assert st["groups_in"] == 7 and st["unaccounted"] == 0 and st["in_progress"] == 0
    by_topic = {t: [(stamp_to_ns((m.markers[0] if hasattr(m, "markers") else m).header.stamp), m) for m in v]
                for t, v in bus.published.items() if t in OUTPUT_TOPICS}
    check_outputs(by_topic, good)
    warnings = node_t.logger.messages("warning")
    assert any("CAM_BACK: JPEG data is truncated" in w for w in warnings)
    assert any("CAM_FRONT camera_info (/CAM_FRONT/camera_info): CameraInfo.k is not a valid camera matrix" in w
               for w in warnings)
    assert any("CAM_FRONT_LEFT" in w and "neither JPEG nor PNG" in w for w in warnings)
    diag = diagnostics_values(bus.published["/diagnostics"][-1])
    assert diag["sets_in"] == "7" and diag["sets_out"] == "4" and diag["sets_failed"] == "3"


def test_node_core_size_limit_and_missing_tf(predictor):
    from priorocc_ros.node_core import OccupancyNodeCore

    bus = LoopbackBus()
    node_t = LoopbackTransport("priorocc", bus, parameters={"max_image_pixels": 1000})
    core = OccupancyNodeCore(node_t, predictor=predictor)
    pub_t = LoopbackTransport("player", bus)
    K, _ = nuscenes_like_rig((90, 160))
    _publish_set(pub_t, 0, K)  # 90 x 160 JPEGs > 3000 bytes: rejected in the callback
    assert core.wait_idle(30)
    st = core.stats()
    assert st["images_rejected"] == 6 and st["sets_in"] == 0 and st["errors_size"] == 6
    node_t.parameters_override = {}
    bus2 = LoopbackBus()
    core2 = OccupancyNodeCore(LoopbackTransport("priorocc", bus2), predictor=predictor)
    _publish_set(LoopbackTransport("p", bus2), 0, K)  # no /tf_static and no calibration file
    assert core2.wait_idle(30)
    core2.close()
    assert core2.stats()["errors_calibration"] == 1 and "no extrinsics" in core2.last_error


# --------------------------------------------------------------------------- replay
def test_replay_counts_bad_sets_and_carries_on(tmp_path, ckpt):
    from priorocc_ros.replay import main, replay

    def mutate(k, cam, im, info):
        if k == 1 and cam == "CAM_BACK":
            im.data = im.data[: len(im.data) // 2]  # corrupt (cut) JPEG
        if k == 2 and cam == "CAM_FRONT":
            info.k = np.zeros(9)  # zero K
        if k == 4 and cam == "CAM_BACK_LEFT":
            return None, info  # camera missing: incomplete set
        return None

    info = write_camera_bag(tmp_path / "in", n_sets=6, mutate=mutate, jitter_ns=10_000_000)
    # missing_camera:=wait: the group without CAM_BACK_LEFT is incomplete (degrade: tests/test_ros_degraded.py)
    summary = replay(tmp_path / "in", tmp_path / "out", parameters={"checkpoint": str(ckpt), "missing_camera": "wait"})
    n = summary.node
    assert n["sets_in"] == 5 and n["incomplete_sets"] == 1 and n["sets_failed"] == 2
    assert n["sets_out"] == 3 and n["sets_dropped"] == 0
    assert n["errors_decode"] == 1 and n["errors_calibration"] == 1 and n["errors_camera_info"] == 1
    good = [info["stamps"][k][1] for k in (0, 3, 5)]
    by_topic = {}
    for topic, _, t, m in read_messages(tmp_path / "out"):
        by_topic.setdefault(topic, []).append((t, m))
    check_outputs(by_topic, good)
    assert {"read", "sync", "decode", "model", "build", "write"} <= set(summary.latency_ms)
    assert "sets in 5, out 3, dropped 0, failed 2, incomplete 1" in summary.text()

    # raw sensor_msgs/Image input: wrong encoding and width*height != data length
    def mutate_raw(k, cam, im, info):
        if k == 0 and cam == "CAM_FRONT_RIGHT":
            im.encoding = "rgb9"
        if k == 1 and cam == "CAM_BACK_RIGHT":
            im.data = im.data[:100]
        return None

    info = write_camera_bag(tmp_path / "in_raw", n_sets=3, mutate=mutate_raw, raw=True)
    s_raw = replay(tmp_path / "in_raw", tmp_path / "out_raw", parameters={"checkpoint": str(ckpt)})
    assert s_raw.node["sets_in"] == 3 and s_raw.node["sets_out"] == 1 and s_raw.node["errors_decode"] == 2
    assert "unsupported Image encoding 'rgb9'" in s_raw.node["last_error"] or "expected step*height" in \
        s_raw.node["last_error"]
    assert bag_topics(tmp_path / "out_raw")["/priorocc/voxels"][1] == 1

    # truncated input bag: salvaged, counted, and the replay still writes what it could
    mcap = next((tmp_path / "in").glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: int(len(data) * 0.6)])
    # exit 1: the output is incomplete (issue 15 #11)
    assert main([str(tmp_path / "in"), "--out", str(tmp_path / "out2"), "--checkpoint", str(ckpt)]) == 1
    s2 = replay(tmp_path / "in", tmp_path / "out3", parameters={"checkpoint": str(ckpt)})
    assert any("truncated" in e for e in s2.bag_errors)
    assert bag_topics(tmp_path / "out3")["/diagnostics"][1] >= 1




def test_round_trip_synthetic_world_to_bag_to_replay(tmp_path, ckpt):
    """synthetic world -> nuscenes_to_bag -> bag -> priorocc_replay -> output bag."""
    from priorocc_core.data.synthetic import generate_world
    from priorocc_ros.nuscenes_to_bag import main as to_bag
    from priorocc_ros.replay import replay

    world = tmp_path / "world"
    generate_world(world, n_scenes=1, n_keyframes=2, hw=(90, 160), version="v1.0-mini", progress=False)
    bag = tmp_path / "bag"
    assert to_bag(["--dataroot", str(world), "--version", "v1.0-mini", "--out", str(bag), "--occ-root", str(world),
                   "--quiet"]) == 0
    topics = bag_topics(bag)
    assert topics["/occ_gt/voxels"] == ("sensor_msgs/msg/PointCloud2", 2)
    assert topics["/CAM_FRONT/image_rect_compressed"][1] == 2
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(version="v1.0-mini", dataroot=str(world), verbose=False)
    stamps = sorted(nusc.get("sample_data", s["data"]["CAM_FRONT"])["timestamp"] * 1000 for s in nusc.sample)
    summary = replay(bag, tmp_path / "out", parameters={"checkpoint": str(ckpt)})
    n = summary.node
    assert n["sets_in"] == 2 == n["sets_out"] and n["sets_dropped"] == 0 and n["sets_failed"] == 0
    assert n["incomplete_sets"] == 0 and not summary.bag_errors
    by_topic = {}
    for topic, _, t, m in read_messages(tmp_path / "out"):
        by_topic.setdefault(topic, []).append((t, m))
    check_outputs(by_topic, stamps)
    assert diagnostics_values(by_topic["/diagnostics"][-1][1])["sets_out"] == "2"


def test_replay_summary_names_the_backend():
    """Issue 31 item 10: the replay summary says which backend, precision and device ran and
    why (auto's choice; before only with --verbose). Mutation: the backend line dropped from
    ReplaySummary.text()."""
    from priorocc_ros.replay import ReplaySummary

    s = ReplaySummary("in", "out", backend={"backend": "openvino", "precision": "fp32", "device": "cpu",
                                            "backend_reason": "CPU has avx2 only: OpenVINO fp32"})
    assert "  backend openvino fp32 on cpu (CPU has avx2 only: OpenVINO fp32)" in s.text().splitlines()
    assert s.as_dict()["backend"]["backend"] == "openvino"
    assert "  backend injected" in ReplaySummary("in", "out", backend={"backend": "injected"}).text().splitlines()
