"""The Foxglove live view's cost (issue 29). Two measurements, figures in BENCHMARKS.md:

  overhead  priorocc_replay's per-set time over bags/demo with and without ``--foxglove``
            (a client reading every channel, in its own process), runs alternated
  serve     CPU time the server spends per set (5.3 MB, the demo model's sizes) sent to a
            client that reads everything, in its own process
  stall-replay  the node (replay code, demo model) over --frames sets, without and with a
            client that subscribes to everything and never reads for the whole run
  stall     60 s of 5 MB sets at 10 Hz handed to the server while a client subscribes to
            everything and never reads: publish() call times, process memory, counters; then
            the client reads what is left: messages offered, received and lost

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/foxglove_view.py overhead --repeats 3
    PYTHONPATH=. .venv/bin/python benchmarks/foxglove_view.py serve --sets 100
    PYTHONPATH=. .venv/bin/python benchmarks/foxglove_view.py stall --seconds 60
    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/foxglove_view.py stall-replay --frames 72
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

READER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[2])
from benchmarks import foxglove_clients as fc
port = int(sys.argv[1])
for _ in range(600):
    try:
        s, rest = fc.connect(port)
        break
    except OSError:
        time.sleep(0.1)
fc.subscribe_all(s, rest, set(json.loads(sys.argv[3])), timeout=300)
n = 0
while True:
    b = s.recv(1 << 20)
    if not b:
        break
    n += len(b)
print(n)
"""


# one set of the demo model's outputs (bytes per topic, the largest seen on bags/demo)
_SET_SIZES = {"/priorocc/voxels": 2_600_000, "/priorocc/markers": 1_800_000, "/priorocc/bev": 40_000,
              **{f"/priorocc/seg_overlay/{i}": 135_000 for i in range(6)}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def overhead(args) -> dict:
    from priorocc_core.backends import make_predictor
    from priorocc_core.classes import CAMERAS
    from priorocc_ros.replay import replay

    predictor = make_predictor(args.checkpoint)
    rows = {"plain": [], "foxglove": []}
    for r in range(args.repeats):
        for mode in ("plain", "foxglove"):
            with tempfile.TemporaryDirectory() as tmp:
                fox, reader = None, None
                if mode == "foxglove":
                    port = _free_port()
                    fox = dict(port=port, wait=1)
                    reader = subprocess.Popen([sys.executable, "-c", READER, str(port), str(ROOT), json.dumps(
                        ["/priorocc/voxels", "/priorocc/markers", "/priorocc/bev", "/diagnostics"]
                        + [f"/priorocc/seg_overlay/{c}" for c in CAMERAS])], stdout=subprocess.PIPE, text=True)
                cpu0 = time.process_time()  # every thread of this process, the SDK's included
                s = replay(args.bag, Path(tmp) / "out", predictor=predictor, foxglove_server=fox)
                cpu = time.process_time() - cpu0
                if reader is not None:
                    got = int(reader.communicate(timeout=120)[0] or 0)
                lat = s.latency_ms
                row = dict(cpu_per_set_ms=1e3 * cpu / max(1, s.node["sets_out"]),
                           wall_per_set_ms=1e3 * s.wall_s / max(1, s.node["sets_out"]),
                           total_p50_ms=lat["total"]["p50"], write_p50_ms=lat["write"]["p50"],
                           build_p50_ms=lat["build"]["p50"], model_p50_ms=lat["model"]["p50"])
                if reader is not None:
                    row["bytes_to_viewer"] = got
                rows[mode].append(row)
                print(r, mode, json.dumps({k: round(v, 1) for k, v in row.items()}), flush=True)
    med = {m: {k: float(np.median([x[k] for x in v])) for k in v[0] if k != "bytes_to_viewer"}
           for m, v in rows.items()}
    med["added_percent"] = {k: 100 * (med["foxglove"][k] / med["plain"][k] - 1) for k in med["plain"]}
    return dict(runs=rows, median=med)


def _image_sink(echo: bool):
    """A sink on a free port with one Image channel per output of the node's set sizes, and the
    payload (CDR header + zero bytes) of each: (sink, sizes, payload)."""
    from priorocc_ros.foxglove import FoxgloveSink
    from priorocc_ros.transport.loopback import _ListLogger

    sink = FoxgloveSink(0, logger=_ListLogger("bench", echo=echo))
    for t in _SET_SIZES:
        sink.advertise(t, "sensor_msgs/msg/Image")
    return sink, _SET_SIZES, {t: b"\0\1\0\0" + bytes(n) for t, n in _SET_SIZES.items()}


def stall(args) -> dict:
    sys.path.insert(0, str(ROOT))
    from benchmarks import foxglove_clients as fc

    sink, sizes, payload = _image_sink(echo=True)
    s, rest = fc.connect(sink.port, rcvbuf=4096)
    fc.subscribe_all(s, rest, set(sizes))
    time.sleep(0.5)
    rss0 = fc.rss_bytes()
    calls, rss = [], []
    t_end = time.monotonic() + args.seconds
    k = 0
    while time.monotonic() < t_end:
        t_set = time.monotonic()
        for t, d in payload.items():
            t0 = time.perf_counter()
            sink.publish(t, "sensor_msgs/msg/Image", d, k)
            calls.append(time.perf_counter() - t0)
        k += 1
        if k % 10 == 0:
            rss.append(fc.rss_bytes() - rss0)
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t_set)))
    st = sink.stats()
    received = _drain(fc, s)  # the client reads at last: what it gets, against what was offered
    s.close()
    sink.close(timeout=2.0)
    c = np.asarray(calls) * 1e6
    offered = k * len(sizes)
    return dict(seconds=args.seconds, sets=k, mb_offered=k * sum(sizes.values()) / 1e6,
                publish_us=dict(p50=float(np.percentile(c, 50)), p99=float(np.percentile(c, 99)), max=float(c.max())),
                rss_growth_mb=dict(max=max(rss) / 1e6, last=rss[-1] / 1e6, first=rss[0] / 1e6), counters=st,
                messages=dict(offered=offered, received=received, lost=offered - received))


