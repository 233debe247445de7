"""Approximate-time synchroniser for N camera streams (six for nuScenes).

Policy (message_filters' ApproximateTime in spirit, deterministic and counted):

- Each stream keeps its pending messages sorted by stamp (out-of-order arrival is fine).
- A *set* is one message per stream whose stamps all lie within ``slop_ns`` of each other.
  The earliest complete set is emitted as soon as it exists and no older pending message
  could still complete an earlier set (those wait up to ``max_wait_ns``, then expire).
- After a set, every pending message with a stamp <= the set's newest stamp can no longer
  form a set: it is removed and counted ``superseded``; messages arriving later with such
  stamps are ``late``. A message whose stream already holds the same stamp is a
  ``duplicate``.
- Messages that wait too long (``max_wait_ns`` behind the newest stamp seen on any stream,
  or beyond ``queue_size`` per stream) expire: the expired message and the pending messages
  within ``slop_ns`` of it form one ``incomplete`` set, counted with the streams that were
  missing. ``flush()`` expires everything (end of a bag).

Time comes only from the message stamps, so it behaves the same live and on a bag.
Thread safe; callbacks run outside the lock.
"""
from __future__ import annotations

import threading
from bisect import bisect_left, insort
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class SyncedSet:
    """One message per stream (in stream order) and the set's stamp."""

    stamp_ns: int  # stamp of the reference stream's message
    stamps_ns: tuple[int, ...]
    items: tuple[Any, ...]
    seq: int  # 0, 1, 2, ... in emission order

    @property
    def spread_ns(self) -> int:
        return max(self.stamps_ns) - min(self.stamps_ns)


@dataclass
class SyncStats:
    received: int = 0
    sets: int = 0
    late: int = 0
    duplicate: int = 0
    superseded: int = 0
    overflow: int = 0
    incomplete: int = 0
    missing: Counter = field(default_factory=Counter)  # stream -> incomplete sets it was missing from

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("received", "sets", "late", "duplicate", "superseded", "overflow",
                                          "incomplete")}
        d["missing"] = dict(self.missing)
        return d


class _Entry:
    __slots__ = ("stamp", "item")

    def __init__(self, stamp: int, item: Any):
        self.stamp, self.item = stamp, item

    def __lt__(self, other: "_Entry") -> bool:
        return self.stamp < other.stamp


