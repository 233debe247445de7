"""Recordings PriorOcc did not write (issue 15): written in the test with rosbags directly
(tests/foreign_recordings.py), in several styles, replayed with ``priorocc_replay`` and played live
into the node over Cyclone DDS; each with the exact count of outputs per topic and the
invariant ``groups_in = out + dropped + failed + incomplete`` holding.

Mutations tried (each makes a test here fail): camera_names ignored in node_core.input_topics
(0 outputs, exit 2 with the mapping error); binning ignored in calibration.camera_info_geometry
(binned style: BEV visibility off by > 30 % of the cells); `_may_complete` always True (the
dropped-camera style still passes the replay, the unit test in test_ros_sync_runner catches
it); remaps not applied in Transport.resolve_topic (remap style: exit 2).
"""
from __future__ import annotations

import itertools
import os
import threading
import time

import numpy as np
import pytest

from tests.foreign_recordings import LOWER, MODEL_CAMERAS, Style, counts_by_topic, micro_checkpoint, write_foreign_bag

OUT = ["/priorocc/voxels", "/priorocc/markers", "/priorocc/bev"] + [f"/priorocc/seg_overlay/{c}" for c in MODEL_CAMERAS]
NS_PARAMS = {"image_topic": "/cameras/{camera}/image_raw", "camera_info_topic": "/cameras/{camera}/camera_info",
             "camera_names": list(LOWER)}
REMAP_TOPIC = {"image": "img", "info": "info"}


def _remap_topic(kind, name):
    return f"/sensors/{name.replace('cam_', '')}/{REMAP_TOPIC[kind]}"


REMAPS = [f"/{c}/image_rect:={_remap_topic('image', n)}" for c, n in zip(MODEL_CAMERAS, LOWER)] + \
    [f"/{c}/camera_info:={_remap_topic('info', n)}" for c, n in zip(MODEL_CAMERAS, LOWER)]

# a camera missing from a group: incomplete, as these tests count (missing_camera:=degrade, the
# default, runs such groups degraded: tests/test_ros_degraded.py)
WAIT_PARAMS = {**NS_PARAMS, "missing_camera": "wait"}
STYLES = {
    # raw bgr8 with padded rows, lowercase names under a namespace, optical frames via a TF chain
    "bgr8_namespace_tf_chain": (Style("bgr8_namespace_tf_chain", "bgr8", "mcap", pad=16), NS_PARAMS, []),
    # rgb8 in sqlite3, one camera dropped from set 1, another camera at another size
    "rgb8_sqlite_dropped": (Style("rgb8_sqlite_dropped", "rgb8", "sqlite3", skip={(1, "cam_back")},
                                  sizes={"cam_back_right": (112, 200)}, info_after=True), WAIT_PARAMS, []),
    # mono8, a camera that stops after two sets
    "mono8_camera_stops": (Style("mono8_camera_stops", "mono8", "mcap", n_sets=5, stops={"cam_front_right": 2}),
                           WAIT_PARAMS, []),
    # images binned 2x2 by the driver, full-resolution CameraInfo; other topic names, mapped with -r
    "binned_remapped": (Style("binned_remapped", "bgr8", "mcap", binning=2, topic=_remap_topic), {}, REMAPS),
}


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return micro_checkpoint(tmp_path_factory.mktemp("ckpt") / "micro")


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign")
    return {name: (root / name, write_foreign_bag(root / name, st, seed=i), st, params, remaps)
            for i, (name, (st, params, remaps)) in enumerate(STYLES.items())}


def _check_node_counts(n: dict, st: Style) -> None:
    good = len(st.complete_sets())
    assert n["sets_out"] == good and n["sets_failed"] == 0 and n["sets_dropped"] == 0, {k: v for k, v in n.items() if not k.startswith("latency")}
    assert n["incomplete_sets"] == st.groups() - good, {k: v for k, v in n.items() if not k.startswith("latency")}
    assert n["groups_in"] == st.groups() and n["unaccounted"] == 0 and n["in_progress"] == 0, n["invariant"]


