"""Which layers break int8 agreement: per-group sensitivity of a trained checkpoint.

    .venv/bin/python benchmarks/int8_sensitivity.py --checkpoint models/demo --calib-world W \
        --val-world V [--real ../shared/data/nuscenes-real] [--frames 25] --workdir /tmp/sens --out sens.json \
        [--variants base,keep:depth_net,...] [--frame-counts 4,13,25]

Quantises the checkpoint's exported graph (priorocc_core.quantize) once per variant, each time
with the recipe's kept-float layers (``quantize.KEEP_FLOAT``) plus one more group of layers
(``GROUPS`` below, by node-name pattern) kept in float, and measures the IR's voxel agreement with
OpenVINO fp32 and the mIoU drop on the validation world (and the real keyframe's agreement).
``--frame-counts``: the final recipe with that many calibration frames. Writes one JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# the network's layer groups, as NNCF ignored-scope patterns over the exported graph's node names
GROUPS = {
    "stem": r".*/backbone/conv1/.*",
    "backbone.layer1": r".*/backbone/layer1/.*",
    "backbone.layer2": r".*/backbone/layer2/.*",
    "backbone.layer3": r".*/backbone/layer3/.*",
    "backbone.layer4": r".*/backbone/layer4/.*",
    "neck": r".*/model/neck/.*",
    "injector.seg_conv": r".*/injector/seg_head/conv/.*",
    "injector.fusion": r".*/injector/fusion/.*",
    "depth_net": r".*/view_transformer/depth_net/.*",
    "bev_backbone": r".*/bev_backbone/.*",
    "bev_backbone.layers.0": r".*/bev_backbone/layers\.0/.*",
    "bev_backbone.layers.1": r".*/bev_backbone/layers\.1/.*",
    "bev_backbone.layers.2": r".*/bev_backbone/layers\.2/.*",
    "bev_backbone.input": r".*/bev_backbone/layers\.0/layers\.0\.0/(conv1|downsample)/.*",  # read the pooled BEV
    "bev_neck": r".*/bev_neck/.*",
    "occ_head.final_conv": r".*/occ_head/final_conv/.*",
}

# quantisation options a variant may add (quantize_openvino's keywords)
OPTIONS = {"mixed": {"preset": "mixed"}, "overflow": {"overflow_fix": "enable"},
           "fullbias": {"fast_bias_correction": False}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "demo"))
    ap.add_argument("--calib-world", action="append", default=[])
    ap.add_argument("--val-world", required=True)
    ap.add_argument("--real", default=None)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--version", default="v1.0-mini")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", default=None,
                    help="comma list of base, keep:GROUP[+GROUP], only:GROUP (default: base + keep:<each group>)")
    ap.add_argument("--frame-counts", default="", help="comma list of calibration frame counts for the last variant")
    a = ap.parse_args(argv)

    from priorocc_core.autoselect import cpu_summary
    from priorocc_core.backends import _onnx_file
    from priorocc_core.checkpoint import load_checkpoint
    from priorocc_core.quantize import (KEEP_FLOAT, agreement_and_miou, calibration_feeds, ir_occupancy,
                                        quantize_openvino, world_frames, world_samples)

    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    model, cfg, _ = load_checkpoint(a.checkpoint)
    onnx = _onnx_file(a.checkpoint, model, cfg, None, work / "onnx")
    calib = []
    for w in a.calib_world:
        calib.extend(world_frames(w, cfg, a.version, limit=a.frames - len(calib)))
    real = None
    if a.real:
        from benchmarks.inputs import load_real_keyframe

        real = load_real_keyframe(a.real)
        calib = calib[: a.frames - 1] + [real]
    val = world_samples(a.val_world, cfg, a.version)
    vf = list(calibration_feeds(cfg, val))
    rf = list(calibration_feeds(cfg, [real])) if real is not None else []
    ref_v, ref_r = ir_occupancy(onnx, vf), ir_occupancy(onnx, rf)
    res = {"cpu": cpu_summary(), "checkpoint": a.checkpoint, "calib_frames": len(calib), "val_keyframes": len(val),
           "keep_float_base": list(KEEP_FLOAT), "groups": GROUPS, "rows": []}

    def measure(name: str, keep: tuple[str, ...], frames: list, **opts) -> dict:
        t = time.perf_counter()
        stem = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
        xml = quantize_openvino(onnx, cfg, frames, work / f"{stem}.xml", subset_size=len(frames), keep_float=keep,
                                **opts)
        row = {"variant": name, "frames": len(frames), "quantize_s": round(time.perf_counter() - t, 1),
               **agreement_and_miou(ref_v, ir_occupancy(xml, vf), val)}
        if rf:
            row["real_voxel_agreement"] = agreement_and_miou(ref_r, ir_occupancy(xml, rf), [])["voxel_agreement"]
        print(json.dumps(row), flush=True)
        res["rows"].append(row)
        Path(a.out).write_text(json.dumps(res, indent=1))
        return row

    def parse(v: str) -> tuple[tuple[str, ...], dict]:
        """'keep:G+G/mixed/overflow/fullbias' -> (kept-float patterns, quantize options)"""
        keep, opts = tuple(KEEP_FLOAT), {}
        for tok in v.split("/"):
            if tok == "base":
                pass
            elif tok.startswith("keep:"):
                keep += tuple(GROUPS[g] for g in tok[5:].split("+"))
            elif tok.startswith("only:"):
                keep += tuple(p for g, p in GROUPS.items() if g not in tok[5:].split("+"))
            elif tok in OPTIONS:
                opts.update(OPTIONS[tok])
            else:
                raise SystemExit(f"--variants: unknown {tok!r}")
        return keep, opts

    variants = a.variants.split(",") if a.variants else ["base"] + [f"keep:{g}" for g in GROUPS]
    for v in variants:
        keep, opts = parse(v)
        measure(v, keep, calib, **opts)
    for n in [int(x) for x in a.frame_counts.split(",") if x]:
        frames = (calib[: n - 1] + [real]) if real is not None else calib[:n]
        measure(f"{variants[-1]}@{n}", keep, frames, **opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
