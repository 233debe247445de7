"""The Foxglove live-view server (priorocc_ros/foxglove.py) on its own, no model: channels with
complete ros2msg schemas carrying the node's CDR bytes unchanged; a stalled client held to a
bounded outbox, counted and never waited for; bad clients each logged once, the server alive."""
import json
import socket
import struct
import threading
import time

import numpy as np
import pytest

pytest.importorskip("foxglove", reason="foxglove-sdk (requirements.txt) is not installed")

from mcap_ros2._dynamic import generate_dynamic  # noqa: E402

from priorocc_ros.foxglove import FoxgloveSink  # noqa: E402
from priorocc_ros.msgs import deserialize, header, new_msg, ros2msg_definition, serialize  # noqa: E402
from priorocc_ros.transport.loopback import _ListLogger  # noqa: E402
from benchmarks import foxglove_clients as fc  # noqa: E402

STAMP = 1_533_000_000_123_456_789


def _messages():
    """One message of every output type the node publishes, and of /tf_static's."""
    h = header(STAMP, "base_link")
    field = new_msg("sensor_msgs/msg/PointField", name="x", offset=0, datatype=7, count=1)
    marker = new_msg("visualization_msgs/msg/Marker", header=h, type=6,
                     points=[new_msg("geometry_msgs/msg/Point", x=1.0, y=2.0, z=3.0)])
    tf = new_msg("geometry_msgs/msg/TransformStamped", header=header(STAMP, "base_link"), child_frame_id="CAM_FRONT")
    return {
        "/priorocc/voxels": ("sensor_msgs/msg/PointCloud2", new_msg(
            "sensor_msgs/msg/PointCloud2", header=h, height=1, width=2, fields=[field], point_step=4, row_step=8,
            data=np.arange(8, dtype=np.uint8), is_dense=True)),
        "/priorocc/markers": ("visualization_msgs/msg/MarkerArray",
                              new_msg("visualization_msgs/msg/MarkerArray", markers=[marker])),
        "/priorocc/bev": ("nav_msgs/msg/OccupancyGrid", new_msg("nav_msgs/msg/OccupancyGrid", header=h,
                                                                data=np.array([-1, 0, 100], np.int8))),
        "/priorocc/seg_overlay/CAM_FRONT": ("sensor_msgs/msg/Image", new_msg(
            "sensor_msgs/msg/Image", header=h, height=1, width=2, encoding="rgb8", step=6,
            data=np.arange(6, dtype=np.uint8))),
        "/diagnostics": ("diagnostic_msgs/msg/DiagnosticArray", new_msg(
            "diagnostic_msgs/msg/DiagnosticArray", header=h,
            status=[new_msg("diagnostic_msgs/msg/DiagnosticStatus", name="priorocc: occupancy")])),
        "/tf_static": ("tf2_msgs/msg/TFMessage", new_msg("tf2_msgs/msg/TFMessage", transforms=[tf])),
    }


def _read_frames(s: socket.socket, n_binary: int, timeout: float = 20.0) -> tuple[list[dict], list[bytes]]:
    """Server frames until ``n_binary`` binary ones: (JSON messages, binary payloads)."""
    texts, bins, buf = [], [], b""
    deadline = time.monotonic() + timeout
    while len(bins) < n_binary and time.monotonic() < deadline:
        while len(buf) >= 2:
            n, off = buf[1] & 0x7F, 2
            if n == 126:
                n, off = struct.unpack(">H", buf[2:4])[0], 4
            elif n == 127:
                n, off = struct.unpack(">Q", buf[2:10])[0], 10
            if len(buf) < off + n:
                break
            op, payload, buf = buf[0] & 0x0F, buf[off:off + n], buf[off + n:]
            (texts.append(json.loads(payload)) if op == 1 else bins.append(payload))
        if len(bins) >= n_binary:
            break
        s.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
        try:
            chunk = s.recv(1 << 20)
        except TimeoutError:
            continue
        if not chunk:
            break
        buf += chunk
    return texts, bins


