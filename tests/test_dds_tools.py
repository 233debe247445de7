"""priorocc_play / priorocc_record / priorocc_topics as separate processes over loopback DDS."""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from benchmarks.local_dds import loopback_env, unique_domain_id
from priorocc_ros.msgs import new_msg, typestore

PY = sys.executable
_COUNTER = itertools.count(1)
T0 = 1_700_000_000_000_000_000
CAMS = ("CAM_FRONT", "CAM_BACK")


@pytest.fixture
def dds_env():
    """Environment for child processes: loopback-only Cyclone, a domain id of this test's own."""
    return loopback_env(domain_id=unique_domain_id(os.getpid() * 13 + next(_COUNTER)))


def _stamp(ns):
    return new_msg("builtin_interfaces/msg/Time", sec=ns // 10**9, nanosec=ns % 10**9)


def make_bag(path: Path, storage: str = "mcap", frames: int = 8) -> int:
    """A small bag like the converter's: per camera CompressedImage + CameraInfo at 12 Hz,
    /tf per frame, one /tf_static. Returns the message count."""
    ts = typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    rng = np.random.default_rng(0)
    n = 0
    w = Writer(path, version=8, storage_plugin=plugin)
    w.open()
    conns = {}
    for cam in CAMS:
        conns[cam, "img"] = w.add_connection(f"/{cam}/image_rect_compressed", "sensor_msgs/msg/CompressedImage",
                                             typestore=ts)
        conns[cam, "info"] = w.add_connection(f"/{cam}/camera_info", "sensor_msgs/msg/CameraInfo", typestore=ts)
    tf = w.add_connection("/tf", "tf2_msgs/msg/TFMessage", typestore=ts)
    tfs = w.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=ts)

    def put(conn, t, msg):
        nonlocal n
        w.write(conn, t, bytes(ts.serialize_cdr(msg, conn.msgtype)))
        n += 1

    put(tfs, T0, new_msg("tf2_msgs/msg/TFMessage", transforms=[
        new_msg("geometry_msgs/msg/TransformStamped", child_frame_id=cam,
                header=new_msg("std_msgs/msg/Header", stamp=_stamp(T0), frame_id="base_link")) for cam in CAMS]))
    for i in range(frames):
        t = T0 + i * 83_333_333
        for j, cam in enumerate(CAMS):
            hdr = new_msg("std_msgs/msg/Header", stamp=_stamp(t + j * 1000), frame_id=cam)
            put(conns[cam, "img"], t + j * 1000, new_msg("sensor_msgs/msg/CompressedImage", header=hdr, format="jpeg",
                                                         data=rng.integers(0, 256, 30_000 + 7 * i, dtype=np.uint8)))
            put(conns[cam, "info"], t + j * 1000 + 10, new_msg("sensor_msgs/msg/CameraInfo", header=hdr,
                                                               width=1600, height=900, k=np.arange(9.0) + i))
        put(tf, t + 5000, new_msg("tf2_msgs/msg/TFMessage", transforms=[
            new_msg("geometry_msgs/msg/TransformStamped", child_frame_id="base_link",
                    header=new_msg("std_msgs/msg/Header", stamp=_stamp(t), frame_id="map"))]))
    w.close()
    return n


def read_bag(path: Path) -> dict[str, list[tuple[str, bytes]]]:
    out: dict[str, list] = {}
    with Reader(path) as r:
        for conn, _, raw in r.messages():
            out.setdefault(conn.topic, []).append((conn.msgtype, bytes(raw)))
    return out


def _tool(name, *args):
    return [PY, "-m", f"priorocc_ros.tools.{name}", *map(str, args)]


