"""Each network stage on planted inputs: a few seconds each, no training, no checkpoint.

Weights are set by hand so the expected output is known exactly: a context that selects one
depth bin, one feature pixel that must land in one BEV cell, one BEV channel that must come out
as one voxel and class, one prior class that must reach one fused channel. Every test names
the mutation it was seen to catch (run by hand on a copy of the code, each failed in < 30 s).
"""
from __future__ import annotations

import math

import pytest
import torch

from priorocc_core.config import GridConfig
from priorocc_core.model.occ_head import OccHead2D
from priorocc_core.model.semantic_injector import SemanticInjector
from priorocc_core.model.view_transformer import LSSViewTransformer

INPUT_HW = (256, 704)  # network input; features at stride 16: (16, 44)
FX, CX, CY, CAM_Z = 100.0, 352.0, 128.0, 1.0


def forward_rig():
    """One camera at (0, 0, CAM_Z) looking along ego +x: (cam2ego (1, 1, 4, 4), K, img_aug, bev_aug)."""
    cam2ego = torch.eye(4)
    cam2ego[:3, :3] = torch.tensor([[0, 0, 1.0], [-1, 0, 0], [0, -1, 0]])  # camera z -> ego x, x -> -y, y -> -z
    cam2ego[2, 3] = CAM_Z
    K = torch.tensor([[FX, 0, CX], [0, FX, CY], [0, 0, 1.0]])
    return cam2ego[None, None], K[None, None], torch.eye(3)[None, None], torch.eye(4)[None]


def planted_view_transformer(grid: GridConfig, bins: dict[int, int]) -> LSSViewTransformer:
    """in channel 0 -> context channel 0 (the feature that is pooled); in channel c >= 1 -> depth
    logit 30 at bin ``bins[c]`` (the context that picks the depth); nothing else."""
    vt = LSSViewTransformer(grid, INPUT_HW, in_channels=1 + len(bins), out_channels=1, downsample=16)
    with torch.no_grad():
        vt.depth_net.weight.zero_()
        vt.depth_net.bias.zero_()
        for c, d in bins.items():
            vt.depth_net.weight[d, c, 0, 0] = 30.0
        vt.depth_net.weight[vt.D, 0, 0, 0] = 1.0
    return vt


