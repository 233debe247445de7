"""The occupancy node's parameters, defined once.

``SPECS`` is the one definition: name -> ``ParamSpec`` (default, description, whether a change
applies live, range or choices). From it: ``PARAMETERS`` (name -> default, what the node
declares), ``PARAMETER_DOCS`` (name -> (default, description)), the launch arguments
(``launch_arguments``: every scalar parameter is ``NAME:=VALUE`` of ``ros2 launch``), the checks
(``check_value``: a reason or None; ``unknown_parameter_errors``: a misspelled name -> the closest
known one) and rclpy's ParameterDescriptor (``transport.rclpy_transport``). Also the input-topic
patterns (``input_topics``), which only read parameters.

Parameters marked live apply at once when set (``ros2 param set``: publish_* flags, thresholds,
slop, max_wait, rates); the rest are read-only (the model, the topics, the threads are made once).
Pure Python: imports neither ROS 2 nor torch.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Any, Iterable

from priorocc_core.classes import CAMERAS


class ParameterError(ValueError):
    """A parameter value the node cannot use (the message names the parameter)."""


@dataclass(frozen=True)
class ParamSpec:
    default: Any
    description: str
    live: bool = False  # a change applies at once; False: read-only after start
    range: tuple[float, float] | None = None  # inclusive bounds of a number
    choices: tuple | None = None  # the values allowed

    @property
    def constraints(self) -> str:
        """The range / choices as text ('' = none), for descriptions and errors."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.range is not None:
            return f"from {self.range[0]} to {self.range[1]}"
        return ""