@pytest.mark.parametrize("name", list(STYLES))
def test_replay_foreign_recording(name, bags, micro, tmp_path):
    from priorocc_ros.replay import main

    bag, info, st, params, remaps = bags[name]
    argv = [str(bag), "--out", str(tmp_path / "out"), "--checkpoint", str(micro), "--json", str(tmp_path / "s.json")]
    argv += [a for k, v in params.items() for a in ("-p", f"{k}:={v if not isinstance(v, list) else '[' + ','.join(v) + ']'}")]
    argv += [a for r in remaps for a in ("-r", r)]
    assert main(argv) == 0
    import json

    s = json.loads((tmp_path / "s.json").read_text())
    _check_node_counts(s["node"], st)
    assert s["messages_read"] == info["messages"] and not s["bag_errors"]
    counts = counts_by_topic(tmp_path / "out")  # read back with rosbags' own reader
    assert {t: counts.get(t, 0) for t in OUT} == {t: len(st.complete_sets()) for t in OUT}
    if name == "binned_remapped":
        _check_binned_visibility(tmp_path / "out", bags, micro, tmp_path)


def _bev_unknown(bag):
    from rosbags.rosbag2 import Reader

    from tests.foreign_recordings import TS

    with Reader(bag) as r:
        conns = [c for c in r.connections if c.topic == "/priorocc/bev"]
        return [np.asarray(TS.deserialize_cdr(raw, c.msgtype).data) == -1 for c, _, raw in r.messages(conns)]


def _check_binned_visibility(out, bags, micro, tmp_path):
    """Issue 15 #6: binned 80 x 45 images with a 160 x 90 CameraInfo see what the full-resolution
    images of the same rig see (K scaled by the binning); without it the BEV is mostly unknown."""
    from priorocc_ros.replay import replay

    bag, _, _, params, _ = bags["bgr8_namespace_tf_chain"]
    ref = replay(bag, tmp_path / "ref", parameters={"checkpoint": str(micro), **params})
    assert ref.node["sets_out"] == 4
    a, b = _bev_unknown(out)[0], _bev_unknown(tmp_path / "ref")[0]
    assert 0.05 < b.mean() < 0.95  # the check can fail: some cells unseen, most seen
    assert np.mean(a != b) < 0.02, (a.mean(), b.mean())


