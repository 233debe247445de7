"""The pipelined frame measurement (benchmarks/frame.py ``time_pipelined``, issue 28): every set
goes through the three stages in order and is counted, each round measures the network alone
and the pipelined sets, and a set that fails is an error, never a faster-looking figure.

A stub pipeline stands in for the node's (no model, no timing asserted: the figures themselves
go to BENCHMARKS.md). Mutations tried: the check that every set came out removed (the failing
stage's test passes a 9-of-10 result: fails); the network-alone loop calling ``run`` once
instead of ``sets`` times (call count test fails); the per-stage CPU time recorded under one
name for all three stages (the key test fails).

``benchmarks/mode_agreement.py`` (each path and preprocessing mode against fp32 on exact pixels)
runs through the node's pipeline on a predictor stub whose labels follow every input pixel.
Mutations tried: the reference taken from the ``fast`` mode (exact's own agreement drops below
1: fails); each path compared with its own exact result (the offset path's 1.0 fails).
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from benchmarks.frame import time_pipelined


class _Pred:
    def __init__(self):
        self.run_calls = 0
        self.timings = {"model": 0.001}

    def run(self, prepared):
        self.run_calls += 1
        return self


class _Pipe:
    """decode -> prepare -> predict -> build, recording the order sets reach each stage."""

    def __init__(self, fail_at: int | None = None):
        self.predictor = _Pred()
        self.fail_at = fail_at
        self.lock = threading.Lock()
        self.n = 0
        self.seen: dict[str, list[int]] = {"decode": [], "predict": [], "build": []}

    def decode(self, msgs, K):
        with self.lock:
            i, self.n = self.n, self.n + 1
        self.seen["decode"].append(i)
        return [i], K

    def prepare(self, imgs, K, cam2ego):
        return imgs[0]

    def predict(self, imgs, K, cam2ego, prepared):
        self.seen["predict"].append(prepared)
        if prepared == self.fail_at:
            raise RuntimeError("inference failed")
        return type("P", (), {"timings": {"model": 0.001}, "i": prepared})()

    def build(self, stamp, pred, imgs, K, cam2ego):
        self.seen["build"].append(pred.i)
        return {}


def test_every_set_in_order_and_each_round_measured():
    pipe = _Pipe()
    res = time_pipelined(pipe, [], np.zeros((1, 3, 3)), np.zeros((1, 4, 4)), sets=6, rounds=2)
    # one decode for the network-alone input, then 6 sets per round, each through every stage in order
    assert pipe.seen["decode"] == list(range(13))
    assert pipe.seen["build"] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert pipe.predictor.run_calls == 12  # the network alone: sets calls per round
    assert len(res["rounds"]) == 2 and res["sets"] == 6
    for r in res["rounds"]:
        assert set(r["cpu_per_set_s"]) == {"decode_prepare", "network", "build_serialize"}
        assert r["frame_over_network"] == pytest.approx(r["steady_per_set_s"] / r["network_alone_s"])
        assert len(r["loadavg_1min"]) == 2


def test_a_failed_set_is_an_error_not_a_figure():
    with pytest.raises(RuntimeError, match="9 of 10 sets came out"):
        time_pipelined(_Pipe(fail_at=4), [], np.zeros((1, 3, 3)), np.zeros((1, 4, 4)), sets=10, rounds=1)
    with pytest.raises(ValueError, match="sets must be >= 2"):
        time_pipelined(_Pipe(), [], np.zeros((1, 3, 3)), np.zeros((1, 4, 4)), sets=1, rounds=1)


class _PixelLabels:
    """A predictor stub: the tiny config's preprocessing, labels hashed from the network-input
    pixels (any changed pixel changes labels); ``offset`` shifts every label (a second path)."""

    def __init__(self, cfg, offset: int = 0):
        self.cfg, self.cameras, self.offset, self.fused_resize = cfg, tuple(cfg.model.image.cameras), offset, False

    def predict(self, imgs, K, cam2ego):
        from types import SimpleNamespace

        from priorocc_core.inference import preprocess

        x = preprocess(imgs, K, cam2ego, self.cfg, fused=self.fused_resize)["imgs"].numpy().reshape(-1)
        q = np.round(x[np.linspace(0, x.size - 1, 200 * 200 * 16).astype(np.int64)] * 64).astype(np.int64)
        occ = ((q + self.offset) % 17).astype(np.uint8).reshape(200, 200, 16)
        return SimpleNamespace(occupancy=occ)


def test_mode_agreement_is_against_fp32_on_exact_pixels(tiny_cfg):
    from benchmarks.inputs import frame_inputs
    from benchmarks.mode_agreement import agreements_of

    res = agreements_of({"fp32": _PixelLabels(tiny_cfg), "other": _PixelLabels(tiny_cfg, offset=3)},
                        frame_inputs("synthetic"))
    assert set(res) == {"fp32", "other"} and set(res["fp32"]) == {"exact", "fused", "fast"}
    assert res["fp32"]["exact"]["voxel_agreement_with_fp32_exact"] == 1.0
    assert res["other"]["exact"]["voxel_agreement_with_fp32_exact"] < 0.5  # the other path, against fp32's labels
    assert res["fp32"]["fast"]["voxel_agreement_with_fp32_exact"] < 1.0  # reduced decode: other pixels
    assert res["fp32"]["fast"]["decoded_hw"][0] < res["fp32"]["exact"]["decoded_hw"][0] == 900
