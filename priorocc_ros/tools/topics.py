"""``priorocc_topics``: list the live ROS 2 topics on DDS with types, publishers and rates,
like ``ros2 topic list -t`` + ``ros2 topic hz``.

Topics come from DDS built-in discovery (``DCPSPublication``: every writer's topic, type and
QoS). Rates: for ``--duration`` seconds a best-effort reader per topic counts the samples
that arrive (no decoding) -> messages/s and bytes/s. ``--no-hz`` lists without measuring.
``--json`` prints one JSON object (for scripts and tests).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from cyclonedds.core import WaitSet

from priorocc_core import cli
from priorocc_ros.dds.participant import DdsContext
from priorocc_ros.msgs import typestore
from priorocc_ros.tools.common import GraphWatcher, StopFlag
from priorocc_ros.transport.base import QoSProfile


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="priorocc_topics", description=__doc__.split("\n\n")[0])
    ap.add_argument("topics", nargs="*", help="only these topics (default: all)")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds to discover / measure (default 2)")
    ap.add_argument("--no-hz", action="store_true", help="list only, do not measure rates")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--domain-id", type=int, default=None, help="DDS domain (default ROS_DOMAIN_ID or 0)")
    cli.add_debug_arg(ap)
    return ap.parse_args(argv)


def survey(args: argparse.Namespace, stop: StopFlag | None = None) -> dict[str, dict]:
    """topic -> {type, publishers, reliability, durability, count, hz, bytes_per_s}."""
    stop = stop or StopFlag()
    ctx = DdsContext(domain_id=args.domain_id)
    try:
        graph = GraphWatcher(ctx.participant, ignore_participant=ctx.participant.guid)
        ws = WaitSet(ctx.participant)
        readers: dict[str, tuple] = {}
        stats: dict[str, dict] = {}
        t0 = time.monotonic()
        t_first: dict[str, float] = {}
        next_poll = 0.0
        while not stop.is_set() and time.monotonic() - t0 < args.duration:
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + 0.1
                for topic, info in graph.poll().items():
                    if args.topics and topic not in args.topics:
                        continue
                    qos = info.writer_qos()
                    stats[topic] = dict(type=info.type_name, publishers=len(info.writers),
                                        reliability=qos.reliability, durability=qos.durability,
                                        count=stats.get(topic, {}).get("count", 0),
                                        bytes=stats.get(topic, {}).get("bytes", 0))
                    if not args.no_hz and topic not in readers and info.type_name in typestore().types:
                        r = ctx.reader(info.type_name, topic, QoSProfile("best_effort", "volatile", 100))
                        ws.attach(r.condition)
                        readers[topic] = r
                        t_first[topic] = now
            ws.wait(int(0.05 * 1e9))
            for topic, r in readers.items():
                for s in r.take_raw(256):
                    stats[topic]["count"] += 1
                    stats[topic]["bytes"] += len(s.data)
        t1 = time.monotonic()
        for topic, st in stats.items():
            if topic in readers:
                span = max(1e-6, t1 - t_first[topic])
                st["hz"] = round(st["count"] / span, 2)
                st["bytes_per_s"] = round(st["bytes"] / span)
            else:
                st["hz"] = None
                st["bytes_per_s"] = None
        return stats
    finally:
        ctx.close()


def main(argv: list[str] | None = None) -> int:
    return cli.run("priorocc_topics", _main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    stats = survey(args)
    if args.json:
        print(json.dumps(stats, indent=1, sort_keys=True))
        return 0
    if not stats:
        print("no ROS 2 topics seen", file=sys.stderr)
        return 0
    width = max(len(t) for t in stats)
    for topic in sorted(stats):
        st = stats[topic]
        rate = "" if st["hz"] is None else f"  {st['hz']:8.2f} Hz  {st['bytes_per_s'] / 1e6:8.3f} MB/s"
        print(f"{topic:<{width}}  [{st['type'] or '?'}]  pubs={st['publishers']} "
              f"{st['reliability']}/{st['durability']}{rate}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
