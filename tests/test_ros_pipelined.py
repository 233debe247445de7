"""Issue 17: the node's three stages (decode, inference, messages) overlap across sets.

The micro model over the loopback transport (tests/test_ros_issue15.py's Rig). Mutation tried
(the test named fails): the node built with one composed stage whatever ``pipelined`` says
(overlap test: inference of set k never sees set k+1 decoded). The order / byte-equality test
was not mutation-tested.
"""
from __future__ import annotations

import threading

import numpy as np

from priorocc_ros.msgs import serialize
from tests.test_ros_issue15 import Rig, _invariant, micro, predictor  # noqa: F401 - fixtures


class _WaitsForNextDecode:
    """The micro predictor; set k's inference waits (up to 10 s) until set k+1 has been decoded,
    which only a pipelined node does while set k is in the network."""

    def __init__(self, predictor, core_ref, n):
        self.p, self.core_ref, self.n = predictor, core_ref, n
        self.cameras, self.cfg = predictor.cameras, predictor.cfg
        self.decoded = [threading.Event() for _ in range(n + 1)]
        self.calls, self.saw_next = 0, []

    def wrap_decode(self, decode):
        count = [0]

        def wrapped(*a, **kw):
            out = decode(*a, **kw)
            self.decoded[min(count[0], self.n)].set()
            count[0] += 1
            return out
        return wrapped

    def predict(self, *a, **kw):
        k = self.calls
        self.calls += 1
        self.saw_next.append(self.decoded[k + 1].wait(10) if k + 1 < self.n else True)
        return self.p.predict(*a, **kw)


def _run(predictor, pipelined: bool, n: int, slow=None):
    rig = Rig(slow or predictor, params={"pipelined": pipelined})
    if slow is not None:
        rig.core.pipeline.decode = slow.wrap_decode(rig.core.pipeline.decode)
    for k in range(n):
        rig.send_set(k)
    assert rig.core.wait_idle(60)
    rig.core.close()
    st = rig.stats()
    _invariant(st)
    return rig, st


def test_decode_of_the_next_set_overlaps_inference(predictor):
    n = 4
    slow = _WaitsForNextDecode(predictor, None, n)
    rig, st = _run(predictor, True, n, slow)
    assert st["sets_out"] == n and st["sets_dropped"] == 0 and all(slow.saw_next), slow.saw_next


def test_pipelined_outputs_equal_the_serial_ones_in_order(predictor):
    n = 5
    outs = {}
    for pipelined in (True, False):
        rig, st = _run(predictor, pipelined, n)
        assert st["sets_out"] == n and st["sets_failed"] == 0
        vox = rig.bus.published["/priorocc/voxels"]
        stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in vox]
        assert stamps == sorted(stamps) and len(set(stamps)) == n
        outs[pipelined] = [bytes(serialize(m)) for m in vox] + [bytes(serialize(m)) for m in rig.bus.published["/priorocc/bev"]]
    assert outs[True] == outs[False]
