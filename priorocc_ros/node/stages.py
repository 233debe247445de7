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
    present: tuple[bool, ...] = ()  # per camera: its image is in the set (False: degraded set)
    known: tuple[bool, ...] = ()  # per camera: calibration known (a missing camera's last one)


class CameraMemory:
    """The last calibration each camera had in a set (decoded-image K, cam2ego, image size): a
    camera missing from a degraded set keeps it. Used by the decode stage only (one thread)."""

    def __init__(self, n: int):
        self.last: list[tuple[np.ndarray, np.ndarray, tuple[int, int]] | None] = [None] * n
        self.changed: list[int] = []  # cameras whose calibration differs from their previous set's (last fill)

    def fill(self, present: tuple[bool, ...], imgs: list, K: np.ndarray, cam2ego: np.ndarray):
        """Remember the present cameras (``changed``: those whose K, cam2ego or image size differ
        from their last set's); give each missing one its last calibration and a black image of
        its last size (its features are masked out anyway). -> (imgs, K, cam2ego, known)."""
        imgs, K, cam2ego = list(imgs), np.array(K, dtype=np.float64), np.array(cam2ego, dtype=np.float64)
        ref = next(i for i, p in enumerate(present) if p)
        known = []
        self.changed = []
        for i, p in enumerate(present):
            if p:
                prev = self.last[i]
                if prev is not None and (prev[2] != tuple(imgs[i].shape[:2]) or not np.allclose(prev[0], K[i], rtol=0, atol=1e-6)
                                         or not np.allclose(prev[1], cam2ego[i], rtol=0, atol=1e-6)):
                    self.changed.append(i)
                self.last[i] = (K[i].copy(), cam2ego[i].copy(), tuple(imgs[i].shape[:2]))
                known.append(True)
                continue
            last = self.last[i]
            k, c2e, hw = last if last is not None else (K[ref], cam2ego[ref], tuple(imgs[ref].shape[:2]))
            imgs[i] = np.zeros((*hw, 3), np.uint8)
            K[i], cam2ego[i] = k, c2e
            known.append(last is not None)
        return imgs, K, cam2ego, tuple(known)


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
        self.memory = CameraMemory(len(pipeline.cameras))
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
        present = s.present
        imgs, Kd, cam2ego, known = self.memory.fill(present, imgs, Kd, cam2ego)
        for i in self.memory.changed:  # the new calibration is used from this set on
            self._calibration_changed(self.pipeline.cameras[i], s.stamp_ns)
        f = _InFlight(s, t_set, imgs, Kd, cam2ego, {"decode": time.perf_counter() - t0}, present=present, known=known)
        f.motion = self.history.motion(s.stamp_ns, s.seq, self.stopping)  # temporal models: odometry
        if f.motion is not None:
            # without a usable pose the set runs afresh: its own frame repeated, for which any pose is exact
            pose = f.motion.ego2motion if f.motion.error is None and f.motion.ego2motion is not None else np.eye(4)
            f.temporal = {"ego2global": pose, "stamp": s.stamp_ns * 1e-9}
        mask = present if s.missing else None  # degraded set: the missing cameras' features masked out
        f.prepared = self.pipeline.prepare(imgs, Kd, cam2ego, f.temporal, mask)  # preprocessing + plan, off the inference thread
        return f

    def _calibration_changed(self, cam: str, stamp_ns: int) -> None:
        """A camera's K / extrinsics / image size changed mid-run: counted, logged (the first three
        per camera, then every 100th); the set runs with the new calibration."""
        self.counters.count("calibration_changes")
        self.counters.count(f"calibration_changes_{cam}")
        n = self.counters.get(f"calibration_changes_{cam}")
        if n <= 3 or n % 100 == 0:
            self.counters.log.warning(f"{cam}: calibration changed at {stamp_ns * 1e-9:.3f} s (CameraInfo K, TF "
                                      f"extrinsics or image size differ from its previous set): the new one is used; "
                                      f"{n} change(s) so far")

    def infer(self, f: _InFlight) -> _InFlight:
        t0 = time.perf_counter()
        decision = self.history.admit(f.motion)  # in set order: set k+1 sees set k's history
        temporal = None if decision is None else {**f.temporal, "history": decision.history}
        try:
            f.pred = self.pipeline.predict(f.imgs, f.K, f.cam2ego, f.prepared, temporal,
                                           f.present if f.s.missing else None)
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
        if s.missing:  # the region only the missing cameras see: unknown, not free
            f.pred = self.pipeline.mask_unseen(f.pred, f.present, f.known, f.K, f.cam2ego,
                                               [im.shape[:2] for im in f.imgs])
        msgs = self.pipeline.build(s.stamp_ns, f.pred, f.imgs, f.K, f.cam2ego, f.present)
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
