"""Recordings for the ROS tests of issues 15 and 19: a micro checkpoint (fast on a loaded
CPU) and recordings written the way other people's tools write them, with rosbags directly
(its own Jazzy type store and CDR serialiser, its own Writer), not with PriorOcc's converter,
message builders or bag writer.

Geometry is independent too: six cameras on a ring, each mounted as ``<cam>_link`` on
``base_link`` (a yaw) with ``<cam>_optical_frame`` below it (the REP 103 optical rotation,
quaternion xyzw (-0.5, 0.5, -0.5, 0.5)), so cam2ego exists only through a TF chain.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

MODEL_CAMERAS = ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT")
LOWER = tuple(c.lower() for c in MODEL_CAMERAS)
YAWS_DEG = (55.0, 0.0, -55.0, 110.0, 180.0, -110.0)
T0 = 1_710_000_000_000_000_000
PERIOD = 100_000_000  # 10 Hz
TS = get_typestore(Stores.ROS2_JAZZY)


def micro_checkpoint(out: str | Path) -> Path:
    """The tiny test config with a 32 x 96 input and a 1 m BEV grid (80 x 80 x 16): the same
    code path, about 3x faster than tiny on this machine; saved and loaded through the real
    checkpoint code."""
    import torch

    from priorocc_core.checkpoint import save_checkpoint
    from priorocc_core.config import load_config
    from priorocc_core.model import build_model

    cfg = load_config(Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny.yaml")
    cfg.model.image.input_size = [32, 96]
    cfg.model.grid.x = [-40.0, 40.0, 1.0]
    cfg.model.grid.y = [-40.0, 40.0, 1.0]
    torch.manual_seed(0)
    save_checkpoint(out, build_model(cfg.model), cfg)
    return Path(out)


def _stamp(ns: int):
    return TS.types["builtin_interfaces/msg/Time"](sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def _header(ns: int, frame: str):
    return TS.types["std_msgs/msg/Header"](stamp=_stamp(ns), frame_id=frame)


def _tf(parent: str, child: str, xyz, qxyzw, ns: int):
    T = TS.types
    return T["geometry_msgs/msg/TransformStamped"](
        header=_header(ns, parent), child_frame_id=child,
        transform=T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2])),
            rotation=T["geometry_msgs/msg/Quaternion"](x=float(qxyzw[0]), y=float(qxyzw[1]), z=float(qxyzw[2]),
                                                       w=float(qxyzw[3]))))


def tf_chain(ns: int, names=LOWER):
    """/tf_static transforms base_link -> <cam>_link -> <cam>_optical_frame."""
    tfs = []
    for name, yaw in zip(names, np.deg2rad(YAWS_DEG)):
        tfs.append(_tf("base_link", f"{name}_link", (1.5 * np.cos(yaw), 0.5 * np.sin(yaw), 1.5),
                       (0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2)), ns))
        tfs.append(_tf(f"{name}_link", f"{name}_optical_frame", (0.0, 0.0, 0.0), (-0.5, 0.5, -0.5, 0.5), ns))
    return TS.types["tf2_msgs/msg/TFMessage"](transforms=tfs)


def cam2ego_expected(i: int) -> np.ndarray:
    """cam2ego of camera i, composed here by hand (yaw about z times the optical rotation)."""
    yaw = np.deg2rad(YAWS_DEG[i])
    Rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1.0]])
    opt = np.array([[0, 0, 1.0], [-1.0, 0, 0], [0, -1.0, 0]])
    m = np.eye(4)
    m[:3, :3] = Rz @ opt
    m[:3, 3] = [1.5 * np.cos(yaw), 0.5 * np.sin(yaw), 1.5]
    return m


def camera_info(ns: int, frame: str, w: int, h: int, binning: int = 1):
    """A full-resolution w x h CameraInfo (f = 0.8 w), with ``binning`` when the driver bins."""
    T = TS.types
    f = 0.8 * w
    K = np.array([f, 0, w / 2, 0, f, h / 2, 0, 0, 1.0])
    P = np.array([f, 0, w / 2, 0, 0, f, h / 2, 0, 0, 0, 1.0, 0])
    return T["sensor_msgs/msg/CameraInfo"](
        header=_header(ns, frame), height=h, width=w, distortion_model="plumb_bob", d=np.zeros(5), k=K,
        r=np.eye(3).ravel(), p=P, binning_x=binning, binning_y=binning,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def raw_image(ns: int, frame: str, rgb: np.ndarray, encoding: str, pad: int = 0):
    """sensor_msgs/Image from an (h, w, 3) RGB array: bgr8 / rgb8 / mono8, rows padded by ``pad`` bytes."""
    if encoding == "bgr8":
        a = rgb[:, :, ::-1]
    elif encoding == "rgb8":
        a = rgb
    elif encoding == "mono8":
        a = rgb.mean(axis=2).astype(np.uint8)[:, :, None]
    else:
        raise ValueError(encoding)
    h, w, c = a.shape
    rows = np.zeros((h, w * c + pad), np.uint8)
    rows[:, :w * c] = a.reshape(h, w * c)
    return TS.types["sensor_msgs/msg/Image"](header=_header(ns, frame), height=h, width=w, encoding=encoding,
                                             is_bigendian=0, step=w * c + pad, data=rows.ravel())


@dataclass
class Style:
    """How a recording looks. topic(kind, name) gives a camera's topic (kind image / info)."""

    name: str
    encoding: str = "bgr8"
    storage: str = "mcap"
    n_sets: int = 4
    hw: tuple[int, int] = (90, 160)
    pad: int = 0
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # camera name -> (h, w)
    binning: int = 1  # images binned by the driver; CameraInfo at full resolution
    topic: Callable[[str, str], str] = lambda kind, name: f"/cameras/{name}/{'image_raw' if kind == 'image' else 'camera_info'}"
    skip: set = field(default_factory=set)  # (set index, camera name) without an image
    stops: dict[str, int] = field(default_factory=dict)  # camera name -> first set it no longer sends
    info_after: bool = False  # CameraInfo written after its image (CameraPublisher order)
    loops: int = 1  # the recording played back to back, stamps starting over

    def complete_sets(self) -> list[int]:
        return [k for k in range(self.n_sets)
                if not any((k, n) in self.skip or k >= self.stops.get(n, 1 << 30) for n in LOWER)]

    def groups(self) -> int:
        return self.n_sets  # every set index leaves one group (complete or incomplete)