def expected_cell(grid: GridConfig, depth_bin: int, h: int, w: int) -> tuple[int, int, int]:
    """(x, y, z) pooling cell of feature pixel (h, w) at ``depth_bin``, by hand from the pinhole model:
    pixel centres as FlashOCC's frustum, linspace(0, W - 1, fW) and linspace(0, H - 1, fH)."""
    (H, W), s = INPUT_HW, 16
    u = w * (W - 1) / (W // s - 1)
    v = h * (H - 1) / (H // s - 1)
    d = grid.depth[0] + depth_bin * grid.depth[2]
    x, y, z = d, -(u - CX) / FX * d, CAM_Z - (v - CY) / FX * d
    return tuple(int(math.floor((p - a[0]) / a[2])) for p, a in zip((x, y, z), (grid.x, grid.y, grid.z)))


def run_view_transformer(vt, feats):
    plan = vt.planner(*forward_rig())
    with torch.no_grad():
        bev, depth = vt(feats, plan)  # (1, Dz*C, Dy, Dx), (1, D, fH, fW)
    return bev, depth


def test_context_selects_its_depth_bin():
    """A feature pixel whose context says "bin 20" gets depth probability ~1 at bin 20, another
    pixel's context says "bin 61"; pixels with no context stay uniform.

    Mutation caught: depth ``x[:, :D].softmax(dim=1)`` replaced by a uniform distribution
    ``torch.full_like(x[:, :D], 1.0 / D)`` in view_transformer.py (max probability 1/88)."""
    grid = GridConfig()
    vt = planted_view_transformer(grid, {1: 20, 2: 61})
    feats = torch.zeros(1, 3, 16, 44)
    feats[0, 1, 9, 10] = 1.0
    feats[0, 2, 9, 30] = 1.0
    _, depth = run_view_transformer(vt, feats)
    assert depth.shape == (1, vt.D, 16, 44)
    assert torch.allclose(depth.sum(dim=1), torch.ones(1, 16, 44), atol=1e-5)
    assert depth[0, :, 9, 10].argmax().item() == 20 and depth[0, 20, 9, 10].item() > 0.99
    assert depth[0, :, 9, 30].argmax().item() == 61 and depth[0, 61, 9, 30].item() > 0.99
    assert torch.allclose(depth[0, :, 0, 0], torch.full((vt.D,), 1.0 / vt.D))


def test_feature_pixel_lands_in_its_frustum_cell():
    """Two feature pixels, each with a sharp depth, put their feature into exactly the BEV cells the
    pinhole model gives for their frustum points (pixel centre, depth bin centre); nothing else is
    written.

    Mutation caught: the frustum's pixel centres as stride centres, ``torch.arange(fw) * downsample
    + downsample / 2`` instead of ``torch.linspace(0, w_in - 1, fw)`` in geometry.create_frustum
    (the cells move by several columns). Also caught: depth -> uniform (the mass spreads along
    the ray)."""
    grid = GridConfig()
    vt = planted_view_transformer(grid, {1: 20, 2: 61})
    pixels = {(7, 10): (1, 20, 2.0), (7, 25): (2, 61, 3.0)}  # (h, w): (context channel, depth bin, feature)
    feats = torch.zeros(1, 3, 16, 44)
    expected = torch.zeros(1, 1, 200, 200)  # (B, C, Dy, Dx), one z cell
    for (h, w), (c, d, value) in pixels.items():
        feats[0, 0, h, w] = value
        feats[0, c, h, w] = 1.0
        x, y, z = expected_cell(grid, d, h, w)
        assert 0 <= x < 200 and 0 <= y < 200 and z == 0, "the planted points must lie inside the grid"
        expected[0, 0, y, x] += value
    bev, _ = run_view_transformer(vt, feats)
    assert bev.shape == (1, 1, 200, 200)
    hot = torch.nonzero(bev[0, 0] > 1e-3).tolist()
    assert sorted(hot) == sorted(torch.nonzero(expected[0, 0]).tolist())
    assert torch.allclose(bev, expected, atol=1e-4)


@pytest.mark.parametrize("z0, k0", [(0, 17), (11, 4)])
def test_bev_channel_comes_out_as_voxel_and_class(z0, k0):
    """A BEV (B, C, Dy, Dx) hot at channel 0, cell (y0, x0) changes exactly logit [x0, y0, z0, k0]
    when the predicter maps hidden channel 0 to output z0 * K + k0 (FlashOCC's channel-to-height
    layout: Dz blocks of K classes).

    Mutation caught: the layout permuted, ``.view(b, dx, dy, self.num_classes, self.dz)
    .transpose(3, 4)`` in OccHead2D.forward (classes outer, heights inner); also caught: the
    permute ``(0, 2, 3, 1)`` (x and y swapped)."""
    K, dz = 18, 16
    head = OccHead2D(in_dim=4, out_dim=4, dz=dz, num_classes=K).eval()
    with torch.no_grad():
        head.final_conv.weight.zero_()
        head.final_conv.bias.zero_()
        head.final_conv.weight[0, 0, 1, 1] = 1.0  # centre tap: nothing spreads to neighbours
        lin1, lin2 = head.predicter[0], head.predicter[2]
        lin1.weight.zero_()
        lin1.bias.zero_()
        lin1.weight[0, 0] = 1.0
        lin2.weight.zero_()
        lin2.bias.zero_()
        lin2.weight[z0 * K + k0, 0] = 10.0
    x0, y0 = 170, 30
    bev = torch.zeros(1, 4, 200, 200)
    with torch.no_grad():
        base = head(bev)
        bev[0, 0, y0, x0] = 5.0
        out = head(bev)
    assert out.shape == (1, 200, 200, dz, K)
    assert torch.nonzero(out - base).tolist() == [[0, x0, y0, z0, k0]]
    assert out[0, x0, y0, z0].argmax().item() == k0


@pytest.mark.parametrize("softmax", [False, True])
def test_fusion_reads_features_then_prior(softmax):
    """FusionLayer's 1x1 conv sees concat(features, prior): input channel C + k is prior class k.
    With out channel 0 <- prior class 1 and out channel 1 <- feature channel 2 (BN at identity,
    eval), the fused features are relu(prior[1]) and relu(feats[2]); the prior is the seg logits,
    or their softmax with ``softmax_before_fusion``.

    Mutation caught: ``torch.cat([prior, feats], dim=1)`` in FusionLayer.forward (same channel
    count, wrong order: what FlashOCC-layout weights would silently misread). Also caught: the
    prior dropped, ``torch.cat([feats, torch.zeros_like(prior)], dim=1)``."""
    torch.manual_seed(0)
    C, K = 4, 3
    inj = SemanticInjector(channels=C, mid_channels=4, num_classes=K, softmax_before_fusion=softmax).eval()
    with torch.no_grad():
        w = inj.fusion.conv.weight  # (C, C + K, 1, 1)
        w.zero_()
        w[0, C + 1] = 1.0
        w[1, 2] = 1.0
        inj.seg_head.classifier.weight.normal_()  # logits of both signs, so relu(prior) is not all 0
        inj.seg_head.classifier.bias.zero_()
        feats = torch.randn(2, C, 5, 7)
        fused, logits = inj(feats)
    assert fused.shape == (2, C, 5, 7) and logits.shape == (2, K, 5, 7)
    prior = logits.softmax(dim=1) if softmax else logits
    eps = inj.fusion.bn.eps
    torch.testing.assert_close(fused[:, 0], torch.relu(prior[:, 1]) / math.sqrt(1 + eps))
    torch.testing.assert_close(fused[:, 1], torch.relu(feats[:, 2]) / math.sqrt(1 + eps))
    assert torch.count_nonzero(fused[:, 2:]) == 0
    assert torch.count_nonzero(fused[:, 0]) > 0
