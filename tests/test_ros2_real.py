"""The node on a real ROS 2 (../shared/ros2: Jazzy, minimal build, rclpy + rmw_cyclonedds_cpp).

Fails in CI (``CI`` set) and skips elsewhere when ../shared/ros2 or the colcon venv
(``make venv``: .venv-colcon) is missing. Every process runs with a loopback-only
CYCLONEDDS_URI and a ROS_DOMAIN_ID of its test's own; the ros2 CLI runs with --no-daemon
(no daemon is started). The package is built once per module with colcon into a temp dir
and run from there (install/setup.bash), not from the source tree.

Mutations tried (each made the named test fail; restored):
- setup.cfg deleted -> colcon installs the scripts into bin/: ``ros2 launch`` / ``ros2 run``
  find no executable (launch / run tests).
- launch file: player started together with the node (no ready event) -> both launch tests
  fail (the first set is played into a node still loading).
- rclpy transport: ``raw=True`` dropped -> callback test fails (rclpy objects reach the
  deserialiser); ``publish(msg)`` instead of CDR bytes -> rclpy TypeError (callback test).
- rclpy transport: guard removed -> the raising callback stops the executor (callback test).
- tf_static listener depth 1, timer on the node clock, argv split at the first --ros-args,
  rviz config not rewritten: see the tests' own docstrings (each fails).
- DdsContext without node announcement -> ``ros2 node list`` lacks /priorocc_dds (interop);
  endpoint USER_DATA without type hash -> the rclpy peer logs "Failed to parse type hash"
  (interop); char hashed as char -> rmw_dds_common hashes differ from rclpy's (type hash test).
- A temporal model through the launch (issue 26): ``admit`` never resetting, or resetting at every
  set -> the history_resets counts differ (see the temporal tests' docstrings).
"""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from priorocc_core.classes import CAMERAS
from benchmarks.local_dds import loopback_config, unique_domain_id
from priorocc_ros.occupancy_node import READY_LINE

ROOT = Path(__file__).resolve().parents[1]
ROS2_DIR = ROOT.parent / "shared" / "ros2"
COLCON = ROOT / ".venv-colcon" / "bin" / "colcon"
PROBE = Path(__file__).resolve().parent / "ros2_probe.py"
DEMO_BAG = ROOT / "bags" / "demo"
DEMO_CKPT = ROOT / "models" / "demo"
_IDS = iter(range(1, 10**6))

OUTPUTS = {  # docs/design.md: the node's output topics (relative to the node) and types
    "voxels": "sensor_msgs/msg/PointCloud2",
    "markers": "visualization_msgs/msg/MarkerArray",
    "bev": "nav_msgs/msg/OccupancyGrid",
    **{f"seg_overlay/{c}": "sensor_msgs/msg/Image" for c in CAMERAS},
}
TYPE_HASH_TYPES = ["sensor_msgs/msg/CompressedImage", "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo",
                   "tf2_msgs/msg/TFMessage", "sensor_msgs/msg/PointCloud2", "visualization_msgs/msg/MarkerArray",
                   "nav_msgs/msg/OccupancyGrid", "diagnostic_msgs/msg/DiagnosticArray", "rosgraph_msgs/msg/Clock",
                   "rmw_dds_common/msg/ParticipantEntitiesInfo"]


def _require(path: Path, what: str) -> None:
    if not path.exists():
        msg = f"{what} ({path}) is absent"
        if os.environ.get("CI"):
            pytest.fail(msg + " — CI must have it")
        pytest.skip(msg)


