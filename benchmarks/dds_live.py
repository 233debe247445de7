"""Live end-to-end runs of the node over DDS: recorder + node + player as three processes.

Used by ``tests/test_dds_e2e.py`` and by the benchmark (``python -m benchmarks.dds_live``).

``make_live_bag(src, out, frames, hz, faults)`` turns a converter bag (``nuscenes_to_bag``:
six ``CompressedImage`` + ``CameraInfo`` streams, ``/tf_static``) into a live-style input bag:
``frames`` image sets at ``hz``, cycling through the source's sets, with every header stamp
and bag timestamp rewritten (camera offsets within a set kept), and optional faults:

- ``corrupt_jpeg``: frame index whose CAM_FRONT JPEG is cut short;
- ``zero_k``: frame index whose CAM_FRONT_LEFT camera_info has K = 0;
- ``oversized``: frame index whose CAM_BACK_RIGHT image carries ``oversized_bytes`` bytes
  (a valid JPEG plus zeros; pick the node's ``max_image_pixels`` so that it is over the limit);
- ``camera_stops``: frame index from which CAM_BACK publishes nothing more.

``run_live(...)`` starts ``priorocc_record`` (outputs + /diagnostics), ``occupancy_node
--transport dds`` and ``priorocc_play`` on one loopback-only domain, stops the node and the
recorder with signals, and returns what happened (exit codes, stop times, logs, the
recorded bag, the player's timing log).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from priorocc_core.classes import CAMERAS
from benchmarks.local_dds import loopback_env
from priorocc_ros.msgs import typestore

PY = sys.executable
NODE = "priorocc"
OUTPUT_TOPICS = {
    f"/{NODE}/voxels": "sensor_msgs/msg/PointCloud2",
    f"/{NODE}/markers": "visualization_msgs/msg/MarkerArray",
    f"/{NODE}/bev": "nav_msgs/msg/OccupancyGrid",
    **{f"/{NODE}/seg_overlay/{cam}": "sensor_msgs/msg/Image" for cam in CAMERAS},
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
}


def _set_stamp(header: Any, ns: int) -> None:
    header.stamp.sec = int(ns // 1_000_000_000)
    header.stamp.nanosec = int(ns % 1_000_000_000)


def make_live_bag(src: Path, out: Path, frames: int = 24, hz: float = 12.0, t0_ns: int = 1_000_000_000_000_000_000,
                  faults: dict[str, int] | None = None, oversized_bytes: int = 400_000,
                  pauses: dict[int, float] | None = None) -> dict:
    """Write the live input bag; returns {'frames': [{cam: stamp_ns}], 'faults': ...}.

    ``pauses``: extra seconds of silence after frame f (so the node surely processes f: the
    newest complete set wins, and a set followed by silence is the newest)."""
    ts = typestore()
    faults = dict(faults or {})
    per_cam: dict[str, list[tuple[int, Any, Any]]] = {c: [] for c in CAMERAS}
    infos: dict[str, list[Any]] = {c: [] for c in CAMERAS}
    tf_static = None
    with Reader(src) as r:
        for conn, t, raw in r.messages():
            if conn.topic == "/tf_static" and tf_static is None:
                tf_static = ts.deserialize_cdr(raw, conn.msgtype)
            for cam in CAMERAS:
                if conn.topic == f"/{cam}/image_rect_compressed":
                    per_cam[cam].append((t, ts.deserialize_cdr(raw, conn.msgtype)))
                elif conn.topic == f"/{cam}/camera_info":
                    infos[cam].append(ts.deserialize_cdr(raw, conn.msgtype))
    missing = [c for c in CAMERAS if not per_cam[c] or not infos[c]]
    if missing or tf_static is None:
        raise ValueError(f"{src}: needs six cameras' images + camera_info and /tf_static; missing {missing or '/tf_static'}")
    n_src = min(len(v) for v in per_cam.values())
    period = int(round(1e9 / hz))
    plugin = StoragePlugin.MCAP
    meta: dict[str, Any] = {"frames": [], "faults": faults, "hz": hz, "source_sets": n_src}
    w = Writer(out, version=8, storage_plugin=plugin)
    w.open()
    try:
        c_static = w.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=ts)
        c_img = {c: w.add_connection(f"/{c}/image_rect_compressed", "sensor_msgs/msg/CompressedImage", typestore=ts)
                 for c in CAMERAS}
        c_info = {c: w.add_connection(f"/{c}/camera_info", "sensor_msgs/msg/CameraInfo", typestore=ts)
                  for c in CAMERAS}
        for tr in tf_static.transforms:
            _set_stamp(tr.header, t0_ns)
        w.write(c_static, t0_ns, bytes(ts.serialize_cdr(tf_static, "tf2_msgs/msg/TFMessage")))
        offset = 0
        for f in range(frames):
            k = f % n_src
            base = min(per_cam[c][k][0] for c in CAMERAS)
            stamps = {}
            events = []
            for cam in CAMERAS:
                if "camera_stops" in faults and cam == "CAM_BACK" and f >= faults["camera_stops"]:
                    continue
                t_src, img = per_cam[cam][k]
                stamp = t0_ns + 100_000_000 + f * period + offset + (t_src - base)
                stamps[cam] = stamp
                info = infos[cam][k % len(infos[cam])]
                _set_stamp(info.header, stamp)
                _set_stamp(img.header, stamp)
                info_bytes = bytes(ts.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
                if faults.get("zero_k") == f and cam == "CAM_FRONT_LEFT":
                    bad = ts.deserialize_cdr(info_bytes, "sensor_msgs/msg/CameraInfo")
                    bad.k = np.zeros(9)
                    info_bytes = bytes(ts.serialize_cdr(bad, "sensor_msgs/msg/CameraInfo"))
                data = img.data
                if faults.get("corrupt_jpeg") == f and cam == "CAM_FRONT":
                    data = data[: len(data) * 2 // 5]
                if faults.get("oversized") == f and cam == "CAM_BACK_RIGHT":
                    data = np.concatenate([data, np.zeros(max(0, oversized_bytes - len(data)), np.uint8)])
                orig = img.data
                img.data = data
                img_bytes = bytes(ts.serialize_cdr(img, "sensor_msgs/msg/CompressedImage"))
                img.data = orig
                events.append((stamp, c_info[cam], info_bytes))
                events.append((stamp, c_img[cam], img_bytes))
            for stamp, conn, b in events:  # camera_info before its image, cameras in time order
                w.write(conn, stamp, b)
            meta["frames"].append(stamps)
            offset += int((pauses or {}).get(f, 0.0) * 1e9)
    finally:
        w.close()
    return meta


@dataclass
class LiveResult:
    bag: Path
    node_rc: int | None = None
    record_rc: int | None = None
    play_rc: int | None = None
    node_stop_s: float | None = None
    record_stop_s: float | None = None
    node_log: str = ""
    record_log: str = ""
    play_log: str = ""
    timing_log: Path | None = None
    leftover: list[str] = field(default_factory=list)


def _stop(proc: subprocess.Popen, sig: int, timeout: float) -> float | None:
    """Send ``sig``; seconds until exit, or None if it had to be killed."""
    if proc.poll() is not None:
        return 0.0
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
        return time.monotonic() - t0
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return None


def run_live(input_bag: Path, checkpoint: Path, workdir: Path, node_params: dict[str, Any] | None = None,
             rate: float = 1.0, settle_s: float = 3.0, node_sig: int = signal.SIGINT, record_sig: int = signal.SIGTERM,
             domain_id: int | None = None, startup_timeout: float = 60.0) -> LiveResult:
    """Record + node + play on a loopback-only DDS domain. Every wait is bounded."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = loopback_env(domain_id)
    env.setdefault("OMP_NUM_THREADS", "1")
    res = LiveResult(bag=workdir / "outputs", timing_log=workdir / "play_timing.txt")
    logs = {k: open(workdir / f"{k}.log", "w+") for k in ("record", "node", "play")}  # noqa: SIM115
    params = {"checkpoint": str(checkpoint), "device": "cpu", "diagnostics_period": 0.5}
    params.update(node_params or {})
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["record"] = subprocess.Popen(
            [PY, "-m", "priorocc_ros.tools.record", "--out", str(res.bag), *OUTPUT_TOPICS],
            env=env, stdout=logs["record"], stderr=subprocess.STDOUT)
        node_cmd = [PY, "-m", "priorocc_ros.occupancy_node", "--transport", "dds", "--node-name", NODE]
        for k, v in params.items():
            node_cmd += ["-p", f"{k}:={json.dumps(v) if not isinstance(v, str) else v}"]
        procs["node"] = subprocess.Popen(node_cmd, env=env, stdout=logs["node"], stderr=subprocess.STDOUT)
        play = subprocess.run(
            [PY, "-m", "priorocc_ros.tools.play", str(input_bag), "--rate", str(rate),
             "--wait-for-subscribers", "1", "--wait-timeout", str(startup_timeout), "--delay", "1.0",
             "--timing-log", str(res.timing_log)],
            env=env, stdout=logs["play"], stderr=subprocess.STDOUT, timeout=startup_timeout + 120)
        res.play_rc = play.returncode
        time.sleep(settle_s)  # let the node finish the last set and publish diagnostics
        res.node_stop_s = _stop(procs["node"], node_sig, 5.0)
        res.node_rc = procs["node"].returncode
        time.sleep(1.0)  # final diagnostics reach the recorder
        res.record_stop_s = _stop(procs["record"], record_sig, 5.0)
        res.record_rc = procs["record"].returncode
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(5)
        for k, f in logs.items():
            f.seek(0)
            setattr(res, f"{k}_log", f.read())
            f.close()
    res.leftover = [str(p.pid) for p in procs.values() if p.poll() is None]
    return res


