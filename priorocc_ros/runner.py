"""Run the pipeline's stages off the callback threads, one thread per stage: the newest complete
set wins.

``InferenceRunner(stages)``: ``stages`` is one callable or a sequence of them; each stage runs in
its own thread and hands its result to the next, so with ``(decode, infer, publish)`` the decode
of set k+1 and the messages of set k-1 overlap the inference of set k, and throughput is set by
the slowest stage, not by their sum (the libraries doing the work, libjpeg, torch / OpenVINO and
numpy, release the GIL).

``submit`` never blocks the caller (a transport callback): it puts the set into a bounded entry
queue (default depth 1); when that queue is full the *oldest* waiting set is dropped and counted.
Between stages the hand-over holds one item and waits for room (a stage never runs ahead of the
next by more than one set), so sets are only ever dropped at the entry, and leave in the order
they came. An exception in a stage is logged, counted (``on_error(item, exc)`` with what that
stage was given) and the set goes no further; the stage goes on with the next set.
``block=True`` makes ``submit`` wait for room instead of dropping (offline replay with an
unlimited time budget).

Counting: ``submitted = processed + errors + dropped + in_progress()``, always.
"""
from __future__ import annotations

import threading
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence


@dataclass
class RunnerStats:
    submitted: int = 0
    processed: int = 0  # came out of the last stage
    dropped: int = 0  # includes sets abandoned at stop
    errors: int = 0
    abandoned: int = 0  # still in a stage when stop() gave up waiting (also counted in dropped)

    def as_dict(self) -> dict[str, int]:
        return dict(submitted=self.submitted, processed=self.processed, dropped=self.dropped, errors=self.errors,
                    abandoned=self.abandoned)


class InferenceRunner:
    def __init__(self, stages: Callable[[Any], Any] | Sequence[Callable[[Any], Any]], queue_size: int = 1,
                 block: bool = False, on_error: Callable[[Any, BaseException], None] | None = None,
                 on_drop: Callable[[Any], None] | None = None, name: str = "priorocc-inference"):
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.stages = list(stages) if isinstance(stages, (list, tuple)) else [stages]
        if not self.stages:
            raise ValueError("InferenceRunner needs at least one stage")
        n = len(self.stages)
        self.queue_size = queue_size
        self.block = block
        self.on_error = on_error
        self.on_drop = on_drop
        self.stats = RunnerStats()
        self._qs: list[deque] = [deque() for _ in range(n)]  # _qs[i]: waiting for stage i
        self._busy = [False] * n  # stage i holds an item (running it or waiting to hand it over)
        self._done = [False] * n  # stage i's thread has finished
        self._cv = threading.Condition()
        self._stop = False
        self.gave_up = False  # stop() stopped waiting: a set finishing later must not be counted again
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True,
                                          name=name if n == 1 else f"{name}-{i}") for i in range(n)]
        for t in self._threads:
            t.start()

    def submit(self, item: Any) -> None:
        dropped = None
        with self._cv:
            if self._stop:
                raise RuntimeError("InferenceRunner is stopped")
            self.stats.submitted += 1
            if self.block:
                while len(self._qs[0]) >= self.queue_size and not self._stop:
                    self._cv.wait()
            elif len(self._qs[0]) >= self.queue_size:
                dropped = self._qs[0].popleft()
                self.stats.dropped += 1
            self._qs[0].append(item)
            self._cv.notify_all()
        if dropped is not None and self.on_drop is not None:
            self.on_drop(dropped)

    def _upstream_done(self, i: int) -> bool:
        return self._stop if i == 0 else self._done[i - 1]

    def _loop(self, i: int) -> None:
        last = i == len(self.stages) - 1
        try:
            while True:
                with self._cv:
                    while not self._qs[i] and not self._upstream_done(i) and not self.gave_up:
                        self._cv.wait()
                    if self.gave_up or not self._qs[i]:
                        return
                    item = self._qs[i].popleft()
                    self._busy[i] = True
                    self._cv.notify_all()
                try:
                    result = self.stages[i](item)
                    ok = True
                except Exception as e:  # noqa: BLE001 - counted and reported, the stage carries on
                    ok = False
                    if self.gave_up:
                        return
                    if self.on_error is not None:
                        self.on_error(item, e)
                    else:
                        traceback.print_exc()
                with self._cv:
                    if ok and not last:  # hand over: wait for room in the next stage's slot
                        while self._qs[i + 1] and not self.gave_up:
                            self._cv.wait()
                    if self.gave_up:
                        return
                    self._busy[i] = False
                    if not ok:
                        self.stats.errors += 1
                    elif last:
                        self.stats.processed += 1
                    else:
                        self._qs[i + 1].append(result)
                    self._cv.notify_all()
        finally:
            with self._cv:
                self._done[i] = True
                self._cv.notify_all()

    def in_progress(self) -> int:
        """Sets queued or in a stage."""
        with self._cv:
            return sum(len(q) for q in self._qs) + sum(self._busy)

    def idle(self) -> bool:
        return self.in_progress() == 0

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running; False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: not any(self._qs) and not any(self._busy), timeout=timeout)

    def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop the stages; with ``drain`` the queued sets go through every stage first, else the
        sets waiting for a stage are dropped (counted, ``on_drop``; sets inside a stage finish).
        Waits for the stages however slow the model is (``timeout`` None); after ``timeout`` s
        every set still inside is counted abandoned and dropped, never lost uncounted."""
        with self._cv:
            cleared = [] if drain else [item for q in self._qs for item in q]
            if not drain:
                self.stats.dropped += len(cleared)
                for q in self._qs:
                    q.clear()
            self._stop = True
            self._cv.notify_all()
        for item in cleared:
            if self.on_drop is not None:
                self.on_drop(item)
        with self._cv:
            finished = self._cv.wait_for(lambda: all(self._done), timeout=timeout)
            if finished:
                left = 0
            else:
                self.gave_up = True
                left = sum(len(q) for q in self._qs) + sum(self._busy)
                for q in self._qs:
                    q.clear()
                self._busy = [False] * len(self._busy)
                self.stats.abandoned += left
                self.stats.dropped += left
                self._cv.notify_all()
        for _ in range(left):
            if self.on_drop is not None:
                self.on_drop(None)
        if finished:
            for t in self._threads:
                t.join()
