"""The real ``ros2 bag`` and ``rviz2`` with the rclpy node (issue 27), on the rclcpp + rosbag2 +
rviz2 tree of ../shared/ros2 (``activate-viz.sh``; its Debian run-time packages come from
``make viz-debs``, part of ``make test``).

Skips with the reason when ../shared/ros2 (or its viz tree, or the Debian packages it names,
or ../shared/data for the sqlite3 bag) is missing; fails in CI. Every process runs with a
loopback-only CYCLONEDDS_URI and a ROS_DOMAIN_ID of its test's own. The node runs from the
source tree (``python -m priorocc_ros.occupancy_node --transport ros``: the rclpy node a colcon
install runs; the colcon build itself is covered by test_ros2_real.py).

- ``played`` (one node, one ``ros2 bag record`` of its outputs): ``ros2 bag play`` of bags/demo
  (mcap; the command line is the launch file's ``player:=auto``, i.e. ros2bag, with
  ``bag_delay:=0``... see below) and of a sqlite3 bag written by ``nuscenes_to_bag`` from the
  real keyframe -> N in, N out with the input stamps; the recording read back by this
  project's bag reader and by ``ros2 bag info``; then ``ros2 param set /priorocc publish_bev
  false`` (no further ~/bev: the next 6 sets give voxels without bev), ``ros2 param set
  /priorocc checkpoint x`` refused with a reason, ``ros2 param describe`` shows description,
  range and read-only; then ``ros2 bag play --loop``: 5 passes, every set of every pass out,
  ``incomplete_sets`` 0.
- ``rviz2 -d launch/priorocc.rviz`` under Xvfb while the node runs on the demo bag: the 3D view
  of a screenshot shows at least three voxel class colours.

Mutations tried (each made the named test fail; restored):
- node publishes no voxel markers (``publish_markers:=false`` in the rviz run) -> no class colour
  in the 3D view (test_rviz2_shows_the_voxel_classes).
- the node's set-parameters callback not registered (issue 27's "accepted and ignored") ->
  ``Set parameter successful`` but bev keeps coming
  (test_param_set_publish_bev_false_and_checkpoint_refused).
- the launch file's ros2bag player always given ``--delay DELAY`` (``bag_delay:=0`` too) -> the
  player-command assertion in the ``played`` fixture fails, so every test using it fails
  (test_ros2_bag_play_mcap_and_sqlite3_into_the_node).
- Not caught here: TimelineSynchronizer replaced by the plain synchroniser passed
  test_ros2_bag_play_loop_five_passes in one run (ros2 bag play delivered every boundary in
  order that time; the flips of issue 27 are timing-dependent). The order flips themselves are
  tested deterministically in tests/test_ros_loop_boundary.py, which that mutation fails.
"""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from priorocc_core.classes import OCC_COLORS
from benchmarks.local_dds import loopback_config, unique_domain_id
from priorocc_ros.occupancy_node import READY_LINE
from tests.test_ros2_real import (COLCON, DEMO_BAG, DEMO_CKPT, ROOT, Probe, Proc, _pids_started, _require, _running,
                                  bag_stamps)

ROS2_DIR = ROOT.parent / "shared" / "ros2"
VIZ = ROS2_DIR / "activate-viz.sh"
REAL = ROOT.parent / "shared" / "data" / "nuscenes-real"
RVIZ_CONFIG = ROOT / "launch" / "priorocc.rviz"
_IDS = iter(range(500, 10**6))