def _drain(fc, s, quiet: float = 3.0) -> int:
    """Read a stalled client's socket until the server sends nothing for ``quiet`` s; the
    number of message-data frames (binary, op 1) it got."""
    reader, n = fc.FrameReader(s), 0
    while True:
        try:
            op, payload = reader.next(time.monotonic() + quiet)
        except (TimeoutError, ConnectionError):
            return n
        n += op == 2 and payload[:1] == b"\x01"


def serve(args) -> dict:
    """CPU time this process spends serving ``--sets`` sets of the node's sizes to a client
    that reads everything (in its own process): the live view's whole cost to the node."""
    sys.path.insert(0, str(ROOT))
    sink, sizes, payload = _image_sink(echo=False)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(sink.port), str(ROOT), json.dumps(list(sizes))],
                              stdout=subprocess.PIPE, text=True)
    if not sink.wait_for_subscribers(set(sizes), 1, timeout=60):
        raise RuntimeError("the reading client did not subscribe")
    cpu0, t0 = time.process_time(), time.perf_counter()
    for k in range(args.sets):
        for t, d in payload.items():
            sink.publish(t, "sensor_msgs/msg/Image", d, k)
        time.sleep(0.1)  # 10 Hz, the node's rate at best
    sink.close(timeout=30)
    cpu = time.process_time() - cpu0
    got = int(reader.communicate(timeout=120)[0] or 0)
    return dict(sets=args.sets, mb_per_set=sum(sizes.values()) / 1e6, cpu_ms_per_set=1e3 * cpu / args.sets,
                bytes_received=got, bytes_offered=args.sets * sum(len(d) for d in payload.values()),
                counters=sink.stats(), wall_s=time.perf_counter() - t0)


def stall_replay(args) -> dict:
    """The node itself with a stalled viewer: ``--frames`` sets (bags/demo re-timed) replayed
    without and then with ``--foxglove`` while a client subscribes to every output and never
    reads for the whole run; sets out, output bytes, peak memory and the counters compared."""
    import threading

    sys.path.insert(0, str(ROOT))
    from benchmarks.dds_live import make_live_bag
    from priorocc_core.backends import make_predictor
    from priorocc_core.classes import CAMERAS
    from priorocc_ros.bagio import iter_raw
    from priorocc_ros.replay import replay
    from benchmarks import foxglove_clients as fc

    outputs = {"/priorocc/voxels", "/priorocc/markers", "/priorocc/bev", "/diagnostics",
               *(f"/priorocc/seg_overlay/{c}" for c in CAMERAS)}
    predictor = make_predictor(args.checkpoint)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "long"
        make_live_bag(Path(args.bag), bag, frames=args.frames, hz=12.0)
        for mode in ("plain", "stalled"):
            peak, stop = [fc.rss_bytes()], threading.Event()
            rss0 = peak[0]

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], fc.rss_bytes())
                    time.sleep(0.05)

            fox, stalled = None, []
            if mode == "stalled":
                port = _free_port()
                fox = dict(port=port, wait=1)

                def stall():
                    for _ in range(600):
                        try:
                            s, rest = fc.connect(port, rcvbuf=4096)
                            break
                        except OSError:
                            time.sleep(0.1)
                    fc.subscribe_all(s, rest, outputs, timeout=300)
                    stalled.append(s)  # never read

                threading.Thread(target=stall, daemon=True).start()
            th = threading.Thread(target=sample, daemon=True)
            th.start()
            t0 = time.perf_counter()
            sm = replay(bag, Path(tmp) / mode, predictor=predictor, foxglove_server=fox)
            wall = time.perf_counter() - t0
            stop.set()
            th.join()
            for s in stalled:
                s.close()
            raw = {}
            for topic, _, t, data in iter_raw(Path(tmp) / mode, []):
                if topic.startswith("/priorocc/"):
                    raw.setdefault(topic, []).append((t, bytes(data)))
            res[mode] = dict(wall_s=wall, sets_in=sm.node["sets_in"], sets_out=sm.node["sets_out"],
                             peak_rss_growth_mb=(peak[0] - rss0) / 1e6,
                             counters={k: v for k, v in sm.node.items() if "foxglove" in k}, raw=raw)
    same = res["plain"].pop("raw") == res["stalled"].pop("raw")
    return dict(frames=args.frames, outputs_identical=same, **res)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--bag", default=str(ROOT / "bags" / "demo"))
    o.add_argument("--checkpoint", default=str(ROOT / "models" / "demo"))
    o.add_argument("--repeats", type=int, default=3)
    v = sub.add_parser("serve")
    v.add_argument("--sets", type=int, default=100)
    r = sub.add_parser("stall-replay")
    r.add_argument("--bag", default=str(ROOT / "bags" / "demo"))
    r.add_argument("--checkpoint", default=str(ROOT / "models" / "demo"))
    r.add_argument("--frames", type=int, default=72)
    s = sub.add_parser("stall")
    s.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    res = {"overhead": overhead, "serve": serve, "stall": stall, "stall-replay": stall_replay}[args.what](args)
    print(json.dumps(res["median"] if "median" in res else res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
