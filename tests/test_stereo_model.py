"""FlashOCC M2's stereo depth (model/stereo.py, model/depth_net.py, PriorOcc with
model.temporal.stereo): SID bins, the cost volume's geometry, sequential (cached) == non-sequential
with the stride-4 features in the history, frame order, no gradient into past frames, refusals."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from priorocc_core.config import ConfigError
from priorocc_core.geometry import create_frustum, depth_bin_centres
from priorocc_core.model import build_model
from priorocc_core.model import stereo as st
from priorocc_core.model import temporal as tp
from tests.test_temporal_model import current, images_with_grad, sequence, temporal_cfg

STEREO = ["model.temporal.stereo=true", "model.backbone.out_indices=[0, 2, 3]",
          "model.view_transformer.depth_net=camera_aware", "model.view_transformer.sid=true",
          "model.view_transformer.aspp_mid_channels=8"]


def stereo_cfg(num_adj=1, align_after=True, extra=()):
    return temporal_cfg(num_adj=num_adj, align_after=align_after, extra=[*STEREO, *extra])


# --------------------------------------------------------------------------- geometry
def test_sid_depth_bins():
    """FlashOCC's SID bins for M2's depth [1, 45, 0.5]: as many as the uniform ones (88), from 1 m
    to 44 m (stop - 1), a constant ratio between neighbours; the frustum carries them.

    Mutation tried: log(stop / start) instead of log((stop - 1) / start) -> the last bin is 45 m."""
    d = depth_bin_centres((1.0, 45.0, 0.5), sid=True)
    assert d.shape == (88,) and float(d[0]) == 1.0 and math.isclose(float(d[-1]), 44.0, rel_tol=1e-5)
    ratio = d[1:] / d[:-1]
    assert torch.allclose(ratio, torch.full_like(ratio, 44.0 ** (1 / 87)), rtol=1e-5)
    assert torch.equal(create_frustum((1.0, 45.0, 0.5), (256, 704), 4, sid=True)[:, 0, 0, 2], d)
    assert torch.equal(depth_bin_centres((1.0, 45.0, 0.5)), torch.arange(1.0, 45.0, 0.5))


def test_depth_loss_targets_sid_bins():
    """The depth supervision of a SID model (FlashOCC's get_downsampled_gt_depth with sid): a lidar
    depth just above bin k's centre is the one-hot target k, so a prediction of bin k costs ~0 and
    one of bin k - 1 costs much more.

    Mutation tried: depth_loss without the sid branch (uniform bin index) -> bin k's prediction
    costs as much as a wrong one; the first assertion fails."""
    from priorocc_core.model.view_transformer import LSSViewTransformer

    cfg = stereo_cfg().model
    vt = LSSViewTransformer(cfg.grid, cfg.image.input_size, 32, 8, 16, sid=True)
    d = depth_bin_centres(cfg.grid.depth, sid=True)
    h, w = cfg.image.input_size
    for k in (3, 12, len(d) - 2):
        target = torch.full((1, 1, h, w), float(d[k]) * 1.001)
        onehot = F.one_hot(torch.tensor(k), len(d)).float().view(1, -1, 1, 1).expand(1, -1, h // 16, w // 16)
        wrong = F.one_hot(torch.tensor(k - 1), len(d)).float().view(1, -1, 1, 1).expand(1, -1, h // 16, w // 16)
        assert float(vt.depth_loss(onehot, target)) < 1e-3, k
        assert float(vt.depth_loss(wrong, target)) > 10.0, k


def camera(f=100.0, hw=(64, 128)):
    h, w = hw
    return torch.tensor([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]]).view(1, 1, 3, 3)


def test_stereo_grid_of_a_sideways_move():
    """A camera whose previous pose is t = (0.5, 0, 0) m along its own x: a current pixel u at depth d
    lands at u + f * 0.5 / d in the previous image (v unchanged); a point moved behind the previous
    camera is at -2 (outside); the image augmentation (a 2x resize) is undone and redone.

    Mutations tried: currpix2adjgrid using the inverse motion (adj -> curr) -> the shift's sign
    flips; without undoing img_aug (post_rot) -> the resized case is off; the 'behind' mask
    dropped -> the last assertion fails."""
    hw, f = (64, 128), 100.0
    frustum = create_frustum((1.0, 45.0, 4.0), hw, 4)  # (D, 16, 32, 3)
    d, h, w, _ = frustum.shape
    curr2adj = torch.eye(4).view(1, 1, 4, 4).clone()
    curr2adj[..., 0, 3] = 0.5
    for scale in (1.0, 2.0):
        aug = torch.diag(torch.tensor([scale, scale, 1.0])).view(1, 1, 3, 3)
        fr = create_frustum((1.0, 45.0, 4.0), (int(hw[0] * scale), int(hw[1] * scale)), int(4 * scale))
        grid = st.currpix2adjgrid(fr, curr2adj, camera(f, hw), aug, (int(hw[0] * scale), int(hw[1] * scale)))
        grid = grid.view(d, h, w, 2)
        u_img = fr[..., 0] + scale * f * 0.5 / fr[..., 2]  # augmented pixels
        want_x = u_img / (hw[1] * scale - 1) * 2 - 1
        want_y = fr[..., 1] / (hw[0] * scale - 1) * 2 - 1
        assert torch.allclose(grid[..., 0], want_x, atol=1e-4) and torch.allclose(grid[..., 1], want_y, atol=1e-4)
    behind = curr2adj.clone()
    behind[..., 2, 3] = -100.0  # the previous camera 100 m ahead: every point is behind it
    grid = st.currpix2adjgrid(frustum, behind, camera(f, hw), torch.eye(3).view(1, 1, 3, 3), hw)
    assert (grid == -2).all()


def test_cost_volume_peaks_at_the_depth_that_explains_the_match():
    """Previous stride-4 features are random; the current ones are the previous ones seen through
    depth bin k (the features a fronto-parallel wall at that depth gives): the cost volume puts its
    maximum at bin k for nearly every pixel whose match is inside the previous image; softmax sums
    to one; a pixel whose match falls outside gets the bias.

    Mutations tried: the L1 distance without abs() -> the argmax is not k; softmax of +cost -> the
    argmax is the worst bin; the bias added where the sample is inside (== 0 replaced by != 0) ->
    the bias assertion fails."""
    torch.manual_seed(0)
    hw, f = (64, 128), 100.0
    frustum = create_frustum((1.0, 45.0, 4.0), hw, 4)
    d, h, w, _ = frustum.shape
    curr2adj = torch.eye(4).view(1, 1, 4, 4).clone()
    curr2adj[..., 0, 3] = 0.8
    grid = st.currpix2adjgrid(frustum, curr2adj, camera(f, hw), torch.eye(3).view(1, 1, 3, 3), hw)  # (1, D*h, w, 2)
    prev = torch.randn(1, 8, h, w)
    k = 2
    curr = F.grid_sample(prev, grid.view(1, d, h, w, 2)[:, k], align_corners=True)  # (1, 8, h, w)
    cv = st.cost_volume(prev, curr, grid, bias=5.0)
    assert cv.shape == (1, d, h, w) and torch.allclose(cv.sum(1), torch.ones(1, h, w), atol=1e-5)
    inside = (grid.view(1, d, h, w, 2)[:, k].abs() <= 1).all(-1) & (grid.view(1, d, h, w, 2).abs() <= 1).all(-1).all(1)
    assert inside.sum() > 0.3 * h * w
    assert float((cv.argmax(1)[inside] == k).float().mean()) > 0.95
    no_bias = st.cost_volume(prev, curr, grid, bias=0.0)
    g = grid.view(1, d, h, w, 2)
    far = g[..., 0].abs() > 1 + 4 / (w - 1)  # (1, D, h, w) samples two pixels or more outside: exactly zero
    near = (g.abs() <= 1).all(-1)  # inside: a random feature, not zero
    pix = (far | near).all(1) & near.any(1)  # (1, h, w) pixels whose every bin is clearly in or out
    assert (far & pix[:, None]).any()
    # log softmax(-cost - bias * far) - log softmax(-cost) = -bias * far + a constant per pixel
    diff = torch.log(no_bias) - torch.log(cv)
    diff = diff - diff.amin(1, keepdim=True)
    assert torch.allclose(diff.permute(0, 2, 3, 1)[pix], 5.0 * far.permute(0, 2, 3, 1)[pix].float(), atol=1e-3)


# --------------------------------------------------------------------------- the network
def randomise_bn(model):
    for m in model.modules():  # non-trivial BatchNorm statistics, so that every layer matters
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model


def stereo_batch(frames, t, num_adj):
    """Non-sequential batch of a stereo model: num_adj past frames plus the reference frame; a frame
    before the scene's start is the scene's earliest one (what the sequential mode saw then)."""
    adj = []
    for i in range(num_adj + 1):
        j = t - 1 - i
        while j < 0 or frames[j]["scene"] != frames[t]["scene"]:
            j += 1
        adj.append({k: frames[j][k] for k in ("imgs", "cam2ego", "K", "img_aug", "ego2global")})
    return dict(current(frames[t]), adj=adj)


def build_stereo(num_adj):
    torch.manual_seed(0)
    cfg = stereo_cfg(num_adj=num_adj)
    return randomise_bn(build_model(cfg.model).eval()), cfg, sequence(cfg)


@pytest.fixture(scope="module")
def stereo_model():
    return build_stereo(2)


@pytest.mark.parametrize("num_adj", [1, 2])
def test_sequential_equals_non_sequential_over_ten_frames_with_a_reset(num_adj, stereo_model):
    """10 frames, num_adj past frames plus the reference frame, scene change at frame 6: the
    sequential mode (each frame encodes only its own images; the past BEV maps, the previous
    frame's stride-4 features and cameras come from the returned history; reset at the scene
    change) gives bitwise the logits and depth of the non-sequential mode (every past frame and the
    reference frame recomputed from images, oldest first, each with its own cost volume), with a
    frame before the scene's start taken as the scene's earliest one. num_adj 1 (M2): on every
    frame. num_adj 2: on every frame but a scene's second one, where the non-sequential chain runs
    a stand-in frame through a cost volume that the sequential mode never computed (docs/design.md,
    "Stereo depth"). The history's stride-4 features matter: zeroed, the next frame differs.

    Mutations tried (each failed this test): push_history keeping the previous stride-4 features
    instead of this frame's; the sequential cost volume taken against the frame itself (history
    ignored); current_last False in the sequential fuse."""
    model, cfg, frames = stereo_model if num_adj == 2 else build_stereo(num_adj)
    hist, start = tp.reset_history(), 0
    with torch.no_grad():
        for t, f in enumerate(frames):
            if t > 0 and f["scene"] != frames[t - 1]["scene"]:
                hist, start = tp.reset_history(), t
            seq = model(current(f), history=hist)
            if not 0 < t - start < num_adj:
                ref = model(stereo_batch(frames, t, num_adj))
                assert torch.equal(ref["occ_logits"], seq["occ_logits"]), f"frame {t}"
                assert torch.equal(ref["depth"], seq["depth"]), f"frame {t}"
            if t == 3:
                zeroed = dataclasses.replace(hist, stereo_feats=torch.zeros_like(hist.stereo_feats))
                assert not torch.equal(model(current(f), history=zeroed)["depth"], seq["depth"])
            hist = seq["history"]
            assert hist.stereo_feats.shape == model.stereo_shape(1, 6) and hist.stereo_cam2ego.shape == (1, 6, 4, 4)


def test_current_frame_is_last_in_the_encoder_input(stereo_model):
    """BEVStereo4D concatenates its frames oldest first, the current one last (its published
    weights expect that order); the non-stereo 4D model keeps the current frame first.

    Mutation tried: frame_order ignoring current_last -> the current map is found first."""
    model, cfg, frames = stereo_model
    seen = {}
    hook = model.bev_backbone.register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
    try:
        with torch.no_grad():
            out = model(current(frames[4]), history=tp.reset_history())
    finally:
        hook.remove()
    c = out["history"].feats[0].shape[1]
    assert torch.equal(seen["x"][:, -c:], out["history"].feats[0])
    assert not torch.equal(seen["x"][:, :c], out["history"].feats[0]) or c == seen["x"].shape[1]


def test_past_frames_have_no_gradient(stereo_model):
    """Training the non-sequential mode: gradients reach the network through the current frame only;
    the cost volume is computed without gradient (BEVStereo4D), its convs still learn.

    Mutation tried: past_bevs without torch.no_grad -> the past images get a gradient."""
    model, cfg, frames = stereo_model
    batch = images_with_grad(stereo_batch(frames, 4, 2))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        model(batch)["occ_logits"].sum().backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
    finally:
        model.eval()
        model.zero_grad()
        model.load_state_dict(state)  # BatchNorm statistics back for the other tests
    assert batch["imgs"].grad is not None and batch["imgs"].grad.abs().sum() > 0
    assert all(a["imgs"].grad is None for a in batch["adj"])
    assert grads["view_transformer.depth_net.cost_volumn_net.0.weight"].abs().sum() > 0


def test_bad_stereo_inputs_are_refused(stereo_model):
    """Missing reference frame (non-sequential) and a history whose stride-4 features do not fit:
    an error naming the input.

    Mutation tried: check_history without the stereo shape check -> the cropped features reach the
    cost volume (a shape error deep inside, not a TemporalError)."""
    model, cfg, frames = stereo_model
    b = stereo_batch(frames, 3, 2)
    b["adj"] = b["adj"][:2]
    with torch.no_grad():
        with pytest.raises(tp.TemporalError, match=r"batch\['adj'\].*3 past frames.*stereo reference"):
            model(b)
        hist = model(current(frames[0]), history=tp.reset_history())["history"]
        bad = dataclasses.replace(hist, stereo_feats=hist.stereo_feats[..., :8])
        with pytest.raises(tp.TemporalError, match="history.stereo_feats"):
            model(current(frames[1]), history=bad)


def test_stereo_configs_that_cannot_be_built_are_refused():
    with pytest.raises(ConfigError, match="out_indices"):
        build_model(temporal_cfg(extra=["model.temporal.stereo=true", "model.view_transformer.depth_net=camera_aware"]).model)
    with pytest.raises(ConfigError, match="depth_net: camera_aware"):
        build_model(temporal_cfg(extra=["model.temporal.stereo=true", "model.backbone.out_indices=[0, 2, 3]"]).model)
    with pytest.raises(ConfigError, match="num_adj >= 1"):
        build_model(stereo_cfg(num_adj=0, extra=["model.temporal.pre_process.enabled=false"]).model)
    with pytest.raises(ConfigError, match="view_transformer.depth_net"):
        build_model(temporal_cfg(extra=["model.view_transformer.depth_net=dcn"]).model)


def test_integration_script_passes_on_tiny_stereo(capsys):
    """A random-weight M2-class network through training/integration_test.py: every stage's shape,
    the stride-4 features, the cost volume and the history's stride-4 features included; training
    forward + backward (depth loss on SID bins); two sequential frames.

    Mutation tried: the stereo entries of expected_shapes with the stride-16 size instead of the
    stride-4 one -> EXPECTED lines, exit 1, the test fails."""
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("integration_test", ROOT / "training" / "integration_test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    opts = [*STEREO, "model.temporal.num_adj=1", "model.view_transformer.depth_loss_weight=0.05"]
    assert mod.main(["--config", str(ROOT / "training" / "configs" / "tiny-temporal.yaml"), "--cfg-options", *opts]) == 0
    out = capsys.readouterr().out
    assert "stereo: cost volume" in out and "stereo: sequential history stride-4 features" in out
    assert "loss_depth" in out


@pytest.fixture(scope="module")
def m2_sequences():
    """A num_adj 1 stereo model (M2's layout, tiny) run by the torch predictor over 10 synthetic sets
    of a moving ego, reset at frame 6; and the model, for the graph backends."""
    from benchmarks.inputs import synthetic_frame
    from priorocc_core.backends import make_predictor

    model, cfg, _ = build_stereo(1)
    frames = [synthetic_frame(hw=(180, 320), seed=t) for t in range(10)]
    return model, cfg, frames, run_predictor(make_predictor((model, cfg)), frames)


def run_predictor(pred, frames):
    from tests.test_temporal_inference import pose

    out, hist = [], None
    for t, f in enumerate(frames):
        if t == 6:
            hist = tp.reset_history()
        p = pred.predict(f["images"], f["K"], f["cam2ego"], ego2global=pose(t), history=hist, stamp=0.5 * t)
        hist = p.history
        out.append(p)
    return out


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_exported_stereo_graph_agrees_with_torch_over_ten_frames(m2_sequences, backend, tmp_path):
    """M2's graph: the history (BEV maps, the previous stride-4 features) and the cost volume's
    geometry (camera parameters, the sampling grid, computed on the host by the model's own
    functions) as inputs, this frame's BEV map and stride-4 features as outputs. onnxruntime and
    OpenVINO give >= 99.9 % of PyTorch's voxel labels on every frame of a 10-frame sequence with a
    reset, and return the same history.

    Mutations tried: HistoryGraph.push dropping the graph's stride-4 output (stereo_feats None) ->
    the next frame's history check fails (TemporalError); HistoryGraph.feeds passing zeros as
    prev_stereo -> the labels / maps differ from frame 1 on. (prev_stereo_valid forced to 1 is not
    seen: at an empty history the frame against itself with no motion and zeros with the bias
    everywhere both give a uniform cost volume; the flag is kept for exactness in general.)"""
    import onnx

    from priorocc_core.backends import make_predictor
    from priorocc_core.export import ExportWrapper, export_onnx

    model, cfg, frames, ref = m2_sequences
    g = onnx.load(export_onnx(model, cfg, tmp_path / "m2.onnx"))
    assert [i.name for i in g.graph.input] == [*ExportWrapper.INPUT_NAMES, *ExportWrapper.HISTORY_NAMES,
                                               *ExportWrapper.STEREO_NAMES]
    assert [o.name for o in g.graph.output] == ["occ", "seg", "bev", "stereo_feats"]
    got = run_predictor(make_predictor((model, cfg), backend=backend, cache_dir=tmp_path), frames)
    for t, (a, r) in enumerate(zip(got, ref)):
        assert float((a.occupancy == r.occupancy).mean()) >= 0.999, f"frame {t}"
        for x, y in ((a.history.feats[0], r.history.feats[0]), (a.history.stereo_feats, r.history.stereo_feats)):
            assert float((x - y.float()).abs().max()) <= 1e-4 * float(y.abs().max()), f"frame {t}"


def test_camera_aware_depth_net_without_stereo_is_not_exported(tmp_path):
    """A camera-aware depth net without stereo (BEVDepth's, no FlashOCC config converts to it): one
    error naming it, nothing written.

    Mutation tried: check_exportable not called -> the trace fails deep inside (the depth net's
    camera parameters missing: a ValueError), not an ExportUnsupported."""
    from priorocc_core.export import ExportUnsupported, export_onnx

    cfg = temporal_cfg(num_adj=0, pre_process=False, extra=["model.view_transformer.depth_net=camera_aware"])
    with pytest.raises(ExportUnsupported, match="camera-aware depth net without stereo is not exportable"):
        export_onnx(build_model(cfg.model).eval(), cfg, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_torch_predictor_runs_the_stereo_model_with_its_history(m2_sequences):
    """The predictor (torch backend) hands the set's cameras to the camera-aware depth net and
    carries the stereo history: the stride-4 features in every returned history, restarted at the
    reset, and the same frame with a fresh history gives another BEV map of its own (the cost
    volume used the previous frame's features).

    Mutation tried: Predictor.prepare without the cameras -> KeyError 'cam2ego' in the model."""
    from priorocc_core.backends import make_predictor
    from tests.test_temporal_inference import pose

    model, cfg, frames, seq = m2_sequences
    assert [len(p.history) for p in seq] == [1] * 10  # num_adj 1
    assert all(p.history.stereo_feats.shape == model.stereo_shape(1, 6) for p in seq)
    f = frames[2]
    fresh = make_predictor((model, cfg)).predict(f["images"], f["K"], f["cam2ego"], ego2global=pose(2))
    assert not torch.equal(fresh.history.feats[0], seq[2].history.feats[0])
    assert torch.equal(fresh.history.feats[0], make_predictor((model, cfg)).predict(
        f["images"], f["K"], f["cam2ego"], ego2global=pose(2), history=tp.reset_history()).history.feats[0])


def test_a_stereo_model_trains_and_is_evaluated_on_the_moving_world(tmp_path):
    """The data side: a stereo config's samples carry num_adj + 1 previous keyframes (the last the
    reference frame, data.config_num_adj); tiny.yaml as an M2-class network trains two iterations
    through train.py's loop and evaluate.py scores it non-sequentially (mIoU, RayIoU) with the
    model's num_adj reported.

    Mutation tried: config_num_adj without the stereo frame -> the model refuses the batch
    (TemporalError: 2 past frames expected) and the test fails."""
    import sys
    from pathlib import Path

    import numpy as np

    from priorocc_core.config import load_config
    from priorocc_core.data import OccDataset, config_num_adj
    from tests.test_data_synthetic import moving_world

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "training"))
    from evaluate import evaluate_model
    from train import train

    root = moving_world(6.0, 8.0, True, keyframes=3)
    cfg = load_config(repo / "training/configs/tiny.yaml",
                      [f"data.dataroot={root}", "model.temporal.num_adj=1", *STEREO, "train.max_iters=2",
                       "train.epochs=100", "train.log_interval=1"])
    assert config_num_adj(cfg) == 2 and len(OccDataset(cfg, "all", train=False)[2]["adj"]) == 2
    summary = train(cfg, tmp_path / "run", device="cpu", progress=False)
    assert summary["steps"] == 2
    r = evaluate_model(cfg, str(tmp_path / "run" / "final"), "all", device="cpu", progress=False)
    assert r["temporal"] == {"num_adj": 1, "mode": "non-sequential"}
    assert np.isfinite(r["mIoU"]) and np.isfinite(r["RayIoU"])