SPECS: dict[str, ParamSpec] = {
    # model
    "checkpoint": ParamSpec("", "checkpoint directory (model.safetensors + config.yaml)"),
    "device": ParamSpec("auto", "device: auto, cpu, cuda, cuda:0"),
    "backend": ParamSpec("auto", "inference backend: auto (the fastest this machine supports, "
                                 "priorocc_core.autoselect), torch, onnxruntime, openvino",
                         choices=("auto", "torch", "onnxruntime", "openvino")),
    "precision": ParamSpec("auto", "auto, fp32, bf16, fp16 (GPU), int8 (OpenVINO, priorocc_quantize)",
                           choices=("auto", "fp32", "bf16", "fp16", "int8")),
    # inputs
    "cameras": ParamSpec([""], "the model's camera slots, in the model's order; [''] = the checkpoint's "
                               "(model.image.cameras)"),
    "camera_names": ParamSpec([""], "the recording's camera name per model slot, fills {camera}; "
                                    "[''] = the slot names"),
    "compressed": ParamSpec(True, "subscribe to sensor_msgs/CompressedImage (true) or sensor_msgs/Image (false)"),
    "image_topic": ParamSpec("", "image topic pattern with {camera}; empty = {camera}/image_rect_compressed "
                                 "(or {camera}/image_rect when compressed is false); relative names are in the "
                                 "node's namespace"),
    "camera_info_topic": ParamSpec("{camera}/camera_info", "camera_info topic pattern with {camera}; relative "
                                                           "names are in the node's namespace"),
    "input_reliability": ParamSpec("auto", "QoS reliability of the image and camera_info subscriptions: auto "
                                           "(best effort, switched to reliable once every publisher of the topic "
                                           "offers reliable, as ros2 bag record adapts), best_effort, reliable",
                                   choices=("auto", "best_effort", "reliable")),
    "slop": ParamSpec(0.06, "approximate-time slop in seconds: max spread of stamps within one set",
                      live=True, range=(0.0, 10.0)),
    "sync_queue_size": ParamSpec(10, "images per camera the synchroniser keeps", range=(1, 1000)),
    "max_wait": ParamSpec(0.5, "seconds an incomplete set waits for its missing cameras", live=True,
                          range=(0.0, 60.0)),
    "missing_camera": ParamSpec("degrade", "a group with cameras missing after max_wait: degrade (runs without "
                                           "them: their features masked out, the region only they see unknown in "
                                           "every output, counted degraded_sets) or wait (dropped, counted "
                                           "incomplete_sets)", choices=("degrade", "wait")),
    "base_frame": ParamSpec("base_link", "TF target frame of the camera extrinsics and frame_id of the outputs"),
    "calibration_wait": ParamSpec(0.5, "seconds a set waits for CameraInfo / TF still on their way before it "
                                       "fails (as tf2's MessageFilter waits for transforms)", live=True,
                                  range=(0.0, 60.0)),
    # temporal models (model.temporal.num_adj > 0): the BEV history across sets (docs/ros.md)
    "temporal": ParamSpec("auto", "temporal fusion of a temporal model: auto / on (fuse the previous sets' BEV "
                                  "features, aligned by odometry) or off (every set single-frame)",
                          choices=("auto", "on", "off")),
    "motion_frame": ParamSpec("odom", "fixed frame of the odometry that aligns the history: the transform "
                                      "motion_frame -> base_frame at each set's stamp from /tf (REP 105: odom on "
                                      "a robot; map for nuScenes bags)"),
    "history_max_gap": ParamSpec(1.0, "seconds between two sets beyond which the history is reset", live=True,
                                 range=(0.0, 3600.0)),
    "calibration_file": ParamSpec("", "YAML calibration used when TF / CameraInfo have no camera (fallback)"),
    "max_image_pixels": ParamSpec(4096 * 4096, "larger images are rejected", live=True, range=(1, 2 ** 31 - 1)),
    "jpeg_reduce": ParamSpec(1, "decode JPEGs at 1/n resolution (1, 2, 4, 8; 0 = the largest the network's "
                                "input size allows); K is scaled to match", choices=(0, 1, 2, 4, 8)),
    "preprocess": ParamSpec("exact", "exact (FlashOCC's pixels) or fast (resize + crop fused in one Pillow call)",
                            choices=("exact", "fast")),
    # outputs
    "publish_voxels": ParamSpec(True, "publish ~/voxels (PointCloud2)", live=True),
    "publish_markers": ParamSpec(True, "publish ~/markers (MarkerArray)", live=True),
    "publish_bev": ParamSpec(True, "publish ~/bev (OccupancyGrid)", live=True),
    "publish_overlay": ParamSpec(True, "publish ~/seg_overlay/<CAM> images", live=True),
    "overlay_alpha": ParamSpec(0.5, "overlay blending weight", live=True, range=(0.0, 1.0)),
    "overlay_scale": ParamSpec(1.0, "overlay image scale", live=True, range=(0.05, 4.0)),
    "bev_unknown_from_cameras": ParamSpec(True, "BEV columns no camera sees are -1 (unknown)", live=True),
    "queue_size": ParamSpec(1, "sets waiting for inference; older ones are dropped", range=(1, 1000)),
    "pipelined": ParamSpec(True, "decode, inference and message building in three threads, so consecutive sets "
                                 "overlap (throughput of the slowest stage); false: one thread, one set at a time"),
    "diagnostics_period": ParamSpec(1.0, "seconds between /diagnostics messages (steady clock)", live=True,
                                    range=(0.01, 3600.0)),
}

PARAMETER_DOCS: dict[str, tuple[Any, str]] = {name: (s.default, s.description) for name, s in SPECS.items()}
PARAMETERS: dict[str, Any] = {name: s.default for name, s in SPECS.items()}
# parameters a ROS 2 node has besides its own (rclpy declares them)
MIDDLEWARE_PARAMETERS = ("use_sim_time", "start_type_description_service")


def _type_ok(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, (str, os.PathLike))  # paths from Python callers (replay, benchmarks)


