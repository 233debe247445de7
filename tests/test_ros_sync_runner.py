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
    # shuffle within blocks of two frames: later frames' images overtake earlier ones
    shuffled = []
    for i in range(0, len(msgs), 12):
        block = msgs[i:i + 12]
        shuffled += [block[j] for j in rng.permutation(len(block))]
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
