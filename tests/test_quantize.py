"""int8 (issue: speed at the machine's limit): NNCF post-training quantisation of the exported
model, run by OpenVINO, agrees with PyTorch fp32 on >= 99 % of voxels, on a synthetic frame and on
the real nuScenes keyframe (tiny config, random weights; the trained demo model's figures are in
BENCHMARKS.md). The fp32 / bf16 parity on the same frames is tests/test_backends.py.

Calibration here: one frame of a tiny synthetic world plus the real keyframe (the CLI path with a
few hundred frames is the benchmark's); quantisation takes ~20-40 s on the 2-core box.

Mutations tried: KEEP_FLOAT emptied (the occupancy predictor quantised too): agreement 93.75 %
on both frames, the parity test fails; quantize_openvino saving the unquantised model: the
FakeQuantize count assertion fails.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.inputs import REAL_ROOT, synthetic_frame
from priorocc_core.backends import BackendError, make_predictor
from priorocc_core.data.real_keyframe import load_real_keyframe

from .conftest import require_shared

DEMO = Path(__file__).resolve().parents[1] / "models" / "demo"
PREVIOUS_KEEP_FLOAT = (".*occ_head/predicter.*", ".*seg_head/classifier.*")  # the recipe before issue 28


@pytest.fixture(scope="module")
def val_world(tmp_path_factory):
    """A held tiny world (2 keyframes with ground truth; seed 6, never calibrated on)."""
    from priorocc_core.data.synthetic import generate_world

    world = tmp_path_factory.mktemp("val") / "world"
    generate_world(world, n_scenes=1, n_keyframes=2, hw=(90, 160), version="v1.0-mini", seed=6, progress=False)
    return world


@pytest.fixture(scope="module")
def int8_checkpoint(tiny_checkpoint, val_world, tmp_path_factory):
    """A copy of the tiny checkpoint (the shared one stays without an IR) with <ckpt>/openvino/int8.xml
    written (and validated) by the priorocc_quantize CLI."""
    import shutil

    from priorocc_core.data.synthetic import generate_world
    from priorocc_core.quantize import default_int8_path, main

    ck = shutil.copytree(tiny_checkpoint, tmp_path_factory.mktemp("int8ck") / "tiny")
    world = tmp_path_factory.mktemp("calib") / "world"
    generate_world(world, n_scenes=1, n_keyframes=1, hw=(90, 160), version="v1.0-mini", seed=5, progress=False)
    args = [str(ck), "--world", str(world), "--val-world", str(val_world), "--frames", "2"]
    if (REAL_ROOT / "v1.0-mini").is_dir():
        args += ["--real", str(REAL_ROOT)]
    assert main(args) == 0
    assert default_int8_path(ck).is_file()
    return ck


def compile_configs(monkeypatch) -> list[dict]:
    """The config of every OpenVINO ``compile_model`` call from now on (the models still compile)."""
    import openvino as ov

    seen: list[dict] = []
    orig = ov.Core.compile_model

    def spy(self, model, device=None, config=None, *args, **kw):
        seen.append(dict(config or {}))
        return orig(self, model, device, config, *args, **kw)

    monkeypatch.setattr(ov.Core, "compile_model", spy)
    return seen


def test_int8_model_is_quantised(int8_checkpoint):
    import openvino as ov

    from priorocc_core.quantize import default_int8_path

    m = ov.Core().read_model(str(default_int8_path(int8_checkpoint)))
    fq = [op for op in m.get_ops() if op.get_type_name() == "FakeQuantize"]
    convs = [op for op in m.get_ops() if op.get_type_name() == "Convolution"]
    assert len(fq) >= len(convs) // 2 > 0, f"{len(fq)} FakeQuantize for {len(convs)} convolutions"


def _frames():
    out = [("synthetic", synthetic_frame(seed=3))]
    if (REAL_ROOT / "v1.0-mini").is_dir():
        out.append(("real", load_real_keyframe(REAL_ROOT)))
    return out


def test_int8_agrees_with_torch_fp32(int8_checkpoint):
    ref = make_predictor(int8_checkpoint, "torch", "fp32", "cpu")
    pred = make_predictor(int8_checkpoint, "openvino", "int8")
    for name, f in _frames():
        out = pred.predict(f["images"], f["K"], f["cam2ego"])
        r = ref.predict(f["images"], f["K"], f["cam2ego"])
        agree = (out.occupancy == r.occupancy).mean()
        assert agree >= 0.99, f"int8 on the {name} frame: {agree:.5f} voxel agreement"
        assert out.seg2d.shape == r.seg2d.shape


def test_real_keyframe_present_for_int8_parity():
    require_shared("nuscenes-real")


def test_int8_without_a_quantised_model_is_named(tiny_checkpoint, tmp_path):
    with pytest.raises(BackendError, match="priorocc_quantize"):
        make_predictor(tiny_checkpoint, "openvino", "int8", int8_path=tmp_path / "none.xml")
    with pytest.raises(BackendError, match="OpenVINO only"):
        make_predictor(tiny_checkpoint, "torch", "int8")


def test_quantize_cli_errors_are_one_line(tiny_checkpoint, tmp_path, capsys):
    from priorocc_core.quantize import main

    assert main([str(tiny_checkpoint), "--world", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--world" in err and "no such folder" in err and len(err.splitlines()) == 1
    assert main([str(tiny_checkpoint)]) == 2
    assert "no calibration frames" in capsys.readouterr().err
    assert main([str(tiny_checkpoint), "--world", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--val-world: needed" in err and len(err.splitlines()) == 1
    assert main([str(tiny_checkpoint), "--world", str(tmp_path), "--val-world", str(tmp_path)]) == 2
    assert "also a calibration --world" in capsys.readouterr().err
    assert main([str(tmp_path / "no_ckpt"), "--world", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- the gate (int8_gate.py)
def _copy_with_ir(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_quantize_records_its_validation(int8_checkpoint, val_world):
    """priorocc_quantize measures the IR against fp32 on the held world and records it beside the IR.

    Mutation tried: main writing the key without ``validation=rec``: this test and every int8
    run of this file fail (make_predictor refuses an IR without a record)."""
    from priorocc_core.artifacts import read_key
    from priorocc_core.int8_gate import MIN_AGREEMENT, default_int8_path, int8_key_file, ir_digest

    xml = default_int8_path(int8_checkpoint)
    rec = read_key(int8_key_file(xml))["validation"]
    assert rec["passed"] is True and rec["voxel_agreement"] >= MIN_AGREEMENT
    assert rec["world"] == str(val_world) and rec["keyframes"] == 2
    assert isinstance(rec["miou_fp32"], float) and abs(rec["miou_drop"]) <= 1.0
    assert rec["thresholds"] == {"min_voxel_agreement": 0.99, "max_miou_drop": 1.0}
    assert rec["ir_sha256"] == ir_digest(xml)
    if (REAL_ROOT / "v1.0-mini").is_dir():
        assert rec["real_voxel_agreement"] >= MIN_AGREEMENT
    # the cheaper preprocessing modes, each against fp32 on exact pixels; exact's are the top level's
    assert set(rec["modes"]) == {"exact", "fused", "fast"}
    assert {k: rec["modes"]["exact"][k] for k in ("voxel_agreement", "real_voxel_agreement")} == \
        {k: rec[k] for k in ("voxel_agreement", "real_voxel_agreement")}
    for m in ("fused", "fast"):
        assert rec["modes"][m]["voxel_agreement"] >= MIN_AGREEMENT
        assert (rec["modes"][m]["real_voxel_agreement"] is None) == (rec["real_voxel_agreement"] is None)


def test_ir_below_the_gate_is_refused_by_predictor_autoselect_and_node(val_world, tmp_path, monkeypatch):
    """A really bad IR: the trained demo model quantised by the previous recipe (only the class
    predictor and the 2D classifier kept float, the BEV backbone in int8: 91.6 % voxel agreement
    on the demo's validation world, BENCHMARKS.md). Its validation on the held tiny world fails the
    gate; make_predictor refuses it naming the figures, the node (same call) does not start, and
    ``backend: auto`` on a VNNI machine does not pick it and says why. (The tiny random-weights
    model cannot serve: fully quantised it still agrees 100 % on this world.)

    Mutations tried: the gate check removed from backends._make_openvino (the IR runs: the
    make_predictor and node asserts fail); autoselect taking any present IR (the auto case picks int8)."""
    import shutil

    from priorocc_core import autoselect
    from priorocc_core.artifacts import write_key
    from priorocc_core.backends import _onnx_file
    from priorocc_core.checkpoint import load_checkpoint
    from priorocc_core.int8_gate import default_int8_path, int8_key, int8_key_file
    from priorocc_core.quantize import quantize_openvino, validate_int8, world_frames, world_samples

    ck = tmp_path / "demo"
    shutil.copytree(DEMO, ck)
    model, cfg, _ = load_checkpoint(ck)
    onnx = _onnx_file(ck, model, cfg, None, None)
    xml = quantize_openvino(onnx, cfg, list(world_frames(val_world, cfg, limit=1)), default_int8_path(ck),
                            subset_size=1, keep_float=PREVIOUS_KEEP_FLOAT)
    rec = validate_int8(xml, onnx, cfg, world_samples(val_world, cfg), world=str(val_world))
    assert rec["passed"] is False and rec["voxel_agreement"] < 0.99, rec
    write_key(int8_key_file(xml), int8_key(ck, cfg), validation=rec)

    with pytest.raises(BackendError, match=r"below the int8 gate: voxel agreement with fp32 \d+\.\d+ % < 99%"):
        make_predictor(ck, "openvino", "int8")

    from priorocc_ros.node_core import OccupancyNodeCore
    from priorocc_ros.transport.loopback import LoopbackBus, LoopbackTransport

    t = LoopbackTransport("priorocc", LoopbackBus(),
                          parameters={"checkpoint": str(ck), "backend": "openvino", "precision": "int8"})
    with pytest.raises(BackendError, match="below the int8 gate"):
        OccupancyNodeCore(t)

    vnni = frozenset("avx2 fma avx512f avx512_vnni".split())
    monkeypatch.setattr(autoselect, "probe", lambda: autoselect.Machine(vnni, frozenset({"openvino"})))
    p = make_predictor(ck, "auto", "auto", "auto")
    assert (p.choice.backend, p.choice.precision) == ("openvino", "fp32")
    assert "int8 IR not used" in p.choice.reason and "below the int8 gate" in p.choice.reason


def test_doctored_records_are_refused(int8_checkpoint, tmp_path):
    """A good IR with its record edited: figures lowered, the thresholds lowered to match, the
    record removed, or the IR's bytes changed after validation: each refused with its reason.

    Mutations tried: ``failures`` reading the thresholds from the record (the second case runs);
    the sha256 comparison removed from ``check`` (the changed-bytes case runs)."""
    import json

    from priorocc_core.int8_gate import default_int8_path, int8_key_file

    ck = _copy_with_ir(int8_checkpoint, tmp_path / "ck")
    xml = default_int8_path(ck)
    keyf = int8_key_file(xml)
    good = json.loads(keyf.read_text())
    make_predictor(ck, "openvino", "int8")  # the copy runs as it is

    def doctor(edit) -> None:
        d = json.loads(json.dumps(good))
        edit(d)
        keyf.write_text(json.dumps(d))

    doctor(lambda d: d["validation"].update(voxel_agreement=0.833))
    with pytest.raises(BackendError, match=r"below the int8 gate: voxel agreement with fp32 83\.30 %"):
        make_predictor(ck, "openvino", "int8")
    doctor(lambda d: d["validation"].update(voxel_agreement=0.833, miou_drop=3.0,
                                            thresholds={"min_voxel_agreement": 0.5, "max_miou_drop": 5.0}))
    with pytest.raises(BackendError, match=r"83\.30 % < 99%; mIoU drop 3\.0 > 1\.0"):
        make_predictor(ck, "openvino", "int8")
    doctor(lambda d: d.pop("validation"))
    with pytest.raises(BackendError, match="no validation record.*--val-world"):
        make_predictor(ck, "openvino", "int8")
    doctor(lambda d: None)
    b = xml.with_suffix(".bin")
    data = bytearray(b.read_bytes())
    data[len(data) // 2] ^= 0x01
    b.write_bytes(bytes(data))
    with pytest.raises(BackendError, match="bytes are not the ones validated"):
        make_predictor(ck, "openvino", "int8")


def test_cheaper_preprocessing_runs_only_where_the_record_allows(int8_checkpoint, tmp_path, monkeypatch):
    """int8 with ``preprocess:=fast`` / ``jpeg_reduce:=0`` runs only where the IR's record shows
    the mode keeps int8's agreement with fp32 (int8_gate.mode_failures): a record without modes
    (made before them), a mode below the thresholds, a mode costing 0.5 points against exact
    pixels, a fixed reduction no record names: each refused by make_predictor and the node, and
    ``auto`` falls back to fp32 saying why; exact pixels still run. Mutation tried:
    ``mode_failures`` returning [] (every refusal below runs: fails)."""
    import json

    from priorocc_core import autoselect
    from priorocc_core.int8_gate import default_int8_path, int8_key_file

    ck = _copy_with_ir(int8_checkpoint, tmp_path / "ck")
    keyf = int8_key_file(default_int8_path(ck))
    good = json.loads(keyf.read_text())
    real = good["validation"]["real_voxel_agreement"] is not None

    def doctor(edit) -> None:
        d = json.loads(json.dumps(good))
        edit(d)
        keyf.write_text(json.dumps(d))

    assert make_predictor(ck, "openvino", "int8", preprocess="fused").fused_resize is True
    if real:
        assert make_predictor(ck, "openvino", "int8", preprocess="fast").fused_resize is True
    else:  # the reduced decode needs camera-resolution frames (CI always has the real keyframe)
        with pytest.raises(BackendError, match="not validated on camera-resolution frames"):
            make_predictor(ck, "openvino", "int8", preprocess="fast")
    with pytest.raises(BackendError, match=r"validated for exact, fast, fused preprocessing, not preprocess=exact "
                                           r"jpeg_reduce=2"):
        make_predictor(ck, "openvino", "int8", preprocess="preprocess=exact jpeg_reduce=2")

    doctor(lambda d: d["validation"].pop("modes"))
    with pytest.raises(BackendError, match="validated for exact preprocessing, not fused"):
        make_predictor(ck, "openvino", "int8", preprocess="fused")
    make_predictor(ck, "openvino", "int8")  # exact pixels: the record's top level, as before modes

    doctor(lambda d: d["validation"]["modes"]["fused"].update(voxel_agreement=0.98))
    with pytest.raises(BackendError, match=r"fused: voxel agreement with fp32 98\.00 % < 99%"):
        make_predictor(ck, "openvino", "int8", preprocess="fused")

    def costly(d):
        v = d["validation"]
        v["real_voxel_agreement"] = v["modes"]["exact"]["real_voxel_agreement"] = 0.998
        v["modes"]["fast"]["real_voxel_agreement"] = 0.993
    doctor(costly)
    with pytest.raises(BackendError, match=r"fast costs int8 0\.50 points of agreement with fp32 on the real keyframe"):
        make_predictor(ck, "openvino", "int8", preprocess="fast")

    from priorocc_ros.node_core import OccupancyNodeCore
    from priorocc_ros.transport.loopback import LoopbackBus, LoopbackTransport

    t = LoopbackTransport("priorocc", LoopbackBus(), parameters={
        "checkpoint": str(ck), "backend": "openvino", "precision": "int8", "preprocess": "fast", "jpeg_reduce": 0})
    with pytest.raises(BackendError, match="may not run with fast preprocessing"):
        OccupancyNodeCore(t)

    vnni = frozenset("avx2 fma avx512f avx512_vnni".split())
    monkeypatch.setattr(autoselect, "probe", lambda: autoselect.Machine(vnni, frozenset({"openvino"})))
    p = make_predictor(ck, "auto", "auto", "auto", preprocess="fast")
    assert (p.choice.backend, p.choice.precision) == ("openvino", "fp32") and p.fused_resize is True
    assert "may not run with fast preprocessing" in p.choice.reason
    assert make_predictor(ck, "auto", "auto", "auto").choice.precision == "int8"  # exact pixels: int8


def test_auto_picks_a_validated_int8_ir_on_int8_hardware(int8_checkpoint, monkeypatch):
    """``backend: auto`` takes the checkpoint's validated IR where the CPU has VNNI / AMX-int8, and
    says so with the IR's figures; on an avx2-only CPU it keeps fp32 and says why.

    Mutation tried: the validated-IR rule removed from autoselect.choose (the first case picks bf16)."""
    from priorocc_core import autoselect

    vnni = frozenset("avx2 fma avx512f avx512_vnni avx512_bf16".split())
    monkeypatch.setattr(autoselect, "probe", lambda: autoselect.Machine(vnni, frozenset({"openvino"})))
    p = make_predictor(int8_checkpoint, "auto", "auto", "auto")
    assert (p.choice.backend, p.choice.precision) == ("openvino", "int8"), p.choice.reason
    assert "avx512_vnni" in p.choice.reason and "validated int8 IR" in p.choice.reason
    assert "voxel agreement with fp32" in p.choice.reason
    f = synthetic_frame(seed=3)
    assert p.predict(f["images"], f["K"], f["cam2ego"]).occupancy.shape == (200, 200, 16)

    avx2 = frozenset("avx2 fma".split())
    monkeypatch.setattr(autoselect, "probe", lambda: autoselect.Machine(avx2, frozenset({"openvino"})))
    c = make_predictor(int8_checkpoint, "auto", "auto", "auto").choice
    assert (c.backend, c.precision) == ("openvino", "fp32") and "no int8 dot-product hardware" in c.reason


def test_int8_float_layers_are_compiled_f32(int8_checkpoint, monkeypatch):
    """The layers int8 keeps in float run f32, as docs/speed.md says: the int8 compile config names
    ``INFERENCE_PRECISION_HINT f32`` (OpenVINO's default on an avx512_bf16 / AMX CPU is bf16), and
    the compiled model reads it back.

    Mutation tried: the int8 entry of ``openvino_config`` left out of the hint (as before): the
    config assertion fails. The read-back fails too on an avx512_bf16 CPU (checked on the dev box,
    AMD EPYC with avx512_bf16 / avx512_vnni: without the hint the demo IR's 12 float layers compile
    bf16, with it f32); on an avx2-only CPU f32 is the default and only the config assertion guards."""

    seen = compile_configs(monkeypatch)
    p = make_predictor(int8_checkpoint, "openvino", "int8")
    assert seen and seen[-1].get("INFERENCE_PRECISION_HINT") == "f32", seen
    assert "float32" in str(p.runner.engine.get_property("INFERENCE_PRECISION_HINT")).lower()


def test_int8_float_layers_run_in_the_validated_precision(int8_checkpoint, tmp_path, monkeypatch):
    """An IR validated with its float layers in bf16 (``priorocc_quantize --float-precision bf16``)
    compiles them bf16, as recorded; a record naming another precision is refused.

    Mutation tried: ``_make_openvino`` ignoring the record's ``float_precision`` (always f32): the
    bf16 assertion fails; the float_precision check dropped from ``int8_gate.check``: the f16
    record runs."""
    import json


    from priorocc_core.int8_gate import default_int8_path, int8_key_file

    ck = _copy_with_ir(int8_checkpoint, tmp_path / "ck")
    keyf = int8_key_file(default_int8_path(ck))
    d = json.loads(keyf.read_text())
    assert d["validation"]["float_precision"] == "f32"  # what the CLI validated by default
    d["validation"]["float_precision"] = "bf16"
    keyf.write_text(json.dumps(d))
    seen = compile_configs(monkeypatch)
    make_predictor(ck, "openvino", "int8")
    assert seen[-1].get("INFERENCE_PRECISION_HINT") == "bf16", seen
    d["validation"]["float_precision"] = "f16"
    keyf.write_text(json.dumps(d))
    with pytest.raises(BackendError, match="float_precision 'f16'"):
        make_predictor(ck, "openvino", "int8")
