"""ONNX export (``priorocc_export``) and onnxruntime parity with PyTorch fp32 (tiny config)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from priorocc_core.checkpoint import load_checkpoint
from priorocc_core.export import ExportWrapper, example_inputs, export_onnx, main


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint exported through the command-line entry point (with verification)."""
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert main([str(tiny_checkpoint), "-o", str(out)]) == 0
    return out


def test_export_writes_a_valid_onnx_with_plan_inputs(exported):
    import onnx

    m = onnx.load(str(exported))
    onnx.checker.check_model(m)
    assert [i.name for i in m.graph.input] == list(ExportWrapper.INPUT_NAMES)
    assert [o.name for o in m.graph.output] == ["occ", "seg"]
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    # the pooling sums duplicates (reduction add), it does not overwrite them
    scat = [n for n in m.graph.node if n.op_type == "ScatterElements"]
    assert len(scat) == 1 and any(a.name == "reduction" and a.s == b"add" for a in scat[0].attribute)


def test_onnxruntime_matches_torch_fp32_labels_and_logits(tiny_checkpoint, tmp_path):
    import onnxruntime as ort

    model, cfg, _ = load_checkpoint(tiny_checkpoint)
    path = export_onnx(model, cfg, tmp_path / "logits.onnx", logits=True)
    wrapper = ExportWrapper(model, cfg, logits=True).eval()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed in (5, 6):  # inputs other than the traced one
        args = example_inputs(cfg, seed)
        with torch.no_grad():
            occ, seg, logits = (t.numpy() for t in wrapper(*args))
        g_occ, g_seg, g_logits = sess.run(None, dict(zip(ExportWrapper.INPUT_NAMES, (a.numpy() for a in args))))
        assert g_occ.shape == (1, 200, 200, 16) and g_occ.dtype == np.uint8
        assert (g_occ == occ).mean() >= 0.999
        assert (g_seg == seg).mean() >= 0.999
        assert np.abs(g_logits - logits).max() <= 1e-3 * max(1.0, np.abs(logits).max())


def test_plan_length_is_dynamic(exported, tiny_cfg):
    """A different rig gives a different number of kept points; the same file must run it."""
    import onnxruntime as ort

    from priorocc_core.export import example_rig
    from priorocc_core.model.plan import PoolingPlanner

    rig = example_rig(tiny_cfg)
    rig["cam2ego"][0, :, 2, 3] = 3.0  # cameras 3 m high: other points fall outside the grid
    p = PoolingPlanner.from_config(tiny_cfg.model)(**rig)
    plan = {k: getattr(p, k).numpy() for k in ("ranks_bev", "ranks_depth", "ranks_feat")}
    n_default = example_inputs(tiny_cfg)[1].numel()
    assert plan["ranks_bev"].size != n_default
    h, w = tiny_cfg.model.image.input_size
    sess = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    occ, seg = sess.run(None, dict(imgs=np.zeros((1, 6, 3, h, w), np.float32), **plan))
    assert occ.shape == (1, 200, 200, 16) and seg.shape == (1, 6, h, w)


def test_export_cli_names_a_bad_checkpoint(tmp_path, capsys):
    assert main([str(tmp_path / "nothing-here")]) == 2
    assert "nothing-here" in capsys.readouterr().err
