"""A temporal model through the node (priorocc_replay, loopback transport): the BEV history is
carried from set to set and aligned by the odometry in /tf (issue 26).

A moving-ego synthetic world (make_synthetic's --ego-speed / --turn-rate) -> nuscenes_to_bag
(``map -> base_link`` on /tf at every camera sample) -> priorocc_replay with a tiny temporal model
(random weights, tiny-temporal.yaml) and ``motion_frame:=map``. The predictor is wrapped in a
spy that records what the node gave it per set; the offline reference is a fresh predictor run
sequentially over the same frames, chaining each Prediction's history into the next call.

Mutations tried (each fails the test named):
- the inference stage passing ``history=None`` every set (no fusion): ``test_replay_equals_offline_sequential``
  (the outputs of sets 2.. differ from the offline chain).
- ``admit`` (history.py) without the time-jump check: ``test_bag_loop_resets_and_never_mixes_passes``
  (pass 2's first set runs with pass 1's last history; its outputs differ from pass 1's).
"""
from __future__ import annotations

import numpy as np
import pytest

class Spy:
    """A Predictor that records what the node gave it: per set the images, K, cam2ego, pose and
    whether a history came in; delegates everything to the real predictor."""

    def __init__(self, pred):
        self.pred = pred
        self.calls = []
        self._by_prepared = {}  # the decode stage prepares set k+1 while set k runs

    def __getattr__(self, name):
        return getattr(self.pred, name)

    def prepare(self, images, K, cam2ego, ego2global=None, stamp=None):
        call = dict(images=[np.array(i) for i in images], K=np.array(K), cam2ego=np.array(cam2ego),
                    ego2global=None if ego2global is None else np.array(ego2global), stamp=stamp)
        self.calls.append(call)
        prepared = self.pred.prepare(images, K, cam2ego, ego2global, stamp)
        self._by_prepared[id(prepared)] = (prepared, call)
        return prepared

    def run(self, prepared, history=None):
        _, call = self._by_prepared.pop(id(prepared))
        call["history_in"] = history
        out = self.pred.run(prepared, history)
        call["occ"] = out.occupancy.copy()
        return out


@pytest.fixture(scope="module")
def moving_bag(tmp_path_factory):
    from priorocc_core.data.synthetic import generate_world
    from priorocc_ros.nuscenes_to_bag import main as to_bag

    tmp = tmp_path_factory.mktemp("moving")
    world = tmp / "world"
    generate_world(world, n_scenes=1, n_keyframes=4, hw=(90, 160), version="v1.0-mini", progress=False,
                   ego_speed=6.0, turn_rate=8.0)
    bag = tmp / "bag"
    assert to_bag(["--dataroot", str(world), "--version", "v1.0-mini", "--out", str(bag), "--quiet"]) == 0
    return world, bag


def _replay(bag, out, ckpt, **params):
    from priorocc_core.backends import make_predictor
    from priorocc_ros.replay import replay

    spy = Spy(make_predictor(ckpt, "torch"))
    summary = replay(bag, out, predictor=spy, parameters={"motion_frame": "map", "backend": "torch", **params})
    return spy, summary


