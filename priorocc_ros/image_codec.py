"""sensor_msgs/Image and sensor_msgs/CompressedImage <-> (H, W, 3) uint8 RGB arrays.

Raw encodings (REP 104 / sensor_msgs/image_encodings names): rgb8, bgr8, rgba8, bgra8, mono8,
8UC1, 8UC3 (taken as bgr8, like cv_bridge), rgb16, bgr16, rgba16, bgra16, mono16, 16UC1,
bayer_{rggb,bggr,gbrg,grbg}{8,16}. 16-bit data is scaled to 8 bits (>> 8). Row padding
(``step`` > width * bytes per pixel) and ``is_bigendian`` are honoured.
Compressed: JPEG and PNG (``format`` "jpeg", "png", or image_transport's
"rgb8; jpeg compressed bgr8"); the actual codec is taken from the data's magic bytes.

Every failure raises ``ImageDecodeError`` naming the topic/camera (``source``) and what was
expected, so callers can log it, count it and move on to the next image set.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from priorocc_core.jpeg import JPEG_MAGIC, PNG_MAGIC, decode_jpeg_rgb, header_size
from priorocc_core.jpeg import network_reduce, reduced_K  # noqa: F401  (their home: core)
from priorocc_ros.msgs import new_msg

cv2.setNumThreads(1)


class ImageDecodeError(ValueError):
    """An image message that cannot be decoded (the message says why)."""


# encoding -> (channels, bytes per channel)
_RAW = {
    "rgb8": (3, 1), "bgr8": (3, 1), "rgba8": (4, 1), "bgra8": (4, 1), "mono8": (1, 1),
    "8uc1": (1, 1), "8uc3": (3, 1), "8uc4": (4, 1),
    "rgb16": (3, 2), "bgr16": (3, 2), "rgba16": (4, 2), "bgra16": (4, 2), "mono16": (1, 2),
    "16uc1": (1, 2), "16uc3": (3, 2),
    "bayer_rggb8": (1, 1), "bayer_bggr8": (1, 1), "bayer_gbrg8": (1, 1), "bayer_grbg8": (1, 1),
    "bayer_rggb16": (1, 2), "bayer_bggr16": (1, 2), "bayer_gbrg16": (1, 2), "bayer_grbg16": (1, 2),
}
# OpenCV names Bayer patterns by the 2x2 block starting at pixel (1, 1); ROS by the one at (0, 0).
_BAYER_TO_RGB = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}
SUPPORTED_ENCODINGS = tuple(sorted(_RAW))



def _as_bytes_view(data: Any) -> np.ndarray:
    """uint8[] field (numpy array, bytes, array.array, list) -> 1-D uint8 numpy view."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    try:
        return np.frombuffer(memoryview(data), dtype=np.uint8)  # array.array('B')
    except TypeError:
        return np.asarray(data, dtype=np.uint8)


