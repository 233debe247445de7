"""Run under the real ROS 2 (source ../shared/ros2/activate.sh): the occupancy node over rclpy
(RclpyTransport, the micro model) and a player node in this process, on the loopback-only
domain the caller set. Prints one JSON line per run with the node's counters. Issue 19.

    python tests/rclpy_camera_info_run.py CKPT BAG REPEATS [RATE]

first 20 sets with every CameraInfo 0..slop after its image ({"mode": "delayed", ...}), then the
bag played into a fresh node REPEATS times ({"mode": "demo", ...}); one process, one startup.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PARAMS = {"queue_size": 50, "publish_markers": False, "publish_overlay": False, "slop": 0.05, "max_wait": 0.5,
          "diagnostics_period": 0.5}


def run_once(predictor, params, play, expected_groups):
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from priorocc_ros.node_core import OccupancyNodeCore
    from rosidl_runtime_py.utilities import get_message

    from priorocc_ros.transport.rclpy_transport import RclpyTransport
    from tests.foreign_recordings import TS

    t = RclpyTransport("priorocc", args=["rclpy_camera_info_run"])
    core = OccupancyNodeCore(t, predictor=predictor, parameters=params)
    spin = threading.Thread(target=t.spin, daemon=True)
    spin.start()
    player = rclpy.create_node("player")
    pubs = {}

    def pub(topic, ty, latched=False):
        if topic not in pubs:
            qos = QoSProfile(depth=1 if latched else 50, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            pubs[topic] = (player.create_publisher(get_message(ty), topic, qos), ty)
        p, ty = pubs[topic]
        return lambda m: p.publish(bytes(TS.serialize_cdr(m, ty)))  # rclpy publishes serialized CDR as is

    try:
        play(pub, lambda: all(p.get_subscription_count() >= 1 for p, _ in pubs.values()))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            st = core.stats()
            if st["groups_in"] + st["sets_awaiting_camera_info"] >= expected_groups and core.runner.idle():
                break
            time.sleep(0.05)
        core.close(drain=True)
        return core.stats()
    finally:
        player.destroy_node()
        t.shutdown()
        spin.join(5)


def wait_matched(matched, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not matched():
        time.sleep(0.02)
    if not matched():
        raise RuntimeError("the node's subscriptions were not matched")
    time.sleep(0.5)


def play_delayed(n_sets=20, slop_s=0.05, seed=0):
    """Every CameraInfo after its image, delayed by a random 0..slop."""
    from priorocc_ros.msgs import typestore  # noqa: F401 - rosbags classes for the converter
    from tests.foreign_recordings import MODEL_CAMERAS, T0, camera_info, raw_image, tf_chain

    rng = np.random.default_rng(seed)

    def play(pub, matched):
        tf = pub("/tf_static", "tf2_msgs/msg/TFMessage", latched=True)
        tf(tf_chain(T0, names=MODEL_CAMERAS))
        for cam in MODEL_CAMERAS:
            pub(f"/{cam}/image_rect", "sensor_msgs/msg/Image")
            pub(f"/{cam}/camera_info", "sensor_msgs/msg/CameraInfo")
        wait_matched(matched)
        events = []
        for k in range(n_sets):
            for i, cam in enumerate(MODEL_CAMERAS):
                st = T0 + k * 100_000_000 + i * 2_000_000
                wall = k * 0.1 + i * 0.002
                rgb = (rng.random((90, 160, 3)) * 255).astype(np.uint8)
                frame = f"{cam}_optical_frame"
                events.append((wall, 0, f"/{cam}/image_rect", "sensor_msgs/msg/Image", raw_image(st, frame, rgb, "rgb8")))
                events.append((wall + rng.uniform(0.0, slop_s), 1, f"/{cam}/camera_info", "sensor_msgs/msg/CameraInfo",
                               camera_info(st, frame, 160, 90)))
        events.sort(key=lambda e: (e[0], e[1]))
        t0 = time.monotonic()
        for wall, _, topic, ty, msg in events:
            d = wall - (time.monotonic() - t0)
            if d > 0:
                time.sleep(d)
            pub(topic, ty)(msg)
    return play


def play_bag(bag, rate=1.0):
    from priorocc_ros.bagio import read_messages

    msgs = list(read_messages(bag))

    def play(pub, matched):
        for topic, ty, _, m in msgs:
            if topic == "/tf_static":
                pub(topic, ty, latched=True)(m)
            elif ty.startswith("sensor_msgs"):
                pub(topic, ty)
        wait_matched(matched)
        time.sleep(3.0 if rate <= 0.2 else 0.5)
        t_bag, t0 = msgs[0][2], time.monotonic()
        for topic, ty, t, m in msgs:
            if topic == "/tf_static" or not ty.startswith("sensor_msgs"):
                continue
            d = (t - t_bag) * 1e-9 / rate - (time.monotonic() - t0)
            if d > 0:
                time.sleep(d)
            pub(topic, ty)(m)
    return play


def main() -> int:
    from priorocc_core.backends import make_predictor

    ckpt, bag, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rate = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    predictor = make_predictor(ckpt)
    st = run_once(predictor, {**PARAMS, "compressed": False}, play_delayed(), 20)
    print(json.dumps({"mode": "delayed", **st}), flush=True)
    for _ in range(repeats):
        t0 = time.monotonic()
        st = run_once(predictor, PARAMS, play_bag(bag, rate), 6)
        print(json.dumps({"mode": "demo", "run_s": time.monotonic() - t0, **st}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
