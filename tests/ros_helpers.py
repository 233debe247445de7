"""Helpers for tests and benchmarks: a tiny checkpoint, a rig of six cameras, and a writer of
small camera bags with controllable defects. Not part of the runtime package."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from benchmarks.inputs import make_tiny_checkpoint  # noqa: F401  (tests import it from here too)
from priorocc_core.classes import CAMERAS
from priorocc_ros.bagio import AtomicBagWriter
from priorocc_ros.calibration import make_camera_info, matrix_to_transform_stamped
from priorocc_ros.image_codec import encode_compressed, encode_image
from priorocc_ros.msgs import header, new_msg
from priorocc_ros.transport.base import SENSOR_DATA_QOS, TF_STATIC_QOS

REPO = Path(__file__).resolve().parents[1]  # the repository root
TINY_CONFIG = REPO / "training" / "configs" / "tiny.yaml"


def nuscenes_like_rig(hw: tuple[int, int] = (900, 1600)) -> tuple[np.ndarray, np.ndarray]:
    """(6, 3, 3) K and (6, 4, 4) cam2ego of a nuScenes-like ring (yaws 55, 0, -55, 110, 180, -110
    deg, optical frame x right / y down / z forward), intrinsics scaled to ``hw``."""
    h, w = hw
    yaws = np.deg2rad([55.0, 0.0, -55.0, 110.0, 180.0, -110.0])
    f = 1260.0 * w / 1600.0
    K = np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])
    opt2body = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # optical -> x fwd, y left, z up
    c2e = []
    for yaw in yaws:
        Rz = np.array([[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
        m = np.eye(4)
        m[:3, :3] = Rz @ opt2body
        m[:3, 3] = [1.5 * np.cos(yaw), 0.5 * np.sin(yaw), 1.5]
        c2e.append(m)
    return np.stack([K] * 6), np.stack(c2e)


def write_camera_bag(out: str | Path, n_sets: int, hw: tuple[int, int] = (90, 160), period_ns: int = 83_333_333,
                     jitter_ns: int = 20_000_000, t0_ns: int = 1_700_000_000_000_000_000, seed: int = 0,
                     storage: str = "mcap",
                     mutate: Callable[[int, str, Any, Any], tuple[Any, Any] | None] | None = None,
                     cameras: Sequence[str] = CAMERAS, raw: bool = False) -> dict[str, Any]:
    """A bag of ``n_sets`` six-camera JPEG sets (random-ish images) with CameraInfo, /tf_static.

    ``mutate(set_index, camera, image_msg, info_msg)`` may return replacement messages, or
    (None, info) to leave the image out (a camera missing). ``raw``: sensor_msgs/Image rgb8 on
    /<CAM>/image_rect instead of JPEG CompressedImage on /<CAM>/image_rect_compressed.
    Returns {stamps: [[ns per camera]], K, cam2ego}.
    """
    rng = np.random.default_rng(seed)
    K, c2e = nuscenes_like_rig(hw)
    stamps = []
    with AtomicBagWriter(out, storage=storage) as w:
        tfs = [matrix_to_transform_stamped(c2e[i], "base_link", cam, t0_ns) for i, cam in enumerate(cameras)]
        w.write("/tf_static", "tf2_msgs/msg/TFMessage", t0_ns, new_msg("tf2_msgs/msg/TFMessage", transforms=tfs),
                TF_STATIC_QOS)
        events = []
        for k in range(n_sets):
            row = []
            for i, cam in enumerate(cameras):
                t = t0_ns + k * period_ns + int(rng.integers(0, jitter_ns + 1))
                row.append(t)
                img = (rng.random((hw[0], hw[1], 3)) * 255).astype(np.uint8)
                hdr = header(t, cam)
                im = encode_image(img, hdr) if raw else encode_compressed(img, hdr, quality=80)
                info = make_camera_info(K[i], hw[1], hw[0], hdr)
                if mutate is not None:
                    r = mutate(k, cam, im, info)
                    if r is not None:
                        im, info = r
                events.append((t, cam, im, info))
            stamps.append(row)
        events.sort(key=lambda e: e[0])
        for t, cam, im, info in events:
            if info is not None:
                w.write(f"/{cam}/camera_info", "sensor_msgs/msg/CameraInfo", t, info, SENSOR_DATA_QOS)
            if im is not None:
                tn, topic = ("sensor_msgs/msg/Image", f"/{cam}/image_rect") if raw else \
                    ("sensor_msgs/msg/CompressedImage", f"/{cam}/image_rect_compressed")
                w.write(topic, tn, t, im, SENSOR_DATA_QOS)
    return {"stamps": stamps, "K": K, "cam2ego": c2e}
