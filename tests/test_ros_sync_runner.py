"""Approximate-time synchroniser and the non-blocking inference runner."""
import threading
import time

import numpy as np
import pytest

from priorocc_ros.runner import InferenceRunner
from priorocc_ros.sync import ApproximateTimeSynchronizer

CAMS = ("A", "B", "C", "D", "E", "F")
MS = 1_000_000
PERIOD = 83 * MS


def frames(n, jitter=40 * MS, seed=0, skip=()):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        for c in CAMS:
            if (k, c) in skip:
                continue
            out.append((c, k * PERIOD + int(rng.integers(0, jitter)), (k, c)))
    return out


def run(sync, msgs):
    sets = []
    for c, t, item in msgs:
        sets += sync.add(c, t, item)
    return sets + sync.flush()


def test_jittered_stamps_within_slop_form_every_set_in_order():
    s = ApproximateTimeSynchronizer(CAMS, 50 * MS, reference="B")
    msgs = frames(20)
    sets = run(s, msgs)
    assert len(sets) == 20
    for k, st in enumerate(sets):
        assert [it[0] for it in st.items] == [k] * 6  # one frame, never mixed
        assert [it[1] for it in st.items] == list(CAMS)  # stream order
        assert st.spread_ns <= 50 * MS
        assert st.stamp_ns == st.stamps_ns[1]  # the reference camera's stamp
        assert st.seq == k
    assert s.stats.sets == 20 and s.stats.incomplete == 0 and s.stats.late == 0


def test_camera_missing_gives_no_set_and_a_counted_drop():
    incomplete = []
    s = ApproximateTimeSynchronizer(CAMS, 50 * MS, on_incomplete=lambda t, miss: incomplete.append(miss))
    sets = run(s, frames(10, skip={(3, "C"), (7, "F"), (7, "A")}))
    assert sorted(st.items[0][0] for st in sets) == [0, 1, 2, 4, 5, 6, 8, 9]
    assert s.stats.incomplete == 2
    assert sorted(incomplete) == [("A", "F"), ("C",)]
    assert s.stats.missing == {"C": 1, "A": 1, "F": 1}


def test_a_camera_that_stops_publishing_never_crashes_and_counts():
    s = ApproximateTimeSynchronizer(CAMS, 50 * MS, queue_size=5)
    msgs = [m for m in frames(30) if not (m[0] == "D" and m[2][0] >= 10)]
    sets = run(s, msgs)
    assert len(sets) == 10
    assert s.stats.incomplete == 20
    assert all(v == 0 for v in s.pending().values())


def test_out_of_order_arrival_within_the_wait_window():
    s = ApproximateTimeSynchronizer(CAMS, 50 * MS)
    msgs = frames(12, seed=3)
    rng = np.random.default_rng(1)
    # shuffle within blocks of two frames: later frames' images of one camera overtake earlier
    # frames' images of another; each camera's own stream stays in stamp order (one topic, one
    # writer: DDS and bags deliver it in order, which the synchroniser relies on, issue 15)
    shuffled = []
    for i in range(0, len(msgs), 12):
        block = msgs[i:i + 12]
        order = [block[j] for j in rng.permutation(len(block))]
        per_cam = {c: iter(sorted((m for m in block if m[0] == c), key=lambda m: m[1])) for c in CAMS}
        shuffled += [next(per_cam[m[0]]) for m in order]
    sets = run(s, shuffled)
    assert sorted(st.items[0][0] for st in sets) == list(range(12))
    assert all(len({it[0] for it in st.items}) == 1 for st in sets)


def test_late_and_duplicate_messages_are_counted_not_used():
    s = ApproximateTimeSynchronizer(CAMS, 50 * MS)
    msgs = frames(3)
    sets = []
    for c, t, it in msgs:
        sets += s.add(c, t, it)
        if (c, it[0]) == ("A", 1):
            sets += s.add(c, t, ("dup",))  # same stamp again
    sets += s.add("A", 0, ("late",))  # older than the last emitted set
    assert len(sets) == 3
    assert s.stats.duplicate == 1 and s.stats.late == 1
    assert all(it[0] != "dup" and it[0] != "late" for st in sets for it in st.items)