@functools.lru_cache(maxsize=None)
def _sourced(setup: str | None) -> tuple[tuple[str, str], ...]:
    """The environment after sourcing ../shared/ros2/activate.sh (and ``setup``), loopback DDS."""
    base = dict(os.environ)
    base["CYCLONEDDS_URI"] = loopback_config()
    base["PATH"] = f"{Path(sys.executable).parent}:{base.get('PATH', '')}"  # python3 = this venv's
    script = f'. "{ROS2_DIR}/activate.sh" || exit 3; ' + (f'. "{setup}" || exit 4; ' if setup else "") + "env -0"
    out = subprocess.run(["bash", "-c", script], env=base, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode()
    return tuple(tuple(kv.split("=", 1)) for kv in out.stdout.decode().split("\0") if "=" in kv)


def ros_env(tmp: Path, setup: Path | None = None) -> dict[str, str]:
    """A fresh environment for one test: ROS 2 sourced, own domain id, logs and temporary files
    under ``tmp`` (launch_ros writes each launch's parameters to a temporary file it never removes)."""
    _require(ROS2_DIR / "activate.sh", "the ROS 2 tree ../shared/ros2")
    env = dict(_sourced(str(setup) if setup else None))
    env["ROS_DOMAIN_ID"] = str(unique_domain_id(os.getpid() * 31 + next(_IDS)))
    env["CYCLONEDDS_URI"] = loopback_config()
    env["ROS_LOG_DIR"] = str(tmp / "ros_log")
    env["TMPDIR"] = str(tmp)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    """A process in its own session; its output collected by a thread."""

    def __init__(self, cmd, env, cwd=None):
        self.p = subprocess.Popen([str(c) for c in cmd], env=env, cwd=cwd, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text:
                return True
            if self.p.poll() is not None:
                time.sleep(0.2)
                return needle in self.text
            time.sleep(0.1)
        return False

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT to the process group we started, then SIGKILL if it lingers."""
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGINT)
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
            except ProcessLookupError:
                pass
        self._t.join(5)
        return self.p.returncode


def probe(env, tmp: Path, *args, timeout: float = 90.0) -> tuple[list[dict], str]:
    """Run tests/ros2_probe.py (a real rclpy peer); its JSON records and its log."""
    out = tmp / f"probe{next(_IDS)}.jsonl"
    res = subprocess.run([sys.executable, str(PROBE), "--out", str(out), "--timeout", str(timeout), *args],
                         env=env, capture_output=True, text=True, timeout=timeout + 60)
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()], res.stderr


class Probe:
    """tests/ros2_probe.py in the background; its JSON lines read while it runs."""

    def __init__(self, env, tmp: Path, *args: str, timeout: float = 120.0):
        self.out = tmp / f"probe{next(_IDS)}.jsonl"
        self.p = subprocess.Popen([sys.executable, str(PROBE), "--out", str(self.out), "--timeout", str(timeout),
                                   *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def records(self) -> list[dict]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.endswith("}")]

    def count(self, topic: str) -> int:
        return sum(1 for r in self.records() if r.get("topic") == topic)

    def wait(self, timeout: float) -> list[dict]:
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.terminate()
            self.p.wait(10)
        return self.records()

    def wait_count(self, topic: str, n: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.count(topic) < n and self.p.poll() is None:
            time.sleep(0.2)
        return self.count(topic)


def bag_stamps(topic: str) -> list[int]:
    from rosbags.rosbag2 import Reader

    from priorocc_ros.msgs import deserialize, stamp_to_ns

    with Reader(DEMO_BAG) as r:
        conns = [c for c in r.connections if c.topic == topic]
        return [stamp_to_ns(deserialize(raw, c.msgtype).header.stamp) for c, _, raw in r.messages(connections=conns)]


def ros2(env, *args, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(["ros2", *args], env=env, capture_output=True, text=True, timeout=timeout)


def _subs(node: str, overlays: bool = True) -> list[str]:
    subs = [f"--sub=/{node}/{k}={t}" for k, t in OUTPUTS.items() if overlays or not k.startswith("seg_overlay")]
    return subs + ["--sub=/diagnostics=diagnostic_msgs/msg/DiagnosticArray"]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Path:
    """colcon build of this package against the ROS 2 tree, into a temp dir; its setup.bash."""
    _require(ROS2_DIR / "activate.sh", "the ROS 2 tree ../shared/ros2")
    _require(COLCON, "colcon (make venv creates .venv-colcon)")
    tmp = tmp_path_factory.mktemp("colcon")
    env = ros_env(tmp)
    res = subprocess.run([str(COLCON), "--log-base", str(tmp / "log"), "build", "--base-paths", str(ROOT),
                          "--build-base", str(tmp / "build"), "--install-base", str(tmp / "install")],
                         env=env, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    exe = tmp / "install" / "priorocc" / "lib" / "priorocc" / "occupancy_node"
    assert exe.is_file(), f"colcon put no occupancy_node into lib/priorocc/: {sorted((tmp / 'install').rglob('occupancy_node'))}"
    return tmp / "install" / "setup.bash"


@pytest.fixture(scope="module")
def launched(install, tmp_path_factory):
    """``ros2 launch priorocc occupancy.launch.py`` with the demo bag through player:=priorocc
    and a real rclpy subscriber of every output; torn down after the module's tests."""
    tmp = tmp_path_factory.mktemp("launch")
    env = ros_env(tmp, install)
    # rviz:=true on purpose: this tree has no rviz2 (the README's command; issue 27 item 1)
    launch = Proc(["ros2", "launch", "priorocc", "occupancy.launch.py", f"checkpoint:={DEMO_CKPT}", "rviz:=true",
                   f"bag:={DEMO_BAG}", "player:=priorocc", "rate:=0.5", "queue_size:=6"], env, cwd=tmp)
    try:
        n = len(bag_stamps("/CAM_FRONT/image_rect_compressed"))
        recs, log = probe(env, tmp, *_subs("priorocc"), *[f"--until=/priorocc/{k}={n}" for k in OUTPUTS],
                          "--linger=2.5", timeout=150)  # linger: diagnostics after the last set
        alive_before = launch.p.poll() is None
    finally:
        launch.stop()
    return {"recs": recs, "probe_log": log, "launch_log": launch.text, "n": n, "alive_before": alive_before}


def _pids_started(log: str) -> dict[str, int]:
    """{process name: pid} from ros2 launch's 'process started with pid [N]' lines."""
    import re

    return {m.group(1): int(m.group(2)) for m in re.finditer(r"\[INFO\] \[([\w.-]+)\]: process started with pid \[(\d+)\]", log)}


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_launch_without_rviz2_warns_runs_and_leaves_no_process(launched):
    """Issue 27 item 1: rviz:=true where rviz2 is not installed (this tree): one WARN line, the
    node and the player run as asked (6 sets out, checked above), and once the launch stops no
    process it started is left (checked by PID). Before: launch exited 1 with "package 'rviz2'
    not found", never played the bag, and left occupancy_node running with parent PID 1.
    Mutation: the has_package("rviz2") check removed -> launch fails at start, no outputs,
    orphaned node (this test and the output test fail)."""
    log = launched["launch_log"]
    assert "running without rviz2" in log, log[-3000:]
    assert launched["alive_before"], log[-3000:]
    pids = _pids_started(log)
    assert any(k.startswith("occupancy_node") for k in pids) and any(k.startswith("bag_player") for k in pids), pids
    deadline = time.monotonic() + 10
    while any(_running(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [k for k, p in pids.items() if _running(p)], pids


# ----------------------------------------------------------------------------- tests
def test_launch_publishes_every_output_once_per_input_set(launched):
    """ros2 launch + the project's player: N sets in -> N sets out on every output topic of
    docs/design.md, each with its input set's stamp (CAM_FRONT's) and frame base_link."""
    expect = sorted(bag_stamps("/CAM_FRONT/image_rect_compressed"))
    recs = [r for r in launched["recs"] if "topic" in r]
    assert len(expect) == launched["n"] == 6
    for key in OUTPUTS:
        got = [r for r in recs if r["topic"] == f"/priorocc/{key}"]
        assert sorted(r["stamp_ns"] for r in got) == expect, (key, launched["launch_log"][-3000:])
        assert {r["frame_id"] for r in got} == {"base_link"}, key
        assert all(r["n"] > 0 for r in got), key
    diag = [r for r in recs if r["topic"] == "/diagnostics"]
    assert diag and {r["frame_id"] for r in diag} == {""}  # diagnostic_updater's convention (issue 27)
    last = diag[-1]["values"]
    assert (last["sets_in"], last["sets_out"], last["sets_failed"]) == ("6", "6", "0"), last
    assert "Failed to parse type hash" not in launched["launch_log"]


def test_launch_starts_the_player_once_the_node_runs(launched):
    log = launched["launch_log"]
    ready, player = log.find(READY_LINE), log.find("[bag_player-2]: process started")
    assert 0 <= ready < player, log[-3000:]


def test_ros2_run_with_parameters_and_the_cli(install, tmp_path):
    """``ros2 run priorocc occupancy_node --ros-args -p ...``; ros2 param get / node list /
    topic list (all --no-daemon) show the node, its parameter and its topics; a sample that
    does not deserialise is logged, counted in /diagnostics, and the node goes on."""
    env = ros_env(tmp_path, install)
    node = Proc(["ros2", "run", "priorocc", "occupancy_node", "--ros-args", "-p", f"checkpoint:={DEMO_CKPT}",
                 "-p", "publish_overlay:=false", "-p", "slop:=0.05"], env, cwd=tmp_path)
    try:
        assert node.wait_for(READY_LINE, 120), node.text[-3000:]
        # the three CLI calls run side by side (each is a Python start-up plus discovery)
        cli = {k: subprocess.Popen(["ros2", *a], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for k, a in {"param": ("param", "get", "/priorocc", "slop", "--no-daemon"),
                            "nodes": ("node", "list", "--no-daemon", "--spin-time", "2"),
                            "topics": ("topic", "list", "--no-daemon", "--spin-time", "2")}.items()}
        out = {k: p.communicate(timeout=60)[0] for k, p in cli.items()}
        assert "Double value is: 0.05" in out["param"], out["param"]
        assert "/priorocc" in out["nodes"].split(), out["nodes"]
        topics = set(out["topics"].split())
        want = {"/priorocc/voxels", "/priorocc/markers", "/priorocc/bev", "/diagnostics", "/tf", "/tf_static"}
        want |= {f"/{c}/image_rect_compressed" for c in CAMERAS} | {f"/{c}/camera_info" for c in CAMERAS}
        assert want <= topics, sorted(want - topics)
        assert not [t for t in topics if "seg_overlay" in t], sorted(topics)
        # a callback that raises (3 bytes are no CameraInfo): logged, counted, node goes on
        recs, _ = probe(env, tmp_path, "--garbage=/CAM_FRONT/camera_info=sensor_msgs/msg/CameraInfo",
                        "--sub=/diagnostics=diagnostic_msgs/msg/DiagnosticArray", "--until=/diagnostics=5",
                        timeout=30)
        diag = [r["values"] for r in recs if r.get("topic") == "/diagnostics"]
        assert diag and diag[-1].get("transport_decode_errors") == "1", diag[-1:]
        assert node.p.poll() is None, node.text[-3000:]
    finally:
        rc = node.stop()
    assert "-byte sample on /CAM_FRONT/camera_info: not a sensor_msgs/msg/CameraInfo" in node.text, node.text[-3000:]
    assert "publishing diagnostics failed" not in node.text, node.text[-3000:]  # the final one too
    assert rc == 0, node.text[-3000:]


def test_rclpy_transport_callback_that_raises_is_logged_counted_and_the_node_goes_on(tmp_path):
    """On real rclpy: a subscription callback and a timer callback that raise are logged and
    counted; the next message is still delivered (rclpy's executor would re-raise them).
    Messages cross rclpy as CDR bytes (publish(bytes), raw subscriptions)."""
    env = ros_env(tmp_path)
    env["PYTHONPATH"] = f"{ROOT}:{env.get('PYTHONPATH', '')}"
    script = tmp_path / "raising.py"
    script.write_text('''
import json, threading, time
from priorocc_ros.msgs import header, new_msg
from priorocc_ros.transport.base import RELIABLE_QOS
from priorocc_ros.transport.rclpy_transport import RclpyTransport
t = RclpyTransport("raising")
got = []
def cb(msg):
    got.append(msg.frame_id)
    if msg.frame_id == "bad":
        raise RuntimeError("bad message")
ticks = []
def tick():
    ticks.append(1)
    raise ValueError("bad timer")
sub = t.create_subscription("std_msgs/msg/Header", "/x", cb, RELIABLE_QOS)
pub = t.create_publisher("std_msgs/msg/Header", "/x", RELIABLE_QOS)
sent = []  # what reaches rclpy's Publisher.publish: CDR bytes, not converted messages
orig = pub._pub.publish
pub._pub.publish = lambda data: (sent.append(type(data).__name__), orig(data))
t.create_timer(0.2, tick)
th = threading.Thread(target=t.spin); th.start()
time.sleep(1.0)
pub.publish(header(1, "bad")); time.sleep(0.5); pub.publish(header(2, "good")); time.sleep(0.8)
raw = [bool(s.raw) for s in t.node.subscriptions]
t.shutdown(); th.join(5)
print(json.dumps({"got": got, "stats": dict(t.stats), "ticks": len(ticks), "sent": sent, "raw": raw}))
''')
    res = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["got"] == ["bad", "good"], out
    assert out["sent"] == ["bytes", "bytes"] and out["raw"] == [True], out  # raw CDR both ways
    assert out["ticks"] >= 3 and out["stats"]["callback_errors"] == 1 + out["ticks"], out
    assert "callback for /x raised RuntimeError: bad message" in res.stderr
    assert "callback for timer raised ValueError: bad timer" in res.stderr


def test_type_hashes_are_those_real_rclpy_announces(tmp_path):
    """dds.graph.type_hash == the RIHS01 hash real rclpy puts on its endpoints, per type."""
    from priorocc_ros.dds.graph import type_hash

    env = ros_env(tmp_path)
    script = tmp_path / "hashes.py"
    script.write_text(f'''
import importlib, json, time, rclpy
rclpy.init(); n = rclpy.create_node("hashes")
types = {TYPE_HASH_TYPES!r}
for i, t in enumerate(types):
    p, s, c = t.split("/"); n.create_publisher(getattr(importlib.import_module(p + "." + s), c), "/h%d" % i, 1)
time.sleep(0.3)
print(json.dumps({{t: str(n.get_publishers_info_by_topic("/h%d" % i)[0].topic_type_hash) for i, t in enumerate(types)}}))
''')
    res = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    real = json.loads(res.stdout.strip().splitlines()[-1])
    assert {t: type_hash(t) for t in TYPE_HASH_TYPES} == real


def test_dds_transport_node_interoperates_with_rclpy_both_ways(install, tmp_path):
    """The DDS-transport node (no rclpy in it) fed by real rclpy publishers of CompressedImage /
    CameraInfo / TF, read by a real rclpy subscriber; ``ros2 node list`` / ``node info`` show it;
    the rclpy peers log no type-hash warning."""
    env = ros_env(tmp_path, install)
    node = Proc([sys.executable, "-m", "priorocc_ros.occupancy_node", "--transport", "dds", "--node-name", "priorocc_dds", "-p",
                 f"checkpoint:={DEMO_CKPT}", "-p", "queue_size:=6", "-p", "publish_overlay:=false"],
                env, cwd=tmp_path)
    try:
        assert node.wait_for(READY_LINE, 120), node.text[-3000:]
        res = ros2(env, "node", "list", "--no-daemon", "--spin-time", "2")
        assert "/priorocc_dds" in res.stdout.split(), res.stdout + res.stderr
        info = ros2(env, "node", "info", "/priorocc_dds", "--no-daemon", "--spin-time", "2").stdout
        assert "/CAM_FRONT/image_rect_compressed: sensor_msgs/msg/CompressedImage" in info, info
        assert "/priorocc_dds/bev: nav_msgs/msg/OccupancyGrid" in info, info
        keys = [k for k in OUTPUTS if not k.startswith("seg_overlay")]
        recs, log = probe(env, tmp_path, f"--play={DEMO_BAG}", "--rate=0.5", *_subs("priorocc_dds", overlays=False),
                          *[f"--until=/priorocc_dds/{k}=3" for k in keys], timeout=120)
    finally:
        node.stop()
    expect = sorted(bag_stamps("/CAM_FRONT/image_rect_compressed"))
    for k in keys:  # the first 3 sets (of 6; queue_size 6 keeps them in order) are enough here
        got = [r for r in recs if r.get("topic") == f"/priorocc_dds/{k}"]
        assert len(got) >= 3 and [r["stamp_ns"] for r in got] == expect[:len(got)], (k, node.text[-3000:])
        assert {r["frame_id"] for r in got} == {"base_link"}
    assert "Failed to parse type hash" not in log + res.stderr, log[-2000:]
    assert "dropped a" not in node.text and "raised" not in node.text, node.text[-2000:]


def test_launch_loop_plays_the_bag_again(looped):
    """loop:=true reaches the player: the node receives the second pass's images."""
    diag = [r["values"] for r in looped["recs"] if r.get("topic") == "/diagnostics"]
    assert diag and int(diag[-1]["images_received"]) > 36, diag[-1:]


def test_launch_loop_gives_outputs_on_both_passes(looped):
    """Both passes give outputs: a first-pass stamp comes out again (the synchroniser resets on
    the backward jump of time, issue 15; without the reset only the first pass comes out)."""
    stamps = [r["stamp_ns"] for r in looped["recs"] if r.get("topic") == "/priorocc/bev"]
    assert len(stamps) >= 8 and len(set(stamps)) < len(stamps), stamps


def test_rclpy_transport_tf_static_sim_time_timer_and_ros_args(tmp_path):
    """On real rclpy: /tf_static from two static broadcasters that published before the node
    subscribed both arrive (tf2 listener depth 100; a depth-1 reader keeps one); the timer
    fires under use_sim_time with no /clock (steady clock; a node-clock timer would wait for
    sim time forever); ROS arguments are removed by rclpy's remove_ros_args, ``--`` included.
    Mutations: TF_STATIC_LISTENER_QOS depth 1 -> one frame missing; timer on the node clock ->
    no tick; split at the first --ros-args -> '--node-name x' after '--' lost."""
    env = ros_env(tmp_path)
    env["PYTHONPATH"] = f"{ROOT}:{env.get('PYTHONPATH', '')}"
    script = tmp_path / "tf_static.py"
    script.write_text('''
import json, threading, time
import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from tf2_msgs.msg import TFMessage
from geometry_msgs.msg import TransformStamped
from priorocc_ros.occupancy_node import split_ros_args
from priorocc_ros.transport.base import TF_STATIC_LISTENER_QOS
from priorocc_ros.transport.rclpy_transport import RclpyTransport
own = split_ros_args(["--transport", "ros", "--ros-args", "-p", "a:=1", "--", "--node-name", "x"])
t = RclpyTransport("tfs", args=["tfs", "--ros-args", "-p", "use_sim_time:=true"])
latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
pubs = []
for k in range(2):  # two static broadcasters, as tf2_ros.StaticTransformBroadcaster publishes
    n = rclpy.create_node(f"broadcaster{k}")
    p = n.create_publisher(TFMessage, "/tf_static", latched)
    ts = TransformStamped(); ts.header.frame_id = "base_link"; ts.child_frame_id = f"cam{k}"
    ts.transform.rotation.w = 1.0
    p.publish(TFMessage(transforms=[ts])); pubs.append((n, p))
time.sleep(1.0)
frames, ticks = [], []
sub = t.create_subscription("tf2_msgs/msg/TFMessage", "/tf_static",
                            lambda m: frames.extend(x.child_frame_id for x in m.transforms), TF_STATIC_LISTENER_QOS)
t.create_timer(0.2, lambda: ticks.append(1))
th = threading.Thread(target=t.spin); th.start()
time.sleep(2.0)
sim = t.use_sim_time if hasattr(t, "use_sim_time") else t.node.get_parameter("use_sim_time").value
t.shutdown(); th.join(5)
print(json.dumps({"frames": sorted(frames), "ticks": len(ticks), "sim": sim, "own": own}))
''')
    res = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["frames"] == ["cam0", "cam1"], out
    assert out["sim"] is True and out["ticks"] >= 3, out
    assert out["own"] == [["--transport", "ros", "--node-name", "x"], True], out


def test_launch_rviz_config_follows_node_name_and_base_frame(install, tmp_path):
    """The installed launch file's rviz configuration for node_name:=robot base_frame:=odom."""
    env = ros_env(tmp_path, install)
    code = ('import importlib.util, os, sys\n'
            'from ament_index_python.packages import get_package_share_directory as d\n'
            'f = os.path.join(d("priorocc"), "launch", "occupancy.launch.py")\n'
            's = importlib.util.spec_from_file_location("l", f); m = importlib.util.module_from_spec(s)\n'
            's.loader.exec_module(m)\n'
            'print(m.rviz_config_for("priorocc", "base_link")[0]); print(m.rviz_config_for("robot", "odom")[0])\n'
            'print(m.rviz_config_for("priorocc", "base_link", "car1")[0])\n')
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    shipped, moved, in_ns = res.stdout.split()
    text = Path(moved).read_text()
    Path(moved).unlink()
    assert shipped.endswith("share/priorocc/rviz/priorocc.rviz")
    assert "/robot/markers" in text and "/robot/bev" in text and "/priorocc/" not in text
    assert "Fixed Frame: odom" in text and "base_link" not in text
    text = Path(in_ns).read_text()
    Path(in_ns).unlink()
    assert "/car1/priorocc/markers" in text and "/car1/priorocc/seg_overlay/CAM_FRONT" in text, text


def test_namespace_moves_the_inputs_and_the_outputs(tmp_path):
    """Issue 27 item 4: in namespace /car1 (launch namespace:=car1, or -r __ns:=/car1) the node's
    default camera topics are relative and resolve into the namespace, with the outputs (rcl's
    resolution, on real rclpy); /tf stays global. Mutation: absolute default patterns
    ('/{camera}/...') -> the inputs stay at /CAM_* (this test fails)."""
    env = ros_env(tmp_path)
    env["PYTHONPATH"] = f"{ROOT}:{env.get('PYTHONPATH', '')}"
    code = ("import json\n"
            "from priorocc_ros.params import PARAMETERS, input_topics\n"
            "from priorocc_ros.transport.rclpy_transport import RclpyTransport\n"
            "t = RclpyTransport('priorocc', args=['n', '--ros-args', '-r', '__ns:=/car1'])\n"
            "ins = [t.resolve_topic(x) for pair in input_topics(dict(PARAMETERS)).values() for x in pair]\n"
            "print(json.dumps({'in': ins, 'out': t.resolve_topic('~/voxels'), 'tf': t.resolve_topic('/tf')}))\n"
            "t.shutdown()\n")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert "/car1/CAM_FRONT/image_rect_compressed" in out["in"] and "/car1/CAM_BACK/camera_info" in out["in"], out
    assert all(t.startswith("/car1/CAM_") for t in out["in"]), out
    assert out["out"] == "/car1/priorocc/voxels" and out["tf"] == "/tf", out


def test_rclpy_node_unknown_parameter_names_the_closest(tmp_path):
    """Issue 31 item 5 on real rclpy: ``--ros-args -p slpo:=0.05`` (rclpy keeps undeclared
    overrides silently) -> one line naming 'slop', exit 2, before the model loads.
    Mutation: RclpyTransport.user_parameter_names returning set() -> the node starts (this test
    times out waiting for the exit and fails)."""
    env = ros_env(tmp_path)
    env["PYTHONPATH"] = f"{ROOT}:{env.get('PYTHONPATH', '')}"
    res = subprocess.run([sys.executable, "-m", "priorocc_ros.occupancy_node", "--transport", "ros", "--ros-args",
                          "-p", f"checkpoint:={DEMO_CKPT}", "-p", "slpo:=0.05"], env=env, capture_output=True,
                         text=True, timeout=60)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("occupancy_node:")]
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert "unknown parameter 'slpo'; did you mean 'slop'?" in lines[0] and "Traceback" not in res.stderr


# ----------------------------------------------------------------------------- loop:=true, a temporal model
@pytest.fixture(scope="module")
def looped(install, temporal_ckpt, tmp_path_factory):
    """``ros2 launch priorocc occupancy.launch.py ... loop:=true`` with a tiny temporal model
    (issue 26: tiny-temporal.yaml, num_adj 1, saved through the real checkpoint code) and
    ``motion_frame:=map`` on the demo bag (its /tf has ``map -> base_link`` at every camera stamp):
    the project's player plays the bag over and over; a real rclpy subscriber records every output
    from the first one. Once three passes are out the player (the launch's ``bag_player``, by its
    PID) is stopped; the node runs on until its counters show every set out, then the launch stops.
    The loop tests below and the temporal tests share this one run."""
    tmp = tmp_path_factory.mktemp("loop")
    env = ros_env(tmp, install)
    n = len(bag_stamps("/CAM_FRONT/image_rect_compressed"))
    launch = Proc(["ros2", "launch", "priorocc", "occupancy.launch.py", f"checkpoint:={temporal_ckpt}", "rviz:=false",
                   f"bag:={DEMO_BAG}", "player:=priorocc", "loop:=true", "rate:=1.0", "queue_size:=40",
                   "motion_frame:=map", "diagnostics_period:=0.25", "publish_overlay:=false",
                   "publish_markers:=false", "publish_voxels:=false"], env, cwd=tmp)
    rec = Probe(env, tmp, "--sub=/priorocc/bev=nav_msgs/msg/OccupancyGrid",
                "--sub=/diagnostics=diagnostic_msgs/msg/DiagnosticArray", timeout=150)
    try:
        rec.wait_count("/priorocc/bev", 2 * n + 1, 120)  # the third pass has begun
        player = [pid for name, pid in _pids_started(launch.text).items() if name.startswith("bag_player")]
        assert len(player) == 1, launch.text[-3000:]
        os.kill(player[0], signal.SIGINT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # idle: every set that came in is out, twice in a row
            diag = [r["values"] for r in rec.records() if r.get("topic") == "/diagnostics"][-2:]
            if len(diag) == 2 and diag[0] == diag[1] and diag[1]["in_progress"] == "0" \
                    and not _running(player[0]):
                break
            time.sleep(0.25)
        recs = rec.wait(0.1)  # stops the probe, keeps what it received
        alive = launch.p.poll() is None
    finally:
        rec.wait(0.1)
        launch.stop()
    return {"n": n, "recs": recs, "alive": alive, "log": launch.text}


def _diags(recs) -> list[dict]:
    return [r["values"] for r in recs if r.get("topic") == "/diagnostics"]


def test_temporal_model_one_pass_n_in_n_out_no_reset(looped):
    """Issue 26 on the real ROS 2, the first pass of the looped run: N sets in, N out with the
    bag's stamps in order; every set found its pose in /tf (odometry_missing 0, so sets 2..N
    fused the history); ``history_resets`` 0 in every /diagnostics message sent while only the
    first pass's sets had come in (sets_in <= N: no set of the second pass was admitted yet).
    The backend is the node's auto choice (OpenVINO bf16 on the development machine: the
    temporal graph, its history carried as graph inputs).

    Mutation tried: ``admit`` (priorocc_ros/history.py) resetting at every set -> history_resets
    1 already in a first-pass message (this test fails; the looped test's mutations are in its
    docstring)."""
    n, log = looped["n"], looped["log"]
    assert looped["alive"], log[-3000:]
    bev = [r["stamp_ns"] for r in looped["recs"] if r.get("topic") == "/priorocc/bev"]
    assert bev[:n] == sorted(bag_stamps("/CAM_FRONT/image_rect_compressed")), log[-3000:]
    first = [d for d in _diags(looped["recs"]) if 0 < int(d["sets_in"]) <= n]
    assert first and int(first[-1]["sets_out"]) > 0, first[-1:]
    for d in first:
        assert (d["history_resets"], d["odometry_missing"], d["odometry_invalid"]) == ("0", "0", "0"), d
        assert d["sets_failed"] == d["sets_dropped"] == "0", d


def test_temporal_model_looped_resets_once_per_loop(looped):
    """Issue 26: over the looped run every pass starts with time going back, so, once the node is
    idle, ``history_resets`` = ``history_resets_time_jump_back`` = the number of restarts of the
    bag = (sets out - 1) // N, no other reason; every set in, every set out, none failed or
    dropped, the odometry found for every set; the outputs in bag order pass after pass. (That no
    set after a restart uses the features from before it is shown bitwise by
    tests/test_ros_temporal.py; the BEV grid of this random tiny model is occupied in nearly every
    column, too coarse to show it here.)

    Mutations tried (each failed this test): ``admit`` (priorocc_ros/history.py) never resetting
    (its ``reset`` returning the held history) -> history_resets 0 of 2 (13 sets out); ``admit``
    without only the time-jump check -> the restarts are still reset, but counted as dropped_set
    (the synchroniser's new timeline numbers its sets from 0 again), so the reason check fails;
    ``admit`` resetting at every set (reason gap) -> a count of one per set."""
    n, log = looped["n"], looped["log"]
    d = _diags(looped["recs"])[-1]
    out = int(d["sets_out"])
    assert out >= 2 * n + 1 and d["sets_in"] == d["sets_out"] and d["in_progress"] == "0", d
    assert d["sets_failed"] == d["sets_dropped"] == d["odometry_missing"] == d["odometry_invalid"] == "0", d
    restarts = (out - 1) // n
    resets = {k: v for k, v in d.items() if k.startswith("history_resets")}
    assert resets == {"history_resets": str(restarts), "history_resets_time_jump_back": str(restarts)}, (resets, out)
    stamps = sorted(bag_stamps("/CAM_FRONT/image_rect_compressed"))
    bev = [r["stamp_ns"] for r in looped["recs"] if r.get("topic") == "/priorocc/bev"]
    full = (len(bev) // n) * n  # a set cut by the player's stop may come out degraded, with another stamp
    assert len(bev) == out and bev[:full] == stamps * (full // n), log[-3000:]
