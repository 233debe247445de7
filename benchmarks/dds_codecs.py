"""Serialisation benchmark of the DDS routes for large images (``python -m benchmarks.dds_codecs``).

Per message (1600x900 JPEG as ``CompressedImage``, 1600x900 rgb8 ``Image``), median time to
serialise (rosbags message -> CDR bytes) and deserialise (CDR -> rosbags message) via:

- ``idl-list``: the IdlStruct with ``sequence<uint8>`` as declared by ROS 2 (cyclonedds-python
  packs one Python int per byte);
- ``idl-bytes``: the IdlStruct variant with the byte sequence as Python ``bytes``;
- ``cdr``: rosbags' numpy-backed CDR, the transport's default.

``--jpeg FILE`` uses a real JPEG (default: the first nuScenes JPEG under ../shared/data if
present, else 600 kB of random bytes, the size of a 1600x900 nuScenes JPEG).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from priorocc_ros.dds.idl_types import from_idl, idl_class, to_idl
from priorocc_ros.dds.participant import decode, encode, strip_padding
from priorocc_ros.msgs import new_msg


def _median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _default_jpeg() -> bytes:
    root = Path(__file__).resolve().parents[3] / "shared" / "data" / "nuscenes-real" / "samples" / "CAM_FRONT"
    files = sorted(root.glob("*.jpg")) if root.exists() else []
    if files:
        return files[0].read_bytes()
    return np.random.default_rng(0).integers(0, 256, 600_000, dtype=np.uint8).tobytes()


def run(jpeg: bytes, repeat: int = 5, routes=("idl-list", "idl-bytes", "cdr")) -> dict:
    rng = np.random.default_rng(0)
    header = new_msg("std_msgs/msg/Header", frame_id="CAM_FRONT")
    msgs = {
        "jpeg_1600x900": ("sensor_msgs/msg/CompressedImage",
                          new_msg("sensor_msgs/msg/CompressedImage", header=header, format="jpeg",
                                  data=np.frombuffer(jpeg, dtype=np.uint8))),
        "raw_rgb8_1600x900": ("sensor_msgs/msg/Image",
                              new_msg("sensor_msgs/msg/Image", header=header, height=900, width=1600,
                                      encoding="rgb8", step=4800,
                                      data=rng.integers(0, 256, 900 * 4800, dtype=np.uint8))),
    }
    out: dict = {}
    for label, (tn, msg) in msgs.items():
        ref = encode(msg, tn, "cdr")
        res = {"bytes": len(ref)}
        for route in routes:
            if route == "cdr":
                ser = lambda: encode(msg, tn, "cdr")  # noqa: E731
                des = lambda: decode(ref, tn, "cdr")  # noqa: E731
            else:
                fast = route == "idl-bytes"
                cls = idl_class(tn, fast)
                ser = lambda: to_idl(msg, tn, fast).serialize(use_version_2=False)  # noqa: E731
                des = lambda: from_idl(cls.deserialize(ref), tn)  # noqa: E731
                assert ser() == strip_padding(ref), route  # same CDR bytes
            r = repeat if route != "idl-list" else max(1, repeat // 2)
            res[route] = {"serialise_ms": round(_median_ms(ser, r), 3),
                          "deserialise_ms": round(_median_ms(des, r), 3)}
        out[label] = res
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jpeg", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--skip-list", action="store_true", help="skip the slow per-byte route")
    args = ap.parse_args(argv)
    jpeg = args.jpeg.read_bytes() if args.jpeg else _default_jpeg()
    routes = ("idl-bytes", "cdr") if args.skip_list else ("idl-list", "idl-bytes", "cdr")
    print(json.dumps(run(jpeg, args.repeat, routes), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