@functools.lru_cache(maxsize=None)
def _sourced_viz() -> tuple[tuple[tuple[str, str], ...], str]:
    """(environment after sourcing activate-viz.sh, its stderr: the missing Debian packages line)."""
    base = dict(os.environ)
    base["CYCLONEDDS_URI"] = loopback_config()
    base["PATH"] = f"{Path(sys.executable).parent}:{base.get('PATH', '')}"
    out = subprocess.run(["bash", "-c", f'. "{VIZ}" || exit 3; env -0'], env=base, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode()
    env = tuple(tuple(kv.split("=", 1)) for kv in out.stdout.decode().split("\0") if "=" in kv)
    return env, out.stderr.decode().strip()


def viz_env(tmp: Path) -> dict[str, str]:
    _require(VIZ, "the rosbag2 / rviz2 tree ../shared/ros2 (activate-viz.sh)")
    env, err = _sourced_viz()
    if "missing Debian packages" in err:
        msg = f"{err} (make viz-debs installs them as root)"
        if os.environ.get("CI"):
            pytest.fail(msg + " — CI must have them")
        pytest.skip(msg)
    env = dict(env)
    env["ROS_DOMAIN_ID"] = str(unique_domain_id(os.getpid() * 37 + next(_IDS)))
    env["CYCLONEDDS_URI"] = loopback_config()
    env["ROS_LOG_DIR"] = str(tmp / "ros_log")
    # temporary files (launch_ros's parameter files), Qt's runtime folder, and a home of its own (rviz2
    # writes ~/.rviz2/persistent_settings, Mesa ~/.cache/mesa_shader_cache) under tmp: the user's stay untouched
    env["TMPDIR"] = str(tmp)
    for name, var in (("xdg_runtime", "XDG_RUNTIME_DIR"), ("home", "HOME")):
        (tmp / name).mkdir(mode=0o700, exist_ok=True)
        env[var] = str(tmp / name)
    env["XDG_CACHE_HOME"] = str(tmp / "home" / ".cache")  # Mesa takes the passwd home, not $HOME, without it
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = f"{ROOT}:{env.get('PYTHONPATH', '')}"
    return env


def ros2(env, *args, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(["ros2", *args], env=env, capture_output=True, text=True, timeout=timeout)


def start_node(env, tmp, *params: str) -> Proc:
    node = Proc([sys.executable, "-m", "priorocc_ros.occupancy_node", "--transport", "ros", "--ros-args",
                 "-p", f"checkpoint:={DEMO_CKPT}", "-p", "use_sim_time:=true", *[a for p in params for a in ("-p", p)]],
                env, cwd=tmp)
    assert node.wait_for(READY_LINE, 120), node.text[-3000:]
    return node


def launch_player_command(env, bag: Path, loop: bool = False) -> list[str]:
    """The bag player command the installed launch file builds for player:=auto bag_delay:=0
    (from the source tree's launch file, in this tree's environment)."""
    code = ("import importlib.util, json, sys\n"
            f"s = importlib.util.spec_from_file_location('l', {str(ROOT / 'launch' / 'occupancy.launch.py')!r})\n"
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m)\n"
            f"print(json.dumps([m.player_command('auto', {str(bag)!r}, '1.0', {loop}, '0'),"
            f" m.player_command('auto', 'B', '1.0', False, '2', 'car1')]))\n")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    cmd, ns_cmd = json.loads(res.stdout.strip().splitlines()[-1])
    assert cmd[:3] == ["ros2", "bag", "play"] and "--delay" not in cmd, cmd  # auto = ros2bag; no --delay 0
    assert "--delay" in ns_cmd and "/CAM_FRONT/camera_info:=/car1/CAM_FRONT/camera_info" in ns_cmd, ns_cmd
    return cmd


def play(env, cmd: list[str], timeout: float = 60.0) -> None:
    """Run a ros2 bag play command after the node's subscriptions are matched (1.5 s of
    discovery: ros2 bag play starts at once, and a best-effort sample sent before matching is lost)."""
    res = subprocess.run(cmd[:4] + ["--delay", "1.5"] + cmd[4:], env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]


def real_sqlite_bag(tmp: Path) -> tuple[Path, int]:
    """nuscenes_to_bag of the real keyframe (../shared/data), sqlite3; its CAM_FRONT stamp."""
    if not REAL.exists():
        msg = f"the real nuScenes keyframe ({REAL}) is absent"
        if os.environ.get("CI"):
            pytest.fail(msg + " — CI must have it")
        pytest.skip(msg)
    from priorocc_ros.bagio import bag_topics, read_messages
    from priorocc_ros.msgs import stamp_to_ns
    from priorocc_ros.nuscenes_to_bag import main as to_bag

    out = tmp / "real_sqlite"
    assert to_bag(["--dataroot", str(REAL), "--version", "v1.0-mini", "--out", str(out), "--storage", "sqlite3",
                   "--keyframes-only", "--no-lidar", "--quiet"]) == 0
    assert list(out.glob("*.db3")), sorted(out.iterdir())
    stamps = [stamp_to_ns(m.header.stamp) for *_, m in read_messages(out, ["/CAM_FRONT/image_rect_compressed"])]
    assert bag_topics(out)["/CAM_FRONT/image_rect_compressed"][1] == len(stamps) == 1
    return out, stamps[0]


# ----------------------------------------------------------------------------- one node, four stages
@pytest.fixture(scope="module")
def played(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bagplay")
    env = viz_env(tmp)
    sqlite_bag, real_stamp = real_sqlite_bag(tmp)
    demo = bag_stamps("/CAM_FRONT/image_rect_compressed")
    out = {"demo": demo, "real_stamp": real_stamp}
    node = start_node(env, tmp, "publish_overlay:=false", "queue_size:=40", "diagnostics_period:=0.5")
    rec = Proc(["ros2", "bag", "record", "-s", "mcap", "-o", str(tmp / "rec"), "/priorocc/voxels", "/priorocc/bev",
                "/priorocc/markers"], env, cwd=tmp)
    subs = ["--sub=/priorocc/voxels=sensor_msgs/msg/PointCloud2", "--sub=/priorocc/bev=nav_msgs/msg/OccupancyGrid",
            "--sub=/diagnostics=diagnostic_msgs/msg/DiagnosticArray"]
    try:
        assert rec.wait_for("Subscribed to topic '/priorocc/markers'", 30), rec.text[-2000:]
        # 1. mcap (the launch file's player command) and sqlite3 (nuscenes_to_bag) -> N in, N out
        probe = Probe(env, tmp, *subs, f"--until=/priorocc/bev={len(demo) + 1}", "--linger=1.0", timeout=120)
        time.sleep(1.0)
        play(env, launch_player_command(env, DEMO_BAG))
        play(env, ["ros2", "bag", "play", str(sqlite_bag), "--clock"])
        out["bag_recs"] = probe.wait(150)
        rec.stop()
        out["rec_log"] = rec.text
        # 2. live parameters
        out["set_bev"] = ros2(env, "param", "set", "/priorocc", "publish_bev", "false", "--no-daemon")
        out["set_ckpt"] = ros2(env, "param", "set", "/priorocc", "checkpoint", "x", "--no-daemon")
        out["describe"] = ros2(env, "param", "describe", "/priorocc", "slop", "publish_bev", "checkpoint",
                               "--no-daemon")
        probe = Probe(env, tmp, *subs, f"--until=/priorocc/voxels={len(demo)}", "--linger=1.0", timeout=90)
        time.sleep(1.0)
        play(env, ["ros2", "bag", "play", str(DEMO_BAG), "--clock"])
        out["param_recs"] = probe.wait(120)
        # 3. five passes of ros2 bag play --loop: stopped once the sixth pass gives output
        probe = Probe(env, tmp, *subs, f"--until=/priorocc/voxels={5 * len(demo) + 1}", timeout=150)
        time.sleep(1.0)
        loop = Proc(["ros2", "bag", "play", str(DEMO_BAG), "--clock", "--loop", "--delay", "1.5"], env, cwd=tmp)
        try:
            probe.wait_count("/priorocc/voxels", 5 * len(demo) + 1, 150)
        finally:
            loop.stop()
        out["loop_recs"] = probe.wait(10)
    finally:
        rec.stop()
        node.stop()
    out["node_log"] = node.text
    out["rec"] = tmp / "rec"
    out["info"] = ros2(env, "bag", "info", str(tmp / "rec"))
    return out


def _stamps(recs, topic):
    return [r["stamp_ns"] for r in recs if r.get("topic") == topic]


def _diag(recs):
    return [r["values"] for r in recs if r.get("topic") == "/diagnostics"]


def test_ros2_bag_play_mcap_and_sqlite3_into_the_node(played):
    """ros2 bag play of bags/demo (mcap) and of nuscenes_to_bag's sqlite3 bag: every set out once,
    with its input stamp; the node's counters agree (N in, N out, nothing dropped or failed)."""
    recs, demo = played["bag_recs"], played["demo"]
    want = sorted(demo + [played["real_stamp"]])
    for topic in ("/priorocc/voxels", "/priorocc/bev"):
        assert sorted(_stamps(recs, topic)) == want, (topic, played["node_log"][-3000:])
    d = _diag(recs)[-1]
    assert d["sets_in"] == d["sets_out"] == str(len(want)) and d["sets_failed"] == "0", d


def test_ros2_bag_record_of_the_outputs_read_back(played):
    """ros2 bag record of the node's outputs: the project's reader finds every set on every recorded
    topic with its stamp, and ros2 bag info agrees on the counts."""
    from priorocc_ros.bagio import bag_topics, read_messages
    from priorocc_ros.msgs import stamp_to_ns

    want = sorted(played["demo"] + [played["real_stamp"]])
    topics = bag_topics(played["rec"])
    for topic, ty in (("/priorocc/voxels", "sensor_msgs/msg/PointCloud2"), ("/priorocc/bev", "nav_msgs/msg/OccupancyGrid"),
                      ("/priorocc/markers", "visualization_msgs/msg/MarkerArray")):
        assert topics[topic] == (ty, len(want)), (topic, topics)
    stamps = sorted(stamp_to_ns(m.header.stamp) for *_, m in read_messages(played["rec"], ["/priorocc/bev"]))
    assert stamps == want
    info = played["info"]
    assert info.returncode == 0, info.stderr[-2000:]
    assert re.search(rf"Messages:\s+{3 * len(want)}\b", info.stdout), info.stdout
    assert re.search(r"Topic: /priorocc/bev \| Type: nav_msgs/msg/OccupancyGrid \| Count: " + str(len(want)), info.stdout), \
        info.stdout


def test_param_set_publish_bev_false_and_checkpoint_refused(played):
    """ros2 param set /priorocc publish_bev false -> no further ~/bev (the next 6 sets: voxels only);
    ros2 param set /priorocc checkpoint x -> refused with a reason; ros2 param describe shows
    description, range and read-only."""
    assert "Set parameter successful" in played["set_bev"].stdout, played["set_bev"].stdout + played["set_bev"].stderr
    ck = played["set_ckpt"].stdout + played["set_ckpt"].stderr
    assert "Setting parameter failed" in ck and "read-only" in ck, ck
    desc = played["describe"].stdout
    slop = desc.split("Parameter name: slop")[1].split("Parameter name:")[0]
    assert "Type: double" in slop and "Description: approximate-time slop" in slop, desc
    assert "Min value: 0.0" in slop and "Max value: 10.0" in slop and "Read only" not in slop, desc
    ckpt = desc.split("Parameter name: checkpoint")[1].split("Parameter name:")[0]
    assert "Description: checkpoint directory" in ckpt and "Read only: true" in ckpt, desc
    recs = played["param_recs"]
    assert len(_stamps(recs, "/priorocc/voxels")) == len(played["demo"]), recs[-3:]
    assert _stamps(recs, "/priorocc/bev") == [], played["node_log"][-2000:]
    assert "parameter publish_bev: True -> False (applied)" in played["node_log"]


def test_ros2_bag_play_loop_five_passes(played):
    """ros2 bag play --loop (no gap between passes): each of the bag's sets comes out once per pass
    for five passes, no incomplete set, one time reset per boundary (before: 2 of 4 boundaries
    lost 2 sets each)."""
    recs, demo = played["loop_recs"], played["demo"]
    got = Counter(_stamps(recs, "/priorocc/voxels"))
    assert sorted(got) == sorted(demo) and all(got[s] >= 5 for s in demo), got
    d = _diag(recs)
    assert d, recs[-3:]
    last = d[-1]
    assert last["incomplete_sets"] == "0" and last["sets_dropped"] == "0", last
    assert int(last["time_resets"]) >= 5, last  # the two bag switches above + >= 4 loop boundaries


# ----------------------------------------------------------------------------- rviz2
def read_xwd(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an X Window Dump (Xvfb -fbdir writes the screen as one)."""
    b = path.read_bytes()
    h = np.frombuffer(b[:100], ">u4")
    hsize, w, hgt, order, bpl, ncolors = int(h[0]), int(h[4]), int(h[5]), int(h[7]), int(h[12]), int(h[19])
    a = np.frombuffer(b, np.uint8, count=hgt * bpl, offset=hsize + 12 * ncolors).reshape(hgt, bpl)
    a = a[:, :w * 4].reshape(hgt, w, 4)
    return a[..., [2, 1, 0]] if order == 0 else a[..., [1, 2, 3]]


def class_colour_pixels(rgb: np.ndarray) -> dict[int, int]:
    """{class: pixels} of the saturated class colours, lighting allowed (rviz shades each cube face:
    a pixel counts for the class whose colour it is a multiple of, cosine > 0.995)."""
    c = OCC_COLORS.astype(np.float32)
    keep = [k for k in range(len(c)) if (c[k].max() - c[k].min()) / max(c[k].max(), 1) > 0.3]
    px = rgb.reshape(-1, 3).astype(np.float32)
    n = np.linalg.norm(px, axis=1)
    sat = (px.max(1) - px.min(1)) / np.maximum(px.max(1), 1)
    px = px[(n > 60) & (sat > 0.3)]
    cos = (px / np.linalg.norm(px, axis=1, keepdims=True)) @ (c[keep] / np.linalg.norm(c[keep], axis=1, keepdims=True)).T
    best = cos.argmax(1)
    hit = cos.max(1) > 0.995
    return {keep[k]: int(((best == k) & hit).sum()) for k in range(len(keep))}


def test_rviz2_shows_the_voxel_classes(tmp_path):
    """rviz2 -d launch/priorocc.rviz under Xvfb while the node runs on the demo bag (ros2 bag play
    --loop): the 3D view of a screenshot shows at least three voxel class colours, each on >= 500
    pixels (the overlays are off, so only the voxel markers carry class colours; the TF axes are
    pure red / green / blue and too small to reach the bound)."""
    env = viz_env(tmp_path)
    env.pop("DISPLAY", None)
    fb = tmp_path / "fb"
    fb.mkdir()
    display = 200 + os.getpid() % 500
    xvfb = subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", "1280x800x24", "-fbdir", str(fb), "-nolisten",
                             "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    node = rviz = loop = None
    try:
        node = start_node(env, tmp_path, "publish_overlay:=false", "queue_size:=2")
        rviz = Proc(["rviz2", "-d", str(RVIZ_CONFIG), "--ros-args", "-p", "use_sim_time:=true"],
                    {**env, "DISPLAY": f":{display}", "LIBGL_ALWAYS_SOFTWARE": "1"}, cwd=tmp_path)
        probe = Probe(env, tmp_path, "--sub=/priorocc/bev=nav_msgs/msg/OccupancyGrid",
                      "--until=/priorocc/bev=3", timeout=90)
        loop = Proc(["ros2", "bag", "play", str(DEMO_BAG), "--clock", "--loop", "--rate", "0.5", "--delay", "1.5"],
                    env, cwd=tmp_path)
        assert probe.wait_count("/priorocc/bev", 3, 90) >= 3, node.text[-2000:]  # sets are coming out
        time.sleep(4.0)  # rviz draws the markers it received
        shot = read_xwd(fb / "Xvfb_screen0")
        assert rviz.p.poll() is None, rviz.text[-3000:]
    finally:
        for p in (loop, rviz, node):
            if p is not None:
                p.stop()
        xvfb.terminate()
        xvfb.wait(10)
    h, w, _ = shot.shape
    view = shot[h // 10:, int(w * 0.40):]  # the 3D view: right of the docked overlay panels, below the tool bar
    counts = class_colour_pixels(view)
    seen = {k: v for k, v in counts.items() if v >= 500}
    assert len(seen) >= 3, (counts, rviz.text[-2000:])


# ----------------------------------------------------------------------------- the launch file on this tree
def test_launch_namespace_ros2bag_player_and_rviz(tmp_path):
    """ros2 launch (colcon install on this tree) with bag:=bags/demo namespace:=car1 rviz:=true
    use_sim_time:=false under Xvfb: use_sim_time reaches the node; player:=auto is ros2 bag play here; inputs (the player's remapped camera topics), outputs
    and rviz all in /car1 -> 6 sets out on /car1/priorocc/bev with the bag's stamps; the temporary
    rviz config (topics under /car1/priorocc/) exists while the launch runs and is gone after it,
    and no process the launch started is left. Mutations: the player's --remap rules dropped -> no
    set reaches /car1 (0 out); the OnShutdown removal dropped -> the temp config stays; the
    use_sim_time argument ignored (true with a bag, as before) -> 'Boolean value is: True'."""
    env = viz_env(tmp_path)
    _require(COLCON, "colcon (make venv creates .venv-colcon)")
    res = subprocess.run([str(COLCON), "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(ROOT),
                          "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install")],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    env = dict(env)
    out = subprocess.run(["bash", "-c", f'. "{tmp_path / "install" / "setup.bash"}" && env -0'], env=env,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    env.update(kv.split("=", 1) for kv in out.stdout.decode().split("\0") if "=" in kv)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    env["TMPDIR"] = str(tmpdir)  # the launch's temporary rviz config goes here
    fb = tmp_path / "fb"
    fb.mkdir()
    display = 700 + os.getpid() % 200
    xvfb = subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", "1280x800x24", "-fbdir", str(fb), "-nolisten",
                             "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    env.update(DISPLAY=f":{display}", LIBGL_ALWAYS_SOFTWARE="1")
    demo = bag_stamps("/CAM_FRONT/image_rect_compressed")
    launch = Proc(["ros2", "launch", "priorocc", "occupancy.launch.py", f"checkpoint:={DEMO_CKPT}",
                   f"bag:={DEMO_BAG}", "namespace:=car1", "rviz:=true", "publish_overlay:=false",
                   "queue_size:=6", "log_level:=info", "use_sim_time:=false"], env, cwd=tmp_path)
    try:
        probe = Probe(env, tmp_path, "--sub=/car1/priorocc/bev=nav_msgs/msg/OccupancyGrid",
                      f"--until=/car1/priorocc/bev={len(demo)}", timeout=150)
        recs = probe.wait(180)
        sim = ros2(env, "param", "get", "/car1/priorocc", "use_sim_time", "--no-daemon")
        configs = sorted(tmpdir.glob("*.rviz"))
        config_text = configs[0].read_text() if configs else ""
        alive = launch.p.poll() is None
    finally:
        launch.stop()
        xvfb.terminate()
        xvfb.wait(10)
    log = launch.text
    assert alive, log[-3000:]
    # use_sim_time:=false reaches the node (auto would make it true with a bag; before issue 27 the
    # argument did not exist and was ignored)
    assert "Boolean value is: False" in sim.stdout, sim.stdout + sim.stderr
    assert sorted(_stamps(recs, "/car1/priorocc/bev")) == sorted(demo), log[-3000:]
    pids = _pids_started(log)
    assert any(k.startswith("bag_player") for k in pids) and any(k.startswith("rviz2") for k in pids), pids
    assert "rosbag2" in log and "priorocc_play" not in log, log[-3000:]  # player:=auto is ros2 bag play here
    assert "/car1/priorocc/markers" in config_text and "Value: /priorocc/" not in config_text, configs
    assert not list(tmpdir.glob("*.rviz")), sorted(tmpdir.iterdir())  # removed at shutdown
    deadline = time.monotonic() + 10
    while any(_running(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [k for k, p in pids.items() if _running(p)], pids