def check_value(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be parameter ``name`` (its type, range or choices), or None."""
    spec = SPECS[name]
    if not _type_ok(spec.default, value):
        return (f"parameter {name} must be a {type(spec.default).__name__} (like its default "
                f"{spec.default!r}), got {type(value).__name__} {value!r}")
    if spec.choices is not None and value not in spec.choices:
        return f"parameter {name} must be {spec.constraints}, got {value!r}"
    if spec.range is not None and not (spec.range[0] <= value <= spec.range[1]):
        return f"parameter {name} must be {spec.constraints}, got {value!r}"
    return None


def closest(name: str) -> str | None:
    """The known parameter nearest to a misspelled ``name`` (None: nothing close)."""
    m = difflib.get_close_matches(name, list(SPECS) + list(MIDDLEWARE_PARAMETERS), n=1, cutoff=0.5)
    return m[0] if m else None


def unknown_parameter_errors(names: Iterable[str]) -> list[str]:
    """One line per name that is no parameter of the node, naming the closest known one."""
    out = []
    for n in sorted(set(names)):
        if n in SPECS or n in MIDDLEWARE_PARAMETERS or n.startswith("qos_overrides."):
            continue
        near = closest(n)
        out.append(f"unknown parameter {n!r}" + (f"; did you mean {near!r}?" if near else
                                                   f"; the parameters are listed in docs/ros.md"))
    return out


def set_refusal(name: str, value: Any) -> str | None:
    """Why a live change of ``name`` to ``value`` is refused (None: it applies)."""
    if name not in SPECS:
        return unknown_parameter_errors([name])[0]
    if not SPECS[name].live:
        return f"parameter {name} is read-only: it is used once at start; restart the node to change it"
    return check_value(name, value)


# ---------------------------------------------------------------------- input topics
def fill_pattern(name: str, pattern: str, camera: str) -> str:
    """``pattern.format(camera=camera)`` with an error naming the parameter."""
    try:
        topic = pattern.format(camera=camera)
    except (ValueError, KeyError, IndexError, AttributeError) as e:
        raise ParameterError(f"parameter {name}={pattern!r} is not a topic pattern with {{camera}} "
                             f"({type(e).__name__}: {e}); e.g. '/{{camera}}/camera_info'") from None
    if not topic:
        raise ParameterError(f"parameter {name}={pattern!r} gives an empty topic")
    return topic


def model_cameras(p: dict[str, Any], predictor: Any = None) -> tuple[str, ...]:
    """The model's camera slots: parameter cameras when given, else the injected predictor's,
    else the checkpoint's config (model.image.cameras, read from its header only), else nuScenes'
    six (no checkpoint: the node refuses to start anyway)."""
    cams = tuple(str(c) for c in (p.get("cameras") or []) if str(c))
    if cams:
        return cams
    if getattr(predictor, "cameras", None):
        return tuple(predictor.cameras)
    if p.get("checkpoint"):
        from priorocc_core.checkpoint import read_config
        from priorocc_core.errors import PriorOccError

        try:
            return tuple(read_config(p["checkpoint"]).model.image.cameras)
        except (PriorOccError, OSError):
            pass  # loading the checkpoint reports what is wrong with it, in one line
    return tuple(CAMERAS)


def camera_names(p: dict[str, Any]) -> tuple[str, ...]:
    """The recording's camera name per model slot (parameter camera_names, default the slots)."""
    cams = model_cameras(p)
    names = [str(n) for n in (p.get("camera_names") or [])]
    if not names or names == [""]:
        return cams
    if len(names) != len(cams):
        raise ParameterError(f"parameter camera_names has {len(names)} names for {len(cams)} cameras {list(cams)}; "
                             f"expected one recording camera name per model camera, in the model's order")
    return tuple(names)


def input_topics(p: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """{model camera: (image topic, camera_info topic)} from the parameters (before resolution
    and remapping)."""
    pattern = p["image_topic"] or ("{camera}/image_rect_compressed" if p["compressed"] else "{camera}/image_rect")
    return {cam: (fill_pattern("image_topic", pattern, rec),
                  fill_pattern("camera_info_topic", p["camera_info_topic"], rec))
            for cam, rec in zip(model_cameras(p), camera_names(p))}


# ---------------------------------------------------------------------- launch arguments
def launch_value(default: Any) -> str:
    """A default as a launch argument string (``true``/``false`` for booleans)."""
    if isinstance(default, bool):
        return "true" if default else "false"
    return str(default)


def from_launch_value(name: str, text: str) -> Any:
    """A launch argument string -> the parameter's type (that of its default)."""
    default = PARAMETERS[name]
    try:
        if isinstance(default, bool):
            low = text.strip().lower()
            if low not in ("true", "false"):
                raise ValueError("expected true or false")
            return low == "true"
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError as exc:
        raise ValueError(f"launch argument {name}:={text!r}: {exc}") from None
    return text


def launch_arguments() -> list[tuple[str, str, str]]:
    """(name, default, description) of every scalar parameter (lists stay parameters only)."""
    return [(name, launch_value(s.default), s.description) for name, s in SPECS.items()
            if not isinstance(s.default, (list, tuple))]
