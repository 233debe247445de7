"""The occupancy node's parameters, defined once.

``PARAMETER_DOCS`` is the one definition (name -> default, description). The node declares
``PARAMETERS`` (``node_core.OccupancyNodeCore``), the replay passes overrides of the same
names, and the launch file turns each scalar parameter into a launch argument
(``launch_arguments``) so that ``ros2 launch priorocc occupancy.launch.py NAME:=VALUE`` sets it.
Pure Python: imports neither ROS 2 nor torch.
"""
from __future__ import annotations

from typing import Any

from priorocc_core.classes import CAMERAS

PARAMETER_DOCS: dict[str, tuple[Any, str]] = {
    # model
    "checkpoint": ("", "checkpoint directory (model.safetensors + config.yaml)"),
    "device": ("auto", "device: auto, cpu, cuda, cuda:0"),
    "backend": ("auto", "inference backend: auto (the fastest this machine supports, priorocc_core.autoselect), "
                        "torch, onnxruntime, openvino"),
    "precision": ("auto", "auto, fp32, bf16, fp16 (GPU), int8 (OpenVINO, priorocc_quantize)"),
    # inputs
    "cameras": (list(CAMERAS), "the model's camera slots, in the model's order"),
    "camera_names": ([""], "the recording's camera name per model slot, fills {camera}; [''] = the slot names"),
    "compressed": (True, "subscribe to sensor_msgs/CompressedImage (true) or sensor_msgs/Image (false)"),
    "image_topic": ("", "image topic pattern with {camera}; empty = /{camera}/image_rect_compressed "
                        "(or /{camera}/image_rect when compressed is false)"),
    "camera_info_topic": ("/{camera}/camera_info", "camera_info topic pattern with {camera}"),
    "input_reliability": ("auto", "QoS reliability of the image and camera_info subscriptions: auto (best effort, "
                                  "switched to reliable once every publisher of the topic offers reliable, as "
                                  "ros2 bag record adapts), best_effort, reliable"),
    "slop": (0.06, "approximate-time slop in seconds: max spread of stamps within one set"),
    "sync_queue_size": (10, "images per camera the synchroniser keeps"),
    "max_wait": (0.5, "seconds an incomplete set waits for its missing cameras"),
    "base_frame": ("base_link", "TF target frame of the camera extrinsics and frame_id of the outputs"),
    "calibration_wait": (0.5, "seconds a set waits for CameraInfo / TF still on their way before it fails "
                              "(as tf2's MessageFilter waits for transforms)"),
    "calibration_file": ("", "YAML calibration used when TF / CameraInfo have no camera (fallback)"),
    "max_image_pixels": (4096 * 4096, "larger images are rejected"),
    "jpeg_reduce": (1, "decode JPEGs at 1/n resolution (1, 2, 4, 8; 0 = the largest the network's input size "
                       "allows); K is scaled to match"),
    "preprocess": ("exact", "exact (FlashOCC's pixels) or fast (resize + crop fused in one Pillow call)"),
    # outputs
    "publish_voxels": (True, "publish ~/voxels (PointCloud2)"),
    "publish_markers": (True, "publish ~/markers (MarkerArray)"),
    "publish_bev": (True, "publish ~/bev (OccupancyGrid)"),
    "publish_overlay": (True, "publish ~/seg_overlay/<CAM> images"),
    "overlay_alpha": (0.5, "overlay blending weight"),
    "overlay_scale": (1.0, "overlay image scale"),
    "bev_unknown_from_cameras": (True, "BEV columns no camera sees are -1 (unknown)"),
    "queue_size": (1, "sets waiting for inference; older ones are dropped"),
    "pipelined": (True, "decode, inference and message building in three threads, so consecutive sets "
                        "overlap (throughput of the slowest stage); false: one thread, one set at a time"),
    "diagnostics_period": (1.0, "seconds between /diagnostics messages (steady clock)"),
}

PARAMETERS: dict[str, Any] = {name: default for name, (default, _) in PARAMETER_DOCS.items()}


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
    return [(name, launch_value(default), doc) for name, (default, doc) in PARAMETER_DOCS.items()
            if not isinstance(default, (list, tuple))]
