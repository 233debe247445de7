"""int8: post-training quantisation of the exported model with NNCF for OpenVINO (``priorocc_quantize``).

    priorocc_quantize model_dir --world CALIB_WORLD --val-world HELD_WORLD [--real ../shared/data/nuscenes-real]
                      [--frames 25] [-o model_dir/openvino/int8.xml]

The exported ONNX graph (:mod:`priorocc_core.export`) is read by OpenVINO and quantised by
``nncf.quantize`` (8-bit weights and activations of the convolutions and matrix products, except
the layers of :data:`KEEP_FLOAT`; the pooling plan, softmax, scatter and argmax stay in floating
point), calibrated on frames run through the same preprocessing and pooling plan as at inference
(``backends.GraphRunner``): frames of worlds like the training world
(``priorocc_core.data.synthetic``), the real nuScenes keyframe, or any ``dict(images, K, cam2ego)``.
The result is an OpenVINO IR (``.xml`` + ``.bin``) that ``make_predictor(ckpt, "openvino", "int8")``
runs (default path ``<checkpoint>/openvino/int8.xml``) once it passes the gate: the tool
validates it against fp32 on the held world (:func:`validate_int8`) and records the figures
beside the IR (:mod:`priorocc_core.int8_gate`).

How many frames: 25 by default (the demo model's agreement against the number of calibration
frames is in BENCHMARKS.md); the parity tests use a handful on the tiny config.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from . import cli
from .atomic import atomic_write_files
from .int8_gate import default_int8_path  # the IR this tool writes and backends reads
from .config import Config
from .telemetry import keep_third_party_quiet

# Layers kept in floating point (NNCF ignored-scope patterns over the exported graph's node names),
# found by per-layer-group sensitivity on the trained demo model (benchmarks/int8_sensitivity.py,
# BENCHMARKS.md "int8 that keeps the trained model's answers"):
# - the per-voxel class predictor (its argmax decides every label) and the 2D class classifier:
#   quantised, they flipped 1 of 16 height slices of the tiny random-weights model (93.75 %);
# - the BEV backbone (3.8 % of the demo model's FLOPs): in int8 it alone took the demo model from
#   99.6 % to 91.6 % voxel agreement with fp32 on its validation world (its first stage most:
#   97.5 % with only that stage float); the depth net, the BEV neck, the occupancy head's final conv
#   kept float changed nothing (91.1-91.6 %).
# Everything else (image backbone, neck, injector, depth net, BEV neck, head conv) is int8.
KEEP_FLOAT = (".*occ_head/predicter.*", ".*seg_head/classifier.*", ".*/bev_backbone/.*")
CALIB_FRAMES = 25  # calibration frames by default (see the module docstring)


def calibration_feeds(cfg: Config, frames: Iterable[dict]) -> Iterator[dict[str, np.ndarray]]:
    """dict(images, K, cam2ego[, fused]) frames -> the exported graph's input feeds, exactly as the
    graph runners of backends.py build them (same preprocessing, the model package's one pooling
    plan; ``fused``: the fused resize of ``preprocess:=fast``)."""
    from .backends import PLAN_INPUTS
    from .inference import preprocess
    from .model.plan import PoolingPlanner

    planner = PoolingPlanner.from_config(cfg.model)
    for f in frames:
        batch = preprocess(f["images"], f["K"], f["cam2ego"], cfg, fused=bool(f.get("fused", False)))
        plan = planner(batch["cam2ego"], batch["K"], batch["img_aug"], batch["bev_aug"])
        yield {"imgs": batch["imgs"].numpy(), **{k: getattr(plan, k).cpu().numpy() for k in PLAN_INPUTS}}


def world_frames(dataroot, cfg: Config, version: str = "auto", limit: int | None = None) -> Iterator[dict]:
    """Keyframes of a nuScenes-format world (e.g. a synthetic one) as dict(images, K, cam2ego)."""
    from .data import OccDataset
    from .data.io import read_image_rgb

    c = cfg.with_overrides([f"data.dataroot={dataroot}", f"data.version={version}", "data.val_split=all"])
    ds = OccDataset(c, split="val", train=False)
    for k in range(len(ds) if limit is None else min(limit, len(ds))):
        s = ds[k]
        yield dict(images=[np.asarray(read_image_rgb(p)) for p in s["image_paths"]],
                   K=s["K"].numpy(), cam2ego=s["cam2ego"].numpy())


def world_samples(dataroot, cfg: Config, version: str = "v1.0-mini", limit: int | None = None) -> list[dict]:
    """Keyframes of a world *with* their ground truth: dict(images, K, cam2ego, gt (200, 200, 16)
    uint8, mask (200, 200, 16) bool = mask_camera, jpegs: the image files' bytes), for the
    validation gate."""
    from .data import OccDataset
    from .data.io import read_image_rgb

    c = cfg.with_overrides([f"data.dataroot={dataroot}", f"data.version={version}", "data.val_split=all"])
    ds = OccDataset(c, split="val", train=False)
    out = []
    for k in range(len(ds) if limit is None else min(limit, len(ds))):
        s = ds[k]
        out.append(dict(images=[np.asarray(read_image_rgb(p)) for p in s["image_paths"]], K=s["K"].numpy(),
                        cam2ego=s["cam2ego"].numpy(), gt=s["voxel_semantics"].numpy(),
                        mask=s["mask_camera"].numpy().astype(bool),
                        jpegs=[Path(p).read_bytes() for p in s["image_paths"]]))
    return out


def ir_occupancy(model_path, feeds: list[dict[str, np.ndarray]], hint: str = "f32") -> list[np.ndarray]:
    """Run an ONNX file or OpenVINO IR on the CPU (``INFERENCE_PRECISION_HINT`` = ``hint``) over
    ``feeds`` -> the (200, 200, 16) uint8 occupancy labels of each."""
    import openvino as ov

    cm = ov.Core().compile_model(str(model_path), "CPU", {"INFERENCE_PRECISION_HINT": hint})
    req = cm.create_infer_request()
    return [np.asarray(req.infer(f)[cm.output("occ")])[0].copy() for f in feeds]


def agreement_and_miou(ref: list[np.ndarray], test: list[np.ndarray], samples: list[dict]) -> dict:
    """Voxel agreement of ``test`` with ``ref`` (all voxels), and both mIoUs (mask_camera) against the
    samples' ground truth when they have one."""
    from .metrics import OccMIoU

    out = {"voxel_agreement": float(np.mean([(a == b).mean() for a, b in zip(ref, test)]))}
    if samples and "gt" in samples[0]:
        m_ref, m_test = OccMIoU(), OccMIoU()
        for r, t, s in zip(ref, test, samples):
            m_ref.add(r, s["gt"], s["mask"])
            m_test.add(t, s["gt"], s["mask"])
        out |= {"miou_fp32": m_ref.miou(), "miou_int8": m_test.miou(), "miou_drop": m_ref.miou() - m_test.miou()}
    return out


def mode_frames(frames: list[dict], cfg: Config, mode: str) -> list[dict]:
    """``frames`` as the node sees them in preprocessing ``mode`` (priorocc_core.jpeg): each
    frame's ``jpegs`` decoded that way (K scaled), the other keys kept; ``exact`` returns them as
    they are (their images are the full decode)."""
    from .jpeg import jpegs_to_frame

    if mode == "exact":
        return frames
    return [{**f, **jpegs_to_frame(f["jpegs"], f["K"], f["cam2ego"], cfg.model.image, mode)} for f in frames]


def validate_int8(int8_xml, onnx_path, cfg: Config, val: list[dict], real: dict | None = None,
                  world: str = "", float_precision: str = "f32", modes: Iterable[str] = ("fused", "fast")) -> dict:
    """The gate's record of an int8 IR: its labels against OpenVINO fp32 of the ONNX graph it was
    quantised from (= torch fp32: tests/test_backends.py) on the validation keyframes ``val``
    (with ground truth: :func:`world_samples`) and, when given, on the real keyframe.
    -> dict(voxel_agreement, miou_fp32, miou_int8, miou_drop, real_voxel_agreement, ...,
    passed, modes) (:mod:`priorocc_core.int8_gate` checks it). float_precision: the precision the IR's
    float layers are compiled in (``f32``, or ``bf16`` where the CPU has it natively: faster, and
    then what was validated is what runs); recorded, and used by backends.py.

    The top-level figures are FlashOCC's exact pixels. ``modes`` (cheaper preprocessing,
    priorocc_core.jpeg): the same figures with the int8 input preprocessed that way, always
    against fp32 on exact pixels, under ``modes`` (``exact`` too, for uniformity); frames need
    their ``jpegs`` for it. The gate lets the node run int8 in such a mode only if it keeps int8's
    agreement with fp32 (int8_gate.check)."""
    from . import int8_gate

    if not val:
        raise ValueError("validate_int8: no validation keyframes")
    exact_feeds = {"val": list(calibration_feeds(cfg, val)),  # the fp32 reference's, and int8's exact mode's
                   "real": list(calibration_feeds(cfg, [real])) if real is not None else None}
    ref = ir_occupancy(onnx_path, exact_feeds["val"])
    ref_real = ir_occupancy(onnx_path, exact_feeds["real"]) if real is not None else None

    def feeds(frames: list[dict], which: str, mode: str) -> list[dict]:
        return exact_feeds[which] if mode == "exact" else list(calibration_feeds(cfg, mode_frames(frames, cfg, mode)))

    def figures(mode: str) -> dict:
        out = agreement_and_miou(ref, ir_occupancy(int8_xml, feeds(val, "val", mode), float_precision), val)
        out["real_voxel_agreement"] = None if real is None else agreement_and_miou(
            ref_real, ir_occupancy(int8_xml, feeds([real], "real", mode), float_precision), [])["voxel_agreement"]
        return out

    exact = figures("exact")
    rec = {"world": str(world), "keyframes": len(val), "reference": "OpenVINO f32 of the same ONNX graph",
           "float_precision": float_precision, **exact}
    rec["modes"] = {"exact": exact, **{m: figures(m) for m in modes if m != "exact"}}
    rec["thresholds"] = int8_gate.thresholds()
    rec["ir_sha256"] = int8_gate.ir_digest(int8_xml)
    rec["passed"] = not int8_gate.failures(rec)
    return rec


def quantize_openvino(onnx_path, cfg: Config, frames: Iterable[dict], out_xml, subset_size: int = 300,
                      fast_bias_correction: bool = True, keep_float: tuple[str, ...] = KEEP_FLOAT,
                      preset: str = "performance", overflow_fix: str = "first_layer_only") -> Path:
    """Read ``onnx_path`` with OpenVINO, quantise with NNCF on ``frames``, save the IR to
    ``out_xml`` (written to a temporary name, then renamed). Returns the path.
    preset: NNCF's ``performance`` (symmetric activations) or ``mixed`` (asymmetric);
    overflow_fix: NNCF's ``first_layer_only``, ``enable`` (7-bit weights everywhere) or ``disable``."""
    keep_third_party_quiet()
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    feeds = list(calibration_feeds(cfg, frames))
    if not feeds:
        raise ValueError("quantize: no calibration frames")
    model = ov.Core().read_model(str(onnx_path))
    q = nncf.quantize(model, nncf.Dataset(feeds), subset_size=min(subset_size, len(feeds)),
                      preset=nncf.QuantizationPreset(preset), fast_bias_correction=fast_bias_correction,
                      ignored_scope=nncf.IgnoredScope(patterns=list(keep_float), validate=False),
                      advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix(overflow_fix)))
    out = Path(out_xml)
    # the weights first, the .xml that readers open last
    atomic_write_files([out.with_suffix(".bin"), out],
                       lambda folder: ov.save_model(q, str(folder / out.name), compress_to_fp16=False))
    return out


