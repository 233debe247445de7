"""Console entry point ``priorocc_replay``: run the occupancy node over a bag, offline.

    priorocc_replay INPUT_BAG --checkpoint CKPT --out OUTPUT_BAG [--copy-inputs] [-p NAME:=VALUE ...]

The node's own code (``OccupancyNodeCore``: synchroniser, calibration from CameraInfo + TF,
decoding, inference, output messages, counters) runs over an in-process transport: the bag's
messages are published to it in log-time order and everything it publishes is written to
the output bag (log time = the output's header stamp = the stamp of its input set). The
time budget is unlimited: the synchroniser waits for inference, so no complete set is lost.
The summary gives sets in / out / dropped / failed, errors per kind, and latency
percentiles per stage (read = bag deserialisation, sync, decode, model, build = message
building, write = serialisation + bag write).
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from priorocc_ros.bagio import AtomicBagWriter, BagError, bag_topics, iter_raw
from priorocc_ros.msgs import deserialize, stamp_to_ns
from priorocc_ros.node_core import LatencyWindow, OccupancyNodeCore
from priorocc_ros.occupancy_node import _parse_param
from priorocc_ros.pipeline import OUTPUT_TYPES
from priorocc_ros.transport.base import RELIABLE_QOS, SENSOR_DATA_QOS, TF_STATIC_QOS
from priorocc_ros.transport.loopback import LoopbackBus, LoopbackTransport


@dataclass
class ReplaySummary:
    input_bag: str
    output_bag: str
    messages_read: int = 0
    bag_errors: list[str] = field(default_factory=list)
    node: dict[str, Any] = field(default_factory=dict)  # OccupancyNodeCore.stats()
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> p50/p90/p99/n
    outputs_written: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def sets_per_s(self) -> float:
        return self.node.get("sets_out", 0) / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(input_bag=self.input_bag, output_bag=self.output_bag, messages_read=self.messages_read,
                    bag_errors=self.bag_errors, node=self.node, latency_ms=self.latency_ms,
                    outputs_written=self.outputs_written, wall_s=self.wall_s, sets_per_s=self.sets_per_s)

    def text(self) -> str:
        n = self.node
        lines = [
            f"replay {self.input_bag} -> {self.output_bag}",
            f"  messages read {self.messages_read}, bag errors {len(self.bag_errors)}",
            f"  sets in {n.get('sets_in', 0)}, out {n.get('sets_out', 0)}, dropped {n.get('sets_dropped', 0)}, "
            f"failed {n.get('sets_failed', 0)}, incomplete {n.get('incomplete_sets', 0)}",
            "  errors: " + (", ".join(f"{k[7:]} {v}" for k, v in n.items() if k.startswith("errors_")) or "none"),
            f"  wall {self.wall_s:.2f} s, {self.sets_per_s:.2f} sets/s",
            "  latency ms (p50 / p90 / p99, n):",
        ]
        for stage in ("read", "sync", "decode", "model", "build", "write", "total"):
            if stage in self.latency_ms:
                v = self.latency_ms[stage]
                lines.append(f"    {stage:<7} {v['p50']:8.2f} {v['p90']:8.2f} {v['p99']:8.2f}  ({v['n']})")
        for stage, v in self.latency_ms.items():
            if stage.startswith("model."):
                lines.append(f"    {stage:<16} {v['p50']:8.2f} {v['p90']:8.2f} {v['p99']:8.2f}  ({v['n']})")
        for e in self.bag_errors[:5]:
            lines.append(f"  bag error: {e}")
        return "\n".join(lines)


def _log_stamp(msg: Any, fallback: int) -> int:
    h = getattr(msg, "header", None)
    if h is not None:
        return stamp_to_ns(h.stamp)
    markers = getattr(msg, "markers", None)
    if markers:
        return stamp_to_ns(markers[0].header.stamp)
    return fallback


def replay(input_bag: str | Path, output_bag: str | Path, predictor: Any = None, parameters: dict | None = None,
           storage: str = "mcap", copy_inputs: bool = False, overwrite: bool = False,
           node_name: str = "priorocc", diagnostics_period_s: float = 1.0, echo_log: bool = False) -> ReplaySummary:
    """Run the node over ``input_bag``; write every output topic to ``output_bag``.

    predictor: an OccupancyPredictor (else the ``checkpoint`` parameter is loaded).
    parameters: node parameters (see params.PARAMETERS). Raises BagError if the input bag
    cannot be opened; damage further in is counted in ``bag_errors`` and the replay goes on.
    """
    params = dict(parameters or {})
    summary = ReplaySummary(str(input_bag), str(output_bag))
    topics = bag_topics(input_bag)  # BagError if unusable
    if "compressed" not in params:
        params["compressed"] = any(t.endswith("/image_rect_compressed") or ty.endswith("CompressedImage")
                                   for t, (ty, _) in topics.items())
    bag_time = [0]
    bus = LoopbackBus(queued=False)
    node_t = LoopbackTransport(node_name, bus, parameters=params, clock_ns=lambda: bag_time[0], echo_log=echo_log)
    player = LoopbackTransport("priorocc_replay_player", bus)
    lat = LatencyWindow(n=100_000)
    write_lock = threading.Lock()
    t_start = time.perf_counter()
    with AtomicBagWriter(output_bag, storage=storage, overwrite=overwrite) as w:
        core = OccupancyNodeCore(node_t, predictor=predictor, block=True)
        core.latency = LatencyWindow(n=100_000)

        def recorder(topic: str, type_name: str):
            def cb(msg: Any) -> None:
                t0 = time.perf_counter()
                with write_lock:
                    w.write(topic, type_name, _log_stamp(msg, bag_time[0]), msg, RELIABLE_QOS)
                dt = time.perf_counter() - t0
                if type_name != "diagnostic_msgs/msg/DiagnosticArray":
                    lat.add(f"write:{topic}", dt)
            return cb

        out_topics = {node_t.resolve_topic(t): ty for t, ty in
                      [(f"~/{k}", OUTPUT_TYPES[k.split('/')[0]]) for k in core.pubs]}
        out_topics["/diagnostics"] = "diagnostic_msgs/msg/DiagnosticArray"
        for topic, ty in out_topics.items():
            player.create_subscription(ty, topic, recorder(topic, ty), RELIABLE_QOS)
        pubs: dict[str, Any] = {}
        wanted = set(core.input_topics.values()) | {"/tf", "/tf_static"} | {
            core.p["camera_info_topic"].format(camera=c) for c in core.cameras}
        next_diag = None
        it = iter_raw(input_bag, summary.bag_errors)
        while True:
            t0 = time.perf_counter()
            try:
                topic, msgtype, t, raw = next(it)
            except StopIteration:
                break
            summary.messages_read += 1
            bag_time[0] = t
            if copy_inputs:
                with write_lock:
                    w.write_raw(topic, msgtype, t, raw, TF_STATIC_QOS if topic == "/tf_static" else SENSOR_DATA_QOS)
            if topic not in wanted:
                continue
            try:
                msg = deserialize(raw, msgtype)
            except Exception as e:  # noqa: BLE001
                summary.bag_errors.append(f"bag {input_bag}: message on {topic} at {t} ns does not "
                                          f"deserialise as {msgtype}: {e}")
                continue
            lat.add("read", time.perf_counter() - t0)
            pub = pubs.get(topic)
            if pub is None:
                qos = TF_STATIC_QOS if topic == "/tf_static" else SENSOR_DATA_QOS
                try:
                    pub = pubs[topic] = player.create_publisher(msgtype, topic, qos)
                except TypeError as e:  # topic with an unexpected type (e.g. raw vs compressed)
                    summary.bag_errors.append(f"bag {input_bag}: {e}")
                    pubs[topic] = pub = _Null()
            pub.publish(msg)
            if next_diag is None:
                next_diag = t + int(diagnostics_period_s * 1e9)
            elif t >= next_diag:
                core.publish_diagnostics()
                next_diag = t + int(diagnostics_period_s * 1e9)
        for s in core.sync.flush():  # sets still completable at the end of the bag
            core._on_set(s)
        core.close(drain=True)  # processes what is queued, publishes final diagnostics
        node_t.shutdown()
        summary.outputs_written = {k: v for k, v in w.counts.items() if k in out_topics}
    summary.wall_s = time.perf_counter() - t_start
    summary.node = core.stats()
    merged = core.latency
    for stage, ps in merged.percentiles().items():
        summary.latency_ms[stage] = {k: (v * 1e3 if k != "n" else v) for k, v in ps.items()}
    for stage, ps in lat.percentiles().items():
        summary.latency_ms[stage] = {k: (v * 1e3 if k != "n" else v) for k, v in ps.items()}
    # "write" per set: all output topics of one set together
    per_topic = {k: v for k, v in summary.latency_ms.items() if k.startswith("write:")}
    if per_topic:
        summary.latency_ms["write"] = {q: float(sum(v[q] for v in per_topic.values())) for q in ("p50", "p90", "p99")}
        summary.latency_ms["write"]["n"] = min(v["n"] for v in per_topic.values())
        for k in per_topic:
            del summary.latency_ms[k]
    return summary


class _Null:
    def publish(self, msg: Any) -> None:
        pass


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="priorocc_replay", description="Run the occupancy node over a ROS 2 bag offline")
    ap.add_argument("bag", help="input bag folder (MCAP or sqlite3)")
    ap.add_argument("--out", required=True, help="output bag folder")
    ap.add_argument("--checkpoint", default=None, help="checkpoint directory (or -p checkpoint:=...)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--backend", default=None, choices=("torch", "onnxruntime", "openvino"),
                    help="inference backend (default torch; priorocc_core.backends)")
    ap.add_argument("--precision", default=None, choices=("fp32", "bf16", "fp16"))
    ap.add_argument("-p", "--param", action="append", type=_parse_param, default=[], metavar="NAME:=VALUE",
                    help="node parameter (see docs/ros.md), repeatable")
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    ap.add_argument("--copy-inputs", action="store_true", help="copy the input messages into the output bag too")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--json", default=None, help="also write the summary as JSON to this file")
    ap.add_argument("--verbose", action="store_true", help="print the node's log")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    params = dict(args.param)
    if args.checkpoint:
        params["checkpoint"] = args.checkpoint
    for name in ("device", "backend", "precision"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    if not params.get("checkpoint"):
        print("priorocc_replay: --checkpoint is required", file=sys.stderr)
        return 2
    try:
        s = replay(args.bag, args.out, parameters=params, storage=args.storage, copy_inputs=args.copy_inputs,
                   overwrite=args.overwrite, echo_log=args.verbose)
    except (BagError, FileExistsError) as e:
        print(f"priorocc_replay: {e}", file=sys.stderr)
        return 1
    print(s.text())
    if args.json:
        from priorocc_core.data.io import write_json_atomic

        write_json_atomic(args.json, s.as_dict(), indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
