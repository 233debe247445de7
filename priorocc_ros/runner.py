"""Run inference off the callback threads: the newest complete set wins.

``InferenceRunner.submit`` never blocks the caller (a transport callback): it puts the set into
a bounded queue (default depth 1); when the queue is full the *oldest* waiting set is dropped
and counted. One worker thread takes sets and calls ``process(set)``; an exception there is
logged, counted and the worker goes on with the next set. ``block=True`` makes ``submit``
wait for room instead of dropping (offline replay with an unlimited time budget).
"""
from __future__ import annotations

import threading
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class RunnerStats:
    submitted: int = 0
    processed: int = 0
    dropped: int = 0  # includes sets abandoned at stop
    errors: int = 0
    abandoned: int = 0  # still running when stop() gave up waiting (also counted in dropped)

    def as_dict(self) -> dict[str, int]:
        return dict(submitted=self.submitted, processed=self.processed, dropped=self.dropped, errors=self.errors,
                    abandoned=self.abandoned)


class InferenceRunner:
    def __init__(self, process: Callable[[Any], None], queue_size: int = 1, block: bool = False,
                 on_error: Callable[[Any, BaseException], None] | None = None,
                 on_drop: Callable[[Any], None] | None = None, name: str = "priorocc-inference"):
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.process = process
        self.queue_size = queue_size
        self.block = block
        self.on_error = on_error
        self.on_drop = on_drop
        self.stats = RunnerStats()
        self._q: deque = deque()
        self._cv = threading.Condition()
        self._busy = False
        self._stop = False
        self.gave_up = False  # stop() stopped waiting: a set finishing later must not be counted again
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> None:
        dropped = None
        with self._cv:
            if self._stop:
                raise RuntimeError("InferenceRunner is stopped")
            self.stats.submitted += 1
            if self.block:
                while len(self._q) >= self.queue_size and not self._stop:
                    self._cv.wait()
            elif len(self._q) >= self.queue_size:
                dropped = self._q.popleft()
                self.stats.dropped += 1
            self._q.append(item)
            self._cv.notify_all()
        if dropped is not None and self.on_drop is not None:
            self.on_drop(dropped)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._q and not self._stop:
                    self._cv.wait()
                if not self._q and self._stop:
                    return
                item = self._q.popleft()
                self._busy = True
                self._cv.notify_all()
            try:
                self.process(item)
                ok = True
            except Exception as e:  # noqa: BLE001 - counted and reported, the worker carries on
                ok = False
                if self.gave_up:
                    return
                if self.on_error is not None:
                    self.on_error(item, e)
                else:
                    traceback.print_exc()
            with self._cv:
                self._busy = False
                if self.gave_up:
                    return
                if ok:
                    self.stats.processed += 1
                else:
                    self.stats.errors += 1
                self._cv.notify_all()

    def in_progress(self) -> int:
        """Sets queued or running."""
        with self._cv:
            return len(self._q) + int(self._busy)

    def idle(self) -> bool:
        with self._cv:
            return not self._q and not self._busy

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running; False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._q and not self._busy, timeout=timeout)

    def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop the worker; with ``drain`` the queued sets are processed first, else they are
        dropped (counted, ``on_drop``). Waits for the worker however slow the model is
        (``timeout`` None); after ``timeout`` s a set still running is counted abandoned and
        dropped, never lost uncounted."""
        with self._cv:
            cleared = [] if drain else list(self._q)
            if not drain:
                self.stats.dropped += len(self._q)
                self._q.clear()
            self._stop = True
            self._cv.notify_all()
        for item in cleared:
            if self.on_drop is not None:
                self.on_drop(item)
        self._thread.join(timeout=timeout)
        if self._thread.is_alive():
            with self._cv:
                self.gave_up = True
                left = len(self._q) + int(self._busy)
                self._q.clear()
                self._busy = False
                self.stats.abandoned += left
                self.stats.dropped += left
            for _ in range(left):
                if self.on_drop is not None:
                    self.on_drop(None)
