"""A real rclpy peer for tests/test_ros2_real.py (run with a ROS 2 environment sourced).

    python ros2_probe.py --out OUT.jsonl [--sub TOPIC=TYPE ...] [--play BAG --rate R] [--timeout S]
                         [--garbage TOPIC=TYPE] [--until TOPIC=N ...]

- ``--sub``: subscribe with rclpy's generated classes (deserialised by rclpy itself, not by
  this project), reliable, depth 100; each message becomes one JSON line
  ``{"topic", "stamp_ns", "frame_id", "n"}`` (MarkerArray: its first marker's header; n = number
  of markers / points / cells; DiagnosticArray: also its key-value pairs as "values").
- ``--play``: publish a bag's messages with rclpy publishers of the generated classes (each
  stored CDR deserialised by rclpy: ``rclpy.serialization.deserialize_message``), QoS as the
  project's tools use per topic, at ``--rate``; /tf_static latched.
- ``--garbage TOPIC=TYPE``: publish 3 bytes that are not a CDR message of TYPE (raw publish).
- Exits when every ``--until TOPIC=N`` count is reached, or after ``--timeout``, or on SIGTERM.
"""
from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import time

import rclpy
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message


def rclpy_class(type_name):
    pkg, sub, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{sub}"), name)


def qos(reliable=True, latched=False, depth=100):
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def describe(topic, msg):
    if hasattr(msg, "markers"):
        h = msg.markers[0].header if msg.markers else None
        n = len(msg.markers)
    elif hasattr(msg, "status"):
        h = msg.header
        n = len(msg.status)
    else:
        h = msg.header
        n = len(msg.data) if hasattr(msg, "data") else 0
    rec = {"topic": topic, "stamp_ns": (h.stamp.sec * 10**9 + h.stamp.nanosec) if h else None,
           "frame_id": h.frame_id if h else None, "n": n, "t": time.time()}
    if hasattr(msg, "status") and msg.status:
        rec["values"] = {kv.key: kv.value for kv in msg.status[0].values}
    return rec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--sub", action="append", default=[])
    ap.add_argument("--until", action="append", default=[])
    ap.add_argument("--play", default=None)
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--garbage", default=None)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--linger", type=float, default=0.0, help="seconds to go on receiving once --until is met")
    args = ap.parse_args()
    rclpy.init()
    node = rclpy.create_node("priorocc_test_probe")
    out = open(args.out, "w", buffering=1)
    counts: dict[str, int] = {}
    until = {t: int(n) for t, n in (u.rsplit("=", 1) for u in args.until)}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    def cb_for(topic):
        def cb(msg):
            counts[topic] = counts.get(topic, 0) + 1
            out.write(json.dumps(describe(topic, msg)) + "\n")
        return cb

    subs = [node.create_subscription(rclpy_class(ty), topic, cb_for(topic), qos())
            for topic, ty in (s.split("=", 1) for s in args.sub)]
    deadline = time.monotonic() + args.timeout
    if args.garbage:
        topic, ty = args.garbage.split("=", 1)
        pub = node.create_publisher(rclpy_class(ty), topic, qos(reliable=False, depth=5))
        while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        settle = time.monotonic() + 1.0  # matched here is not yet matched on the node's side:
        while time.monotonic() < settle:  # a best-effort sample sent now could be lost (as for --play)
            rclpy.spin_once(node, timeout_sec=0.05)
        pub.publish(b"\x00\x01\x00")
        out.write(json.dumps({"garbage": topic}) + "\n")
    if args.play:
        from rosbags.rosbag2 import Reader

        with Reader(args.play) as reader:
            conns = {c.topic: c for c in reader.connections}
            pubs = {}
            for topic, c in conns.items():
                q = qos(latched=True, depth=1) if topic == "/tf_static" else \
                    qos(reliable=not ("image" in topic or "camera_info" in topic), depth=5)
                pubs[topic] = (node.create_publisher(rclpy_class(c.msgtype), topic, q), rclpy_class(c.msgtype))
            # wait until the node under test has matched every played topic
            while time.monotonic() < deadline and not all(p.get_subscription_count() > 0 for p, _ in pubs.values()):
                rclpy.spin_once(node, timeout_sec=0.05)
            settle = time.monotonic() + 1.0  # let discovery complete on the node's side too
            while time.monotonic() < settle:
                rclpy.spin_once(node, timeout_sec=0.05)
            t_bag0 = t_wall0 = None
            for c, t, raw in reader.messages():
                if t_bag0 is None:
                    t_bag0, t_wall0 = t, time.monotonic()
                wait = t_wall0 + (t - t_bag0) * 1e-9 / args.rate - time.monotonic()
                if wait > 0:
                    rclpy.spin_once(node, timeout_sec=wait)
                pub, cls = pubs[c.topic]
                pub.publish(deserialize_message(bytes(raw), cls))
            out.write(json.dumps({"played": True}) + "\n")
    while not stop and time.monotonic() < deadline:
        if until and all(counts.get(t, 0) >= n for t, n in until.items()):
            deadline = min(deadline, time.monotonic() + args.linger)
            until = {}
            continue
        rclpy.spin_once(node, timeout_sec=0.05)
    out.write(json.dumps({"counts": counts}) + "\n")
    del subs
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