def read_outputs(bag: Path) -> dict[str, list[tuple[str, int, Any]]]:
    """topic -> [(type, receive_ns, message)]."""
    ts = typestore()
    out: dict[str, list] = {}
    with Reader(bag) as r:
        for conn, t, raw in r.messages():
            out.setdefault(conn.topic, []).append((conn.msgtype, t, ts.deserialize_cdr(raw, conn.msgtype)))
    return out


def latency_report(outputs: dict, meta: dict, timing_log: Path) -> dict:
    """Input set complete at the player (its last image published) -> /voxels received by the
    recorder, per output set; percentiles in ms."""
    pub_wall: dict[int, int] = {}
    for line in timing_log.read_text().split("\n"):
        if line.strip():
            bag_ts, wall, topic = line.split(" ", 2)
            if topic.endswith("image_rect_compressed"):
                pub_wall[int(bag_ts)] = max(pub_wall.get(int(bag_ts), 0), int(wall))
    by_ref = {}
    for stamps in meta["frames"]:
        if "CAM_FRONT" in stamps:
            last = max(pub_wall.get(s, 0) for s in stamps.values())
            by_ref[stamps["CAM_FRONT"]] = last
    lat = []
    for _, recv, msg in outputs.get(f"/{NODE}/voxels", []):
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if by_ref.get(stamp):
            lat.append((recv - by_ref[stamp]) / 1e6)
    if not lat:
        return {"n": 0}
    a = np.asarray(lat)
    return {"n": int(a.size), **{f"p{q}": round(float(np.percentile(a, q)), 1) for q in (50, 90, 99)},
            "max": round(float(a.max()), 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="live DDS benchmark: record + node + play")
    ap.add_argument("--src", type=Path, required=True, help="converter bag (six cameras, e.g. the real keyframe)")
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--hz", type=float, default=12.0)
    ap.add_argument("--param", "-p", action="append", default=[], help="node parameter NAME:=VALUE")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    live = args.work / "input"
    meta = make_live_bag(args.src, live, frames=args.frames, hz=args.hz)
    params = dict(p.split(":=", 1) for p in args.param)
    res = run_live(live, args.checkpoint, args.work / "run", node_params=params)
    outs = read_outputs(res.bag)
    diag = outs.get("/diagnostics", [])
    from priorocc_ros.outputs import diagnostics_values

    last = diagnostics_values(diag[-1][2]) if diag else {}
    report = {
        "latency_ms": latency_report(outs, meta, res.timing_log),
        "sets": {k: last.get(k) for k in ("sets_in", "sets_out", "sets_dropped", "sets_failed", "incomplete_sets")},
        "model_ms": {q: last.get(f"latency_model_{q}_ms") for q in ("p50", "p90")},
        "outputs": {t: len(v) for t, v in outs.items()},
        "transport": [ln for ln in res.node_log.splitlines() if "transport codec" in ln],
        "rc": {"node": res.node_rc, "record": res.record_rc, "play": res.play_rc},
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
