"""The temporal network (model/temporal.py, PriorOcc.forward_temporal): alignment of a past BEV
map, sequential (cached) == non-sequential, reset, bad input, single-frame layout unchanged."""
from __future__ import annotations

import math

import pytest
import torch

from priorocc_core.config import ConfigError, load_config
from priorocc_core.geometry import surround_rig
from priorocc_core.model import build_model
from priorocc_core.model import temporal as tp
from priorocc_core.model.bev_pool import bev_pool, pooling_indices
from tests.conftest import ROOT

TINY = ROOT / "training" / "configs" / "tiny.yaml"
GRID_LOWER, GRID_STEP, GRID_SIZE = (-40.0, -40.0, -1.0), (0.4, 0.4, 6.4), (200, 200, 1)
# a static scene: point objects (x, y, z) in metres around the first pose, one feature channel each
OBJECTS = torch.tensor([[10.3, 5.1, 1.0], [-15.5, 20.2, 0.5], [25.1, -18.3, 2.0], [-8.2, -28.1, 1.0],
                        [28.0, 26.0, 1.0], [2.0, -12.7, 0.0]], dtype=torch.float64)
START = (100.0, -50.0, 0.3)  # the first pose (x, y, yaw) in the world


def pose(x=0.0, y=0.0, yaw=0.0) -> torch.Tensor:
    """(1, 4, 4) ego2global."""
    e = torch.eye(4, dtype=torch.float64)
    c, s = math.cos(yaw), math.sin(yaw)
    e[:2, :2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    e[0, 3], e[1, 3] = x, y
    return e[None]


def scene_bev(ego2global: torch.Tensor, bev_aug: torch.Tensor) -> torch.Tensor:
    """The static scene seen from ``ego2global``, pooled by the project's own lift-splat pooling
    (the same voxel convention as the network's BEV maps) -> (1, C=len(OBJECTS), Dy, Dx)."""
    p = len(OBJECTS)
    world = (pose(*START)[0] @ torch.cat([OBJECTS, torch.ones(p, 1, dtype=torch.float64)], 1).T).T  # (P, 4)
    ego = (bev_aug.double()[0] @ torch.linalg.inv(ego2global[0]) @ world.T).T[:, :3]  # (P, 3)
    plan = pooling_indices(ego.float().view(1, 1, 1, 1, p, 3), torch.tensor(GRID_LOWER), torch.tensor(GRID_STEP),
                           GRID_SIZE)
    depth = torch.ones(1, 1, 1, p)  # (B*N, D, fH, fW)
    feat = torch.eye(p).view(1, 1, p, p)  # (B*N, fH, fW, C): object i -> channel i
    return bev_pool(depth, feat, plan)[:, :, 0]  # (1, C, Dy, Dx)


def peaks(bev: torch.Tensor) -> torch.Tensor:
    """(1, C, Dy, Dx) -> (C, 2) (x, y) cell of each channel's maximum."""
    c, dy, dx = bev.shape[1:]
    idx = bev[0].reshape(c, -1).argmax(1)
    return torch.stack([idx % dx, idx // dx], 1)


def warped_peak_error(prev_pose, curr_pose, bev_aug, curr2adj=None) -> float:
    """Largest cell distance between the warped frame t-1 and frame t, over the objects."""
    prev, curr = scene_bev(prev_pose, bev_aug), scene_bev(curr_pose, bev_aug)
    assert (curr.flatten(2).sum(-1) == 1).all() and (prev.flatten(2).sum(-1) == 1).all()  # every object in both grids
    t = tp.curr2adj_from_poses(curr_pose, prev_pose) if curr2adj is None else curr2adj
    warped = tp.warp_bev(prev, tp.augment_curr2adj(t, bev_aug), GRID_LOWER[:2], GRID_STEP[:2])
    return float((peaks(warped) - peaks(curr)).abs().max())


MOTIONS = {"x": pose(x=2.0), "y": pose(y=-1.6), "yaw": pose(yaw=0.15), "yaw+xy": pose(x=3.0, y=1.0, yaw=-0.2)}
FLIPS = {"no flip": torch.eye(4)[None], "flip x": torch.diag(torch.tensor([-1.0, 1, 1, 1]))[None]}


@pytest.mark.parametrize("flip", FLIPS)
@pytest.mark.parametrize("motion", MOTIONS)
def test_warped_past_frame_matches_current_within_one_cell(motion, flip):
    """A static scene seen from ego pose t-1 and pose t (ego moved by a known x shift, y shift,
    yaw, or all three; with and without a BEV flip): frame t-1's BEV map warped into the key ego
    of t puts every object within one cell of where frame t sees it; the same warp with the yaw's
    sign flipped or with the transform inverted is off by more than one cell (so this test
    catches both).

    Mutations tried: curr2adj_from_poses returning inv(curr) @ adj (the inverse) -> the x, y and
    yaw cases fail; curr2adj_cells transposing the plane rotation (yaw sign flipped) -> the yaw
    cases fail; augment_curr2adj without the bev_aug conjugation -> the "flip x" cases fail.
    (warp_bev with align_corners=False stays within one cell here: the next test catches it.)"""
    prev_pose, curr_pose = pose(*START), pose(*START) @ MOTIONS[motion]
    bev_aug = FLIPS[flip]
    assert warped_peak_error(prev_pose, curr_pose, bev_aug) <= 1.0
    inverted = tp.curr2adj_from_poses(prev_pose, curr_pose)
    assert warped_peak_error(prev_pose, curr_pose, bev_aug, inverted) > 1.0
    if "yaw" in motion:
        t = tp.curr2adj_from_poses(curr_pose, prev_pose).clone()
        t[:, :2, :2] = t[:, :2, :2].transpose(1, 2)  # yaw sign flipped
        assert warped_peak_error(prev_pose, curr_pose, bev_aug, t) > 1.0


@pytest.mark.parametrize("flip", FLIPS)
@pytest.mark.parametrize("motion", ["x", "y"])
def test_whole_cell_shift_is_exact(motion, flip):
    """A shift by whole cells (2.0 m = 5 cells in x, -1.6 m = -4 cells in y): the warped map equals
    frame t's exactly (no sub-cell offset in the grid convention).

    Mutation tried: warp_bev with align_corners=False -> fails (a fraction of a cell off)."""
    prev_pose, curr_pose = pose(*START), pose(*START) @ MOTIONS[motion]
    prev, curr = scene_bev(prev_pose, FLIPS[flip]), scene_bev(curr_pose, FLIPS[flip])
    t = tp.augment_curr2adj(tp.curr2adj_from_poses(curr_pose, prev_pose), FLIPS[flip])
    assert torch.allclose(tp.warp_bev(prev, t, GRID_LOWER[:2], GRID_STEP[:2]), curr, atol=1e-4)


def flashocc_shift_feature(feat, curr_sensor2keyego, prev_sensor2keyego, bda, lower, interval):
    """FlashOCC's BEVDet4D.gen_grid + shift_feature (bevdet4d.py), re-derived step by step from its
    definition for this test: the first camera's sensor -> current key ego of both frames, the 3x3
    BEV augmentation, feat2bev from the view transformer's grid_lower_bound / grid_interval."""
    b, c, h, w = feat.shape
    xs = torch.linspace(0, w - 1, w).view(1, w).expand(h, w)
    ys = torch.linspace(0, h - 1, h).view(h, 1).expand(h, w)
    grid = torch.stack((xs, ys, torch.ones_like(xs)), -1).view(1, h, w, 3).expand(b, h, w, 3).view(b, h, w, 3, 1)
    bda_ = torch.zeros(b, 1, 4, 4)
    bda_[:, :, :3, :3] = bda.unsqueeze(1)
    bda_[:, :, 3, 3] = 1
    keyego2adjego = (bda_ @ curr_sensor2keyego[:, None]) @ torch.inverse(bda_ @ prev_sensor2keyego[:, None])
    keyego2adjego = keyego2adjego.unsqueeze(1)[..., [True, True, False, True], :][..., [True, True, False, True]]
    feat2bev = torch.zeros(3, 3)
    feat2bev[0, 0], feat2bev[1, 1] = interval[0], interval[1]
    feat2bev[0, 2], feat2bev[1, 2] = lower[0], lower[1]
    feat2bev[2, 2] = 1
    tf = torch.inverse(feat2bev).view(1, 3, 3) @ keyego2adjego @ feat2bev.view(1, 3, 3)
    grid = (tf @ grid)[:, :, :, :2, 0] / torch.tensor([w - 1.0, h - 1.0]).view(1, 1, 1, 2) * 2.0 - 1.0
    return torch.nn.functional.grid_sample(feat, grid, align_corners=True)


@pytest.mark.parametrize("flip", FLIPS)
def test_warp_equals_flashocc_shift_feature(flip):
    """warp_bev with curr2adj from two ego poses gives FlashOCC's shift_feature fed with the first
    camera's sensor2keyego of both frames (prev: through the global frame into the current key
    ego, as prepare_inputs builds it) and the same BEV flip, to 1e-3 on a random feature map: the
    two conventions (cell corner, align_corners, transform direction) are FlashOCC's.

    Mutation tried: curr2adj_cells with the cell centre (x_min + (x + 0.5) step) -> fails (yaw 0.2)."""
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(1, 5, 200, 200, generator=g)
    e_prev, e_curr = pose(*START), pose(*START) @ pose(x=2.7, y=-1.1, yaw=0.2)
    cam0 = torch.tensor([[0.0, 0, 1, 1.5], [-1, 0, 0, 0.5], [0, -1, 0, 1.6], [0, 0, 0, 1]], dtype=torch.float64)
    curr_s2k = (torch.linalg.inv(e_curr[0]) @ e_curr[0] @ cam0).float()[None]
    prev_s2k = (torch.linalg.inv(e_curr[0]) @ e_prev[0] @ cam0).float()[None]
    bev_aug = FLIPS[flip]
    ref = flashocc_shift_feature(feat, curr_s2k, prev_s2k, bev_aug[:, :3, :3], GRID_LOWER, GRID_STEP)
    t = tp.augment_curr2adj(tp.curr2adj_from_poses(e_curr, e_prev), bev_aug)
    got = tp.warp_bev(feat, t, GRID_LOWER[:2], GRID_STEP[:2])
    assert (got - ref).abs().max() < 1e-3  # float32 rounding of FlashOCC's matrices; a 0.1-cell offset gives ~0.3


def test_outside_the_past_grid_is_zero():
    """A 10 m forward move: the current cells the past grid never covered (the last 25 columns)
    are zero after the warp, the others carry the past values.

    Mutation tried: padding_mode="border" in warp_bev -> fails."""
    past = torch.ones(1, 3, 200, 200)
    t = tp.augment_curr2adj(tp.curr2adj_from_poses(pose(x=10.0), pose()), torch.eye(4)[None])
    out = tp.warp_bev(past, t, GRID_LOWER[:2], GRID_STEP[:2])
    assert (out[..., -24:] == 0).all() and torch.allclose(out[..., :-26], torch.ones(1, 3, 200, 174))


# --------------------------------------------------------------------------- the network
def temporal_cfg(num_adj=2, align_after=True, pre_process=True, injector=True, extra=()):
    return load_config(TINY, [f"model.temporal.num_adj={num_adj}",
                              f"model.temporal.align_after_view_transformation={str(align_after).lower()}",
                              f"model.temporal.pre_process.enabled={str(pre_process).lower()}",
                              f"model.injector.enabled={str(injector).lower()}", *extra])


def rig(cfg, n=None):
    n = n or len(cfg.model.image.cameras)
    h, w = cfg.model.image.input_size
    cam2ego, K = surround_rig(n, (h, w), focal=h * 1.5, height=1.5)
    return cam2ego[None], K[None], torch.eye(3).repeat(1, n, 1, 1)


def sequence(cfg, frames=10, scene_change=6):
    """``frames`` frames of a moving ego (random images), scene ids, poses."""
    cam2ego, K, img_aug = rig(cfg)
    h, w = cfg.model.image.input_size
    g = torch.Generator().manual_seed(0)
    out = []
    for t in range(frames):
        scene = int(t >= scene_change)
        e = pose(x=2.0 * t + 500 * scene, y=0.3 * t, yaw=0.05 * t).float()
        out.append(dict(scene=scene, imgs=torch.randn(1, len(cfg.model.image.cameras), 3, h, w, generator=g),
                        cam2ego=cam2ego, K=K, img_aug=img_aug, ego2global=e, stamp=torch.tensor([0.5 * t])))
    return out


def current(frame, bev_aug=None):
    keys = ("imgs", "cam2ego", "K", "img_aug", "ego2global", "stamp")
    return dict({k: frame[k] for k in keys}, bev_aug=torch.eye(4)[None] if bev_aug is None else bev_aug)


def non_sequential_batch(frames, t, num_adj):
    """FlashOCC's rule: the past frame t-1-i if in the same scene, else the current frame."""
    adj = []
    for i in range(num_adj):
        j = t - 1 - i
        src = frames[j] if j >= 0 and frames[j]["scene"] == frames[t]["scene"] else frames[t]
        adj.append({k: src[k] for k in ("imgs", "cam2ego", "K", "img_aug", "ego2global")})
    return dict(current(frames[t]), adj=adj)


@pytest.fixture(scope="module")
def model_and_frames():
    torch.manual_seed(0)
    cfg = temporal_cfg()
    model = build_model(cfg.model).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so that every layer matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model, cfg, sequence(cfg)


def test_sequential_equals_non_sequential_over_ten_frames_with_a_reset(model_and_frames):
    """10 frames, num_adj 2, scene change at frame 6: the sequential mode (each frame encodes only
    its own images, the past comes from the returned history, reset at the scene change) gives
    bitwise the logits of the non-sequential mode (past frames recomputed from their images, the
    current frame standing in for frames before the scene's start). Without the reset, frame 6
    differs (the old scene would leak in).

    Mutations tried: push_history keeping the oldest frame instead of the newest -> frame 3 differs;
    fuse_past ignoring valid (zeros standing in for
    missing frames) -> frame 0 differs; no reset at the scene
    change -> the 'leak' assertion is what holds, the equality fails."""
    model, cfg, frames = model_and_frames
    hist, stale = tp.reset_history(), None
    with torch.no_grad():
        for t, f in enumerate(frames):
            if t > 0 and f["scene"] != frames[t - 1]["scene"]:
                stale, hist = hist, tp.reset_history()
            ref = model(non_sequential_batch(frames, t, 2))
            seq = model(current(f), history=hist)
            assert torch.equal(ref["occ_logits"], seq["occ_logits"]), f"frame {t}"
            assert torch.equal(ref["seg_logits"], seq["seg_logits"])
            if stale is not None:
                leak = model(current(f), history=stale)
                assert not torch.allclose(leak["occ_logits"], ref["occ_logits"], atol=1e-4)
                stale = None
            hist = seq["history"]
            assert len(hist) == min(2, t + 1 - (6 if t >= 6 else 0))
            assert float(hist.stamps[0]) == 0.5 * t


def test_encoder_input_and_layout(model_and_frames):
    """(num_adj+1) x C_bev channels into the BEV encoder; the pre-process net named as FlashOCC's;
    num_adj 0 keeps exactly the single-frame layout (no temporal tensor, same shapes)."""
    model, cfg, _ = model_and_frames
    c = cfg.model.view_transformer.out_channels
    assert model.bev_backbone.layers[0][0].conv1.in_channels == 3 * c
    assert "pre_process_net.layers.0.0.conv1.weight" in model.state_dict()
    single = build_model(load_config(TINY).model).state_dict()
    zero = build_model(temporal_cfg(num_adj=0, pre_process=False).model).state_dict()
    assert {k: v.shape for k, v in single.items()} == {k: v.shape for k, v in zero.items()}


def test_align_after_false_lifts_past_cameras_into_the_current_ego():
    """FlashOCC's 4D default (align_after_view_transformation False): a past frame identical to
    the current one but for a pure ego move, lifted into the current key ego, gives the current
    frame's BEV map translated; checked through the pooled maps of a static camera rig: the
    encoder input's past channels equal the current frame's BEV map computed with the moved
    cameras.

    Mutation tried: adjcam2currego using inv(adj) @ curr -> fails."""
    torch.manual_seed(0)
    cfg = temporal_cfg(num_adj=1, align_after=False, pre_process=False, injector=False)
    model = build_model(cfg.model).eval()
    f = sequence(cfg, frames=2, scene_change=9)
    batch = non_sequential_batch(f, 1, 1)
    seen = {}
    model.bev_backbone.register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
    with torch.no_grad():
        model(batch)
        moved = torch.linalg.inv(f[1]["ego2global"].double()) @ f[0]["ego2global"].double()
        cam = (moved[:, None] @ f[0]["cam2ego"].double()).float()
        want = model.frame_to_bev(f[0]["imgs"], model.planner(cam, f[0]["K"], f[0]["img_aug"], torch.eye(4)[None]))[0]
    c = cfg.model.view_transformer.out_channels
    assert torch.allclose(seen["x"][:, c:], want, atol=1e-6)


def images_with_grad(batch):
    """``batch`` with its current and past images as fresh leaves that record a gradient."""
    batch["imgs"] = batch["imgs"].clone().requires_grad_(True)
    for a in batch["adj"]:
        a["imgs"] = a["imgs"].clone().requires_grad_(True)
    return batch


def test_past_frames_have_no_gradient(model_and_frames):
    """Training the non-sequential mode: gradients reach the network through the current frame
    only (BEVDet4D's with_prev: past frames under no_grad).

    Mutation tried: past_bevs without torch.no_grad -> the past images get a gradient."""
    model, cfg, frames = model_and_frames
    batch = images_with_grad(non_sequential_batch(frames, 3, 2))
    model.train()
    try:
        model(batch)["occ_logits"].sum().backward()
    finally:
        model.eval()
        model.zero_grad()
    assert batch["imgs"].grad is not None and batch["imgs"].grad.abs().sum() > 0
    assert all(a["imgs"].grad is None for a in batch["adj"])


# --------------------------------------------------------------------------- bad input
def test_history_from_another_model_or_grid_is_refused(model_and_frames):
    """Mutation tried: check_history without the key comparison -> the other model's history is
    silently fused (no error)."""
    model, cfg, frames = model_and_frames
    with torch.no_grad():
        hist = model(current(frames[0]), history=tp.reset_history())["history"]
        other = build_model(cfg.model).eval()  # same config, other weights
        with pytest.raises(tp.TemporalError, match="another model or grid"):
            other(current(frames[1]), history=hist)
        grid = build_model(temporal_cfg(extra=["model.grid.depth=[1.0, 45.0, 4.0]"]).model).eval()
        with pytest.raises(tp.TemporalError, match="another model or grid"):
            grid(current(frames[1]), history=hist)
        single = build_model(load_config(TINY).model).eval()
        with pytest.raises(tp.TemporalError, match="single-frame model"):
            single(current(frames[1]), history=hist)
        with pytest.raises(tp.TemporalError, match="bev_aug"):
            model(current(frames[1], torch.diag(torch.tensor([-1.0, 1, 1, 1]))[None]), history=hist)


@pytest.mark.parametrize("bad", ["missing", "nan", "inf", "not rigid", "shape"])
def test_bad_ego_pose_is_refused(model_and_frames, bad):
    """Current pose, past pose (non-sequential) and history pose: each bad one is an error naming it.

    Mutation tried: check_pose without the isfinite test -> 'nan' and 'inf' pass silently."""
    model, cfg, frames = model_and_frames
    e = frames[1]["ego2global"].clone()
    if bad == "nan":
        e[0, 0, 3] = float("nan")
    elif bad == "inf":
        e[0, 1, 3] = float("inf")
    elif bad == "not rigid":
        e[0, :3, :3] *= 2.0
    elif bad == "shape":
        e = e[0]
    else:
        e = None
    with torch.no_grad():
        b = current(frames[1])
        b["ego2global"] = e
        with pytest.raises(tp.TemporalError, match=r"batch\['ego2global'\]"):
            model(b, history=tp.reset_history())
        b = non_sequential_batch(frames, 1, 2)
        b["adj"][0]["ego2global"] = e
        with pytest.raises(tp.TemporalError, match=r"batch\['adj'\]\[0\]\['ego2global'\]"):
            model(b)


@pytest.mark.parametrize("what", ["cameras", "image size", "count"])
def test_past_frame_that_does_not_match_is_refused(model_and_frames, what):
    """A past frame with other cameras (5 instead of 6), another image size, or a wrong number of
    past frames: an error naming the input, never a silently mixed history.

    Mutation tried: past_bevs without the shape comparison -> 'image size' runs through (the
    view transformer's plan is per frame) and no error is raised."""
    model, cfg, frames = model_and_frames
    b = non_sequential_batch(frames, 2, 2)
    if what == "cameras":
        b["adj"][1] = dict(b["adj"][1], imgs=b["adj"][1]["imgs"][:, :5], cam2ego=b["adj"][1]["cam2ego"][:, :5],
                           K=b["adj"][1]["K"][:, :5], img_aug=b["adj"][1]["img_aug"][:, :5])
    elif what == "image size":
        b["adj"][1] = dict(b["adj"][1], imgs=b["adj"][1]["imgs"][..., :48, :160])
    else:
        b["adj"] = b["adj"][:1]
    with torch.no_grad(), pytest.raises(tp.TemporalError, match=r"batch\['adj'\]"):
        model(b)


def test_stereo_and_inconsistent_temporal_configs_are_refused():
    with pytest.raises(ConfigError, match="model.temporal.stereo"):
        build_model(temporal_cfg(extra=["model.temporal.stereo=true"]).model)
    with pytest.raises(ConfigError, match="pre_process needs num_adj"):
        build_model(temporal_cfg(num_adj=0, pre_process=True).model)


@pytest.mark.parametrize("opts", [[], ["model.injector.enabled=false", "model.temporal.align_after_view_transformation=false"]])
def test_integration_script_passes_on_tiny_temporal(opts, capsys):
    """PriorOcc-4D (injector on) and FlashOCC-4D (off) through training/integration_test.py: every
    stage's shape, the temporal ones included, training forward + backward, two sequential frames.

    Mutation tried: expected_shapes with num_adj instead of num_adj + 1 encoder input frames -> fails."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("integration_test", ROOT / "training" / "integration_test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--config", str(ROOT / "training" / "configs" / "tiny-temporal.yaml"), "--cfg-options", *opts]) == 0
    out = capsys.readouterr().out
    assert "temporal: past frames aligned" in out and "temporal: sequential history" in out
    assert ("SemanticInjector" in out) == (not opts)


def test_checkpoint_round_trip_keeps_the_temporal_model_and_its_history_key(model_and_frames, tmp_path):
    """A temporal checkpoint rebuilds the same network (config, pre-process weights) and the same
    history key: a history survives reloading the same weights, and continues bitwise.

    Mutation tried: history_key hashing id(model) -> the reloaded model refuses the history."""
    from priorocc_core.checkpoint import load_checkpoint, save_checkpoint

    model, cfg, frames = model_and_frames
    save_checkpoint(tmp_path / "ck", model, cfg)
    loaded, cfg2, _ = load_checkpoint(tmp_path / "ck")
    assert cfg2.model.temporal == cfg.model.temporal and loaded.history_key() == model.history_key()
    with torch.no_grad():
        hist = model(current(frames[0]), history=tp.reset_history())["history"]
        a = model(current(frames[1]), history=hist)["occ_logits"]
        b = loaded(current(frames[1]), history=hist)["occ_logits"]
    assert torch.equal(a, b)