def test_bad_arguments():
    with pytest.raises(ValueError):
        ApproximateTimeSynchronizer(("A", "A"), 1)
    s = ApproximateTimeSynchronizer(CAMS, 1)
    with pytest.raises(KeyError, match="unknown stream 'Z'"):
        s.add("Z", 0, None)


def test_runner_newest_wins_and_drops_are_counted():
    gate = threading.Event()
    done = []

    def process(x):
        gate.wait(5)
        done.append(x)

    r = InferenceRunner(process, queue_size=1)
    r.submit(0)  # taken by the worker, blocks on the gate
    time.sleep(0.1)
    t0 = time.perf_counter()
    for i in range(1, 6):
        r.submit(i)  # never blocks the caller
    assert time.perf_counter() - t0 < 0.5
    gate.set()
    assert r.wait_idle(5)
    assert done == [0, 5]
    assert r.stats.dropped == 4 and r.stats.processed == 2 and r.stats.submitted == 6
    r.stop()


def test_runner_errors_are_counted_and_it_carries_on():
    seen = []

    def process(x):
        if x == 1:
            raise ValueError("bad set")
        seen.append(x)

    errs = []
    r = InferenceRunner(process, queue_size=10, on_error=lambda item, e: errs.append((item, str(e))))
    for i in range(3):
        r.submit(i)
    assert r.wait_idle(5)
    r.stop()
    assert seen == [0, 2] and errs == [(1, "bad set")] and r.stats.errors == 1


def test_runner_block_mode_loses_nothing():
    seen = []
    r = InferenceRunner(lambda x: (time.sleep(0.005), seen.append(x)), queue_size=1, block=True)
    for i in range(20):
        r.submit(i)
    r.stop(drain=True)
    assert seen == list(range(20)) and r.stats.dropped == 0


def test_runner_stages_overlap_keep_order_and_count():
    """Issue 17: with three stages, stage 0 of set k+1 runs while stage 1 still holds set k (the
    'inference' below waits until the next set has been decoded, which only a pipeline allows);
    sets leave in order. Mutation: the stages composed in one thread (``stages=[lambda x:
    c(b(a(x)))]``) -> the middle stage waits for a decode that never comes: this test fails."""
    decoded = {i: threading.Event() for i in range(8)}
    out, overlap = [], []

    def decode(x):
        decoded[x].set()
        return x

    def infer(x):
        overlap.append(decoded[x + 1].wait(5) if x < 5 else True)
        return x

    r = InferenceRunner((decode, infer, out.append), queue_size=10)
    for i in range(6):
        r.submit(i)
    assert r.wait_idle(20)
    r.stop()
    assert out == list(range(6)) and all(overlap), overlap
    assert r.stats.as_dict() == dict(submitted=6, processed=6, dropped=0, errors=0, abandoned=0)


def test_runner_stage_errors_and_drops_are_counted_once():
    """An error in a middle stage ends that set only (counted once, with what the stage was
    given); drops happen at the entry only; submitted = processed + errors + dropped, and
    in_progress() counts sets between stages (a set never vanishes in a hand-over). Mutations
    tried, each fails it: a full hand-over slot dropping its set instead of waiting; a stage
    marked idle before its hand-over (in_progress 3); an error counted twice."""
    gate = threading.Event()
    out, errs = [], []

    def infer(x):
        gate.wait(5)
        if x == 2:
            raise ValueError("bad")
        return x

    r = InferenceRunner((lambda x: x, infer, out.append), queue_size=1,
                        on_error=lambda item, e: errs.append(item))
    for i in range(6):
        r.submit(i)
        time.sleep(0.05)
    # 0 in infer, 1 handed over and waiting, 2 decoded and waiting to hand over, 5 at the entry
    assert r.in_progress() == 4 and r.stats.dropped == 2
    gate.set()
    assert r.wait_idle(5)
    r.stop()
    st = r.stats
    assert errs == [2] and out == [0, 1, 5]
    assert st.submitted == st.processed + st.errors + st.dropped == 6 and r.in_progress() == 0