def _no_process_mentions(marker: str) -> list[str]:
    """Command lines of live processes mentioning ``marker`` (our tmp path)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next((ln for ln in (d / "status").read_text().splitlines() if ln.startswith("State:")), "")
        except OSError:
            continue
        if marker in cmd and "Z" not in state:
            found.append(cmd)
    return found


def _stop(proc, sig, timeout=5.0) -> float:
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        pytest.fail(f"{proc.args[2]} did not stop within {timeout} s of {signal.Signals(sig).name}")
    return time.monotonic() - t0


def _wait_for_line(log: Path, text: str, procs, deadline_s: float = 90.0) -> None:
    """Wait until ``text`` appears in the file ``log`` (a child's output), failing if a child of
    ``procs`` exits first or ``deadline_s`` passes: a start-up on a loaded machine takes what it takes."""
    deadline = time.monotonic() + deadline_s
    while text not in (log.read_text() if log.exists() else ""):
        assert all(p.poll() is None for p in procs), "a tool exited early:\n" + log.read_text()
        assert time.monotonic() < deadline, f"no {text!r} within {deadline_s} s:\n" + log.read_text()
        time.sleep(0.1)


def _play_into_recorder(src, out, topics, env, *play_args):
    """priorocc_record on ``topics``, priorocc_play of ``src`` into it (rate 2, waiting for the
    recorder), the recorder stopped by SIGINT; -> (play result, recorder, recorder log), both
    exit codes checked."""
    rec = subprocess.Popen(_tool("record", "--out", out, *topics), env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        play = subprocess.run(_tool("play", src, "--rate", "2", "--wait-for-subscribers", "1", "--wait-timeout", "20",
                                    *play_args), env=env, capture_output=True, text=True, timeout=60)
        assert play.returncode == 0, play.stderr
        time.sleep(0.3)
        _stop(rec, signal.SIGINT)
    finally:
        if rec.poll() is None:
            rec.kill()
    log = rec.stdout.read()
    assert rec.returncode == 0, log
    return play, rec, log


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_play_record_round_trip_is_byte_identical(tmp_path, dds_env, storage):
    src, out = tmp_path / "src", tmp_path / "rec"
    n = make_bag(src, storage, frames=8)
    assert n >= 30
    topics = sorted(read_bag(src))
    play, rec, log = _play_into_recorder(src, out, topics, dds_env)
    assert "fewer than" not in play.stderr, play.stderr  # recorder matched every topic
    a, b = read_bag(src), read_bag(out)
    assert sorted(b) == topics, log
    for topic in topics:
        assert len(b[topic]) == len(a[topic]), (topic, log)
        # same ROS 2 type, same CDR bytes (payload and all), same order
        assert b[topic] == a[topic], topic
    assert sum(len(v) for v in b.values()) == n
    if storage == "mcap":  # Foxglove's own readers decode every recorded message (issue 29)
        from tests.mcap_readers import decode_with_foxglove_readers

        assert sum(decode_with_foxglove_readers(out).values()) == n
    assert not list(tmp_path.glob(".rec.partial-*"))
    assert _no_process_mentions(str(tmp_path)) == []


def test_play_reliable_sensors_and_the_recorder_adapts(tmp_path, dds_env):
    """Issue 15 (raw images over DDS): ``priorocc_play --reliable-sensors`` offers the sensor
    topics reliable and priorocc_record, adapting to the offered QoS like rosbag2, records them
    reliable, every message. Mutation: the option ignored -> the log says best_effort."""
    src, out = tmp_path / "src", tmp_path / "rec"
    n = make_bag(src, "mcap", frames=4)
    topics = sorted(read_bag(src))
    _, _, log = _play_into_recorder(src, out, topics, dds_env, "--reliable-sensors")
    for cam in CAMS:
        assert f"recording /{cam}/image_rect_compressed [sensor_msgs/msg/CompressedImage] (reliable" in log, log
    assert sum(len(v) for v in read_bag(out).values()) == n


@pytest.mark.parametrize("play_sig,rec_sig", [(signal.SIGTERM, signal.SIGINT), (signal.SIGINT, signal.SIGTERM)])
def test_signals_stop_play_and_record_promptly(tmp_path, dds_env, play_sig, rec_sig):
    """SIGINT / SIGTERM stop a looping player and a recorder within 5 s each, both exit 0, the bag is
    finalised. Both are signalled once the recorder has subscribed to the player's images and clock
    (a deadline, not a fixed sleep from the start: under load a tool still importing when signalled
    died of the signal itself), plus 2 s for samples to flow.
    Mutation: StopFlag installing no handler -> returncode -15 / -2."""
    src, out = tmp_path / "src", tmp_path / "rec"
    make_bag(src, "mcap", frames=4)
    log = tmp_path / "rec.log"
    with open(log, "w") as f:
        rec = subprocess.Popen(_tool("record", "--out", out, "--all"), env=dds_env, stdout=f, stderr=subprocess.STDOUT)
    play = subprocess.Popen(_tool("play", src, "--loop", "--clock", "--quiet"), env=dds_env)
    try:
        # the recorder subscribes to the player's writers, which the player creates after its handlers
        _wait_for_line(log, "recording /CAM_FRONT/image_rect_compressed", (play, rec))
        _wait_for_line(log, "recording /clock", (play, rec))
        time.sleep(2.0)  # subscribed to both: samples flow (12 Hz images, a 10+ Hz clock) before the signals
        assert _stop(play, play_sig) < 5.0
        assert play.returncode == 0
        assert _stop(rec, rec_sig) < 5.0
        assert rec.returncode == 0
    finally:
        for p in (play, rec):
            if p.poll() is None:
                p.kill()
                p.wait(5)
    recorded = read_bag(out)  # finalised: metadata written, readable
    assert recorded.get("/clock"), sorted(recorded)
    assert recorded["/clock"][0][0] == "rosgraph_msgs/msg/Clock"
    assert "/CAM_FRONT/image_rect_compressed" in recorded
    assert _no_process_mentions(str(tmp_path)) == []


def test_killed_recorder_leaves_no_bag_under_final_name(tmp_path, dds_env):
    out = tmp_path / "rec"
    rec = subprocess.Popen(_tool("record", "--out", out, "/tf", "--quiet"), env=dds_env)
    time.sleep(1.5)
    rec.kill()
    rec.wait(5)
    assert not out.exists()


def test_record_refuses_existing_output(tmp_path, dds_env):
    (tmp_path / "rec").mkdir()
    res = subprocess.run(_tool("record", "--out", tmp_path / "rec", "/tf"), env=dds_env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "exists already" in res.stderr


def test_play_rejects_a_folder_that_is_not_a_bag(tmp_path, dds_env):
    """Issue 31 item 9: each case named for what it is, one line, exit 2. Before: a missing path
    was "not a rosbag2 bag" too (mutation: bagio.bag_dir without its exists() check)."""
    for path, says in ((tmp_path, "no metadata.yaml (the folder is empty)"),
                       (tmp_path / "nope", "does not exist (no such file or folder)")):
        res = subprocess.run(_tool("play", path), env=dds_env, capture_output=True, text=True, timeout=30)
        assert res.returncode == 2 and says in res.stderr, res.stderr
        assert res.stderr.startswith("priorocc_play: error: bag ") and len(res.stderr.strip().splitlines()) == 1


def test_readme_player_then_recorder_records_every_message(tmp_path, dds_env):
    """Issue 31 item 7, the README's ``priorocc_play BAG --clock & priorocc_record --out X --all``:
    the player started first, the recorder after it, and every message of the bag is recorded
    (the player waits for readers by default). Before: the player played at once, and the
    recorder got the bag's tail or nothing (mutation: --wait-for-subscribers default 0)."""
    src, out = tmp_path / "src", tmp_path / "rec"
    make_bag(src, "mcap", frames=6)
    play = subprocess.Popen(_tool("play", src, "--clock"), env=dds_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    rec = subprocess.Popen(_tool("record", "--out", out, "--all"), env=dds_env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _, err = play.communicate(timeout=60)
        assert play.returncode == 0, err
        time.sleep(0.3)
        _stop(rec, signal.SIGINT)
    finally:
        for p in (play, rec):
            if p.poll() is None:
                p.kill()
                p.wait(5)
    a, b = read_bag(src), read_bag(out)
    for topic in a:
        assert b.get(topic) == a[topic], (topic, len(b.get(topic, [])), len(a[topic]), err)


def test_topics_lists_types_and_rates(tmp_path, dds_env):
    """priorocc_topics lists the player's topics with type and QoS and counts their samples. Counts,
    not a rate window: the player is waited for (deadline) and the image rate only bounded above by the
    bag's 12 Hz (load slows a player, never speeds it up). Mutation: topics.py not counting samples
    (count += 0) -> count 0 fails."""
    src = tmp_path / "src"
    make_bag(src, "mcap", frames=12)
    log = tmp_path / "play.log"
    with open(log, "w") as f:
        play = subprocess.Popen(_tool("play", src, "--loop"), env=dds_env, stdout=f, stderr=subprocess.STDOUT)
    try:
        _wait_for_line(log, "topics, ", (play,))  # its writers exist; it is publishing
        res = subprocess.run(_tool("topics", "--duration", "2.5", "--json"), env=dds_env,
                             capture_output=True, text=True, timeout=120)
    finally:
        _stop(play, signal.SIGINT)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    img = info["/CAM_FRONT/image_rect_compressed"]
    assert img["type"] == "sensor_msgs/msg/CompressedImage"
    assert img["reliability"] == "best_effort" and img["publishers"] == 1
    assert img["count"] >= 2 and 0 < img["hz"] < 16.0, img  # recorded at 12 Hz
    assert info["/tf_static"]["durability"] == "transient_local"
    assert info["/tf"]["type"] == "tf2_msgs/msg/TFMessage"
