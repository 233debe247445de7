"""Voxel agreement of each path and preprocessing mode with fp32 on FlashOCC's exact pixels.

    python -m benchmarks.mode_agreement CHECKPOINT [--int8 IR.xml] [--frame real|synthetic] [--out F.json]

The frame section (benchmarks/frame.py) compares a cheaper preprocessing mode with the *same*
path's exact mode; what a user of an int8 model cares about is the distance from the fp32 model's
answers, which the int8 gate measures (priorocc_core/int8_gate.py). Here every path (OpenVINO fp32,
and int8 when an IR is given) runs every mode of ``frame.MODES`` (exact, fused, fast) through the
node's own pipeline (decode with ``jpeg_reduce``, then ``Predictor.predict``), and each result is
compared with OpenVINO fp32 on exact pixels, voxel by voxel (all 640,000). Accuracy, not speed:
nothing is timed.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from benchmarks.frame import MODES, jpeg_messages, mode_pipeline


def occupancy(pred, msgs: list, frame: dict, mode: str) -> tuple[np.ndarray, tuple[int, int]]:
    """(labels, decoded (H, W)) of one frame through the node's pipeline in preprocessing ``mode``."""
    pipe = mode_pipeline(pred, mode)
    imgs, K = pipe.decode(msgs, frame["K"])
    return np.asarray(pipe.predictor.predict(imgs, K, frame["cam2ego"]).occupancy), tuple(imgs[0].shape[:2])


def agreements_of(paths: dict, frame: dict) -> dict:
    """paths: {name: predictor}, the first one the reference (fp32); frame: dict(jpegs, K, cam2ego)
    -> {name: {mode: {voxel_agreement_with_fp32_exact, decoded_hw}}}."""
    msgs = jpeg_messages(frame)
    ref, _ = occupancy(next(iter(paths.values())), msgs, frame, "exact")
    out: dict = {}
    for name, pred in paths.items():
        for mode in MODES:
            occ, hw = occupancy(pred, msgs, frame, mode)
            out.setdefault(name, {})[mode] = {"voxel_agreement_with_fp32_exact": float((occ == ref).mean()),
                                              "decoded_hw": list(hw)}
    return out


def agreements(checkpoint, int8_path=None, frame_kind: str = "real") -> dict:
    """:func:`agreements_of` for OpenVINO fp32 (the reference) and, given its IR, int8."""
    from benchmarks.inputs import frame_inputs
    from priorocc_core.backends import make_predictor

    paths = {"openvino fp32": make_predictor(checkpoint, "openvino", "fp32")}
    if int8_path:
        paths["openvino int8"] = make_predictor(checkpoint, "openvino", "int8", int8_path=int8_path)
    return agreements_of(paths, frame_inputs(frame_kind))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--int8", default=None, help="the checkpoint's int8 IR (priorocc_quantize), validated by the gate")
    ap.add_argument("--frame", choices=("real", "synthetic"), default="real", help="the real keyframe (default) or a synthetic one")
    ap.add_argument("--out", default=None, help="JSON file to write")
    a = ap.parse_args(argv)
    res = {"checkpoint": str(a.checkpoint), "int8": a.int8, "frame": a.frame,
           "agreement": agreements(a.checkpoint, a.int8, a.frame)}
    for name, modes in res["agreement"].items():
        for mode, r in modes.items():
            print(f"{name:14s} {mode:6s} {100 * r['voxel_agreement_with_fp32_exact']:8.3f} % of fp32-exact's voxels "
                  f"(decoded {r['decoded_hw'][1]} x {r['decoded_hw'][0]})")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
