"""``priorocc_record --out BAG TOPICS...``: write live DDS topics into a ROS 2 bag, like
``ros2 bag record``.

Topics and their ROS 2 types are found through DDS discovery (``DCPSPublication``); a topic
is subscribed as soon as its first publisher appears, with the QoS its publishers offer
(reliable only if all are reliable, transient local only if all are, so ``/tf_static``'s
latched message is fetched). Each sample's CDR bytes are stored unchanged (DDS padding
removed, see ``dds.participant.strip_padding``) with the receive time as the bag timestamp
and the ROS 2 type name, in an MCAP (default) or sqlite3 rosbag2 bag written with rosbags.

The bag is written under a hidden temporary name in the output's folder and renamed to
``--out`` only once it is complete: after SIGINT/SIGTERM, ``--duration`` or
``--max-messages``, the writer is closed (metadata written) and the folder renamed; a
killed recorder leaves no half bag under the final name.

Exit status: 0 (bag written), 2 (bad arguments / output exists), 3 (nothing recorded with
``--require-messages``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cyclonedds.core import WaitSet

from priorocc_core import cli
from priorocc_core.errors import PriorOccError
from priorocc_ros.bagio import AtomicBagWriter
from priorocc_ros.dds.participant import DdsContext, strip_padding
from priorocc_ros.msgs import typestore
from priorocc_ros.tools.common import GraphWatcher, StopFlag
from priorocc_ros.transport.base import QoSProfile

READER_DEPTH = 200  # local history: absorbs bursts while the bag is written


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="priorocc_record", description=__doc__.split("\n\n")[0])
    ap.add_argument("topics", nargs="*", help="ROS 2 topics to record, e.g. /tf /CAM_FRONT/camera_info")
    ap.add_argument("--out", "-o", type=Path, required=True, help="output bag folder (must not exist)")
    ap.add_argument("--all", "-a", action="store_true", help="record every ROS 2 topic discovered")
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    ap.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    ap.add_argument("--max-messages", type=int, default=None, help="stop after this many messages")
    ap.add_argument("--require-messages", action="store_true", help="exit 3 if nothing was recorded")
    ap.add_argument("--domain-id", type=int, default=None, help="DDS domain (default ROS_DOMAIN_ID or 0)")
    ap.add_argument("--quiet", action="store_true")
    cli.add_debug_arg(ap)
    args = ap.parse_args(argv)
    if not args.topics and not args.all:
        ap.error("give topics to record, or --all")
    bad = [t for t in args.topics if not t.startswith("/")]
    if bad:
        ap.error(f"topics must be absolute ROS 2 names like /a/b: {bad}")
    return args


class Recorder:
    def __init__(self, args: argparse.Namespace, stop: StopFlag | None = None):
        self.args = args
        self.stop = stop or StopFlag()
        self.log = (lambda *_: None) if args.quiet else \
            (lambda m: print(f"[priorocc_record] {m}", file=sys.stderr, flush=True))
        self.counts: dict[str, int] = {}
        self.ctx = DdsContext(domain_id=args.domain_id, node=("/", "priorocc_record"))
        self.graph = GraphWatcher(self.ctx.participant, ignore_participant=self.ctx.participant.guid)
        self.waitset = WaitSet(self.ctx.participant)
        self.readers: dict[str, tuple] = {}  # topic -> (DdsReader, type name, qos)

    def _subscribe_new(self, writer: AtomicBagWriter) -> None:
        wanted = None if self.args.all else set(self.args.topics)
        for topic, info in self.graph.poll().items():
            if wanted is not None and topic not in wanted:
                continue
            if topic in self.readers:
                known = self.readers[topic][2]
                now = info.writer_qos()
                if now is not None and now.reliability != known.reliability and known.reliability == "reliable":
                    self.log(f"{topic}: a best-effort publisher appeared; the reliable subscription "
                             "does not receive from it")
                continue
            if not info.type_name or info.type_name not in typestore().types:
                self.log(f"{topic}: type {info.type_name or '?'} unknown, not recorded")
                self.readers[topic] = (None, None, QoSProfile("best_effort", "volatile", 1))
                continue
            offered = info.writer_qos()
            qos = QoSProfile(offered.reliability, offered.durability, READER_DEPTH)
            reader = self.ctx.reader(info.type_name, topic, qos)
            writer.add_topic(topic, info.type_name, qos)
            self.waitset.attach(reader.condition)
            self.readers[topic] = (reader, info.type_name, qos)
            self.counts[topic] = 0
            self.log(f"recording {topic} [{info.type_name}] ({qos.reliability}, {qos.durability})")

    def _drain(self, writer: AtomicBagWriter) -> int:
        n = 0
        for topic, (reader, type_name, _) in list(self.readers.items()):
            if reader is None:
                continue
            while True:
                samples = reader.take_raw(64)
                if not samples:
                    break
                now = time.time_ns()
                for s in samples:
                    writer.write_raw(topic, type_name, now, strip_padding(s.data))
                self.counts[topic] += len(samples)
                n += len(samples)
        return n

    def run(self) -> Path:
        """Record until stopped; the bag appears at ``out`` only when complete (the project's one
        atomic bag writer: a temporary folder beside it, renamed at the end, removed on error)."""
        out: Path = self.args.out
        if out.exists():
            raise FileExistsError(f"{out} exists already; not overwriting")
        t_end = None if self.args.duration is None else time.monotonic() + self.args.duration
        next_poll = 0.0
        total = 0
        try:
            with AtomicBagWriter(out, storage=self.args.storage) as writer:
                self.log(f"recording into {out} (domain {self.ctx.domain_id})")
                while not self.stop.is_set():
                    now = time.monotonic()
                    if t_end is not None and now >= t_end:
                        break
                    if now >= next_poll:
                        self._subscribe_new(writer)
                        next_poll = now + 0.1
                    self.waitset.wait(int(0.05 * 1e9))
                    total += self._drain(writer)
                    if self.args.max_messages is not None and total >= self.args.max_messages:
                        break
                total += self._drain(writer)  # what arrived before the stop
        finally:
            self.ctx.close()
        why = f" (stopped by {self.stop.signal_name})" if self.stop.signal_name else ""
        self.log(f"wrote {total} messages on {len(self.counts)} topics to {out}{why}: "
                 + ", ".join(f"{t}={c}" for t, c in sorted(self.counts.items())))
        return out


def main(argv: list[str] | None = None) -> int:
    return cli.run("priorocc_record", _main, argv)


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        rec = Recorder(args)
        rec.run()
    except FileExistsError as exc:
        raise PriorOccError(str(exc)) from exc
    if args.require_messages and not sum(rec.counts.values()):
        print(cli.error_line("priorocc_record", "no messages recorded"), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
