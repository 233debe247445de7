"""Pillow's bicubic resize of only the rows a crop keeps, bit for bit.

FlashOCC resizes the whole camera image (1600 x 900 -> 704 x 396) and then crops the bottom rows
(256 of 396). Pillow's ``resize(box=...)`` computes only the kept rows, but its box is single
precision, so its filter centres and scale differ from the full resize by an ulp and a few pixels
differ by one grey level. This module finds a source-row crop that gives exactly the full
resize's vertical coefficients instead:

- Resize rows ``[r0, H)`` of the source to ``OH - d`` rows, where ``r0 / d == H / OH`` exactly
  (``d`` a multiple of ``OH / gcd(H, OH)``): the scale ``(H - r0) / (OH - d)`` is the same
  double as ``H / OH``, and output row ``k`` of the crop is full row ``k + d``. The rows are
  copied out first (an array's rows ``r0:``, a PIL image's ``crop``): Pillow's integer box
  ``(0, r0, W, H)`` would save the copy, but Pillow 13.0.0 gives other pixels through a box when
  it enlarges (480 x 640 -> 528 x 704: 31 % of the pixels, up to 20 levels), so it is not used.
- Pillow derives each output row's taps from its centre in double precision (Resample.c,
  ``precompute_coeffs`` and ``normalize_coeffs_8bpc``); :func:`vertical_taps` repeats that
  arithmetic step for step. A plan is used only when every kept row's first source row and
  22-bit integer taps are equal in both resizes; then the crop's horizontal pass sees the same
  source rows and its vertical pass applies the same integers, so every pixel is equal.
  Otherwise (a training resize whose ``OH / gcd`` exceeds the crop's top row, flips do not
  matter) the plan is ``(0, 0)``: the full resize.

The widths are not touched (the test-time crop keeps the resized width's middle; a column
crop could be planned the same way). tests/test_preprocess_rows.py compares the pixels on random
images and the real keyframe for the shipped configs and random training augmentations.
"""
from __future__ import annotations

import math
from functools import lru_cache

_PRECISION_BITS = 32 - 8 - 2  # Pillow's 8-bit resampling precision


def _bicubic(x: float) -> float:
    """Pillow's ``bicubic_filter`` (a = -0.5), same operation order."""
    if x < 0.0:
        x = -x
    if x < 1.0:
        return (1.5 * x - 2.5) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * -0.5
    return 0.0


def vertical_taps(in_size: int, out_size: int, rows: range) -> list[tuple[int, tuple[int, ...]]]:
    """(first source row, integer taps) of output ``rows`` of Pillow's BICUBIC resize of
    ``in_size`` rows to ``out_size`` rows over the whole image (box ``0 .. in_size``)."""
    in0 = 0.0  # Pillow's box is C floats: (0, in_size) is exact in them, so scale is this double
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    inv = 1.0 / filterscale
    taps = []
    for yy in rows:
        center = in0 + (yy + 0.5) * scale
        ymin = max(int(center - support + 0.5), 0)
        n = min(int(center + support + 0.5), in_size) - ymin
        k = [_bicubic((y + ymin - center + 0.5) * inv) for y in range(n)]
        ww = 0.0
        for w in k:
            ww += w
        if ww != 0.0:
            k = [w / ww for w in k]
        one = 1 << _PRECISION_BITS
        taps.append((ymin, tuple(int(-0.5 + w * one) if w < 0 else int(0.5 + w * one) for w in k)))
    return taps


@lru_cache(maxsize=256)
def kept_rows_plan(src_h: int, out_h: int, top: int, bottom: int) -> tuple[int, int]:
    """(r0, d): resizing source rows ``[r0, src_h)`` to ``out_h - d`` rows gives rows
    ``[top, bottom)`` of the full ``src_h -> out_h`` bicubic resize as rows ``[top - d, bottom - d)``,
    bit for bit; ``(0, 0)`` when no such crop exists (then resize the whole image)."""
    if not (0 <= top < bottom <= out_h) or src_h <= 0:
        return 0, 0
    g = math.gcd(src_h, out_h)
    dq, rq = out_h // g, src_h // g
    full = vertical_taps(src_h, out_h, range(top, bottom))
    for j in range(top // dq, 0, -1):  # the largest crop first
        d, r0 = dq * j, rq * j
        rows = range(top - d, bottom - d)
        cropped = vertical_taps(src_h - r0, out_h - d, rows)  # rows r0.. copied out, then resized
        if all(a[0] - r0 == b[0] and a[1] == b[1] for a, b in zip(full, cropped)):
            return r0, d
    return 0, 0
