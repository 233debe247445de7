"""The int8 gate: an NNCF-quantised IR runs only if it was made from this checkpoint *and* its
labels were shown to keep the fp32 model's answers.

    status = check(xml, checkpoint, cfg)   # Int8Status(ok, reason, record)
    if not status.ok: refuse (backends.py) / do not pick int8 (autoselect.py)

``priorocc_quantize`` writes ``int8.xml`` + ``int8.bin`` and, beside them, ``int8.key.json``:
the key of what the IR was made from (:mod:`priorocc_core.artifacts`: model code, weights,
config, torch / onnx / OpenVINO / NNCF versions) and ``validation``, the record of
:func:`priorocc_core.quantize.validate_int8`: voxel agreement with fp32 and the mIoU drop on a
held validation world (keyframes never used for calibration), the real keyframe's agreement
when it was there, the thresholds, and the sha256 of the IR's bytes that were validated.

The thresholds are this module's constants, not the record's (a record saying "threshold 50 %"
passes nothing): voxel agreement >= :data:`MIN_AGREEMENT` and mIoU (mask_camera) at most
:data:`MAX_MIOU_DROP` below fp32's on the validation world.

Cheaper preprocessing (``check(..., mode=)``, the modes of :mod:`priorocc_core.jpeg`: ``fused``,
``fast``): the record's ``modes`` hold the same figures with int8's input preprocessed that way,
still against fp32 on exact pixels. A mode runs only if its figures pass the same thresholds and
cost int8 at most :data:`MAX_MODE_LOSS` of agreement with fp32 against exact pixels, on the held
world and on the real keyframe; a mode that decodes JPEGs at reduced size needs the real keyframe
(camera-resolution images: a small held world may never exercise the reduction).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .artifacts import GraphKey, graph_key, key_difference, read_key
from .config import Config

INT8_NAME = "int8.xml"  # the IR that priorocc_quantize writes into <checkpoint>/openvino/
MIN_AGREEMENT = 0.99  # voxel agreement with fp32 on the validation world (all voxels)
MAX_MIOU_DROP = 1.0  # mIoU points (mask_camera) the IR may lose against fp32 there
MAX_MODE_LOSS = 0.001  # agreement with fp32 a cheaper preprocessing may cost int8 against exact pixels
REMAKE = "priorocc_quantize {ckpt} --world CALIB_WORLD --val-world VAL_WORLD [--real DIR]"


def default_int8_path(checkpoint) -> Path:
    """``<checkpoint dir>/openvino/int8.xml``."""
    base = Path(checkpoint)
    return (base if base.is_dir() else base.parent) / "openvino" / INT8_NAME


def int8_key(checkpoint, cfg: Config) -> GraphKey:
    """The key an int8 IR of ``checkpoint`` must have been made with (its ONNX graph's, plus OpenVINO / NNCF)."""
    return graph_key(checkpoint, None, cfg, "int8", tools=("openvino", "nncf"))


def int8_key_file(xml) -> Path:
    """``int8.xml`` -> ``int8.key.json``, the key (and validation record) beside the IR."""
    return Path(xml).with_suffix(".key.json")


def ir_digest(xml) -> str:
    """sha256 over the IR's two files (``.xml`` then ``.bin``): the bytes a record was measured on."""
    h = hashlib.sha256()
    for p in (Path(xml), Path(xml).with_suffix(".bin")):
        h.update(p.read_bytes() if p.is_file() else b"<absent>")
        h.update(b"\0")
    return h.hexdigest()


def thresholds() -> dict:
    return {"min_voxel_agreement": MIN_AGREEMENT, "max_miou_drop": MAX_MIOU_DROP}


def failures(rec: dict) -> list[str]:
    """What a validation record fails of the gate (empty: it passes); checked against this
    module's thresholds, never the record's own."""
    out = []
    agree, drop = rec.get("voxel_agreement"), rec.get("miou_drop")
    if not isinstance(agree, (int, float)) or agree < MIN_AGREEMENT:
        out.append(f"voxel agreement with fp32 {_pct(agree)} < {MIN_AGREEMENT:.0%}")
    if not isinstance(drop, (int, float)) or drop > MAX_MIOU_DROP:
        out.append(f"mIoU drop {drop if drop is None else round(drop, 2)} > {MAX_MIOU_DROP}")
    return out


def _pct(x) -> str:
    return f"{100 * x:.2f} %" if isinstance(x, (int, float)) else "not recorded"


def summary(rec: dict) -> str:
    """'99.62 % voxel agreement, mIoU -0.12 on <world> (12 keyframes); real keyframe 99.1 %'."""
    drop = rec.get("miou_drop")
    miou = f"{-drop:+.2f}" if isinstance(drop, (int, float)) else "not recorded"
    s = (f"{_pct(rec.get('voxel_agreement'))} voxel agreement with fp32 (float layers "
         f"{rec.get('float_precision', 'f32')}), mIoU {miou} "
         f"on {rec.get('world') or 'the validation world'} ({rec.get('keyframes')} keyframes)")
    if rec.get("real_voxel_agreement") is not None:
        s += f"; real keyframe {_pct(rec['real_voxel_agreement'])}"
    return s


@dataclass(frozen=True)
class Int8Status:
    ok: bool
    reason: str  # one line: why it may run (its figures) or why not (and the command that remakes it)
    path: Path
    record: dict | None = None


def mode_failures(rec: dict, mode: str) -> list[str]:
    """What keeps the IR of record ``rec`` from running with preprocessing ``mode`` (empty: it may)."""
    from .jpeg import PREPROCESS_MODES

    if mode == "exact":
        return []
    modes = rec.get("modes") if isinstance(rec.get("modes"), dict) else {}
    m = modes.get(mode)
    if not isinstance(m, dict):
        done = ", ".join(sorted(modes)) or "exact"
        return [f"validated for {done} preprocessing, not {mode} (priorocc_quantize validates exact, fused and fast)"]
    out = [f"{mode}: {f}" for f in failures(m)]
    for key, where in (("voxel_agreement", "the held world"), ("real_voxel_agreement", "the real keyframe")):
        a, b = rec.get(key), m.get(key)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b < a - MAX_MODE_LOSS:
            out.append(f"{mode} costs int8 {100 * (a - b):.2f} points of agreement with fp32 on {where} "
                       f"({_pct(b)} against {_pct(a)} with exact pixels; at most {100 * MAX_MODE_LOSS:.1f})")
    if PREPROCESS_MODES.get(mode, {}).get("jpeg_reduce", 1) != 1 and not isinstance(m.get("real_voxel_agreement"),
                                                                                    (int, float)):
        out.append(f"{mode} decodes JPEGs at reduced size but was not validated on camera-resolution frames "
                   f"(quantised without --real)")
    return out


def check(xml, checkpoint, cfg: Config, mode: str = "exact") -> Int8Status:
    """Is the IR ``xml`` of ``checkpoint`` (a path; or an in-memory ``(model, cfg)``, whose key is
    not checked) allowed to run, with preprocessing ``mode`` (priorocc_core.jpeg; ``exact``:
    FlashOCC's pixels)? Key first, then the validation record, then the IR's bytes, then the mode."""
    p = Path(xml)
    ck = checkpoint if isinstance(checkpoint, (str, os.PathLike)) else "CHECKPOINT"
    remake = REMAKE.format(ckpt=ck)
    if not p.is_file():
        return Int8Status(False, f"no quantised model at {p} (write one with `{remake}`)", p)
    recorded = read_key(int8_key_file(p))
    if isinstance(checkpoint, (str, os.PathLike)):
        stale = key_difference(recorded, int8_key(checkpoint, cfg))
        if stale:
            return Int8Status(False, f"{p} was not made from this checkpoint's code, weights, config and tools "
                              f"(differs in: {', '.join(stale)}); run `{remake}` again", p)
    rec = (recorded or {}).get("validation")
    if not isinstance(rec, dict):
        return Int8Status(False, f"{p} has no validation record in {int8_key_file(p).name} (quantised without "
                          f"--val-world); run `{remake}`", p)
    if rec.get("ir_sha256") != ir_digest(p):
        return Int8Status(False, f"{p}: the IR's bytes are not the ones validated (sha256 differs from its "
                          f"record); run `{remake}` again", p, rec)
    bad = failures(rec)
    if rec.get("float_precision", "f32") not in ("f32", "bf16"):
        bad = bad + [f"float_precision {rec.get('float_precision')!r} is neither f32 nor bf16"]
    if bad:
        return Int8Status(False, f"{p} is below the int8 gate: {'; '.join(bad)} ({summary(rec)}); the int8 "
                          f"model changes the trained model's answers: use fp32 / bf16, or requantise "
                          f"(docs/speed.md, int8)", p, rec)
    bad = mode_failures(rec, mode)
    if bad:
        return Int8Status(False, f"{p} may not run with {mode} preprocessing: {'; '.join(bad)}; run it with a "
                          f"preprocessing its record validates (exact pixels: preprocess:=exact jpeg_reduce:=1), "
                          f"or use fp32 / bf16 (docs/speed.md, int8)", p, rec)
    extra = ""
    if mode != "exact":
        m = rec["modes"][mode]
        extra = f"; with {mode} preprocessing {_pct(m.get('voxel_agreement'))} on the held world"
        if m.get("real_voxel_agreement") is not None:
            extra += f", real keyframe {_pct(m['real_voxel_agreement'])}"
    return Int8Status(True, f"validated int8 IR {p}: {summary(rec)}{extra}", p, rec)
