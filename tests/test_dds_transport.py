"""DdsTransport: two nodes in one process talking over loopback-only Cyclone DDS."""
from __future__ import annotations

import itertools
import os
import threading
import time

import numpy as np
import pytest

from benchmarks.local_dds import loopback_env, unique_domain_id
from priorocc_ros.msgs import new_msg
from priorocc_ros.transport.base import RELIABLE_QOS, SENSOR_DATA_QOS, TF_STATIC_QOS, QoSProfile

_COUNTER = itertools.count(1)


@pytest.fixture
def dds_env(monkeypatch):
    """Loopback-only Cyclone with a domain id of its own for this test."""
    env = loopback_env(domain_id=unique_domain_id(os.getpid() * 11 + next(_COUNTER)))
    monkeypatch.setenv("CYCLONEDDS_URI", env["CYCLONEDDS_URI"])
    monkeypatch.setenv("ROS_DOMAIN_ID", env["ROS_DOMAIN_ID"])
    return env


@pytest.fixture
def nodes(dds_env):
    from priorocc_ros.transport.dds_transport import DdsTransport

    made = []

    def make(name, **kw):
        t = DdsTransport(name, **kw)
        made.append(t)
        return t

    yield make
    for t in made:
        t.shutdown()


def _spin(t):
    th = threading.Thread(target=t.spin, daemon=True)
    th.start()
    return th


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_publish_subscribe_in_order_with_payload(nodes):
    a, b = nodes("talker"), nodes("listener")
    got = []
    deep = QoSProfile("reliable", "volatile", 50)  # keep-last 10 would (rightly) drop a burst of 20
    b.create_subscription("sensor_msgs/msg/CompressedImage", "/cam/image", got.append, deep)
    th = _spin(b)
    pub = a.create_publisher("sensor_msgs/msg/CompressedImage", "/cam/image", deep)
    assert _wait(lambda: pub.get_subscription_count() == 1)
    rng = np.random.default_rng(0)
    sent = [rng.integers(0, 256, 20_000 + i, dtype=np.uint8) for i in range(20)]
    for i, data in enumerate(sent):
        pub.publish(new_msg("sensor_msgs/msg/CompressedImage", format="jpeg", data=data,
                            header=new_msg("std_msgs/msg/Header", frame_id=f"f{i}")))
    assert _wait(lambda: len(got) == len(sent)), f"received {len(got)} of {len(sent)}"
    assert [m.header.frame_id for m in got] == [f"f{i}" for i in range(len(sent))]
    assert all(m.data.tobytes() == d.tobytes() for m, d in zip(got, sent))
    b.shutdown()
    th.join(5)
    assert not th.is_alive()


def test_private_topic_resolution_and_best_effort(nodes):
    a, b = nodes("priorocc"), nodes("viewer")
    got = []
    b.create_subscription("nav_msgs/msg/OccupancyGrid", "/priorocc/bev", got.append, SENSOR_DATA_QOS)
    _spin(b)
    pub = a.create_publisher("nav_msgs/msg/OccupancyGrid", "~/bev", SENSOR_DATA_QOS)
    assert pub.topic == "/priorocc/bev"
    assert _wait(lambda: pub.get_subscription_count() == 1)
    pub.publish(new_msg("nav_msgs/msg/OccupancyGrid", data=np.array([0, 100, -1], dtype=np.int8)))
    assert _wait(lambda: len(got) == 1)
    assert got[0].data.tolist() == [0, 100, -1]


def test_tf_static_latched_for_late_subscriber(nodes):
    a = nodes("static_broadcaster")
    pub = a.create_publisher("tf2_msgs/msg/TFMessage", "/tf_static", TF_STATIC_QOS)
    pub.publish(new_msg("tf2_msgs/msg/TFMessage", transforms=[
        new_msg("geometry_msgs/msg/TransformStamped", child_frame_id="CAM_FRONT",
                header=new_msg("std_msgs/msg/Header", frame_id="base_link"))]))
    b = nodes("late")
    got = []
    b.create_subscription("tf2_msgs/msg/TFMessage", "/tf_static", got.append, TF_STATIC_QOS)
    _spin(b)
    assert _wait(lambda: len(got) == 1), "transient-local sample not delivered to a late subscriber"
    assert got[0].transforms[0].child_frame_id == "CAM_FRONT"


def test_bad_samples_and_callback_errors_are_counted_not_fatal(nodes, monkeypatch):
    from cyclonedds.core import DDSException

    from priorocc_ros.dds import participant
    from priorocc_ros.dds.participant import CodecError, DdsContext, encode

    # A sample that Cyclone accepts but the codec rejects (e.g. a foreign publisher whose
    # definition differs under the same name) must be counted and skipped: simulate the
    # codec failing for width == 7.
    real_decode = participant.decode

    def picky_decode(data, type_name, codec="cdr"):
        msg = real_decode(data, type_name, codec)
        if getattr(msg, "width", None) == 7:
            raise CodecError("simulated foreign definition")
        return msg

    monkeypatch.setattr(participant, "decode", picky_decode)
    b = nodes("listener", max_sample_bytes=50_000)
    got = []

    def cb(msg):
        if msg.width == 13:
            raise RuntimeError("boom")
        got.append(msg.width)

    b.create_subscription("sensor_msgs/msg/CameraInfo", "/cam/info", cb, RELIABLE_QOS)
    b.create_subscription("sensor_msgs/msg/CompressedImage", "/cam/big", lambda m: got.append("big"), RELIABLE_QOS)
    _spin(b)
    ctx = DdsContext()  # a raw writer can put any bytes on the topic
    try:
        w = ctx.writer("sensor_msgs/msg/CameraInfo", "/cam/info", RELIABLE_QOS)
        big = ctx.writer("sensor_msgs/msg/CompressedImage", "/cam/big", RELIABLE_QOS)
        assert _wait(lambda: w.matched_count() == 1 and big.matched_count() == 1)

        def info(width):
            return encode(new_msg("sensor_msgs/msg/CameraInfo", width=width), "sensor_msgs/msg/CameraInfo")

        # Cyclone checks CDR against the registered type: a truncated sample never gets out.
        with pytest.raises(DDSException, match="BAD_PARAMETER"):
            w.write_cdr(participant.strip_padding(info(1))[:40])
        w.write_cdr(info(1))
        w.write_cdr(info(7))  # codec error
        w.write_cdr(info(13))  # callback raises
        big.write_cdr(encode(new_msg("sensor_msgs/msg/CompressedImage", data=np.zeros(60_000, np.uint8)),
                             "sensor_msgs/msg/CompressedImage"))  # over max_sample_bytes
        w.write_cdr(info(2))
        assert _wait(lambda: got == [1, 2]), got
        assert _wait(lambda: b.stats["decode_errors"] == 1 and b.stats["callback_errors"] == 1
                     and b.stats["oversized"] == 1), dict(b.stats)
    finally:
        ctx.close()