@pytest.fixture
def sink():
    log = _ListLogger("priorocc", echo=False)
    sk = FoxgloveSink(0, logger=log, backlog=8)
    yield sk
    sk.close()


def test_channels_carry_complete_ros2msg_schemas_and_the_same_cdr_bytes(sink):
    """Every output type (and /tf_static) is a channel with schema encoding ros2msg, message
    encoding cdr, the type's full definition (nested MSG: blocks), and each message arrives
    as the very bytes handed over, at its stamp; Foxglove's Python ROS 2 decoder reads it back
    from the advertised schema alone.

    Mutations: schema data = only the first section of the definition (no nested types) ->
    generate_dynamic fails on std_msgs/Header; message_encoding "ros2" -> encoding assertion;
    ``log_time=stamp`` dropped from ``ch.log`` -> timestamp assertion; the bytes re-encoded
    (e.g. ``bytes(data)[:-1]``) -> payload assertion."""
    msgs = _messages()
    datas = {t: serialize(m, ty) for t, (ty, m) in msgs.items()}
    for topic, (ty, _) in msgs.items():
        sink.advertise(topic, ty)
    s, rest = fc.connect(sink.port)
    chans = fc.subscribe_all(s, rest, set(msgs))
    by_id = {i + 1: c for i, c in enumerate(chans)}
    time.sleep(0.3)  # the subscription reaches the server
    for topic, (ty, _) in msgs.items():
        sink.publish(topic, ty, datas[topic], STAMP)
    _, bins = _read_frames(s, len(msgs))
    s.close()
    assert len(bins) == len(msgs)
    for c in chans:
        ty = msgs[c["topic"]][0]
        assert (c["schemaName"], c["schemaEncoding"], c["encoding"]) == (ty, "ros2msg", "cdr")
        assert c["schema"] == ros2msg_definition(ty)
    assert "MSG: std_msgs/Header" in ros2msg_definition("visualization_msgs/msg/MarkerArray")
    for b in bins:
        assert b[0] == 1  # messageData
        sub_id, t = struct.unpack("<IQ", b[1:13])
        c = by_id[sub_id]
        payload = b[13:]
        assert t == STAMP, c["topic"]
        assert payload == datas[c["topic"]], c["topic"]
        decoded = generate_dynamic(c["schemaName"], c["schema"])[c["schemaName"]](payload)
        ours = deserialize(payload, c["schemaName"])
        if c["topic"] == "/tf_static":
            assert decoded.transforms[0].child_frame_id == ours.transforms[0].child_frame_id == "CAM_FRONT"
        elif c["topic"] == "/priorocc/markers":
            assert decoded.markers[0].points[0].z == 3.0
        else:
            assert decoded.header.stamp.sec == STAMP // 10**9 and decoded.header.stamp.nanosec == STAMP % 10**9


def test_stalled_client_is_bounded_counted_and_never_waited_for(sink):
    """A client subscribes and never reads while 300 one-megabyte messages go out: every
    ``publish`` returns, the process grows by far less than the 300 MB sent (the SDK outbox
    holds 8 messages), the full outbox is counted (``foxglove_outbox_full``) and logged once
    naming the client, and a client that reads still gets the newest message afterwards.

    The SDK's full-outbox line is throttled to one per 30 s for the whole process: this is the
    only test here that counts on such a line (test_close_... fills an outbox after it, asserting
    nothing about the line).

    Mutations: ``message_backlog_size=self.backlog`` removed (SDK default 1024) -> growth
    314 MB, assertion fails; the bridge's outbox branch removed -> count and log assertions
    fail."""
    sink.advertise("/x", "sensor_msgs/msg/Image")
    s, rest = fc.connect(sink.port, rcvbuf=4096)
    try:
        _stall(sink, s, rest)
    finally:
        s.close()


