"""``priorocc_play BAG``: publish a ROS 2 bag's messages on DDS, like ``ros2 bag play``.

Reads MCAP or sqlite3 rosbag2 bags with rosbags and writes each message's stored CDR bytes
unchanged (no decode/re-encode) on ``rt/<topic>`` with the ROS 2 type, at the recorded
timing scaled by ``--rate``. QoS by topic kind (``tools.common.qos_for``): sensor data for
images / camera_info / point clouds (reliable with ``--reliable-sensors``), reliable + transient local + keep last 1 for
``/tf_static``, reliable otherwise. ``--clock`` publishes ``/clock`` (sim time) at
``--clock-hz`` and with every message. Before the first message the player waits (at most
``--wait-timeout`` s) until every played topic has ``--wait-for-subscribers`` matched readers
(default 1), so that a recorder or node started with it, before or just after it, gets every
message (``priorocc_play BAG & priorocc_record --out X --all`` records the whole bag);
``--wait-for-subscribers 0`` plays at once, as ``ros2 bag play`` does. ``--delay`` sleeps
before the first message.

Exit status: 0 when done (or stopped by SIGINT/SIGTERM), 2 on a bad bag or argument.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rosbags.rosbag2 import Reader, ReaderError

from priorocc_core import cli
from priorocc_core.errors import PriorOccError
from priorocc_ros.bagio import BagError, bag_dir
from priorocc_ros.dds.participant import DdsContext
from priorocc_ros.msgs import typestore
from priorocc_ros.tools.common import StopFlag, qos_for
from priorocc_ros.transport.base import QoSProfile

CLOCK_PUB_QOS = QoSProfile("best_effort", "volatile", 1)  # rclcpp::ClockQoS


def _clock_cdr(ns: int) -> bytes:
    msg = typestore().types["rosgraph_msgs/msg/Clock"](
        clock=typestore().types["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000))
    return bytes(typestore().serialize_cdr(msg, "rosgraph_msgs/msg/Clock"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="priorocc_play", description=__doc__.split("\n\n")[0])
    ap.add_argument("bag", type=Path, help="rosbag2 directory (or its .mcap / .db3 file's folder)")
    ap.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    ap.add_argument("--loop", action="store_true", help="play again from the start when done")
    ap.add_argument("--topics", nargs="+", default=None, help="play only these topics")
    ap.add_argument("--clock", action="store_true", help="publish /clock with the bag time")
    ap.add_argument("--clock-hz", type=float, default=100.0, help="/clock rate between messages")
    ap.add_argument("--wait-for-subscribers", type=int, default=1, metavar="N",
                    help="before playing, wait until each topic has N matched readers (default 1; 0: play at once)")
    ap.add_argument("--wait-timeout", type=float, default=10.0,
                    help="longest wait for subscribers, seconds (then play anyway; default 10)")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to sleep before playing")
    ap.add_argument("--linger", type=float, default=0.5,
                    help="seconds to keep the writers alive after the last message (reliable delivery)")
    ap.add_argument("--timing-log", type=Path, default=None,
                    help="write 'bag_timestamp_ns wall_time_ns topic' per published message (benchmarks)")
    ap.add_argument("--reliable-sensors", action="store_true",
                    help="publish image / camera_info / point cloud topics reliable (keep last 5) instead of "
                         "sensor-data best effort: readers that adapt (the node's input_reliability:=auto, "
                         "priorocc_record) then get every sample of large raw images; best-effort readers still match")
    ap.add_argument("--domain-id", type=int, default=None, help="DDS domain (default ROS_DOMAIN_ID or 0)")
    ap.add_argument("--quiet", action="store_true")
    cli.add_debug_arg(ap)
    args = ap.parse_args(argv)
    if not args.rate > 0:
        ap.error(f"--rate must be > 0, got {args.rate}")
    return args


def play(args: argparse.Namespace, stop: StopFlag | None = None) -> dict[str, int]:
    """Play the bag; returns messages published per topic."""
    stop = stop or StopFlag()
    log = (lambda *_: None) if args.quiet else (lambda m: print(f"[priorocc_play] {m}", file=sys.stderr, flush=True))
    bag = bag_dir(args.bag)
    ctx = DdsContext(domain_id=args.domain_id, node=("/", "priorocc_play"))
    counts: dict[str, int] = {}
    tlog = open(args.timing_log, "w") if args.timing_log else None  # noqa: SIM115
    try:
        with Reader(bag) as reader:
            conns = [c for c in reader.connections if args.topics is None or c.topic in args.topics]
            if args.topics:
                missing = sorted(set(args.topics) - {c.topic for c in reader.connections})
                if missing:
                    log(f"topics not in the bag (ignored): {missing}")
            if not conns:
                raise ValueError(f"{bag}: no topics to play")
            writers = {}
            for c in conns:
                if c.topic not in writers:
                    qos = qos_for(c.topic, c.msgtype)
                    if args.reliable_sensors and qos.reliability == "best_effort":
                        qos = QoSProfile("reliable", qos.durability, qos.depth)
                    writers[c.topic] = ctx.writer(c.msgtype, c.topic, qos)
                    counts[c.topic] = 0
            clock = ctx.writer("rosgraph_msgs/msg/Clock", "/clock", CLOCK_PUB_QOS) if args.clock else None
            log(f"{bag}: {len(writers)} topics, {reader.message_count} messages, "
                f"{reader.duration / 1e9:.2f} s, rate x{args.rate}")

            if args.wait_for_subscribers > 0:
                deadline = time.monotonic() + args.wait_timeout
                while not stop.is_set() and time.monotonic() < deadline:
                    if all(w.matched_count() >= args.wait_for_subscribers for w in writers.values()):
                        break
                    time.sleep(0.02)
                short = [t for t, w in writers.items() if w.matched_count() < args.wait_for_subscribers]
                if short:
                    log(f"playing although these topics have fewer than {args.wait_for_subscribers} "
                        f"subscribers: {short}")
            if args.delay > 0:
                stop.wait(args.delay)

            while not stop.is_set():
                t_bag0 = None
                t_wall0 = time.monotonic()
                next_clock = 0.0
                for conn, stamp, raw in reader.messages(connections=conns):
                    if t_bag0 is None:
                        t_bag0 = stamp
                    due = t_wall0 + (stamp - t_bag0) / 1e9 / args.rate
                    while not stop.is_set():
                        now = time.monotonic()
                        if clock is not None and now >= next_clock:
                            sim = t_bag0 + int((now - t_wall0) * args.rate * 1e9)
                            clock.write_cdr(_clock_cdr(min(sim, stamp)))
                            next_clock = now + 1.0 / args.clock_hz
                        if now >= due:
                            break
                        wake = due if clock is None else min(due, next_clock)
                        stop.wait(min(0.1, max(0.0, wake - now)))
                    if stop.is_set():
                        break
                    if clock is not None:
                        clock.write_cdr(_clock_cdr(stamp))
                    writers[conn.topic].write_cdr(raw)
                    counts[conn.topic] += 1
                    if tlog is not None:
                        tlog.write(f"{stamp} {time.time_ns()} {conn.topic}\n")
                if not args.loop:
                    break
            if args.linger > 0 and not stop.is_set():
                stop.wait(args.linger)
    finally:
        ctx.close()
        if tlog is not None:
            tlog.close()
    log(f"published {sum(counts.values())} messages"
        + (f" (stopped by {stop.signal_name})" if stop.signal_name else ""))
    return counts


def main(argv: list[str] | None = None) -> int:
    return cli.run("priorocc_play", _main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        play(args)
    except (BagError, ValueError, ReaderError) as exc:
        raise PriorOccError(str(exc)) from exc
    return 0


if __name__ == "__main__":
    sys.exit(main())