def test_timers_parameters_and_sim_time(nodes):
    b = nodes("timed", parameters={"use_sim_time": "true", "slop": "0.05", "cams": "[A, B]", "n": "3"})
    assert b.use_sim_time is True
    assert b.declare_parameter("slop", 0.1) == pytest.approx(0.05)
    assert b.declare_parameter("cams", ["X"]) == ["A", "B"]
    assert b.declare_parameter("n", 1) == 3
    assert b.declare_parameter("absent", "dflt") == "dflt"
    with pytest.raises(ValueError, match="parameter 'bad'"):
        nodes("p2", parameters={"bad": "xyz"}).declare_parameter("bad", 1.0)
    ticks = []
    b.create_timer(0.05, lambda: ticks.append(time.monotonic()))
    _spin(b)
    assert b.now_ns() == 0  # no /clock yet: ROS sim time starts at 0
    a = nodes("clock")
    pub = a.create_publisher("rosgraph_msgs/msg/Clock", "/clock", SENSOR_DATA_QOS)
    assert _wait(lambda: pub.get_subscription_count() == 1)
    pub.publish(new_msg("rosgraph_msgs/msg/Clock", clock=new_msg("builtin_interfaces/msg/Time", sec=42, nanosec=7)))
    assert _wait(lambda: b.now_ns() == 42_000_000_007)
    assert _wait(lambda: len(ticks) >= 4)


def test_shutdown_is_idempotent_and_spin_after_shutdown_fails(nodes):
    t = nodes("once")
    th = _spin(t)
    time.sleep(0.05)
    t0 = time.monotonic()
    t.shutdown()
    th.join(5)
    assert not th.is_alive() and time.monotonic() - t0 < 2.0
    t.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        t.spin()


def test_cdr_tap_gets_the_bytes_written_and_taken(nodes):
    """``Transport.cdr_tap`` (the Foxglove live view) is handed the CDR the DDS writer wrote for a
    publication and the sample the reader took for a subscription, the same bytes, with the
    message's header stamp; inputs go through ``publish_input``.

    Mutations: ``tap_out`` after ``write_cdr`` removed -> no publication tapped; ``tap_in`` in
    ``_dispatch`` removed -> no input tapped; ``tap_out`` given ``encode(...)`` anew instead of
    ``data`` -> still equal bytes, so also checked: the tapped object is the one written."""
    from priorocc_ros.dds.participant import decode

    class Tap:
        def __init__(self):
            self.out, self.inp = [], []

        def publish(self, topic, type_name, data, stamp_ns):
            self.out.append((topic, type_name, data, stamp_ns))

        def publish_input(self, topic, type_name, data, stamp_ns):
            self.inp.append((topic, type_name, data, stamp_ns))

    a, b = nodes("talker"), nodes("listener")
    ta, tb = Tap(), Tap()
    a.cdr_tap, b.cdr_tap = ta, tb
    got = []
    b.create_subscription("sensor_msgs/msg/CompressedImage", "/cam/image", got.append, RELIABLE_QOS)
    th = _spin(b)
    pub = a.create_publisher("sensor_msgs/msg/CompressedImage", "/cam/image", RELIABLE_QOS)
    assert _wait(lambda: pub.get_subscription_count() == 1)
    written = []
    real_write = pub.writer.write_cdr
    pub.writer.write_cdr = lambda data, *a_: (written.append(data), real_write(data, *a_))[1]
    stamp = 1_533_000_000_123_456_789
    msg = new_msg("sensor_msgs/msg/CompressedImage", format="jpeg", data=np.arange(7, dtype=np.uint8),
                  header=new_msg("std_msgs/msg/Header", frame_id="f",
                                 stamp=new_msg("builtin_interfaces/msg/Time", sec=stamp // 10**9,
                                               nanosec=stamp % 10**9)))
    pub.publish(msg)
    assert _wait(lambda: len(got) == 1 and len(tb.inp) == 1)
    (topic, ty, data, st), = ta.out
    assert (topic, ty, st) == ("/cam/image", "sensor_msgs/msg/CompressedImage", stamp)
    assert data is written[0]
    assert decode(bytes(data), ty).data.tobytes() == bytes(range(7))
    (itopic, ity, idata, ist), = tb.inp
    assert (itopic, ity, ist) == ("/cam/image", "sensor_msgs/msg/CompressedImage", stamp)
    assert bytes(idata) == bytes(data)
    b.shutdown()
    th.join(5)