def test_list_shows_the_mapping_and_no_match_is_one_line(bags, micro, tmp_path, capsys):
    """Issue 15 #1: the recording as written, without a mapping: exit 2, one line naming the
    parameters (it gave 0 outputs, 'errors: none', exit 0); --list shows which topic feeds which
    camera."""
    from priorocc_ros.replay import main

    bag = bags["bgr8_namespace_tf_chain"][0]
    assert main([str(bag), "--out", str(tmp_path / "o"), "--checkpoint", str(micro)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "image_topic" in err and "camera_names" in err and "-r FROM:=TO" in err and "/cameras/cam_front/image_raw" in err
    assert not (tmp_path / "o").exists()
    assert main([str(bag), "--list", "-p", "image_topic:=/cameras/{camera}/image_raw",
                 "-p", "camera_info_topic:=/cameras/{camera}/camera_info", "-p", f"camera_names:=[{','.join(LOWER)}]"]) == 0
    out = capsys.readouterr().out
    assert "transport: Image, detected" in out
    for cam, name in zip(MODEL_CAMERAS, LOWER):
        line = next(ln for ln in out.splitlines() if f"/cameras/{name}/image_raw " in ln)
        assert line.rstrip().endswith(f"-> {cam} image")
        line = next(ln for ln in out.splitlines() if f"/cameras/{name}/camera_info " in ln)
        assert line.rstrip().endswith(f"-> {cam} camera_info")
    # the model's camera slots cannot be renamed: one line naming the parameter, no traceback
    assert main([str(bag), "--out", str(tmp_path / "o"), "--checkpoint", str(micro),
                 "-p", f"cameras:=[{','.join(LOWER)}]", "-p", "image_topic:=/cameras/{camera}/image_raw",
                 "-p", "camera_info_topic:=/cameras/{camera}/camera_info"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "parameter cameras=" in err and "camera_names" in err


# --------------------------------------------------------------------------- live over DDS
_COUNTER = itertools.count(1)


@pytest.fixture
def dds_env(monkeypatch):
    from benchmarks.local_dds import loopback_env, unique_domain_id

    env = loopback_env(domain_id=unique_domain_id(os.getpid() * 7 + 100 + next(_COUNTER)))
    monkeypatch.setenv("CYCLONEDDS_URI", env["CYCLONEDDS_URI"])
    monkeypatch.setenv("ROS_DOMAIN_ID", env["ROS_DOMAIN_ID"])
    return env


def play_live_dds(bag, params, remaps, predictor, period_scale=1.0):
    """The node (DdsTransport) and a player and a recorder (DdsTransport) in this process, on a
    loopback DDS domain; the bag's messages are published at their log-time pace. Returns
    (node stats, {output topic: messages received})."""
    from priorocc_ros.bagio import read_messages
    from priorocc_ros.node_core import OccupancyNodeCore
    from priorocc_ros.transport.base import RELIABLE_QOS, SENSOR_DATA_QOS, TF_STATIC_QOS, parse_remaps
    from priorocc_ros.transport.dds_transport import DdsTransport

    node_t = DdsTransport("priorocc", parameters={"queue_size": 50, "compressed": False, **params})
    node_t.remaps = parse_remaps(remaps, "priorocc")
    player = DdsTransport("player")
    got = {t: 0 for t in OUT}
    lock = threading.Lock()

    def rec(topic):
        def cb(_msg):
            with lock:
                got[topic] += 1
        return cb

    try:
        core = OccupancyNodeCore(node_t, predictor=predictor)
        for topic, ty in core.published_topics().items():
            if topic in got:
                player.create_subscription(ty, topic, rec(topic), RELIABLE_QOS)
        threads = [threading.Thread(target=t.spin, daemon=True) for t in (node_t, player)]
        for th in threads:
            th.start()
        msgs = list(read_messages(bag))
        pubs = {}
        for topic, ty, _, _ in msgs:
            if topic not in pubs:
                pubs[topic] = player.create_publisher(ty, topic, TF_STATIC_QOS if topic == "/tf_static" else
                                                      RELIABLE_QOS)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(p.get_subscription_count() >= 1 for p in pubs.values()):
            time.sleep(0.02)
        time.sleep(0.3)
        t_wall, t_bag = time.monotonic(), msgs[0][2]
        for topic, ty, t, m in msgs:
            delay = (t - t_bag) * 1e-9 * period_scale - (time.monotonic() - t_wall)
            if delay > 0:
                time.sleep(delay)
            pubs[topic].publish(m)
        # every image reached the node (on a loaded machine delivery, and the node's switch of its
        # readers to reliable, input_reliability:=auto, take a while) before it is closed
        n_img = sum(ty in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage") for _, ty, _, _ in msgs)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and core.stats()["images_received"] < n_img:
            time.sleep(0.05)
        time.sleep(0.3)
        assert core.wait_idle(60)
        core.close(drain=True)
        n_out = core.stats()["sets_out"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(v < n_out for v in got.values()):
            time.sleep(0.02)
        return core.stats(), dict(got)
    finally:
        player.shutdown()
        node_t.shutdown()


@pytest.fixture(scope="module")
def micro_predictor(micro):
    from priorocc_core.backends import make_predictor

    return make_predictor(micro)


@pytest.mark.parametrize("name", list(STYLES))
def test_live_dds_foreign_recording(name, bags, micro_predictor, dds_env):
    bag, _, st, params, remaps = bags[name]
    stats, got = play_live_dds(bag, params, remaps, micro_predictor)
    _check_node_counts(stats, st)
    assert got == {t: len(st.complete_sets()) for t in OUT}
