"""Temporal inference: the predictor's explicit history (torch), and the exported temporal graph
(history as graph inputs, this frame's BEV map as an output) on onnxruntime and OpenVINO against
PyTorch over a 10-frame sequence of a moving ego with a scene change."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch

from benchmarks.inputs import synthetic_frame
from priorocc_core.backends import make_predictor
from priorocc_core.config import load_config
from priorocc_core.export import ExportWrapper, export_onnx
from priorocc_core.model import build_model
from priorocc_core.model.temporal import TemporalError, reset_history
from tests.conftest import ROOT

FRAMES, SCENE_CHANGE = 10, 6


def pose(t: int) -> np.ndarray:
    """(4, 4) ego2global of frame t: 1.6 m forward and 0.04 rad left per frame; a jump at the scene change."""
    yaw = 0.04 * t
    e = np.eye(4)
    e[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    e[:3, 3] = [1.6 * t + 300.0 * (t >= SCENE_CHANGE), 0.2 * t, 0.0]
    return e


@pytest.fixture(scope="module")
def temporal_model():
    torch.manual_seed(0)
    cfg = load_config(ROOT / "training" / "configs" / "tiny-temporal.yaml", ["model.temporal.num_adj=2"])
    model = build_model(cfg.model).eval()
    for m in model.modules():  # BatchNorm statistics of a trained-looking model, so that the labels vary
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.01, 0.1)
    return model, cfg


@pytest.fixture(scope="module")
def frames():
    return [synthetic_frame(hw=(180, 320), seed=t) for t in range(FRAMES)]


def run_sequence(pred, frames) -> list:
    """Predictions of a sequence, the history passed explicitly, reset at the scene change."""
    out, hist = [], None
    for t, f in enumerate(frames):
        if t == SCENE_CHANGE:
            hist = reset_history()
        p = pred.predict(f["images"], f["K"], f["cam2ego"], ego2global=pose(t), history=hist, stamp=0.5 * t)
        hist = p.history
        out.append(p)
    return out


@pytest.fixture(scope="module")
def torch_sequence(temporal_model, frames):
    return run_sequence(make_predictor(temporal_model), frames)


def test_predictor_carries_the_history(temporal_model, frames, torch_sequence):
    """The history grows to num_adj, restarts at the reset, and changes the output: the same frame
    with an empty history differs (the past frames are used).

    Mutation tried: Predictor.run passing reset_history() whatever the caller gave -> the lengths
    stay 1 and the 'history matters' assertion fails."""
    assert [len(p.history) for p in torch_sequence] == [1, 2, 2, 2, 2, 2, 1, 2, 2, 2]
    assert [float(p.history.stamps[0]) for p in torch_sequence] == [0.5 * t for t in range(FRAMES)]
    pred = make_predictor(temporal_model)
    f = frames[3]
    fresh = pred.predict(f["images"], f["K"], f["cam2ego"], ego2global=pose(3))
    assert (fresh.occupancy != torch_sequence[3].occupancy).any()
    assert torch_sequence[3].history.nbytes > 2 * 8 * 200 * 200 * 4  # two (1, 8, 200, 200) fp32 maps


def test_predictor_bad_input(temporal_model, frames, tiny_checkpoint, torch_sequence):
    """Missing or non-finite ego pose, a history given to a single-frame predictor: one clear error.

    Mutation tried: Predictor.prepare without check_pose -> the errors come later and name the
    model's batch['ego2global'] instead of predict's input: the matches fail."""
    pred = make_predictor(temporal_model)
    f = frames[0]
    with pytest.raises(TemporalError, match="ego2global: missing"):
        pred.predict(f["images"], f["K"], f["cam2ego"])
    bad = pose(0)
    bad[0, 3] = np.nan
    with pytest.raises(TemporalError, match="ego2global: not finite"):
        pred.predict(f["images"], f["K"], f["cam2ego"], ego2global=bad)
    single = make_predictor(tiny_checkpoint)
    with pytest.raises(TemporalError, match="single-frame model"):
        single.predict(f["images"], f["K"], f["cam2ego"], history=torch_sequence[0].history)
    assert single.predict(f["images"], f["K"], f["cam2ego"], ego2global=pose(0)).history is None  # pose ignored


def test_exported_graph_has_the_history_as_inputs_and_outputs(temporal_model, tmp_path):
    model, cfg = temporal_model
    m = onnx.load(export_onnx(model, cfg, tmp_path / "t.onnx"))
    assert [i.name for i in m.graph.input] == list(ExportWrapper.INPUT_NAMES) + list(ExportWrapper.HISTORY_NAMES)
    assert [o.name for o in m.graph.output] == ["occ", "seg", "bev"]
    assert any(n.op_type == "GridSample" for n in m.graph.node)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_graph_agrees_with_torch_over_ten_frames(temporal_model, frames, torch_sequence, backend, tmp_path):
    """The exported temporal graph, its history held by the caller (export.HistoryGraph), gives
    >= 99.9 % of PyTorch's voxel labels on every frame of a 10-frame sequence (moving ego, a
    scene change with a reset), and the history it returns holds the same BEV maps.

    Mutations tried: HistoryGraph.feeds passing the inverted curr2adj (adj2curr) -> agreement
    drops below 99.9 % from frame 1 on; HistoryGraph.push storing zeros instead of the graph's
    bev output -> the history maps differ."""
    pred = make_predictor(temporal_model, backend=backend, cache_dir=tmp_path)
    assert pred.runner.history is not None
    got = run_sequence(pred, frames)
    for t, (g, r) in enumerate(zip(got, torch_sequence)):
        agree = float((g.occupancy == r.occupancy).mean())
        assert agree >= 0.999, f"frame {t}: {agree:.5f}"
        assert len(g.history) == len(r.history)
        ref = r.history.feats[0].float()
        err = float((g.history.feats[0] - ref).abs().max())
        assert err <= 1e-4 * float(ref.abs().max()), f"frame {t}: bev max error {err}"
