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

import numpy as np
import pytest

from benchmarks.inputs import REAL_ROOT, synthetic_frame
from priorocc_core.backends import BackendError, make_predictor
from priorocc_core.data.real_keyframe import load_real_keyframe

from .conftest import require_shared


@pytest.fixture(scope="module")
def int8_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint with <ckpt>/openvino/int8.xml written by the priorocc_quantize CLI."""
    from priorocc_core.data.synthetic import generate_world
    from priorocc_core.quantize import default_int8_path, main

    world = tmp_path_factory.mktemp("calib") / "world"
    generate_world(world, n_scenes=1, n_keyframes=1, hw=(90, 160), version="v1.0-mini", seed=5, progress=False)
    args = [str(tiny_checkpoint), "--world", str(world), "--frames", "2"]
    if (REAL_ROOT / "v1.0-mini").is_dir():
        args += ["--real", str(REAL_ROOT)]
    assert main(args) == 0
    assert default_int8_path(tiny_checkpoint).is_file()
    return tiny_checkpoint


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
    assert main([str(tmp_path / "no_ckpt"), "--world", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