def _stall(sink, s, rest):
    fc.subscribe_all(s, rest, {"/x"})
    time.sleep(0.5)
    r0 = peak = fc.rss_bytes()
    for i in range(300):
        sink.publish("/x", "sensor_msgs/msg/Image", b"\0\1\0\0" + bytes([i % 256]) * 1_000_000, i)
        if i % 10 == 0:
            time.sleep(0.01)
            peak = max(peak, fc.rss_bytes())
    time.sleep(1.0)
    peak = max(peak, fc.rss_bytes())
    assert peak - r0 < 120e6, f"grew {(peak - r0) / 1e6:.0f} MB for a stalled client"
    st = sink.stats()
    assert st["foxglove_outbox_full"] >= 1
    port = s.getsockname()[1]
    warns = [m for m in sink.log.messages("warning") if f":{port}" in m]
    assert len(warns) == 1 and "does not keep up" in warns[0], warns
    # the server still serves a client that reads
    r, rest = fc.connect(sink.port)
    fc.subscribe_all(r, rest, {"/x"})
    time.sleep(0.3)
    sink.publish("/x", "sensor_msgs/msg/Image", b"\0\1\0\0last", 301)
    _, bins = _read_frames(r, 1)
    assert bins and bins[-1][13:] == b"\0\1\0\0last"
    r.close()


def test_close_returns_while_a_stalled_client_is_connected():
    """The SDK's ``stop`` waits for every client to take its outbox; a client that never reads
    must not hold the node's shutdown: ``close`` returns after its timeout with one warning.

    Mutation: ``close`` calling ``self.server.stop()`` inline -> close never returns, the
    join below times out."""
    log = _ListLogger("priorocc", echo=False)
    sk = FoxgloveSink(0, logger=log, backlog=4)
    sk.advertise("/x", "sensor_msgs/msg/Image")
    s, rest = fc.connect(sk.port, rcvbuf=4096)
    try:
        fc.subscribe_all(s, rest, {"/x"})
        time.sleep(0.5)
        for i in range(30):
            sk.publish("/x", "sensor_msgs/msg/Image", b"\0\1\0\0" + bytes(1_000_000), i)
        time.sleep(0.5)
        closer = threading.Thread(target=sk.close, kwargs={"timeout": 1.0}, daemon=True)
        closer.start()
        closer.join(60)
        assert not closer.is_alive(), "close() is held by a client that does not read"
        assert any("did not stop" in m for m in log.messages("warning"))
    finally:
        s.close()


def test_full_hand_off_queue_drops_oldest_and_counts():
    """While the server side is stuck, ``publish`` keeps returning: the hand-off queue holds
    ``queue_size`` messages and every older one is dropped and counted (``foxglove_dropped``,
    the key /diagnostics reports as ``transport_foxglove_dropped``).

    Mutation: the ``popleft`` + count in ``publish`` removed -> the queue grows to 10 and the
    count stays 0."""
    log = _ListLogger("priorocc", echo=False)
    sk = FoxgloveSink(0, logger=log, queue_size=2)
    entered, release = threading.Event(), threading.Event()

    class Stuck:
        def log(self, data, log_time=None):
            entered.set()
            release.wait(10)

    real = sk._channel
    sk._channel = lambda topic, ty: Stuck()
    try:
        sk.publish("/x", "std_msgs/msg/String", b"first", 0)
        assert entered.wait(10)
        for i in range(9):
            sk.publish("/x", "std_msgs/msg/String", b"m%d" % i, i)
        st = sk.stats()
        assert st["foxglove_queued"] == 2 and st["foxglove_dropped"] == 7
        assert [d for _, _, d, _ in sk._queue] == [b"m7", b"m8"]  # the newest kept
    finally:
        release.set()
        sk._channel = real
        sk.close()