def test_replay_equals_offline_sequential(tmp_path, temporal_ckpt, moving_bag):
    from nuscenes.nuscenes import NuScenes

    from priorocc_core.backends import make_predictor
    from priorocc_core.geometry import transform_from_quat

    world, bag = moving_bag
    spy, summary = _replay(bag, tmp_path / "out", temporal_ckpt)
    n = summary.node
    assert n["sets_in"] == 4 == n["sets_out"] and n["history_resets"] == 0, n
    calls = spy.calls
    assert len(calls) == 4
    assert calls[0]["history_in"] is None and all(c["history_in"] is not None for c in calls[1:])
    # the poses the node looked up are the world's ego poses at the sets' (CAM_FRONT) stamps
    nusc = NuScenes(version="v1.0-mini", dataroot=str(world), verbose=False)
    poses = {}
    for s in nusc.sample:
        sd = nusc.get("sample_data", s["data"]["CAM_FRONT"])
        ep = nusc.get("ego_pose", sd["ego_pose_token"])
        poses[sd["timestamp"] * 1000] = np.asarray(transform_from_quat(ep["translation"], ep["rotation"]))
    for c in calls:
        want = poses[int(round(c["stamp"] * 1e6)) * 1000]  # microsecond stamps (float seconds lose the ns)
        np.testing.assert_allclose(c["ego2global"], want, atol=1e-6)
    moved = np.linalg.norm(calls[-1]["ego2global"][:3, 3] - calls[0]["ego2global"][:3, 3])
    assert moved > 5.0, f"the ego should move in this world ({moved:.2f} m)"
    # offline: a fresh predictor, sequential over the same frames, each history chained to the next
    ref = make_predictor(temporal_ckpt, "torch")
    history = None
    for k, c in enumerate(calls):
        out = ref.predict(c["images"], c["K"], c["cam2ego"], ego2global=c["ego2global"], history=history,
                          stamp=c["stamp"])
        history = out.history
        assert np.array_equal(out.occupancy, c["occ"]), f"set {k}: the node's output is not the offline chain's"
    # and the history matters: a fresh start at the last set gives other labels
    fresh = ref.predict(calls[-1]["images"], calls[-1]["K"], calls[-1]["cam2ego"],
                        ego2global=calls[-1]["ego2global"], history=None, stamp=calls[-1]["stamp"])
    assert not np.array_equal(fresh.occupancy, calls[-1]["occ"])


def _looped_bag(src, dst, passes: int = 2):
    """``src`` played ``passes`` times in one bag: the stamps of every pass repeat (a bag loop, as
    the node sees ``ros2 bag play --loop``), the bag's log times go on."""
    from priorocc_ros.bagio import AtomicBagWriter, iter_raw

    errors: list[str] = []
    msgs = list(iter_raw(src, errors))
    assert not errors
    span = max(t for *_, t, _ in msgs) - min(t for *_, t, _ in msgs) + 1_000_000_000
    with AtomicBagWriter(dst) as w:
        for k in range(passes):
            for topic, type_name, t, raw in msgs:
                if k and topic == "/tf_static":
                    continue
                w.write_raw(topic, type_name, t + k * span, raw)


def test_bag_loop_resets_and_never_mixes_passes(tmp_path, temporal_ckpt, moving_bag):
    """Pass 2 repeats pass 1's stamps: its first set resets the history (time_jump_back, counted
    once) and runs afresh; every later set uses only its own pass's history, so pass 2's outputs
    equal pass 1's bitwise."""
    _, bag = moving_bag
    looped = tmp_path / "looped"
    _looped_bag(bag, looped)
    spy, summary = _replay(looped, tmp_path / "out", temporal_ckpt)
    n = summary.node
    assert n["sets_out"] == 8, n
    assert n["history_resets"] == 1 and n["history_resets_time_jump_back"] == 1, n
    calls = spy.calls
    assert calls[4]["history_in"] is None
    for k in range(4):
        assert np.array_equal(calls[k]["occ"], calls[4 + k]["occ"]), f"pass 2 set {k} differs from pass 1"


def test_missing_odometry_runs_single_frame_and_counts(tmp_path, temporal_ckpt, moving_bag):
    """motion_frame:=odom on a bag that has map -> base_link only: every set runs afresh (no pose),
    one clear line, counted; the node keeps publishing every set."""
    _, bag = moving_bag
    spy, summary = _replay(bag, tmp_path / "out", temporal_ckpt, motion_frame="odom", max_wait=0.05)
    n = summary.node
    assert n["sets_out"] == 4 and n["sets_failed"] == 0, n
    assert all(c["history_in"] is None for c in spy.calls)
    # no history is ever kept (a set without a pose leaves none behind), so there is nothing to
    # reset: what is counted is the missing odometry, per set
    assert n["history_resets"] == 0 and n["odometry_missing"] == 4, n


def test_single_frame_model_is_unchanged(tmp_path, moving_bag, tiny_checkpoint):
    """A single-frame model gets no pose and no history, as before this part existed."""
    _, bag = moving_bag
    spy, summary = _replay(bag, tmp_path / "out", tiny_checkpoint)
    assert summary.node["sets_out"] == 4
    assert all(c["ego2global"] is None and c.get("history_in") is None for c in spy.calls)
