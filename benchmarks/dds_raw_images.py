"""Six raw 1600x900 rgb8 streams at 10 Hz over loopback Cyclone DDS: how many samples arrive.

    python -m benchmarks.dds_raw_images [--seconds 3] [--config documented|tuned] [--reliable]

A publisher process and a subscriber process (DdsTransport each) on a loopback-only domain.
The subscriber takes samples with the node's input QoS (sensor data: best effort, keep last 5),
or reliable with --reliable (what a reliable publisher offers), history --depth. The publisher
writes pre-serialised CDR (as a player does from a bag). Prints one JSON line.
Issue 15 #7: with the documented loopback config 20 of 60 images arrived.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time

CAMS = ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT")


def _sub(ready, done, out, reliable, depth):
    from priorocc_ros.transport.base import SENSOR_DATA_QOS, QoSProfile
    from priorocc_ros.transport.dds_transport import DdsTransport

    t = DdsTransport("sub")
    got = {c: 0 for c in CAMS}
    qos = QoSProfile("reliable" if reliable else "best_effort", "volatile", depth)
    for c in CAMS:
        t.create_subscription("sensor_msgs/msg/Image", f"/{c}/image_rect", lambda m, c=c: got.__setitem__(c, got[c] + 1),
                              qos)
    import threading

    th = threading.Thread(target=t.spin, daemon=True)
    th.start()
    ready.set()
    done.wait(120)
    time.sleep(1.0)
    out.put(dict(got))
    t.shutdown()


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--config", choices=("documented", "tuned"), default="tuned")
    ap.add_argument("--reliable", action="store_true")
    ap.add_argument("--depth", type=int, default=5,
                    help="subscriber history depth (5 = the node's sensor-data QoS; deeper separates transport loss "
                         "from samples overwritten while the subscriber is busy)")
    a = ap.parse_args(argv)
    from benchmarks import local_dds as loopback

    env = loopback.loopback_env(domain_id=loopback.unique_domain_id(os.getpid() + 77))
    if a.config == "documented":
        env["CYCLONEDDS_URI"] = loopback.loopback_config(raw_images=False)
    os.environ.update({k: env[k] for k in ("CYCLONEDDS_URI", "ROS_DOMAIN_ID")})
    ctx = mp.get_context("spawn")
    ready, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    p = ctx.Process(target=_sub, args=(ready, done, out, a.reliable, a.depth))
    p.start()
    ready.wait(60)
    import numpy as np

    from priorocc_ros.msgs import header, new_msg
    from priorocc_ros.transport.base import QoSProfile, SENSOR_DATA_QOS
    from priorocc_ros.transport.dds_transport import DdsTransport

    t = DdsTransport("pub")
    qos = QoSProfile("reliable", "volatile", a.depth) if a.reliable else SENSOR_DATA_QOS
    pubs = {c: t.create_publisher("sensor_msgs/msg/Image", f"/{c}/image_rect", qos) for c in CAMS}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(p.get_subscription_count() for p in pubs.values()):
        time.sleep(0.05)
    time.sleep(0.5)
    from priorocc_ros.msgs import serialize

    data = np.random.default_rng(0).integers(0, 255, 1600 * 900 * 3, dtype=np.uint8)
    # serialised once (as a player does with a bag's CDR): the benchmark measures the transport
    cdr = serialize(new_msg("sensor_msgs/msg/Image", header=header(0, "cam"), height=900, width=1600,
                            encoding="rgb8", step=4800, data=data), "sensor_msgs/msg/Image")
    writers = {c: p.writer for c, p in pubs.items()}
    n = int(a.seconds * 10)
    t0 = time.monotonic()
    late = 0
    for k in range(n):
        for c in CAMS:
            writers[c].write_cdr(cdr)
        d = t0 + (k + 1) * 0.1 - time.monotonic()
        if d > 0:
            time.sleep(d)
        else:
            late += 1
    wall = time.monotonic() - t0
    done.set()
    got = out.get(timeout=60)
    p.join(30)
    t.shutdown()
    print(json.dumps({"config": a.config, "reliable": a.reliable, "depth": a.depth, "sent_per_camera": n, "received": got,
                      "received_total": sum(got.values()), "sent_total": n * len(CAMS), "publish_wall_s": round(wall, 2),
                      "periods_over_budget": late}))


if __name__ == "__main__":
    main()
