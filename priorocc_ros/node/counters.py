"""What the node counts: counters, errors per kind, the last error and latency per stage.
Shared by every part of the node (thread safe); read by ``diagnostics.NodeDiagnostics``."""
from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np


class LatencyWindow:
    """Last ``n`` samples per stage (seconds); percentiles on demand. Thread safe."""

    def __init__(self, n: int = 1000):
        self._d: dict[str, deque] = {}
        self._n = n
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._d.setdefault(stage, deque(maxlen=self._n)).append(float(seconds))

    def percentiles(self, q=(50, 90, 99)) -> dict[str, dict[str, float]]:
        with self._lock:
            snap = {k: np.asarray(v) for k, v in self._d.items() if v}
        return {k: {f"p{p}": float(np.percentile(v, p)) for p in q} | {"n": int(v.size)} for k, v in snap.items()}


class NodeCounters:
    """counters (``count``), errors per kind with the last message (``fail``, which also logs
    it), latency samples, and the times of the last published sets (rate)."""

    def __init__(self, log, latency_window: int = 1000):
        self.log = log
        self.lock = threading.Lock()
        self.counters: Counter = Counter()
        self.errors: Counter = Counter()
        self.last_error = ""
        self.latency = LatencyWindow(latency_window)
        self.out_times: deque = deque(maxlen=200)

    def count(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counters[key] += n

    def get(self, key: str) -> int:
        with self.lock:
            return self.counters[key]

    def fail(self, kind: str, message: str, count_set: bool) -> None:
        """An error of ``kind`` (logged as a warning); ``count_set``: a set was lost to it."""
        with self.lock:
            self.errors[kind] += 1
            if count_set:
                self.counters["sets_failed"] += 1
            self.last_error = message
        self.log.warning(message)

    def set_published(self, num_occupied: int) -> None:
        with self.lock:
            self.counters["sets_out"] += 1
            self.counters["occupied_voxels_last"] = num_occupied
            self.out_times.append(time.monotonic())

    def snapshot(self) -> tuple[dict, dict, str, list]:
        """(counters, errors, last_error, output times), consistent with each other."""
        with self.lock:
            return dict(self.counters), dict(self.errors), self.last_error, list(self.out_times)