def test_bad_clients_each_logged_once_and_the_server_lives(sink):
    """Malformed JSON, an unknown op, a bad subscription, a bad binary opcode, bytes that are
    no WebSocket frame, a client that disconnects mid-frame, then 20 clients at once: each bad
    client gives exactly one warning naming it, and afterwards a client still receives.

    Mutation: the ``client in self.warned`` early return removed -> the bad clients log twice
    (the invalid message, then the reset connection)."""
    sink.advertise("/x", "std_msgs/msg/String")
    bad = {
        "malformed json": fc.frame(b"{not json"),
        "unknown op": fc.frame(json.dumps({"op": "frobnicate"}).encode()),
        "bad subscription": fc.frame(json.dumps({"op": "subscribe", "subscriptions": [{"id": "x"}]}).encode()),
        "bad binary opcode": fc.frame(b"\x07garbage", opcode=2),
        "not a frame": b"\xff\xff\xff\xff garbage",
        "disconnect mid-frame": fc.frame(b'{"op":"subscribe","subscriptions":[]}' + b" " * 1000)[:20],
    }
    ports = {}
    for name, data in bad.items():
        s, _ = fc.connect(sink.port)
        ports[name] = s.getsockname()[1]
        s.sendall(data)
        time.sleep(0.3)
        s.close()
    many: list = [None] * 20

    def one(i):
        s, rest = fc.connect(sink.port)
        fc.subscribe_all(s, rest, {"/x"})
        many[i] = s

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert all(many), "not all 20 clients connected and subscribed"
    time.sleep(0.5)
    sink.publish("/x", "std_msgs/msg/String", b"\0\1\0\0\2\0\0\0a\0", 5)
    got = [_read_frames(s, 1, timeout=10)[1] for s in many]
    assert all(g and g[0][13:] == b"\0\1\0\0\2\0\0\0a\0" for g in got)
    for s in many:
        s.close()
    time.sleep(1.0)
    warns = sink.log.messages("warning")
    for name, port in ports.items():
        mine = [w for w in warns if f":{port}" in w]
        assert len(mine) == 1, (name, mine)
    assert sink.stats()["foxglove_client_errors"] >= len(bad)
    r, rest = fc.connect(sink.port)
    fc.subscribe_all(r, rest, {"/x"})
    time.sleep(0.3)
    sink.publish("/x", "std_msgs/msg/String", b"\0\1\0\0\2\0\0\0b\0", 6)
    assert _read_frames(r, 1)[1][0][13:] == b"\0\1\0\0\2\0\0\0b\0"
    r.close()


def test_busy_port_is_one_line_naming_it(tmp_path, capsys):
    """``priorocc_replay --foxglove PORT`` on a port another server holds: one line naming the
    port and host, exit 1, no traceback, no output bag left behind.

    Mutation: FoxgloveSink's ``except`` around ``start_server`` removed -> the SDK's own
    exception escapes main (a traceback)."""
    from priorocc_ros.replay import main

    busy = FoxgloveSink(0, logger=_ListLogger("priorocc", echo=False))
    try:
        rc = main([str(fc.JS_DIR.parents[1] / "bags" / "demo"), "--checkpoint", str(tmp_path / "none"),
                   "--out", str(tmp_path / "out"), "--foxglove", str(busy.port)])
    finally:
        busy.close()
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"--foxglove {busy.port} --foxglove-host 127.0.0.1" in err, err
    assert not (tmp_path / "out").exists()


def test_tf_static_is_latched_for_a_late_client(sink):
    """/tf_static is sent once by its broadcaster; a client that subscribes afterwards still
    gets it (as a transient-local ROS subscriber would), while /tf is not repeated.

    Mutation: ``_relatch`` in ``on_subscribe`` removed -> the late client gets nothing."""
    ty, msg = _messages()["/tf_static"]
    data = serialize(msg, ty)
    sink.advertise("/tf_static", ty)
    sink.advertise("/tf", ty)
    sink.publish_input("/tf_static", ty, data, STAMP)
    sink.publish_input("/tf", ty, data, STAMP)
    time.sleep(0.5)  # sent to nobody: no client yet
    s, rest = fc.connect(sink.port)
    chans = fc.subscribe_all(s, rest, {"/tf_static", "/tf"})
    _, bins = _read_frames(s, 2, timeout=3)  # waits out the 3 s: /tf must not come
    s.close()
    ids = {i + 1: c["topic"] for i, c in enumerate(chans)}
    assert [ids[struct.unpack("<I", b[1:5])[0]] for b in bins] == ["/tf_static"]
    assert bins[0][13:] == data