def decode_image(msg: Any, source: str = "image") -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB (a new array)."""
    enc = str(msg.encoding).strip()
    key = enc.lower()
    if key not in _RAW:
        raise ImageDecodeError(
            f"{source}: unsupported Image encoding {enc!r}; expected one of {', '.join(SUPPORTED_ENCODINGS)}")
    ch, bpc = _RAW[key]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageDecodeError(f"{source}: Image has size {w}x{h}; expected positive width and height")
    row = w * ch * bpc
    if step < row:
        raise ImageDecodeError(f"{source}: Image step {step} < width*channels*bytes = {row} ({enc}, {w}x{h})")
    buf = _as_bytes_view(msg.data)
    if buf.size != step * h:
        raise ImageDecodeError(
            f"{source}: Image data has {buf.size} bytes; expected step*height = {step}*{h} = {step * h} "
            f"({enc}, {w}x{h})")
    rows = buf.reshape(h, step)[:, :row]
    if bpc == 1:
        a = rows.reshape(h, w, ch) if ch > 1 else rows.reshape(h, w)
    else:
        dt = np.dtype(">u2" if msg.is_bigendian else "<u2")
        a16 = np.ascontiguousarray(rows).view(dt).reshape(h, w, ch) if ch > 1 else \
            np.ascontiguousarray(rows).view(dt).reshape(h, w)
        if key.startswith("bayer"):
            a = a16.astype(np.uint16)
        else:
            a = (a16 >> 8).astype(np.uint8)
    if key.startswith("bayer"):
        pattern = key[len("bayer_"):len("bayer_") + 4]
        rgb = cv2.cvtColor(np.ascontiguousarray(a), _BAYER_TO_RGB[pattern])
        return (rgb >> 8).astype(np.uint8) if rgb.dtype == np.uint16 else rgb
    if ch == 1:
        return np.repeat(a[:, :, None], 3, axis=2)
    if key.startswith(("bgr", "8uc", "16uc")):
        return np.ascontiguousarray(a[:, :, 2::-1])
    return np.ascontiguousarray(a[:, :, :3])


def decode_compressed(msg: Any, source: str = "compressed image", reduce: int = 1) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG/PNG) -> (H, W, 3) uint8 RGB.

    ``reduce`` in {1, 2, 4, 8} decodes JPEGs at 1/reduce size using the codec's DCT scaling
    (much faster; the caller must scale K by 1/reduce, see ``reduced_K``). PNGs ignore it.
    """
    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt:
        raise ImageDecodeError(f"{source}: compressedDepth images are not camera images (format {msg.format!r})")
    buf = _as_bytes_view(msg.data)
    if buf.size == 0:
        raise ImageDecodeError(f"{source}: CompressedImage has no data (format {msg.format!r})")
    head = buf[:8].tobytes()
    if head.startswith(JPEG_MAGIC):
        kind = "jpeg"
    elif head.startswith(PNG_MAGIC):
        kind = "png"
    else:
        raise ImageDecodeError(
            f"{source}: CompressedImage data is neither JPEG nor PNG (format {msg.format!r}, first bytes {head[:4].hex()})")
    if kind == "jpeg" and reduce not in (1, 2, 4, 8):
        raise ValueError(f"reduce must be 1, 2, 4 or 8, got {reduce!r}")
    if kind == "jpeg" and not _jpeg_complete(buf):
        raise ImageDecodeError(f"{source}: JPEG data is truncated or corrupt (no end-of-image marker, {buf.size} bytes)")
    # JPEG: the core's decode (the one the int8 gate validates on); PNG: straight to RGB as well
    rgb = (decode_jpeg_rgb(buf, reduce) if kind == "jpeg"
           else cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_COLOR_RGB))
    if rgb is None or rgb.size == 0:
        raise ImageDecodeError(f"{source}: {kind.upper()} data could not be decoded ({buf.size} bytes, format {msg.format!r})")
    return rgb


def declared_size(data: Any) -> tuple[int, int] | None:
    """(width, height) that a JPEG's or PNG's header declares (``priorocc_core.jpeg.header_size``)
    of any uint8[] field; None if no header."""
    return header_size(_as_bytes_view(data))


def _jpeg_complete(buf: np.ndarray) -> bool:
    """A JPEG cut short has no EOI marker (FFD9) in its last bytes; libjpeg would only warn."""
    tail = buf[-16:].tobytes()
    return b"\xff\xd9" in tail


def is_jpeg(msg: Any) -> bool:
    """A CompressedImage whose data is a JPEG (by magic bytes)."""
    if hasattr(msg, "encoding") or not hasattr(msg, "format"):
        return False
    return _as_bytes_view(msg.data)[:2].tobytes() == JPEG_MAGIC


def decode_any(msg: Any, source: str = "image", reduce: int = 1) -> np.ndarray:
    """Image or CompressedImage (told apart by fields) -> (H, W, 3) uint8 RGB."""
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return decode_compressed(msg, source, reduce=reduce)
    return decode_image(msg, source)


def encode_image(rgb: np.ndarray, header: Any, encoding: str = "rgb8") -> Any:
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image (rgb8 or bgr8)."""
    a = np.asarray(rgb)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"encode_image: expected (H, W, 3) uint8, got {a.dtype} {a.shape}")
    if encoding == "bgr8":
        a = a[:, :, ::-1]
    elif encoding != "rgb8":
        raise ValueError(f"encode_image: encoding must be rgb8 or bgr8, got {encoding!r}")
    h, w = a.shape[:2]
    return new_msg("sensor_msgs/msg/Image", header=header, height=h, width=w, encoding=encoding,
                   is_bigendian=0, step=w * 3, data=np.ascontiguousarray(a).reshape(-1))


def encode_compressed(rgb: np.ndarray, header: Any, fmt: str = "jpeg", quality: int = 90) -> Any:
    """(H, W, 3) uint8 RGB -> sensor_msgs/CompressedImage (jpeg or png)."""
    bgr = cv2.cvtColor(np.asarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    ext = {"jpeg": ".jpg", "png": ".png"}[fmt]
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, data = cv2.imencode(ext, bgr, params)
    if not ok:
        raise ValueError(f"encode_compressed: {fmt} encoding failed")
    return new_msg("sensor_msgs/msg/CompressedImage", header=header, format=fmt, data=data.reshape(-1))
