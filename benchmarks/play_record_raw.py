"""priorocc_play -> priorocc_record with six raw 1600x900 rgb8 streams at 10 Hz over loopback DDS.

    python -m benchmarks.play_record_raw [--frames 20] [--reliable-sensors]

Writes a bag of ``--frames`` x 6 raw images (4.3 MB each, 100 ms apart) with rosbags, starts
priorocc_record on its six topics, plays the bag with priorocc_play (``--reliable-sensors``:
offered reliable, which the recorder adopts), stops the recorder with SIGINT and prints one JSON
line: messages recorded of those played, per topic, and the QoS the recorder chose. Issue 15 #7
(a player -> recorder run lost 44 of 60 images with the documented Cyclone config).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CAMS = ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT")
T0 = 1_700_000_000_000_000_000


def raw_bag(out: Path, frames: int) -> int:
    from rosbags.rosbag2 import StoragePlugin, Writer

    from priorocc_ros.msgs import header, new_msg, serialize, typestore

    data = np.random.default_rng(0).integers(0, 255, 1600 * 900 * 3, dtype=np.uint8)
    w = Writer(out, version=8, storage_plugin=StoragePlugin.MCAP)
    w.open()
    conns = {c: w.add_connection(f"/{c}/image_rect", "sensor_msgs/msg/Image", typestore=typestore()) for c in CAMS}
    for k in range(frames):
        for i, c in enumerate(CAMS):
            t = T0 + k * 100_000_000 + i * 1_000_000
            msg = new_msg("sensor_msgs/msg/Image", header=header(t, c), height=900, width=1600, encoding="rgb8",
                          step=4800, data=data)
            w.write(conns[c], t, bytes(serialize(msg, "sensor_msgs/msg/Image")))
    w.close()
    return frames * len(CAMS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.play_record_raw")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--reliable-sensors", action="store_true")
    a = ap.parse_args(argv)
    from rosbags.rosbag2 import Reader

    from benchmarks.local_dds import loopback_env, unique_domain_id

    env = loopback_env(domain_id=unique_domain_id(os.getpid() + 91))
    tool = [sys.executable, "-m"]
    with tempfile.TemporaryDirectory(prefix="priorocc_playrec_") as tmp:
        bag, rec_out = Path(tmp) / "in", Path(tmp) / "rec"
        n = raw_bag(bag, a.frames)
        rec = subprocess.Popen(tool + ["priorocc_ros.tools.record", "--out", str(rec_out)]
                               + [f"/{c}/image_rect" for c in CAMS], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        try:
            play = subprocess.run(tool + ["priorocc_ros.tools.play", str(bag), "--wait-for-subscribers", "1",
                                          "--wait-timeout", "30"] + (["--reliable-sensors"] if a.reliable_sensors else []),
                                  env=env, capture_output=True, text=True, timeout=300)
            time.sleep(2.0)
            rec.send_signal(signal.SIGINT)
            log = rec.communicate(timeout=60)[0]
        finally:
            if rec.poll() is None:
                rec.kill()
        with Reader(rec_out) as r:
            per_topic = {c.topic: c.msgcount for c in r.connections}
    qos = sorted({ln.split("] (")[-1].split(",")[0] for ln in log.splitlines()
                  if ln.startswith("[priorocc_record] recording /") and "] (" in ln})
    print(json.dumps({"reliable_sensors": a.reliable_sensors, "played": n, "recorded": sum(per_topic.values()),
                      "per_topic": per_topic, "recorder_qos": qos, "play_rc": play.returncode}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
