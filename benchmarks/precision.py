"""int8 against fp32 / bf16 with a trained model: accuracy on a validation world, and speed.

    .venv/bin/python benchmarks/precision.py --checkpoint models/demo --calib-world W1 [--calib-world W2] \
        --val-world V [--real ../shared/data/nuscenes-real] [--frames 300] --workdir /tmp/prec --out prec.json

1. quantises the checkpoint's exported model with NNCF on up to ``--frames`` frames of the
   calibration worlds plus the real keyframe (priorocc_core.quantize);
2. runs torch fp32 (the reference), OpenVINO fp32, OpenVINO bf16 and OpenVINO int8 on every
   keyframe of the validation world: voxel agreement with torch fp32, mIoU (mask_camera and all
   voxels) against the world's ground truth;
3. times the network (median over the validation keyframes after warm-up) per precision, in the
   same process, with the OpenVINO f32 / bf16 / int8 matmul rates measured right before.

Writes nothing into the checkpoint folder (the ONNX file and the int8 IR go to ``--workdir``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from priorocc_core.atomic import atomic_write_bytes  # noqa: E402


def openvino_matmul_rates(n: int = 1024, repeats: int = 5) -> dict:
    """GFLOP/s of an (n x n) @ (n x n) product compiled by OpenVINO for the CPU, as a 1x1
    convolution (n input and output channels over n pixels: what the network's convolutions
    run on; OpenVINO's avx2 FullyConnected stays f32 even with FakeQuantize inputs): f32, with
    the bf16 hint, and int8 (FakeQuantize u8 activations x s8 weights). Also records the
    precision the bf16 hint compiled to and each variant's oneDNN primitive."""
    import openvino as ov
    from openvino import opset13 as ops

    core = ov.Core()
    rng = np.random.default_rng(0)
    side = int(round(n ** 0.5))
    x = rng.random((1, n, side, n // side), dtype=np.float32)
    w = rng.standard_normal((n, n, 1, 1)).astype(np.float32)

    def fq(node, lo, hi):
        c = lambda v: ops.constant(np.float32(v))  # noqa: E731
        return ops.fake_quantize(node, c(lo), c(hi), c(lo), c(hi), 256)

    def model(int8: bool):
        p = ops.parameter(list(x.shape), np.float32, name="x")
        if int8:  # as NNCF writes it: u8 activations by FakeQuantize, s8 weights dequantised by a Multiply
            wq = np.clip(np.round(w * 32), -127, 127).astype(np.int8)
            a = fq(p, 0.0, 8.0)
            b = ops.multiply(ops.convert(ops.constant(wq), np.float32), ops.constant(np.float32(1 / 32)))
        else:
            a, b = p, ops.constant(w)
        return ov.Model([ops.convolution(a, b, [1, 1], [0, 0], [0, 0], [1, 1])], [p])

    flops = 2.0 * n * n * x.shape[2] * x.shape[3]
    out = {"size": n, "as": "1x1 convolution"}
    for name, int8, hint in (("f32", False, "f32"), ("bf16", False, "bf16"), ("int8", True, None)):
        cfg = {"PERFORMANCE_HINT": "LATENCY"} | ({"INFERENCE_PRECISION_HINT": hint} if hint else {})
        cm = core.compile_model(model(int8), "CPU", cfg)
        if name == "bf16":
            out["bf16_hint_compiled_as"] = str(cm.get_property("INFERENCE_PRECISION_HINT"))
        out[f"{name}_primitive"] = next(
            (op.get_rt_info()["primitiveType"].astype(str) for op in cm.get_runtime_model().get_ops()
             if op.get_rt_info()["layerType"].astype(str) == "Convolution"), "?")
        req = cm.create_infer_request()
        req.infer({"x": x})
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            req.infer({"x": x})
            ts.append(time.perf_counter() - t)
        out[f"{name}_gflops"] = flops / min(ts) / 1e9
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "demo"))
    ap.add_argument("--calib-world", action="append", default=[], help="calibration world (repeatable)")
    ap.add_argument("--val-world", required=True, help="validation world (keyframes with ground truth)")
    ap.add_argument("--real", default=None, help="real keyframe folder, added to calibration and to the timing")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--version", default="v1.0-mini")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the validation keyframes")
    ap.add_argument("--int8-ir", action="append", default=[],
                    help="an existing priorocc_quantize IR (skips quantising; repeatable: e.g. the same IR validated "
                         "with float layers f32 and bf16, rows openvino-int8-<float precision>)")
    ap.add_argument("--timing-only", action="store_true",
                    help="with --int8-ir and --real: no accuracy pass, no torch fp32; OpenVINO fp32 / bf16 / int8 "
                         "timed interleaved on the real keyframe only (for large models)")
    a = ap.parse_args(argv)

    from priorocc_core.backends import _onnx_file, make_predictor
    from priorocc_core.checkpoint import load_checkpoint
    from priorocc_core.data import OccDataset
    from priorocc_core.data.io import read_image_rgb
    from priorocc_core.metrics import OccMIoU
    from priorocc_core.quantize import quantize_openvino, world_frames

    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    load = lambda: [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]  # noqa: E731
    res: dict = {"command": " ".join(["benchmarks/precision.py"] + (argv if argv is not None else sys.argv[1:])),
                 "loadavg_start": load()}
    model, cfg, _ = load_checkpoint(a.checkpoint)
    onnx = _onnx_file(a.checkpoint, model, cfg, None, work / "onnx")
    calib = []
    for w in a.calib_world:
        calib.extend(world_frames(w, cfg, a.version, limit=a.frames - len(calib)))
    if a.real:
        from priorocc_core.data.real_keyframe import load_real_keyframe

        calib.append(load_real_keyframe(a.real))
    calib = calib[: a.frames]
    t = time.perf_counter()
    if a.int8_ir:
        int8s = [Path(x) for x in a.int8_ir]
        res["quantize"] = {"ir": [str(x) for x in int8s]}
    else:
        int8 = quantize_openvino(onnx, cfg, calib, work / "int8.xml", subset_size=len(calib))
        res["quantize"] = {"frames": len(calib), "seconds": time.perf_counter() - t}
        # the gate's record (make_predictor runs no IR without one): as priorocc_quantize writes it
        from priorocc_core.artifacts import write_key
        from priorocc_core.int8_gate import int8_key, int8_key_file
        from priorocc_core.quantize import validate_int8, world_samples

        real = calib[-1] if a.real else None
        rec = validate_int8(int8, onnx, cfg, world_samples(a.val_world, cfg, a.version), real, world=a.val_world)
        write_key(int8_key_file(int8), int8_key(a.checkpoint, cfg), validation=rec)
        res["quantize"]["validation"] = rec
        int8s = [int8]

    c = cfg.with_overrides([f"data.dataroot={a.val_world}", f"data.version={a.version}", "data.val_split=all"])
    ds = OccDataset(c, split="val", train=False)
    val = []
    for k in range(len(ds)):
        s = ds[k]
        val.append(dict(images=[np.asarray(read_image_rgb(p)) for p in s["image_paths"]], K=s["K"].numpy(),
                        cam2ego=s["cam2ego"].numpy(), gt=s["voxel_semantics"].numpy(),
                        mask=s["mask_camera"].numpy().astype(bool)))
    if a.timing_only:
        val = []
    timing_frames = list(val)
    if a.real:
        from priorocc_core.data.real_keyframe import load_real_keyframe

        timing_frames.append(load_real_keyframe(a.real))
    res["matmul_openvino"] = openvino_matmul_rates()
    rows = {}
    preds = {} if a.timing_only else {"torch-fp32": make_predictor((model, cfg), "torch", "fp32", channels_last=False)}
    preds |= {
        "openvino-fp32": make_predictor(a.checkpoint, "openvino", "fp32", onnx_path=onnx),
        "openvino-bf16": make_predictor(a.checkpoint, "openvino", "bf16", onnx_path=onnx),
    }
    from priorocc_core.artifacts import read_key
    from priorocc_core.int8_gate import int8_key_file

    int8_labels = []
    for x in int8s:
        fp = ((read_key(int8_key_file(x)) or {}).get("validation") or {}).get("float_precision", "f32")
        int8_labels.append(f"openvino-int8-{fp}")
        preds[int8_labels[-1]] = make_predictor(a.checkpoint, "openvino", "int8", int8_path=x)
    ref_occ = None
    for name, p in preds.items():
        if not val:
            rows[name] = {}
            continue
        occs, m_cam, m_all = [], OccMIoU(), OccMIoU()
        for f in val:
            out = p.predict(f["images"], f["K"], f["cam2ego"])
            occs.append(out.occupancy)
            m_cam.add(out.occupancy, f["gt"], f["mask"])
            m_all.add(out.occupancy, f["gt"])
        if ref_occ is None:
            ref_occ = occs
        agree = float(np.mean([(o == r).mean() for o, r in zip(occs, ref_occ)]))
        rows[name] = {"voxel_agreement_with_torch_fp32": agree, "miou_mask_camera": m_cam.summary()["mIoU"],
                      "miou_all_voxels": m_all.summary()["mIoU"]}
        print(name, json.dumps(rows[name]), flush=True)
    # timing interleaved (each frame through every predictor in turn), so that a change of the
    # machine's load hits all precisions alike; per-frame ratios to OpenVINO fp32, then medians
    net: dict = {n: [] for n in preds}
    for p in preds.values():  # warm-up
        f = timing_frames[0]
        p.predict(f["images"], f["K"], f["cam2ego"])
    for _ in range(a.repeats):
        for f in timing_frames:
            for name, p in preds.items():
                net[name].append(p.predict(f["images"], f["K"], f["cam2ego"]).timings["model"])
    for name in preds:
        rows[name]["network_median_s"] = statistics.median(net[name])
        rows[name]["speedup_vs_openvino_fp32_median_of_pairs"] = statistics.median(
            x / y for x, y in zip(net["openvino-fp32"], net[name]))
    res["rows"] = rows
    res["val_keyframes"] = len(val)
    ref = rows.get("torch-fp32")
    for name, r in rows.items():
        if ref:
            r["miou_diff_vs_torch_fp32"] = r["miou_mask_camera"] - ref["miou_mask_camera"]
    for lab in int8_labels:
        res[f"{lab}_speedup_vs_openvino_fp32"] = statistics.median(
            x / y for x, y in zip(net["openvino-fp32"], net[lab]))
        res[f"{lab}_speedup_vs_openvino_bf16"] = statistics.median(
            x / y for x, y in zip(net["openvino-bf16"], net[lab]))
    res["loadavg_end"] = load()
    atomic_write_bytes(a.out, json.dumps(res, indent=1).encode())
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