def main(argv=None) -> int:
    return cli.run("priorocc_quantize", _main, argv)


def _main(argv) -> int:
    ap = argparse.ArgumentParser(prog="priorocc_quantize", description=__doc__.split("\n\n")[0])
    cli.add_debug_arg(ap)
    ap.add_argument("checkpoint", help="checkpoint directory")
    ap.add_argument("--world", action="append", default=[], help="nuScenes-format world for calibration (repeatable)")
    ap.add_argument("--val-world", default=None,
                    help="held nuScenes-format world with ground truth, never calibrated on: the gate's validation")
    ap.add_argument("--version", default="auto", help="table folder of the worlds (default auto: the only one there)")
    ap.add_argument("--real", default=None, help="folder of the real nuScenes keyframe (v1.0-mini tables of one sample, as ../shared/data/nuscenes-real)")
    ap.add_argument("--frames", type=int, default=CALIB_FRAMES,
                    help=f"calibration frames at most (default {CALIB_FRAMES})")
    ap.add_argument("-o", "--output", default=None, help="IR to write (default <checkpoint>/openvino/int8.xml)")
    ap.add_argument("--float-precision", choices=("f32", "bf16"), default="f32",
                    help="precision of the layers kept float, validated and recorded (default f32; bf16 is faster "
                         "on avx512_bf16 / AMX CPUs, and runs f32 where the CPU has no bf16)")
    a = ap.parse_args(argv)
    from .artifacts import write_key
    from .backends import BackendError, _onnx_file
    from .checkpoint import CheckpointError, load_checkpoint
    from .int8_gate import int8_key, int8_key_file, mode_failures, summary

    def fail(msg: str) -> int:
        print(cli.error_line("priorocc_quantize", msg), file=sys.stderr)
        return 2

    try:
        model, cfg, _ = load_checkpoint(a.checkpoint)
    except CheckpointError as e:
        return fail(str(e))
    if cfg.model.temporal.num_adj:
        return fail(f"{a.checkpoint}: a temporal model (model.temporal.num_adj {cfg.model.temporal.num_adj}); "
                    "int8 calibration covers single-frame graphs only")
    for flag, w in [("--world", w) for w in a.world] + ([("--val-world", a.val_world)] if a.val_world else []):
        if not Path(w).is_dir():
            return fail(f"{flag} {w}: no such folder (make one with training/make_synthetic.py)")
    if not a.world and not a.real:
        return fail("no calibration frames: give --world and/or --real")
    if not a.val_world:
        return fail("--val-world: needed (a held world with ground truth: the IR is only run once its agreement "
                    "with fp32 there passes the gate, priorocc_core/int8_gate.py)")
    if any(Path(w).resolve() == Path(a.val_world).resolve() for w in a.world):
        return fail(f"--val-world {a.val_world} is also a calibration --world: validate on a world never calibrated on")
    frames: list[dict] = []
    budget = a.frames - (1 if a.real else 0)  # the real keyframe always gets a place
    for w in a.world:
        frames.extend(world_frames(w, cfg, a.version, limit=max(0, budget - len(frames))))
    real = None
    if a.real:
        from .data.real_keyframe import load_real_keyframe

        try:
            real = load_real_keyframe(a.real)
        except FileNotFoundError as e:
            return fail(f"--real: {e}")
        frames.append(real)
    if not frames:
        return fail("no calibration frames: give --world and/or --real")
    val = world_samples(a.val_world, cfg, a.version)
    if not val:
        return fail(f"--val-world {a.val_world}: no keyframes")
    try:
        onnx = _onnx_file(a.checkpoint, model, cfg, None, None)
    except BackendError as e:
        return fail(str(e))
    frames = frames[: a.frames]
    out = quantize_openvino(onnx, cfg, frames, a.output or default_int8_path(a.checkpoint), len(frames))
    rec = validate_int8(out, onnx, cfg, val, real, world=a.val_world, float_precision=a.float_precision)
    rec["calibration_frames"] = len(frames)
    # what backends.py checks before running it: the key (made from what) and the validation (how good)
    write_key(int8_key_file(out), int8_key(a.checkpoint, cfg), validation=rec)
    print(f"wrote {out} ({len(frames)} calibration frames): {summary(rec)}")
    for mode in rec["modes"]:
        bad = mode_failures(rec, mode)
        print(f"  with {mode} preprocessing: " + ("; ".join(bad) + " -> runs only on other preprocessing" if bad else
                                                  f"{100 * rec['modes'][mode]['voxel_agreement']:.2f} % -> allowed"))
    if not rec["passed"]:
        from .int8_gate import failures

        print(f"priorocc_quantize: {out} is below the int8 gate ({'; '.join(failures(rec))}): "
              f"make_predictor refuses it", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