class ApproximateTimeSynchronizer:
    """Groups messages of ``streams`` into sets.

    streams: names in output order (e.g. CAMERAS). slop_ns: max spread of a set.
    reference: the stream whose stamp is the set's stamp (default the first).
    on_set(SyncedSet) / on_incomplete(stamp_ns, missing streams) are called for each event;
    ``add`` also returns the sets it completed.
    """

    def __init__(self, streams: Sequence[str], slop_ns: int, queue_size: int = 10,
                 max_wait_ns: int | None = None, reference: str | None = None,
                 on_set: Callable[[SyncedSet], None] | None = None,
                 on_incomplete: Callable[[int, tuple[str, ...]], None] | None = None):
        if len(streams) == 0 or len(set(streams)) != len(streams):
            raise ValueError(f"streams must be distinct names, got {list(streams)}")
        if slop_ns < 0:
            raise ValueError(f"slop must be >= 0, got {slop_ns} ns")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.streams = tuple(streams)
        self.index = {s: i for i, s in enumerate(self.streams)}
        self.slop_ns = int(slop_ns)
        self.queue_size = int(queue_size)
        self.max_wait_ns = int(max_wait_ns) if max_wait_ns is not None else max(4 * self.slop_ns, 200_000_000)
        self.reference = self.index[reference] if reference is not None else 0
        self.on_set = on_set
        self.on_incomplete = on_incomplete
        self.stats = SyncStats()
        self._q: list[list[_Entry]] = [[] for _ in self.streams]
        self._last_set_max: int | None = None
        self._newest: int | None = None
        self._seq = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public
    def add(self, stream: str, stamp_ns: int, item: Any) -> list[SyncedSet]:
        """Offer one message; returns the sets it completed (also passed to on_set)."""
        if stream not in self.index:
            raise KeyError(f"unknown stream {stream!r}; streams are {self.streams}")
        events: list[tuple[str, Any]] = []
        with self._lock:
            self.stats.received += 1
            self._insert(self.index[stream], int(stamp_ns), item, events)
            while True:
                n = len(events)
                self._match(events, wait_for_older=True)
                self._expire(events, flush=False)
                if len(events) == n:
                    break
        return self._dispatch(events)

    def flush(self) -> list[SyncedSet]:
        """Emit what can still be matched, then expire everything pending (end of input)."""
        events: list[tuple[str, Any]] = []
        with self._lock:
            self._match(events, wait_for_older=False)
            self._expire(events, flush=True)
        return self._dispatch(events)

    def pending(self) -> dict[str, int]:
        with self._lock:
            return {s: len(q) for s, q in zip(self.streams, self._q)}

    # ------------------------------------------------------------------ internals
    def _insert(self, i: int, stamp: int, item: Any, events: list) -> None:
        if self._last_set_max is not None and stamp <= self._last_set_max:
            self.stats.late += 1
            return
        q = self._q[i]
        j = bisect_left(q, _Entry(stamp, None))
        if j < len(q) and q[j].stamp == stamp:
            self.stats.duplicate += 1
            return
        insort(q, _Entry(stamp, item))
        if self._newest is None or stamp > self._newest:
            self._newest = stamp
        if len(q) > self.queue_size:
            self.stats.overflow += 1
            self._expire_group(q[0].stamp, events)

    def _find_set(self) -> list[_Entry] | None:
        if any(not q for q in self._q):
            return None
        candidates = sorted({e.stamp for q in self._q for e in q})
        for t0 in candidates:
            chosen = []
            for q in self._q:
                j = bisect_left(q, _Entry(t0, None))
                if j < len(q) and q[j].stamp - t0 <= self.slop_ns:
                    chosen.append(q[j])
                else:
                    break
            else:
                return chosen
        return None

    def _match(self, events: list, wait_for_older: bool) -> None:
        while True:
            chosen = self._find_set()
            if chosen is None:
                return
            tmin = min(e.stamp for e in chosen)
            tmax = max(e.stamp for e in chosen)
            older = [q[0].stamp for q in self._q if q and q[0].stamp < tmin]
            if wait_for_older and older and self._newest is not None and self._newest - min(older) <= self.max_wait_ns:
                return  # an older set may still complete (out-of-order arrival): wait for it or its expiry
            # older pending messages can never complete now: each group is an incomplete set
            while True:
                heads = [q[0].stamp for q in self._q if q and q[0].stamp < tmin]
                if not heads:
                    break
                self._expire_group(min(heads), events, upper=tmin - 1)
            for q in self._q:
                n = bisect_left(q, _Entry(tmax + 1, None))
                self.stats.superseded += n - 1  # n >= 1: the chosen entry is among them
                del q[:n]
            self._last_set_max = tmax
            s = SyncedSet(stamp_ns=chosen[self.reference].stamp, stamps_ns=tuple(e.stamp for e in chosen),
                          items=tuple(e.item for e in chosen), seq=self._seq)
            self._seq += 1
            self.stats.sets += 1
            events.append(("set", s))

    def _expire_group(self, t0: int, events: list, upper: int | None = None) -> None:
        hi = t0 + self.slop_ns if upper is None else min(upper, t0 + self.slop_ns)
        missing = []
        for name, q in zip(self.streams, self._q):
            n = bisect_left(q, _Entry(hi + 1, None))
            if n == 0:
                missing.append(name)
            del q[:n]
        self.stats.incomplete += 1
        for m in missing:
            self.stats.missing[m] += 1
        events.append(("incomplete", (t0, tuple(missing))))

    def _expire(self, events: list, flush: bool) -> None:
        while True:
            heads = [q[0].stamp for q in self._q if q]
            if not heads:
                return
            t0 = min(heads)
            if not flush and (self._newest is None or self._newest - t0 <= self.max_wait_ns):
                return
            self._expire_group(t0, events)

    def _dispatch(self, events: list) -> list[SyncedSet]:
        sets = []
        for kind, payload in events:
            if kind == "set":
                sets.append(payload)
                if self.on_set is not None:
                    self.on_set(payload)
            elif self.on_incomplete is not None:
                self.on_incomplete(*payload)
        return sets
