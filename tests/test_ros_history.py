"""The node's temporal history policy (priorocc_ros/history.py) and odometry from TF
(priorocc_ros/odometry.py, TfBuffer's interpolated lookup).

Mutations tried (each fails the test named):
- ``admit`` without the time-jump check (a bag loop keeps the history): ``test_time_jump_back_resets``.
- ``admit`` without the sequence check: ``test_dropped_set_resets``.
- TfBuffer interpolation weight ``1 - w``: ``test_odometry_is_interpolated_between_samples``.
- ``check_pose`` (priorocc_core, the one pose check ``valid_pose`` calls) without the determinant
  test: ``test_missing_or_bad_odometry_resets_and_names_why`` (the reflection is admitted).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from priorocc_ros.calibration import TfBuffer, matrix_to_transform_stamped
from priorocc_ros.history import HistoryPolicy, HistoryState, SetMotion, admit, forget, remember
from priorocc_ros.odometry import OdometrySource

POLICY = HistoryPolicy(max_gap_s=1.0)


def pose(x=0.0, y=0.0, yaw=0.0) -> np.ndarray:
    m = np.eye(4)
    c, s = math.cos(yaw), math.sin(yaw)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:2, 3] = x, y
    return m


def run(seq_stamps, poses=None):
    """Feed sets (seq, stamp_ns) through admit/remember; returns the reset reasons per set."""
    state, out = HistoryState(), []
    for k, (seq, stamp) in enumerate(seq_stamps):
        m = pose(x=k) if poses is None else poses[k]
        d = admit(state, SetMotion(stamp, seq, m), POLICY)
        out.append(d.reset)
        history = ("features of set", seq, d.history)  # what the model would return
        state = remember(d.state, history, stamp, seq)
    return out


def test_consecutive_sets_keep_the_history():
    assert run([(k, k * 500_000_000) for k in range(5)]) == [None] * 5
    state = HistoryState()
    d = admit(state, SetMotion(0, 0, pose()), POLICY)
    state = remember(d.state, "h0", 0, 0)
    d = admit(state, SetMotion(500_000_000, 1, pose(1)), POLICY)
    assert d.history == "h0" and d.reset is None


def test_time_jump_back_resets():
    """A bag loop: the stamps start again; the set after the jump must not see the old features."""
    stamps = [(0, 0), (1, 5e8), (2, 1e9), (3, 1e8), (4, 6e8)]
    assert run([(s, int(t)) for s, t in stamps]) == [None, None, None, "time_jump_back", None]
    state = remember(HistoryState(), "old", 1_000_000_000, 2)
    d = admit(state, SetMotion(100_000_000, 3, pose()), POLICY)
    assert d.history is None and d.state.history is None


def test_gap_resets():
    assert run([(0, 0), (1, 500_000_000), (2, 2_000_000_000)]) == [None, None, "gap"]


def test_dropped_set_resets():
    assert run([(0, 0), (1, 500_000_000), (3, 900_000_000)]) == [None, None, "dropped_set"]


def test_missing_or_bad_odometry_resets_and_names_why():
    state = remember(HistoryState(), "h", 0, 0)
    d = admit(state, SetMotion(500_000_000, 1, None, "no odometry 'map' -> 'base_link'"), POLICY)
    assert d.reset == "no_odometry" and d.history is None and "map" in d.detail
    bad = pose()
    bad[0, 3] = float("nan")
    d = admit(state, SetMotion(500_000_000, 1, bad), POLICY)
    assert d.reset == "bad_odometry" and "ego2motion: not finite" in d.detail
    skew = pose()
    skew[:3, :3] *= 2.0
    d = admit(state, SetMotion(500_000_000, 1, skew), POLICY)
    assert d.reset == "bad_odometry" and "not a rigid transform" in d.detail
    mirror = pose(1.0)
    mirror[1, :3] *= -1.0  # orthonormal, determinant -1: a reflection, no motion of a rigid body
    d = admit(state, SetMotion(500_000_000, 1, mirror), POLICY)
    assert d.reset == "bad_odometry" and "a reflection" in d.detail
    # the one pose check: the model's (priorocc_core check_pose) says the same of these poses
    from priorocc_core.model.temporal import TemporalError, check_pose
    for m in (bad, skew, mirror):
        with pytest.raises(TemporalError, match="not finite|not a rigid"):
            check_pose(torch.from_numpy(m)[None], "ego2global", 1)
    # a failed set leaves nothing behind: the next set starts afresh without counting a reset
    assert admit(forget(state, 500_000_000, 1), SetMotion(1_000_000_000, 2, pose()), POLICY).reset is None


def test_temporal_off_never_uses_history():
    state = remember(HistoryState(), "h", 0, 0)
    d = admit(state, SetMotion(500_000_000, 1, pose()), HistoryPolicy(enabled=False))
    assert d.history is None and d.reset is None


def _tf(samples, parent="map", child="base_link"):
    tf = TfBuffer()
    for stamp, m in samples:
        tf.set_transform(matrix_to_transform_stamped(m, parent, child, stamp), static=False)
    return tf


def test_odometry_is_interpolated_between_samples():
    tf = _tf([(0, pose(0.0, 0.0, 0.0)), (100_000_000, pose(1.0, 2.0, 0.2))])
    src = OdometrySource("map", "base_link")
    motion, pending = src.lookup(tf, 25_000_000, seq=0)
    assert not pending and motion.error is None
    np.testing.assert_allclose(motion.ego2motion[:2, 3], [0.25, 0.5], atol=1e-9)
    np.testing.assert_allclose(motion.ego2motion, pose(0.25, 0.5, 0.05), atol=1e-9)


def test_odometry_is_never_extrapolated():
    tf = _tf([(0, pose()), (100_000_000, pose(1.0))])
    src = OdometrySource("map", "base_link")
    motion, pending = src.lookup(tf, 150_000_000, seq=0)  # newer than every sample: may still come
    assert motion.ego2motion is None and pending and "150000000" in motion.error
    tf2 = _tf([(100_000_000, pose()), (200_000_000, pose(1.0))])
    motion, pending = src.lookup(tf2, 50_000_000, seq=0)  # older than the buffer: never will
    assert motion.ego2motion is None and not pending


def test_odometry_in_another_frame_is_named():
    tf = _tf([(0, pose()), (100_000_000, pose(1.0))], parent="odom")
    motion, _ = OdometrySource("map", "base_link").lookup(tf, 50_000_000, seq=0)
    assert motion.ego2motion is None and "'map'" in motion.error


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_tf_is_rejected_at_the_buffer(bad):
    from priorocc_ros.calibration import CalibrationError

    m = pose(1.0)
    ts = matrix_to_transform_stamped(m, "map", "base_link", 0)
    ts.transform.translation.x = bad
    with pytest.raises(CalibrationError, match="non-finite"):
        TfBuffer().set_transform(ts, static=False)
