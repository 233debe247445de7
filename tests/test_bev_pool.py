"""BEV pooling: the gather + index_add pooling equals the cumulative-sum reference, the plan
is geometry-only and cached, and the ONNX export really adds duplicates."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from priorocc_core.model.bev_pool import PoolingIndices, bev_pool, bev_pool_cumsum_reference, bev_pool_index_add, pooling_indices

LOWER = torch.tensor([-40.0, -40.0, -1.0])
INTERVAL = torch.tensor([0.4, 0.4, 6.4])
SIZE = (200, 200, 1)


def random_inputs(b=2, n=3, d=7, h=4, w=6, c=5, seed=0, spread=12.0):
    """Points clustered near the ego so that many share a voxel; some fall outside the grid."""
    g = torch.Generator().manual_seed(seed)
    coords = (torch.rand(b, n, d, h, w, 3, generator=g) - 0.5) * torch.tensor([spread, spread, 10.0])
    coords[0, 0, 0, 0, 0] = torch.tensor([100.0, 0.0, 0.0])  # outside in x
    coords[0, 0, 0, 0, 1] = torch.tensor([0.0, 0.0, 9.0])  # outside in z
    depth = torch.rand(b, n, d, h, w, generator=g).softmax(2)
    feat = torch.randn(b, n, h, w, c, generator=g)
    return coords, depth, feat


def test_bev_pool_matches_cumsum_reference():
    coords, depth, feat = random_inputs()
    plan = pooling_indices(coords, LOWER, INTERVAL, SIZE)
    # there are shared voxels, or the test would prove nothing about summation
    assert plan.ranks_bev.unique().numel() < plan.ranks_bev.numel()
    ours = bev_pool(depth, feat, plan)
    ref = bev_pool_cumsum_reference(coords, depth, feat, LOWER, INTERVAL, SIZE)
    assert ours.shape == ref.shape == (2, 5, 1, 200, 200)
    assert (ours - ref).abs().max().item() <= 1e-4
    # a brute-force check of the most crowded voxel of sample 1
    idx = ((coords[1] - LOWER) / INTERVAL).long()  # (N, D, fH, fW, 3)
    inside = (idx >= 0).all(-1) & (idx < torch.tensor(SIZE)).all(-1)
    flat = torch.where(inside, idx[..., 1] * 200 + idx[..., 0], -1)
    vals, counts = flat[inside].unique(return_counts=True)
    vy, vx = divmod(int(vals[counts.argmax()]), 200)
    v = inside & idx[..., 0].eq(vx) & idx[..., 1].eq(vy)
    feat_per_point = feat[1].unsqueeze(1).expand(-1, depth.shape[2], -1, -1, -1)  # (N, D, fH, fW, C)
    expect = (depth[1][v].unsqueeze(-1) * feat_per_point[v]).sum(0)
    assert v.sum() >= 2
    assert torch.allclose(ours[1, :, 0, vy, vx], expect, atol=1e-5)


def test_plan_drops_outside_points_and_is_sorted():
    coords, depth, feat = random_inputs()
    plan = pooling_indices(coords, LOWER, INTERVAL, SIZE)
    dropped = {0, 1}  # flat depth indices of the two planted outside points (b=0, n=0, d=0, h=0, w=0/1)
    assert not dropped & set(plan.ranks_depth.tolist())
    assert torch.all(plan.ranks_bev[1:] >= plan.ranks_bev[:-1])
    assert plan.out_shape == (2, 1, 200, 200)


def test_planner_caches_the_plan_for_a_fixed_rig(tiny_cfg):
    from priorocc_core.export import example_rig
    from priorocc_core.model.plan import PoolingPlanner

    planner = PoolingPlanner.from_config(tiny_cfg.model)
    rig = example_rig(tiny_cfg)
    p1 = planner(**rig)
    assert planner(**{k: v.clone() for k, v in rig.items()}) is p1  # same geometry: no work
    moved = dict(rig, cam2ego=rig["cam2ego"].clone())
    moved["cam2ego"][0, 0, 0, 3] += 1.0
    p2 = planner(**moved)
    assert p2 is not p1 and not torch.equal(p2.ranks_bev, p1.ranks_bev)


def test_onnx_export_of_pooling_adds_duplicates(tmp_path):
    """index_add would export as ScatterElements without reduction (last write wins)."""
    import onnx
    import onnxruntime as ort

    coords, depth, feat = random_inputs(b=1)
    plan = pooling_indices(coords, LOWER, INTERVAL, SIZE)

    class Pool(torch.nn.Module):
        def forward(self, depth, feat, rb, rd, rf):
            from priorocc_core.model.bev_pool import PoolingIndices

            return bev_pool(depth, feat, PoolingIndices(rb, rd, rf, plan.out_shape))

    args = (depth, feat, plan.ranks_bev, plan.ranks_depth, plan.ranks_feat)
    path = tmp_path / "pool.onnx"
    torch.onnx.export(Pool(), args, str(path), dynamo=False, opset_version=17)
    scatters = [n for n in onnx.load(str(path)).graph.node if n.op_type == "ScatterElements"]
    assert scatters and all(any(a.name == "reduction" and a.s == b"add" for a in n.attribute) for n in scatters)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)})[0]
    ref = bev_pool_cumsum_reference(coords, depth, feat, LOWER, INTERVAL, SIZE).numpy()
    assert np.abs(got - ref).max() <= 1e-4


def test_sparse_and_index_add_paths_agree_and_training_keeps_gradients():
    from priorocc_core.model.bev_pool import bev_pool_index_add, bev_pool_sparse

    coords, depth, feat = random_inputs(seed=4)
    plan = pooling_indices(coords, LOWER, INTERVAL, SIZE)
    ref = bev_pool_cumsum_reference(coords, depth, feat, LOWER, INTERVAL, SIZE)
    sparse = bev_pool_sparse(depth, feat, plan)
    _, _, col = plan.csr(feat.numel() // feat.shape[-1])
    assert col.numel() < plan.ranks_bev.numel()  # some depth bins of one pixel share a voxel: summed first
    assert (sparse - ref).abs().max().item() <= 1e-4
    assert (bev_pool_index_add(depth, feat, plan) - ref).abs().max().item() <= 1e-4
    # with autograd, bev_pool takes the differentiable path
    d = depth.clone().requires_grad_(True)
    bev_pool(d, feat, plan).sum().backward()
    assert d.grad is not None and d.grad.abs().sum() > 0


def test_training_pooling_gradients_repeat_bitwise_on_threads():
    """The backward of the training pooling (index_add path) gives the same bits every time with two
    threads: no sum whose order depends on thread timing (what made a resumed training run differ
    from an uninterrupted one by ~1e-5 on a loaded machine, issue 24).

    Mutation caught: the gathers written ``depth.reshape(-1)[plan.ranks_depth]`` /
    ``feat.reshape(-1, c)[plan.ranks_feat]`` in bev_pool_index_add (advanced indexing, whose CPU
    backward adds with atomics across threads): 5 of 5 repeats differed on a 2-core machine."""
    torch.manual_seed(0)
    b, n, d, h, w, c = 1, 6, 88, 16, 44, 16
    n_pts = b * n * d * h * w
    plan = PoolingIndices(
        ranks_bev=torch.randint(0, 200 * 200, (n_pts // 2,)).sort().values,
        ranks_depth=torch.randint(0, n_pts, (n_pts // 2,)),
        ranks_feat=torch.randint(0, b * n * h * w, (n_pts // 2,)),  # every feature pixel ~ d/2 times
        out_shape=(b, 1, 200, 200))
    depth = torch.rand(b, n, d, h, w, requires_grad=True)
    feat = torch.randn(b, n, h, w, c, requires_grad=True)
    g = torch.randn(b, c, 1, 200, 200)

    def grads():
        depth.grad = feat.grad = None
        (bev_pool_index_add(depth, feat, plan) * g).sum().backward()
        return depth.grad.clone(), feat.grad.clone()

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ref = grads()
        for _ in range(5):
            again = grads()
            assert torch.equal(again[0], ref[0]) and torch.equal(again[1], ref[1])
    finally:
        torch.set_num_threads(threads)