def write_foreign_bag(out: str | Path, style: Style, seed: int = 0) -> dict:
    """Write ``style`` with rosbags. Returns {"stamps": CAM_FRONT stamp per complete set (all
    loops), "messages": count}."""
    rng = np.random.default_rng(seed)
    events = []  # (log time, topic, type, msg)
    ns0 = T0 - 50_000_000
    events.append((ns0, "/tf_static", "tf2_msgs/msg/TFMessage", tf_chain(ns0)))
    base = 0
    for loop in range(style.loops):
        for k in range(style.n_sets):
            for name in LOWER:
                if (k, name) in style.skip or k >= style.stops.get(name, 1 << 30):
                    continue
                t = T0 + k * PERIOD + int(rng.integers(-20_000_000, 20_001_000))
                h, w = style.sizes.get(name, style.hw)
                frame = f"{name}_optical_frame"
                rgb = (rng.random((h // style.binning, w // style.binning, 3)) * 255).astype(np.uint8)
                img = raw_image(t, frame, rgb, style.encoding, style.pad)
                info = camera_info(t, frame, w, h, style.binning)
                log = base + t + 3_000_000
                events.append((log + (1000 if style.info_after else -1000), style.topic("info", name),
                               "sensor_msgs/msg/CameraInfo", info))
                events.append((log, style.topic("image", name), "sensor_msgs/msg/Image", img))
        base += style.n_sets * PERIOD + 500_000_000  # log time goes on; the stamps start over
    events.sort(key=lambda e: e[0])
    path = Path(out)
    plugin = StoragePlugin.MCAP if style.storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as w:
        conns = {}
        for log, topic, ty, msg in events:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, ty, typestore=TS)
            w.write(conns[topic], log, TS.serialize_cdr(msg, ty))
    stamps = sorted({e[3].header.stamp.sec * 1_000_000_000 + e[3].header.stamp.nanosec for e in events
                     if e[1] == style.topic("image", "cam_front")})
    return {"messages": len(events), "front_stamps": stamps}


def counts_by_topic(bag: str | Path) -> dict[str, int]:
    """Messages per topic, read with rosbags' own Reader."""
    from rosbags.rosbag2 import Reader

    with Reader(Path(bag)) as r:
        return {c.topic: c.msgcount for c in r.connections}
