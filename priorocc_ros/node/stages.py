"""The runner's three stages for one set, each in its own thread (``priorocc_ros.runner``):
decode (calibration + image decoding + preprocessing), inference, messages + publish. Decode of
set k+1 and the messages of set k-1 overlap the inference of set k; ``pipelined:=false`` runs
the three in one thread, one set at a time."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from priorocc_ros.node.calibration import CalibrationSource
from priorocc_ros.node.counters import NodeCounters
from priorocc_ros.node.publishers import OutputPublishers
from priorocc_ros.node.temporal import TemporalHistory
from priorocc_ros.pipeline import OccupancyPipeline, SetError
from priorocc_ros.runner import InferenceRunner
from priorocc_ros.sync import SyncedSet


@dataclass
class _InFlight:
    """A set between the runner's stages: decoded images, then the prediction."""
    s: SyncedSet
    t_set: float
    imgs: list
    K: np.ndarray  # (N, 3, 3) of the decoded images
    cam2ego: np.ndarray  # (N, 4, 4)
    timings: dict
    prepared: Any = None  # Predictor.prepare's result (None: predict does it all)
    pred: Any = None
    motion: Any = None  # temporal models: the set's SetMotion (history.py), None otherwise
    temporal: dict | None = None  # temporal models: ego2global (4, 4) and stamp for the predictor


class SetStages:
    """p: the node's parameters (read live: max_wait, calibration_wait; pipelined and queue_size
    at construction). block: the entry waits for room instead of dropping (offline replay;
    then nothing is on its way and calibration does not wait). now_ns: the node's clock."""

    def __init__(self, pipeline: OccupancyPipeline, calibration: CalibrationSource, outputs: OutputPublishers,
                 counters: NodeCounters, p: dict[str, Any], block: bool, now_ns: Callable[[], int],
                 stopping: Callable[[], bool], history: TemporalHistory):
        self.pipeline = pipeline
        self.history = history
        self.calibration = calibration
        self.outputs = outputs
        self.counters = counters
        self.p = p
        self.block = block
        self.now_ns = now_ns
        self.stopping = stopping
        stages = (self.decode, self.infer, self.publish)
        if not p["pipelined"]:
            stages = (lambda item: self.publish(self.infer(self.decode(item))),)
        self.runner = InferenceRunner(stages, queue_size=int(p["queue_size"]), block=block,
                                      on_error=self._on_error, on_drop=self._on_drop)

    # ------------------------------------------------------------------ entry (synchroniser thread)
    def submit(self, s: SyncedSet) -> None:
        self.counters.count("sets_in")
        try:
            self.runner.submit((s, time.perf_counter(), time.time_ns()))
        except RuntimeError:  # runner stopped (shutdown): counted, not lost
            self._on_drop(s)

    def _on_drop(self, item: Any) -> None:
        self.counters.count("sets_dropped")  # (a temporal history sees the gap in the sets' sequence numbers)

    def _on_error(self, item: Any, e: BaseException) -> None:
        if isinstance(e, SetError):
            self.counters.fail(e.kind, str(e), count_set=True)
        else:
            self.counters.fail("internal", f"set failed: {type(e).__name__}: {e}", count_set=True)

    # ------------------------------------------------------------------ the stages
    def decode(self, item: tuple[SyncedSet, float, int]) -> _InFlight:
        s, t_set, _ = item
        t0 = time.perf_counter()
        self.counters.latency.add("queue", t0 - t_set)
        wait = 0.0 if self.block else float(self.p["calibration_wait"])
        K, cam2ego, hws = self.calibration.for_set_waiting(s, self.p["max_wait"], wait, self.stopping)
        imgs, Kd = self.pipeline.decode(s.items, K, hws)
        f = _InFlight(s, t_set, imgs, Kd, cam2ego, {"decode": time.perf_counter() - t0})
        f.motion = self.history.motion(s.stamp_ns, s.seq, self.stopping)  # temporal models: odometry
        if f.motion is not None:
            # without a usable pose the set runs afresh: its own frame repeated, for which any pose is exact
            pose = f.motion.ego2motion if f.motion.error is None and f.motion.ego2motion is not None else np.eye(4)
            f.temporal = {"ego2global": pose, "stamp": s.stamp_ns * 1e-9}
        f.prepared = self.pipeline.prepare(imgs, Kd, cam2ego, f.temporal)  # preprocessing + plan, off the inference thread
        return f

    def infer(self, f: _InFlight) -> _InFlight:
        t0 = time.perf_counter()
        decision = self.history.admit(f.motion)  # in set order: set k+1 sees set k's history
        temporal = None if decision is None else {**f.temporal, "history": decision.history}
        try:
            f.pred = self.pipeline.predict(f.imgs, f.K, f.cam2ego, f.prepared, temporal)
        except BaseException:
            self.history.done(f.motion, None)  # the next set starts afresh
            raise
        self.history.done(f.motion, getattr(f.pred, "history", None))
        f.prepared = None
        f.timings["model"] = time.perf_counter() - t0
        return f

    def publish(self, f: _InFlight) -> None:
        s = f.s
        t0 = time.perf_counter()
        msgs = self.pipeline.build(s.stamp_ns, f.pred, f.imgs, f.K, f.cam2ego)
        f.timings["build"] = time.perf_counter() - t0
        res = self.pipeline.result(s.stamp_ns, f.pred, msgs, f.timings)
        if self.runner.gave_up:
            return  # shutdown stopped waiting for this set: it is counted dropped already
        t1 = time.perf_counter()
        self.outputs.publish(res.messages)
        t2 = time.perf_counter()
        lat = self.counters.latency
        for k, v in res.timings.items():
            lat.add(k, v)
        lat.add("publish", t2 - t1)
        lat.add("total", t2 - f.t_set)
        age = (self.now_ns() - s.stamp_ns) * 1e-9
        if 0.0 <= age < 60.0:  # meaningful with a live or simulated clock only
            lat.add("stamp_to_publish", age)
        self.counters.set_published(res.num_occupied)
