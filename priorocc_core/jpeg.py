"""JPEG bytes -> RGB at full or DCT-reduced size, the size a JPEG / PNG header declares, and the
preprocessing modes built on them.

The node decodes camera JPEGs with :func:`decode_jpeg_rgb` (priorocc_ros.image_codec) and the
int8 gate validates an IR on frames decoded the same way (priorocc_core.quantize), so what was
validated is what runs. A mode names the node's two preprocessing parameters together:

    exact  preprocess:=exact jpeg_reduce:=1   FlashOCC's pixels (full decode, BICUBIC resize, crop)
    fused  preprocess:=fast  jpeg_reduce:=1   full decode, resize + crop in one Pillow call
    fast   preprocess:=fast  jpeg_reduce:=0   DCT-scaled decode at the network's size, then fused
"""
from __future__ import annotations

import cv2
import numpy as np

PREPROCESS_MODES = {"exact": {"jpeg_reduce": 1, "fused_resize": False},
                    "fused": {"jpeg_reduce": 1, "fused_resize": True},
                    "fast": {"jpeg_reduce": 0, "fused_resize": True}}
JPEG_MAGIC = b"\xff\xd8"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_REDUCED_FLAG = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}


def preprocess_mode(preprocess: str, jpeg_reduce: int) -> str:
    """The node's parameters -> the mode's name, or a description of a combination that has none
    (``preprocess=exact jpeg_reduce=2``: a fixed reduction is no validated mode)."""
    for name, m in PREPROCESS_MODES.items():
        if m["jpeg_reduce"] == int(jpeg_reduce) and m["fused_resize"] == (preprocess == "fast"):
            return name
    return f"preprocess={preprocess} jpeg_reduce={jpeg_reduce}"


def decode_jpeg_rgb(buf: np.ndarray, reduce: int = 1) -> np.ndarray | None:
    """JPEG bytes (1-D uint8) -> (H, W, 3) uint8 RGB decoded at 1/``reduce`` (1, 2, 4, 8) by
    libjpeg's DCT scaling; None when the codec cannot decode it. IMREAD_COLOR_RGB: the codec
    writes RGB itself (the same values as BGR + cvtColor; one full-image pass less)."""
    flag = _REDUCED_FLAG.get(reduce)
    if flag is None:
        raise ValueError(f"reduce must be 1, 2, 4 or 8, got {reduce!r}")
    rgb = cv2.imdecode(buf, flag | cv2.IMREAD_COLOR_RGB)
    return None if rgb is None or rgb.size == 0 else rgb


def header_size(buf: np.ndarray) -> tuple[int, int] | None:
    """(width, height) that a JPEG's SOF or a PNG's IHDR header declares, read without decoding
    (so a decompression bomb is refused before any pixel is allocated); None if no header.
    ``buf``: the file's bytes as a 1-D uint8 array."""
    n = buf.size
    if n >= 24 and buf[:8].tobytes() == PNG_MAGIC and buf[12:16].tobytes() == b"IHDR":
        w, h = np.frombuffer(buf[16:24].tobytes(), dtype=">u4")
        return int(w), int(h)
    if n < 4 or buf[:2].tobytes() != JPEG_MAGIC:
        return None
    o = 2
    while o + 4 <= n:
        if buf[o] != 0xFF:
            return None
        marker = int(buf[o + 1])
        if marker == 0xFF:  # fill byte
            o += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length
            o += 2
            continue
        seg = int(buf[o + 2]) << 8 | int(buf[o + 3])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            if o + 9 > n:
                return None
            h = int(buf[o + 5]) << 8 | int(buf[o + 6])
            w = int(buf[o + 7]) << 8 | int(buf[o + 8])
            return w, h
        if marker == 0xDA or seg < 2:  # scan data before any frame header: not a valid JPEG
            return None
        o += 2 + seg
    return None


def reduced_K(K: np.ndarray, reduce: int) -> np.ndarray:
    """Intrinsics of an image decoded at 1/reduce size (pixel centres kept aligned)."""
    if reduce == 1:
        return np.asarray(K, dtype=np.float64)
    s = 1.0 / reduce
    S = np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5], [0.0, 0.0, 1.0]])
    return S @ np.asarray(K, dtype=np.float64)


def network_reduce(src_hw: tuple[int, int], need_hw: tuple[int, int]) -> int:
    """The largest JPEG DCT reduction (8, 4, 2 or 1) whose decoded image, ceil(size / r), is still
    at least ``need_hw`` (the size the network's resize produces), so the resize only shrinks;
    1 when the resize enlarges the image anyway (a camera smaller than the network's input)."""
    h, w = src_hw
    nh, nw = need_hw
    return next((r for r in (8, 4, 2) if -(-h // r) >= nh and -(-w // r) >= nw), 1)


def model_reduce(src_hw: tuple[int, int], image_cfg) -> int:
    """:func:`network_reduce` for a model's test-time resize (``jpeg_reduce:=0``)."""
    from .preprocess import test_time_aug

    w, h = test_time_aug(tuple(src_hw), image_cfg).resize_dims
    return network_reduce(tuple(src_hw), (h, w))


def jpegs_to_frame(jpegs, K: np.ndarray, cam2ego: np.ndarray, image_cfg, mode: str) -> dict:
    """One set's JPEG bytes decoded as the node decodes them in ``mode`` -> dict(images, K,
    cam2ego, fused) for ``inference.preprocess`` (K scaled to the decoded size)."""
    m = PREPROCESS_MODES[mode]
    images, Ks = [], []
    for j, k in zip(jpegs, np.asarray(K, dtype=np.float64)):
        buf = np.frombuffer(j, np.uint8)
        r, wh = m["jpeg_reduce"], header_size(buf)
        if wh is None:
            raise ValueError(f"a frame's image ({len(j)} bytes) has no JPEG / PNG header")
        if not r:
            r = model_reduce((wh[1], wh[0]), image_cfg)
        img = decode_jpeg_rgb(buf, r)
        if img is None:
            raise ValueError(f"a frame's JPEG ({len(j)} bytes) could not be decoded")
        images.append(img)
        Ks.append(reduced_K(k, r))
    return dict(images=images, K=np.stack(Ks), cam2ego=np.asarray(cam2ego, dtype=np.float64), fused=m["fused_resize"])
