"""Console entry point ``occupancy_node``: the PriorOcc occupancy node.

    occupancy_node --ros-args -p checkpoint:=/path/to/ckpt -p device:=cuda     # ROS 2 (rclpy)
    occupancy_node --transport dds -p checkpoint:=/path/to/ckpt                 # no ROS 2 needed

``--transport ros`` (default when rclpy imports) runs an rclpy node; parameters then come
the ROS way (``--ros-args -p ...``, launch files, ``use_sim_time``). ``--transport dds``
(default when rclpy is missing) speaks Cyclone DDS directly, wire-compatible with ROS 2 on
rmw_cyclonedds_cpp; parameters come from ``-p name:=value`` (values parsed as YAML) and
``--params-file`` (a flat YAML mapping, or ROS 2's ``<node>: ros__parameters:`` layout).
The behaviour is the same: ``priorocc_ros.node_core.OccupancyNodeCore``. rclpy and
cyclonedds are imported lazily.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

import yaml

from priorocc_ros import foxglove


# logged once the node subscribes (model loaded); the launch file starts the bag on it
READY_LINE = "occupancy node running"


def _default_transport() -> str:
    return "ros" if importlib.util.find_spec("rclpy") is not None else "dds"


def _parse_param(s: str) -> tuple[str, Any]:
    if ":=" not in s:
        raise argparse.ArgumentTypeError(f"parameter {s!r}: expected NAME:=VALUE")
    k, v = s.split(":=", 1)
    try:
        val = yaml.safe_load(v) if v != "" else ""
    except yaml.YAMLError:
        val = v
    return k.strip(), val


def load_params_file(path: str, node_name: str) -> dict[str, Any]:
    """Flat mapping, or ROS 2 layout {node_name or '/**': {ros__parameters: {...}}}."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SystemExit(f"--params-file {path}: cannot read YAML ({e})")
    if not isinstance(data, dict):
        raise SystemExit(f"--params-file {path}: expected a mapping")
    out: dict[str, Any] = {}
    ros_layout = False
    for key in ("/**", node_name, "/" + node_name):
        sect = data.get(key)
        if isinstance(sect, dict) and isinstance(sect.get("ros__parameters"), dict):
            out.update(sect["ros__parameters"])
            ros_layout = True
    return out if ros_layout else data


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="occupancy_node", description=__doc__.split("\n\n")[0])
    ap.add_argument("--transport", choices=("ros", "dds"), default=None,
                    help="ros = rclpy (ROS 2), dds = Cyclone DDS directly; default ros if rclpy imports, else dds")
    ap.add_argument("--node-name", default="priorocc", help="node name; outputs go to /<node-name>/... (default priorocc)")
    ap.add_argument("-p", "--param", action="append", type=_parse_param, default=[], metavar="NAME:=VALUE",
                    help="parameter for the dds transport (repeatable); with ros use --ros-args -p")
    ap.add_argument("--params-file", default=None, help="YAML parameters for the dds transport")
    ap.add_argument("-r", "--remap", action="append", default=[], metavar="FROM:=TO",
                    help="topic remapping for the dds transport, as ROS 2's --ros-args -r (repeatable)")
    ap.add_argument("--debug", action="store_true", help="show tracebacks for startup errors")
    foxglove.add_arguments(ap)
    return ap


def make_transport(kind: str, node_name: str, params: dict[str, Any], argv: list[str]):
    """argv: the full command line after the program name (rclpy takes its --ros-args part)."""
    if kind == "ros":
        from priorocc_ros.transport.rclpy_transport import RclpyTransport

        if params:
            argv = argv + ["--ros-args"] + [a for k, v in params.items() for a in ("-p", f"{k}:={v}")]
        return RclpyTransport(node_name, args=["occupancy_node"] + argv)
    from priorocc_ros.transport.dds_transport import DdsTransport

    return DdsTransport(node_name, parameters=params)


def _startup_error(e: BaseException) -> str | None:
    """One line for the errors a user can fix (parameters, files); None for bugs."""
    from priorocc_ros.calibration import CalibrationError
    from priorocc_ros.node_core import ParameterError

    if isinstance(e, (ParameterError, CalibrationError, FileNotFoundError, ValueError, OSError)):
        from priorocc_core.cli import error_line

        return error_line("occupancy_node", str(e))
    return None


def split_ros_args(argv: list[str]) -> tuple[list[str], bool]:
    """(argv without ROS arguments, whether there were any). With ``--ros-args`` present,
    rclpy's own ``remove_ros_args`` decides (it knows ``--ros-args ... --`` and every form);
    without it there are none (this keeps ``-p NAME:=VALUE`` of the dds transport, which rcl
    would take for deprecated remap rules)."""
    if "--ros-args" not in argv:
        return list(argv), False
    try:
        from rclpy.utilities import remove_ros_args
    except ImportError:  # no ROS 2: everything from --ros-args on would be ROS arguments
        return argv[:argv.index("--ros-args")], True
    return remove_ros_args(["occupancy_node"] + list(argv))[1:], True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, has_ros_args = split_ros_args(argv)
    args = build_parser().parse_args(own)
    kind = args.transport or _default_transport()
    params: dict[str, Any] = {}
    if args.params_file:
        params.update(load_params_file(args.params_file, args.node_name))
    params.update(dict(args.param))
    if kind == "dds" and has_ros_args:
        from priorocc_core.cli import error_line

        print(error_line("occupancy_node", "--ros-args is for --transport ros; use -p NAME:=VALUE with --transport dds"),
              file=sys.stderr)
        return 2
    ros_argv = list(argv) if kind == "ros" else []
    if kind == "ros" and args.remap:  # our -r FROM:=TO as one more --ros-args block for rcl
        ros_argv += ["--ros-args"] + [a for r in args.remap for a in ("-r", r)]

    from priorocc_ros.node_core import OccupancyNodeCore
    from priorocc_ros.transport.base import parse_remaps

    try:
        remaps = parse_remaps(args.remap, args.node_name)
        transport = make_transport(kind, args.node_name, params, ros_argv)
    except Exception as e:  # noqa: BLE001
        line = _startup_error(e)
        if line is None or args.debug:
            raise
        print(line, file=sys.stderr)
        return 2
    if kind == "dds":
        transport.remaps = remaps
    core = sink = None
    rc = 0
    try:
        sink = foxglove.sink_from_args(args, transport, args.node_name)
        core = OccupancyNodeCore(transport)
        if sink is not None:
            sink.advertise_all(core.published_topics(), core.subscribed_topics())
        transport.logger.info(f"{READY_LINE} ({kind} transport)")
        transport.spin()
    except Exception as e:  # noqa: BLE001
        line = _startup_error(e) if core is None else None
        if line is None or args.debug:
            raise
        print(line, file=sys.stderr)
        rc = 2
    finally:
        if core is not None:
            # flush the synchroniser, count what is queued as dropped, wait for the running set
            core.close(drain=False, timeout=60.0)
            s = core.stats()
            transport.logger.info(
                f"stopped: sets in {s['sets_in']}, out {s['sets_out']}, dropped {s['sets_dropped']}, "
                f"failed {s['sets_failed']}, incomplete {s['incomplete_sets']}; {s['invariant']}")
        if sink is not None:
            sink.close()
        transport.shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())