# --------------------------------------------------------------------------- issue 15 / 19
def test_a_missing_image_does_not_hold_newer_complete_sets():
    """Issue 15 #5: camera C skips frame 3; frame 4 is released by its own last image (C has sent
    a newer image, so group 3 cannot complete), not held until max_wait and burst.
    Mutation: `_may_complete` always True (the old 'may still complete' wait) -> the set of
    frame 4 comes out only with frame 6's images, this test fails."""
    s = ApproximateTimeSynchronizer(CAMS, 50 * MS, max_wait_ns=300 * MS)
    released_at = {}
    for c, t, item in frames(8, skip={(3, "C")}):
        for st in s.add(c, t, item):
            released_at[st.items[0][0]] = item[0]
    released_at.update({st.items[0][0]: "flush" for st in s.flush()})
    assert released_at == {k: k for k in (0, 1, 2, 4, 5, 6)} | {7: 7}
    assert s.stats.incomplete == 1 and s.stats.missing == {"C": 1}


def test_time_jumping_back_resets_like_tf2():
    """Issue 15 #8: a bag played in a loop (stamps jump back 0.8 s) gives every loop's sets.
    Mutation: `_check_jump` returning at once -> 10 sets, 60 late; this test fails."""
    resets = []
    s = ApproximateTimeSynchronizer(CAMS, 50 * MS, on_reset=lambda newest, t: resets.append((newest, t)))
    msgs = frames(20)  # 1.6 s per loop
    sets = run(s, msgs + msgs + msgs)
    assert len(sets) == 60 and s.stats.late == 0 and s.stats.resets == 2 and s.stats.incomplete == 0
    assert [st.items[0][0] for st in sets] == list(range(20)) * 3
    assert len(resets) == 2 and all(newest > t for newest, t in resets)
    # a straggler a little behind (less than reset_ns) is late, not a reset
    assert s.add("A", sets[-1].stamps_ns[0] - 300 * MS, None) == [] and s.stats.resets == 2 and s.stats.late == 1


def _with_infos(n, delay_max, seed=0, info_before=False):
    """Frames with a CameraInfo per image, delivered ``delay`` (0..delay_max) after its image
    (image_transport's CameraPublisher order), interleaved by arrival time."""
    rng = np.random.default_rng(seed)
    events = []  # (arrival, kind, cam, stamp, item)
    for c, t, item in frames(n, seed=seed):
        events.append((t, 0, c, t, item))
        d = -1 if info_before else int(rng.integers(0, delay_max + 1))
        events.append((t + d, 1, c, t, ("info", item)))
    events.sort(key=lambda e: (e[0], e[1]))
    return events


def test_sets_wait_for_camera_infos_arriving_after_their_images():
    """Issue 19: every CameraInfo after its image, random delays up to the slop: 20 sets, each
    with the info of its own stamp. Mutation: `_info_for` ready without an info (no wait) ->
    the first set has infos None; this test fails."""
    s = ApproximateTimeSynchronizer(CAMS, 50 * MS, info_streams=CAMS)
    sets = []
    for _, kind, c, t, item in _with_infos(20, 50 * MS, seed=4):
        sets += s.add_info(c, t, item) if kind else s.add(c, t, item)
    sets += s.flush()
    assert len(sets) == 20
    for st in sets:
        assert [i[1] for i in st.infos] == list(st.items) and all(st.info_matched)
    assert s.stats.info_timeouts == 0 and not s.stats.info_missing


def test_one_camera_info_at_start_serves_every_set_without_waiting():
    """Constant intrinsics sent once (latched at the driver's start): each set is released by its
    own last image."""
    s = ApproximateTimeSynchronizer(CAMS, 50 * MS, info_streams=CAMS)
    for c in CAMS:
        s.add_info(c, -2000 * MS, ("info", c))
    for k in range(10):
        got = []
        for c, t, item in [m for m in frames(10) if m[2][0] == k]:
            got += s.add(c, t, item)
        assert len(got) == 1 and got[0].infos == tuple(("info", c) for c in CAMS)


def test_a_camera_info_that_never_comes_is_waited_for_max_wait_then_named():
    s = ApproximateTimeSynchronizer(CAMS, 50 * MS, max_wait_ns=200 * MS, info_streams=CAMS)
    for c in CAMS[1:]:
        s.add_info(c, -2000 * MS, ("info", c))
    out = []
    for c, t, item in frames(6):
        out.append(len(s.add(c, t, item)))
    sets = s.flush()
    assert sum(out) >= 1 and len(sets) + sum(out) == 6  # released after max_wait, not held forever
    assert s.stats.info_missing == {"A": 6}
