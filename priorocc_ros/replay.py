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
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from priorocc_core.cli import error_line
from priorocc_ros import foxglove
from priorocc_ros.bagio import AtomicBagWriter, BagError, bag_dir, bag_topics, iter_raw
from priorocc_ros.msgs import deserialize, log_stamp_ns, serialize
from priorocc_ros.node_core import (IMAGE_TYPES, INFO_TYPE, PARAMETERS, LatencyWindow, OccupancyNodeCore,
                                    ParameterError, input_topics)
from priorocc_ros.occupancy_node import _parse_param
from priorocc_ros.params import model_cameras, unknown_parameter_errors
from priorocc_ros.transport.base import RELIABLE_QOS, SENSOR_DATA_QOS, TF_STATIC_QOS
from priorocc_ros.transport.loopback import LoopbackBus, LoopbackTransport


@dataclass
class ReplaySummary:
    input_bag: str
    output_bag: str
    messages_read: int = 0
    messages_expected: int = 0  # from the bag's metadata (a cut bag: what could be counted)
    bag_errors: list[str] = field(default_factory=list)
    node: dict[str, Any] = field(default_factory=dict)  # OccupancyNodeCore.stats()
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> p50/p90/p99/n
    outputs_written: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    backend: dict[str, str] = field(default_factory=dict)  # the predictor's choice (Choice.as_dict), auto's too

    @property
    def complete(self) -> bool:
        """Every message of the input was read and every group is accounted for."""
        return not self.bag_errors and not self.node.get("unaccounted")

    @property
    def sets_per_s(self) -> float:
        return self.node.get("sets_out", 0) / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(input_bag=self.input_bag, output_bag=self.output_bag, messages_read=self.messages_read,
                    messages_expected=self.messages_expected, complete=self.complete,
                    bag_errors=self.bag_errors, node=self.node, latency_ms=self.latency_ms,
                    outputs_written=self.outputs_written, wall_s=self.wall_s, sets_per_s=self.sets_per_s,
                    backend=self.backend)

    def backend_line(self) -> str:
        b = self.backend
        if "precision" not in b:
            return b.get("backend", "unknown")
        return f"{b['backend']} {b['precision']} on {b['device']}" + (
            f" ({b['backend_reason']})" if b.get("backend_reason") else "")

    def text(self) -> str:
        n = self.node
        lines = [
            f"replay {self.input_bag} -> {self.output_bag}",
            f"  backend {self.backend_line()}",
            f"  messages read {self.messages_read} of {self.messages_expected}, bag errors {len(self.bag_errors)}",
            f"  sets in {n.get('sets_in', 0)}, out {n.get('sets_out', 0)}, dropped {n.get('sets_dropped', 0)}, "
            f"failed {n.get('sets_failed', 0)}, incomplete {n.get('incomplete_sets', 0)}"
            + (f", degraded {n['degraded_sets']} (silent at the end: {n.get('silent_cameras') or 'none'})"
               if n.get("degraded_sets") else ""),
            f"  {n.get('invariant', '')}" + ("" if not n.get("unaccounted") else "  (DOES NOT ADD UP)"),
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


class ReplayInputError(ValueError):
    """The bag and the parameters do not fit (no input topic matches, wrong transport): the
    message names the parameter to change."""


class BagPacer:
    """Plays bag time at ``rate`` times its recorded speed (``--foxglove-rate``): ``wait_for(t)``
    sleeps until bag time ``t`` (ns) is due, counted from the first bag time it was given. Rate 0
    never waits (as fast as the model runs)."""

    def __init__(self, rate: float, clock=time.perf_counter, sleep=time.sleep):
        if not (math.isfinite(rate) and rate >= 0):
            raise ReplayInputError(f"--foxglove-rate {rate}: expected 0 (as fast as the model runs) or a positive, "
                                   "finite speed factor")
        self.rate, self._clock, self._sleep = rate, clock, sleep
        self._start: tuple[int, float] | None = None  # (first bag time ns, its wall time s)

    def wait_for(self, t_ns: int) -> None:
        if self.rate == 0:
            return
        if self._start is None:
            self._start = (t_ns, self._clock())
        ahead = self._start[1] + (t_ns - self._start[0]) / 1e9 / self.rate - self._clock()
        if ahead > 0:
            self._sleep(ahead)


@dataclass
class CameraInput:
    camera: str  # model slot
    image_topic: str  # after camera_names, patterns and remaps
    info_topic: str
    image_type: str  # what the node subscribes
    bag_image_type: str | None  # the bag's type on image_topic (None: absent)
    bag_info_type: str | None
    bag_image_count: int = 0


def plan_inputs(topics: dict[str, tuple[str, int]], parameters: dict[str, Any],
                remaps: dict[str, str] | None = None, node_name: str = "priorocc") -> tuple[list[CameraInput], bool]:
    """Which bag topic feeds which model camera, under ``parameters`` (params.PARAMETERS
    overrides) and ``remaps``. When ``compressed`` is not given it is detected from the bag:
    the choice whose image topics the bag has with the right type. Returns (plan, compressed)."""
    from priorocc_ros.transport.base import resolve_topic

    remaps = remaps or {}

    def plan(compressed: bool) -> list[CameraInput]:
        p = dict(PARAMETERS)
        p.update(parameters)
        p["compressed"] = compressed
        out = []
        for cam, (it, ct) in input_topics(p).items():
            it, ct = (remaps.get(x, x) for x in (resolve_topic(it, node_name), resolve_topic(ct, node_name)))
            out.append(CameraInput(cam, it, ct, IMAGE_TYPES[compressed], topics.get(it, (None, 0))[0],
                                   topics.get(ct, (None, 0))[0], topics.get(it, (None, 0))[1]))
        return out

    if "compressed" in parameters:
        c = bool(parameters["compressed"])
        return plan(c), c
    score = {c: sum(ci.bag_image_type == ci.image_type for ci in plan(c)) for c in (True, False)}
    if score[True] != score[False]:
        c = score[True] > score[False]
    else:  # no topic of either pattern (other names): the image types the bag has decide
        types = {ty for ty, _ in topics.values()}
        c = not (IMAGE_TYPES[False] in types and IMAGE_TYPES[True] not in types)
    return plan(c), c


def check_inputs(bag: str | Path, topics: dict[str, tuple[str, int]], plan: list[CameraInput],
                 compressed_given: bool, has_calibration_file: bool) -> None:
    """ReplayInputError (one line naming the parameter to change) when the bag cannot feed the node."""
    images = sorted(t for t, (ty, _) in topics.items() if ty in IMAGE_TYPES.values())
    wrong = [ci for ci in plan if ci.bag_image_type in IMAGE_TYPES.values() and ci.bag_image_type != ci.image_type]
    if wrong:
        want = "true" if wrong[0].bag_image_type.endswith("CompressedImage") else "false"
        how = "parameter compressed" if compressed_given else "the detected transport"
        raise ReplayInputError(f"bag {bag}: {wrong[0].image_topic} is {wrong[0].bag_image_type} but {how} subscribes "
                               f"{wrong[0].image_type}: set -p compressed:={want}")
    missing = [ci for ci in plan if ci.bag_image_type is None]
    if missing:
        have = ", ".join(images[:8]) + (" ..." if len(images) > 8 else "") if images else "none"
        raise ReplayInputError(
            f"bag {bag}: {len(missing)} of {len(plan)} camera image topics are not in it "
            f"({', '.join(f'{ci.camera} <- {ci.image_topic}' for ci in missing[:3])}{' ...' if len(missing) > 3 else ''}); "
            f"the bag's image topics: {have}; set -p image_topic / -p camera_names or remap with -r FROM:=TO "
            f"(priorocc_replay BAG --list shows the mapping)")
    no_info = [ci for ci in plan if ci.bag_info_type is None]
    if no_info and not has_calibration_file:
        infos = sorted(t for t, (ty, _) in topics.items() if ty == INFO_TYPE)
        raise ReplayInputError(
            f"bag {bag}: no CameraInfo for {', '.join(f'{ci.camera} ({ci.info_topic})' for ci in no_info[:3])}"
            f"{' ...' if len(no_info) > 3 else ''}; the bag's camera_info topics: {', '.join(infos) or 'none'}; "
            f"set -p camera_info_topic / -p camera_names, remap with -r FROM:=TO, or give -p calibration_file")


def list_inputs(bag: str | Path, parameters: dict[str, Any], remaps: dict[str, str] | None = None) -> str:
    """The bag's image and camera_info topics and the model camera each would feed."""
    topics = bag_topics(bag)
    plan, compressed = plan_inputs(topics, parameters, remaps)
    feeds = {ci.image_topic: f"{ci.camera} image" for ci in plan} | {ci.info_topic: f"{ci.camera} camera_info"
                                                                     for ci in plan}
    lines = [f"bag {bag}: image and camera_info topics (transport: "
             f"{'CompressedImage' if compressed else 'Image'}{'' if 'compressed' in parameters else ', detected'})"]
    for t, (ty, n) in sorted(topics.items()):
        if ty in IMAGE_TYPES.values() or ty == INFO_TYPE:
            what = feeds.get(t, "-")
            if what != "-" and ty in IMAGE_TYPES.values() and ty != IMAGE_TYPES[compressed]:
                what += f" (wrong type: set -p compressed:={str(ty.endswith('CompressedImage')).lower()})"
            lines.append(f"  {t:<48} {ty.split('/')[-1]:<16} {n:>6}  -> {what}")
    for ci in plan:
        if ci.bag_image_type is None:
            lines.append(f"  model camera {ci.camera}: image topic {ci.image_topic} not in the bag")
        if ci.bag_info_type is None:
            lines.append(f"  model camera {ci.camera}: camera_info topic {ci.info_topic} not in the bag")
    return "\n".join(lines)


def replay(input_bag: str | Path, output_bag: str | Path, predictor: Any = None, parameters: dict | None = None,
           storage: str = "mcap", copy_inputs: bool = False, overwrite: bool = False,
           node_name: str = "priorocc", diagnostics_period_s: float = 1.0, echo_log: bool = False,
           remaps: list[str] | dict[str, str] | None = None, foxglove_server: dict | None = None) -> ReplaySummary:
    """Run the node over ``input_bag``; write every output topic to ``output_bag``.

    predictor: a priorocc_core.inference.Predictor (else the ``checkpoint`` parameter is loaded).
    parameters: node parameters (see params.PARAMETERS); ``compressed`` is detected from
    the bag when not given. remaps: ``["FROM:=TO", ...]`` as ``--ros-args -r``. Raises BagError
    if the input bag cannot be opened, ReplayInputError if its topics cannot feed the node;
    damage further in is counted in ``bag_errors`` and the replay goes on. Waits for the model
    however slow it is: every group is counted (``summary.node['unaccounted'] == 0``).
    foxglove_server: ``foxglove.FoxgloveSink`` keywords (port, host, inputs, ...) plus ``wait`` (start
    once that many viewers subscribe to every output) and ``linger`` (at the end, serve until the
    viewers leave, at most that many seconds) to serve the outputs live while replaying.
    """
    from priorocc_ros.transport.base import parse_remaps

    params = dict(parameters or {})
    unknown = unknown_parameter_errors(params)
    if unknown:
        raise ReplayInputError("; ".join(unknown))
    rmap = remaps if isinstance(remaps, dict) else parse_remaps(list(remaps or []), node_name)
    summary = ReplaySummary(str(input_bag), str(output_bag))
    topics = bag_topics(input_bag)  # BagError if unusable
    given = "compressed" in params
    if predictor is not None and not any(str(c) for c in params.get("cameras") or []):
        params["cameras"] = list(model_cameras(params, predictor))  # the injected model's rig
    plan, params["compressed"] = plan_inputs(topics, params, rmap, node_name)
    check_inputs(input_bag, topics, plan, given, bool(params.get("calibration_file")))
    summary.messages_expected = sum(n for _, n in topics.values())
    bag_time = [0]
    bus = LoopbackBus(queued=False)
    node_t = LoopbackTransport(node_name, bus, parameters=params, clock_ns=lambda: bag_time[0], echo_log=echo_log,
                               remaps=rmap)
    player = LoopbackTransport("priorocc_replay_player", bus)
    lat = LatencyWindow(n=100_000)
    write_lock = threading.Lock()
    t_start = time.perf_counter()
    sink = None
    pacer = BagPacer(float((foxglove_server or {}).get("rate", 0.0)))  # a bad rate fails before the output exists
    with AtomicBagWriter(output_bag, storage=storage, overwrite=overwrite) as w:
        if foxglove_server is not None:  # before the model loads: a busy port fails at once
            from priorocc_ros.foxglove import FoxgloveSink
            from priorocc_ros.transport.loopback import _ListLogger

            kw = dict(foxglove_server)
            wait = int(kw.pop("wait", 0))
            linger = float(kw.pop("linger", 0.0))
            kw.pop("rate", None)
            sink = FoxgloveSink(logger=_ListLogger("priorocc_replay", echo=True), counters=node_t.stats,
                                name=node_name, **kw)
        core = OccupancyNodeCore(node_t, predictor=predictor, block=True, latency_window=100_000)

        def recorder(topic: str, type_name: str):
            def cb(msg: Any) -> None:
                t0 = time.perf_counter()
                stamp = log_stamp_ns(msg, bag_time[0])
                data = serialize(msg, type_name)
                with write_lock:
                    w.write_raw(topic, type_name, stamp, data, RELIABLE_QOS)
                if sink is not None:  # the bytes just written, to the live view
                    sink.publish(topic, type_name, data, stamp)
                dt = time.perf_counter() - t0
                if type_name != "diagnostic_msgs/msg/DiagnosticArray":
                    lat.add(f"write:{topic}", dt)
            return cb

        out_topics = core.published_topics()
        for topic, ty in out_topics.items():
            player.create_subscription(ty, topic, recorder(topic, ty), RELIABLE_QOS)
        if sink is not None:
            sink.advertise_all(out_topics, {t: ty for t, ty in core.subscribed_topics().items() if t in topics})
            if wait and not sink.wait_for_subscribers(out_topics, wait, timeout=300.0):
                sink.log.warning(f"foxglove: fewer than {wait} viewer(s) subscribed within 300 s; replaying anyway")
        pubs: dict[str, Any] = {}
        wanted = core.subscribed_topics()
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
            if sink is not None:  # the recorded timing, scaled: what a viewer watches
                pacer.wait_for(t)
            if copy_inputs:
                with write_lock:
                    w.write_raw(topic, msgtype, t, raw, TF_STATIC_QOS if topic == "/tf_static" else SENSOR_DATA_QOS)
            if sink is not None and wanted.get(topic) == msgtype:  # the node's inputs, as the bag has them
                sink.publish_input(topic, msgtype, raw, t)
            if wanted.get(topic) != msgtype:
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
                pub = pubs[topic] = player.create_publisher(msgtype, topic, qos)
            pub.publish(msg)
            if next_diag is None:
                next_diag = t + int(diagnostics_period_s * 1e9)
            elif t >= next_diag:
                core.publish_diagnostics()
                next_diag = t + int(diagnostics_period_s * 1e9)
        # end of the bag: flush the synchroniser (complete sets are processed, the rest counted
        # incomplete), wait for the model however slow, publish the final diagnostics
        core.close(drain=True, timeout=None)
        node_t.shutdown()
        if sink is not None:
            if linger > 0 and not sink.linger(linger):
                sink.log.info(f"foxglove: viewers still connected after --foxglove-linger {linger:g} s; stopping")
            sink.close()
        summary.outputs_written = {k: v for k, v in w.counts.items() if k in out_topics}
    summary.wall_s = time.perf_counter() - t_start
    summary.node = core.stats()
    summary.backend = dict(core.backend_info)
    for stage, ps in core.latency.percentiles().items():
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


EPILOG = """\
examples:
  priorocc_replay bags/demo --checkpoint models/demo --out /tmp/occ
  # a recording with other topic and camera names: see the mapping first, then replay
  priorocc_replay BAG --list -p image_topic:=/cameras/{camera}/image_raw \\
      -p camera_info_topic:=/cameras/{camera}/camera_info \\
      -p camera_names:=[front_left,front,front_right,back_left,back,back_right]
  priorocc_replay BAG --checkpoint models/demo --out /tmp/occ -p compressed:=false \\
      -r /CAM_FRONT/image_rect:=/front/image_raw    # one topic remapped, as --ros-args -r
camera_names lists the recording's names in the model's camera order (CAM_FRONT_LEFT, CAM_FRONT,
CAM_FRONT_RIGHT, CAM_BACK_LEFT, CAM_BACK, CAM_BACK_RIGHT); {camera} in the patterns is replaced by
them. Exit 0: every message read and every group counted, with output; 1: no set produced output,
or the output is incomplete; 2: the bag or the parameters do not fit (one line says which)."""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="priorocc_replay", description="Run the occupancy node over a ROS 2 bag offline",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bag", help="input bag folder (MCAP or sqlite3)")
    ap.add_argument("--out", default=None, help="output bag folder (required unless --list)")
    ap.add_argument("--list", action="store_true",
                    help="print the bag's image and camera_info topics and the model camera each would feed, then exit")
    ap.add_argument("--checkpoint", default=None, help="checkpoint directory (or -p checkpoint:=...)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--backend", default=None, choices=("auto", "torch", "onnxruntime", "openvino"),
                    help="inference backend (default auto: the fastest this machine supports; priorocc_core.autoselect)")
    ap.add_argument("--precision", default=None, choices=("auto", "fp32", "bf16", "fp16", "int8"))
    ap.add_argument("-p", "--param", action="append", type=_parse_param, default=[], metavar="NAME:=VALUE",
                    help="node parameter (see docs/ros.md), repeatable")
    ap.add_argument("-r", "--remap", action="append", default=[], metavar="FROM:=TO",
                    help="topic remapping as ROS 2's --ros-args -r (the node's topic FROM reads the bag's TO), repeatable")
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    ap.add_argument("--copy-inputs", action="store_true", help="copy the input messages into the output bag too")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output bag (never another folder)")
    ap.add_argument("--json", default=None, help="also write the summary as JSON to this file")
    ap.add_argument("--verbose", action="store_true", help="print the node's log")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an expected error")
    foxglove.add_arguments(ap)
    ap.add_argument("--foxglove-wait", type=int, default=0, metavar="N",
                    help="with --foxglove: start replaying once N viewers subscribe to every output (at most 300 s)")
    ap.add_argument("--foxglove-linger", type=float, default=0.0, metavar="S",
                    help="with --foxglove: after the last set keep serving until the viewers disconnect, at most S s")
    ap.add_argument("--foxglove-rate", type=float, default=0.0, metavar="R",
                    help="with --foxglove: play the bag at R times its recorded speed, as a viewer watches it "
                         "(default 0: as fast as the model runs; a viewer slower than that loses messages from its "
                         "bounded outbox)")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Exit 0: every message read and every group accounted for, and output written; 1: no set
    produced output (one summary line: the errors per kind and the last one), the output is
    incomplete (a damaged input bag) or cannot be written; 2: the bag or the parameters do not fit."""
    args = build_parser().parse_args(argv)
    params = dict(args.param)
    if args.checkpoint:
        params["checkpoint"] = args.checkpoint
    for name in ("device", "backend", "precision"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    try:
        from priorocc_ros.transport.base import parse_remaps

        remaps = parse_remaps(args.remap, "priorocc")
        try:
            bag_dir(args.bag)
        except BagError as e:  # nothing there / not a bag: the input does not fit (exit 2)
            raise ReplayInputError(str(e)) from e
        if args.list:
            print(list_inputs(args.bag, params, remaps))
            return 0
        if not args.out:
            raise ReplayInputError("--out is required (the output bag folder)")
        if not params.get("checkpoint"):
            raise ReplayInputError("--checkpoint is required (or -p checkpoint:=DIR)")
        fox = None if args.foxglove is None else dict(
            port=args.foxglove, host=args.foxglove_host, inputs=args.foxglove_inputs, wait=args.foxglove_wait,
            linger=args.foxglove_linger, rate=args.foxglove_rate)
        s = replay(args.bag, args.out, parameters=params, storage=args.storage, copy_inputs=args.copy_inputs,
                   overwrite=args.overwrite, echo_log=args.verbose, remaps=remaps, foxglove_server=fox)
    except (ReplayInputError, ParameterError, ValueError) as e:
        if args.debug:
            raise
        print(error_line("priorocc_replay", str(e)), file=sys.stderr)
        return 2
    except (BagError, FileExistsError, OSError) as e:
        if args.debug:
            raise
        print(error_line("priorocc_replay", str(e)), file=sys.stderr)
        return 1
    print(s.text())
    if args.json:
        from priorocc_core.data.io import write_json_atomic

        write_json_atomic(args.json, s.as_dict(), indent=2)
    if s.node.get("sets_out", 0) == 0:
        n = s.node
        errs = ", ".join(f"{k[7:]} {v}" for k, v in n.items() if k.startswith("errors_")) or "none"
        print(f"priorocc_replay: no set produced output ({n.get('groups_in', 0)} image groups: "
              f"{n.get('sets_in', 0)} complete, {n.get('incomplete_sets', 0)} incomplete; errors: {errs})"
              + (f"; last error: {n['last_error']}" if n.get("last_error") else ""), file=sys.stderr)
        return 1
    if not s.complete:
        print(f"priorocc_replay: output incomplete: read {s.messages_read} of {s.messages_expected} messages"
              + (f"; {s.bag_errors[0]}" if s.bag_errors else "") + (f"; {s.node['invariant']}" if s.node.get(
                  "unaccounted") else ""), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
