"""The rclpy transport's Foxglove tap on the real ROS 2 (../shared/ros2: Jazzy, rclpy +
rmw_cyclonedds_cpp): ``occupancy_node --transport ros --foxglove 0`` on loopback, the demo bag
played into it over DDS, and the third-party client of tests/js (npm @foxglove/ws-protocol +
Foxglove's ROS 2 CDR reader) subscribed to every channel.

Skips with the reason when ../shared/ros2, foxglove-sdk or Node.js/npm is missing; fails in CI.
The node runs from the source tree (as tests/test_ros2_tools.py does) with a loopback-only
CYCLONEDDS_URI and a ROS_DOMAIN_ID of its own (tests/test_ros2_real.ros_env), on a tiny
randomly initialised checkpoint (the outputs' shape, not their content, is under test).
Wall time 20-40 s (load-dependent), most of it importing torch and rclpy.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

pytest.importorskip("foxglove", reason="foxglove-sdk (requirements.txt) is not installed")

from benchmarks import foxglove_clients as fc  # noqa: E402
from priorocc_ros.occupancy_node import READY_LINE  # noqa: E402
from tests.ros_helpers import make_tiny_checkpoint  # noqa: E402
from tests.test_ros2_real import DEMO_BAG, OUTPUTS, ROOT, Proc, bag_stamps, ros_env  # noqa: E402


def _wait_line(proc: subprocess.Popen, needle: str, timeout: float) -> list[str]:
    """stderr lines of ``proc`` up to the one containing ``needle`` (AssertionError past timeout)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"no {needle!r} from the client: {''.join(seen)[-2000:]}")


def test_rclpy_node_serves_every_output_to_a_foxglove_client_with_the_node_stamps(tmp_path):
    """Real rclpy: every output topic reaches the npm Foxglove client, decoded from its ros2msg
    schema, one message per set (6), header stamps and log times equal to the node's (its input
    set's CAM_FRONT stamp, as tests/test_ros2_real checks over rclpy), markers in base_link;
    /tf_static, which the node takes from an rclpy subscription, is served too (tap_in); the node
    stops with every set out.

    Mutations: ``self._t.tap_out(...)`` removed from the rclpy transport's publisher -> no
    output message reaches the client (it times out: errors, exit 1); ``self.tap_in(...)``
    removed from its subscription callback -> no /tf_static message."""
    env = ros_env(tmp_path)
    env["PYTHONPATH"] = f"{ROOT}:{env.get('PYTHONPATH', '')}"
    js = fc.js_client_ready()
    ckpt = make_tiny_checkpoint(tmp_path / "tiny")
    expect = sorted(bag_stamps("/CAM_FRONT/image_rect_compressed"))
    node = Proc([sys.executable, "-m", "priorocc_ros.occupancy_node", "--transport", "ros", "--foxglove", "0",
                 "--ros-args", "-p", f"checkpoint:={ckpt}", "-p", "queue_size:=6"], env, cwd=tmp_path)
    client = player = None
    try:
        assert node.wait_for(READY_LINE, 180), node.text[-3000:]
        line = next(ln for ln in node.lines if "serving on ws://" in ln)
        url = line[line.index("ws://"):].split()[0]
        assert url.startswith("ws://127.0.0.1:"), line  # loopback unless --foxglove-host says otherwise
        client = subprocess.Popen(["node", str(js / "foxglove_client.js"), url, "60000", fc.SUBPROTOCOL,
                                   str(len(expect))], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_line(client, "subscribed", 30)
        player = subprocess.run([sys.executable, "-m", "priorocc_ros.tools.play", str(DEMO_BAG), "--rate", "0.5",
                                 "--quiet"], env=env, capture_output=True, text=True, timeout=120)
        assert player.returncode == 0, player.stderr[-2000:]
        out, err = client.communicate(timeout=120)
    finally:
        if client is not None and client.poll() is None:
            client.kill()
        rc = node.stop()
    got = json.loads(out) if out.strip() else {"errors": [err]}
    assert client.returncode == 0 and not got["errors"], (got["errors"], node.text[-3000:])
    assert rc == 0, node.text[-3000:]
    assert f"sets in {len(expect)}, out {len(expect)}" in node.text, node.text[-3000:]
    for key, type_name in OUTPUTS.items():
        topic = f"/priorocc/{key}"
        ch = got["channels"][topic]
        assert (ch["schemaName"], ch["schemaEncoding"], ch["encoding"]) == (type_name, "ros2msg", "cdr"), topic
        msgs = got["messages"][topic]
        assert [int(m["stamp"]) for m in msgs] == expect, (topic, node.text[-2000:])
        assert [int(m["logTime"]) for m in msgs] == expect, topic
        assert not any(m["trailing"] for m in msgs), topic
    assert {m["summary"]["frame"] for m in got["messages"]["/priorocc/markers"]} == {"base_link"}
    assert got["messages"]["/tf_static"], "no /tf_static from the rclpy subscription's tap"
    assert got["channels"]["/diagnostics"]["schemaName"] == "diagnostic_msgs/msg/DiagnosticArray"
