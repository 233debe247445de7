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
- ``degrade=True`` (the node's ``missing_camera:=degrade``): an expiring group is emitted instead
  as a *degraded* set (``SyncedSet.missing`` names the absent streams, their items are None, their
  stamps the set's), counted in ``sets`` and ``degraded`` (per stream in ``degraded_missing``),
  never ``incomplete``; images older than it are then ``late``, as after a complete set.
- A complete set is released as soon as no older group can still complete: streams are
  assumed to deliver in stamp order, so a stream that already sent a message newer than an
  older group's window cannot complete it (that group expires at once, counted).
- Time jumping back (a bag played in a loop, a restarted recording): an image more than
  ``reset_ns`` behind the newest stamp seen resets the synchroniser, as tf2 and rviz do: what
  is pending is flushed (counted), then matching starts afresh (``stats.resets``).
- Companion messages (CameraInfo, issue 19): with ``info_streams``, a complete set also
  waits for each of those streams' info whose stamp matches its image (nearest within
  ``slop_ns``), bounded by ``max_wait_ns`` like a missing image; then it is released with the
  nearest info there is (None when none ever came: the consumer fails it, counted and named).
  An info stream that has passed the image (a newer info, beyond the slop) or that does not
  publish per image (no info so far had the stamp of one of its images, or the last wait
  expired) is not waited for: constant intrinsics sent once keep working.

Time comes only from the message stamps, so it behaves the same live and on a bag.
Thread safe; callbacks run outside the lock.
"""
from __future__ import annotations

import threading
from bisect import bisect_left, insort
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class SyncedSet:
    """One message per stream (in stream order) and the set's stamp."""

    stamp_ns: int  # stamp of the reference stream's message
    stamps_ns: tuple[int, ...]
    items: tuple[Any, ...]
    seq: int  # 0, 1, 2, ... in emission order
    infos: tuple[Any, ...] = ()  # companion (CameraInfo) per stream, None where none; () without info_streams
    info_matched: tuple[bool, ...] = ()  # per stream: info stamp within slop of the image
    missing: tuple[str, ...] = ()  # degraded set: streams that sent nothing (item None, stamp = stamp_ns)

    @property
    def spread_ns(self) -> int:
        return max(self.stamps_ns) - min(self.stamps_ns)

    @property
    def present(self) -> tuple[bool, ...]:
        """Per stream: it has an item (False only in a degraded set)."""
        return tuple(x is not None for x in self.items)


@dataclass
class SyncStats:
    received: int = 0
    sets: int = 0
    late: int = 0
    duplicate: int = 0
    superseded: int = 0
    overflow: int = 0
    incomplete: int = 0
    resets: int = 0  # backward jumps of time
    infos: int = 0  # companion messages received
    info_timeouts: int = 0  # sets released after max_wait without a matching info for some stream
    degraded: int = 0  # sets emitted with streams missing (degrade=True); also counted in sets
    missing: Counter = field(default_factory=Counter)  # stream -> incomplete sets it was missing from
    info_missing: Counter = field(default_factory=Counter)  # stream -> sets released without any info
    degraded_missing: Counter = field(default_factory=Counter)  # stream -> degraded sets it was missing from

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("received", "sets", "late", "duplicate", "superseded", "overflow",
                                          "incomplete", "resets", "infos", "info_timeouts", "degraded")}
        d["missing"] = dict(self.missing)
        d["degraded_missing"] = dict(self.degraded_missing)
        d["info_missing"] = dict(self.info_missing)
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
    on_set(SyncedSet) / on_incomplete(stamp_ns, missing streams) / on_reset(newest_ns, stamp_ns)
    / on_reject(kind "late" | "duplicate", stream, stamp_ns) are called for each event;
    ``add`` also returns the sets it completed. info_streams: streams whose sets wait for a
    companion message (``add_info``). reset_ns: backward jump that resets (default
    max(1 s, 2 max_wait)). degrade: expiring groups become degraded sets (module docstring).
    """

    def __init__(self, streams: Sequence[str], slop_ns: int, queue_size: int = 10,
                 max_wait_ns: int | None = None, reference: str | None = None,
                 on_set: Callable[[SyncedSet], None] | None = None,
                 on_incomplete: Callable[[int, tuple[str, ...]], None] | None = None,
                 info_streams: Sequence[str] | None = None, reset_ns: int | None = None,
                 on_reset: Callable[[int, int], None] | None = None,
                 on_reject: Callable[[str, str, int], None] | None = None, info_history: int = 32,
                 degrade: bool = False):
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
        self.on_reset = on_reset
        self.on_reject = on_reject
        self.reset_ns = int(reset_ns) if reset_ns is not None else max(1_000_000_000, 2 * self.max_wait_ns)
        self.info_streams = frozenset(self.index[s] for s in (info_streams or ()))
        self.info_history = int(info_history)
        self.degrade = bool(degrade)
        self.stats = SyncStats()
        self._q: list[list[_Entry]] = [[] for _ in self.streams]
        self._infos: list[list[_Entry]] = [[] for _ in self.streams]
        self._per_frame = [False] * len(self.streams)  # the previous set of the stream matched its info
        self._awaiting: list[SyncedSet] = []  # complete sets waiting for infos, in order
        self._stream_newest: list[int | None] = [None] * len(self.streams)
        self._recent: list[deque] = [deque(maxlen=16) for _ in self.streams]  # recent image stamps
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
            self._check_jump(int(stamp_ns), events)
            self._insert(self.index[stream], int(stamp_ns), item, events)
            self._step(events)
        return self._dispatch(events)

    def add_info(self, stream: str, stamp_ns: int, item: Any) -> list[SyncedSet]:
        """Offer a companion message (CameraInfo) of ``stream``; returns the sets it released."""
        if stream not in self.index:
            raise KeyError(f"unknown stream {stream!r}; streams are {self.streams}")
        i, stamp = self.index[stream], int(stamp_ns)
        events: list[tuple[str, Any]] = []
        with self._lock:
            self.stats.infos += 1
            h = self._infos[i]
            j = bisect_left(h, _Entry(stamp, None))
            if j < len(h) and h[j].stamp == stamp:
                h[j] = _Entry(stamp, item)  # same stamp again: the newer message wins
            else:
                h.insert(j, _Entry(stamp, item))
                if len(h) > self.info_history:
                    del h[0]
            if any(abs(t - stamp) <= self.slop_ns for t in self._recent[i]):
                self._per_frame[i] = True  # this camera publishes an info per image: wait for it
            self._touch(stamp)
            self._step(events)
        return self._dispatch(events)

    def flush(self) -> list[SyncedSet]:
        """Emit what can still be matched, then expire everything pending (end of input)."""
        events: list[tuple[str, Any]] = []
        with self._lock:
            self._flush(events)
        return self._dispatch(events)

    def set_timing(self, slop_ns: int, max_wait_ns: int) -> None:
        """Change slop and max_wait while running (node parameters); the backward-jump
        threshold follows max_wait as at construction. Pending images keep waiting, under the
        new limits from the next message on."""
        if slop_ns < 0 or max_wait_ns < 0:
            raise ValueError(f"slop and max_wait must be >= 0, got {slop_ns} ns, {max_wait_ns} ns")
        with self._lock:
            self.slop_ns = int(slop_ns)
            self.max_wait_ns = int(max_wait_ns)
            self.reset_ns = max(1_000_000_000, 2 * self.max_wait_ns)

    def pending(self) -> dict[str, int]:
        with self._lock:
            return {s: len(q) for s, q in zip(self.streams, self._q)}

    def awaiting_info(self) -> int:
        """Complete sets waiting for a CameraInfo."""
        with self._lock:
            return len(self._awaiting)

    # ------------------------------------------------------------------ internals
    def _step(self, events: list) -> None:
        while True:
            n = len(events)
            self._match(events, wait_for_older=True)
            self._expire(events, flush=False)
            self._release(events, flush=False)
            if len(events) == n:
                break

    def _flush(self, events: list) -> None:
        self._match(events, wait_for_older=False)
        self._expire(events, flush=True)
        self._release(events, flush=True)

    def _touch(self, stamp: int) -> None:
        if self._newest is None or stamp > self._newest:
            self._newest = stamp

    def _check_jump(self, stamp: int, events: list) -> None:
        """Time went back by more than reset_ns: flush what is pending, start afresh."""
        if self._newest is None or stamp >= self._newest - self.reset_ns:
            return
        newest = self._newest
        self._flush(events)
        self.stats.resets += 1
        for h in self._infos:  # keep the infos of the new timeline (they may precede its images)
            h[:] = [e for e in h if e.stamp <= stamp + self.slop_ns + self.max_wait_ns]
        self._per_frame = [False] * len(self.streams)
        self._stream_newest = [None] * len(self.streams)
        for r in self._recent:
            r.clear()
        self._last_set_max = None
        self._newest = None
        events.append(("reset", (newest, stamp)))

    def _insert(self, i: int, stamp: int, item: Any, events: list) -> None:
        if self._last_set_max is not None and stamp <= self._last_set_max:
            self.stats.late += 1
            events.append(("reject", ("late", self.streams[i], stamp)))
            return
        q = self._q[i]
        j = bisect_left(q, _Entry(stamp, None))
        if j < len(q) and q[j].stamp == stamp:
            self.stats.duplicate += 1
            events.append(("reject", ("duplicate", self.streams[i], stamp)))
            return
        insort(q, _Entry(stamp, item))
        self._recent[i].append(stamp)
        h = self._infos[i]
        if i in self.info_streams and h:
            j = bisect_left(h, _Entry(stamp - self.slop_ns, None))
            if j < len(h) and h[j].stamp <= stamp + self.slop_ns:
                self._per_frame[i] = True  # an info with this image's stamp: infos come per image
        self._touch(stamp)
        if self._stream_newest[i] is None or stamp > self._stream_newest[i]:
            self._stream_newest[i] = stamp
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
            # older pending messages: wait while their group may still complete (out-of-order
            # arrival, within max_wait); a group that cannot complete is an incomplete set now
            while True:
                heads = [q[0].stamp for q in self._q if q and q[0].stamp < tmin]
                if not heads:
                    break
                t_old = min(heads)
                if (wait_for_older and self._may_complete(t_old)
                        and self._newest is not None and self._newest - t_old <= self.max_wait_ns):
                    return
                self._expire_group(t_old, events, upper=tmin - 1)
            for q in self._q:
                n = bisect_left(q, _Entry(tmax + 1, None))
                self.stats.superseded += n - 1  # n >= 1: the chosen entry is among them
                del q[:n]
            self._last_set_max = tmax
            s = SyncedSet(stamp_ns=chosen[self.reference].stamp, stamps_ns=tuple(e.stamp for e in chosen),
                          items=tuple(e.item for e in chosen), seq=self._seq)
            self._seq += 1
            self.stats.sets += 1
            if self.info_streams:
                self._awaiting.append(s)
            else:
                events.append(("set", s))

    def _may_complete(self, t0: int) -> bool:
        """Can the group whose oldest message is at ``t0`` still become a complete set? Not if a
        stream without a message in [t0, t0 + slop] already sent a newer one (in-order streams)."""
        for i, q in enumerate(self._q):
            j = bisect_left(q, _Entry(t0, None))
            if j < len(q) and q[j].stamp - t0 <= self.slop_ns:
                continue
            newest = self._stream_newest[i]
            if newest is not None and newest > t0 + self.slop_ns:
                return False
        return True

    def _info_for(self, i: int, stamp: int, expired: bool) -> tuple[bool, Any, bool]:
        """(ready, info or None, matched) for stream i's image at ``stamp``."""
        h = self._infos[i]
        if not h:
            return expired, None, False
        j = bisect_left(h, _Entry(stamp, None))
        near = min((h[k] for k in (j - 1, j) if 0 <= k < len(h)), key=lambda e: abs(e.stamp - stamp))
        if abs(near.stamp - stamp) <= self.slop_ns:
            return True, near.item, True
        passed = h[-1].stamp > stamp + self.slop_ns
        return (passed or not self._per_frame[i] or expired), near.item, False

    def _release(self, events: list, flush: bool) -> None:
        """Release awaiting sets, in order, once each info stream has its info (or max_wait passed)."""
        while self._awaiting:
            s = self._awaiting[0]
            expired = flush or (self._newest is not None and self._newest - max(s.stamps_ns) > self.max_wait_ns)
            infos, matched = [], []
            for i, t in enumerate(s.stamps_ns):
                if i not in self.info_streams or s.items[i] is None:  # a missing camera needs no info
                    infos.append(None)
                    matched.append(False)
                    continue
                ready, info, m = self._info_for(i, t, expired)
                if not ready:
                    return
                infos.append(info)
                matched.append(m)
            self._awaiting.pop(0)
            timed_out = False
            for i in self.info_streams:
                if s.items[i] is None:
                    continue
                if not matched[i] and expired:
                    self._per_frame[i] = False  # stopped sending one per image: stop waiting
                if infos[i] is None:
                    self.stats.info_missing[self.streams[i]] += 1
                if not matched[i] and expired and not flush:
                    timed_out = True
            self.stats.info_timeouts += int(timed_out)
            events.append(("set", SyncedSet(s.stamp_ns, s.stamps_ns, s.items, s.seq, tuple(infos), tuple(matched),
                                            s.missing)))

    def _expire_group(self, t0: int, events: list, upper: int | None = None) -> None:
        hi = t0 + self.slop_ns if upper is None else min(upper, t0 + self.slop_ns)
        missing, chosen = [], []
        for name, q in zip(self.streams, self._q):
            n = bisect_left(q, _Entry(hi + 1, None))
            if n == 0:
                missing.append(name)
            chosen.append(q[0] if n else None)  # the group's oldest message of this stream
            if n and self.degrade:
                self.stats.superseded += n - 1  # others of the group's window: not used
            del q[:n]
        if self.degrade and len(missing) < len(self.streams):
            self._emit_degraded(chosen, tuple(missing), events)
            return
        self.stats.incomplete += 1
        for m in missing:
            self.stats.missing[m] += 1
        events.append(("incomplete", (t0, tuple(missing))))

    def _emit_degraded(self, chosen: list, missing: tuple[str, ...], events: list) -> None:
        """A degraded set of the present streams' messages (missing ones None, at the set's stamp)."""
        ref = chosen[self.reference] if chosen[self.reference] is not None else next(e for e in chosen if e is not None)
        stamps = tuple(e.stamp if e is not None else ref.stamp for e in chosen)
        self._last_set_max = max(e.stamp for e in chosen if e is not None)
        s = SyncedSet(stamp_ns=ref.stamp, stamps_ns=stamps, items=tuple(e.item if e is not None else None for e in chosen),
                      seq=self._seq, missing=missing)
        self._seq += 1
        self.stats.sets += 1
        self.stats.degraded += 1
        for m in missing:
            self.stats.degraded_missing[m] += 1
        if self.info_streams:
            self._awaiting.append(s)
        else:
            events.append(("set", s))

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
            elif kind == "incomplete":
                if self.on_incomplete is not None:
                    self.on_incomplete(*payload)
            elif kind == "reset":
                if self.on_reset is not None:
                    self.on_reset(*payload)
            elif kind == "reject" and self.on_reject is not None:
                self.on_reject(*payload)
        return sets


def _merged(stats: Sequence[SyncStats]) -> SyncStats:
    out = SyncStats()
    for s in stats:
        for k in ("received", "sets", "late", "duplicate", "superseded", "overflow", "incomplete", "resets",
                  "infos", "info_timeouts", "degraded"):
            setattr(out, k, getattr(out, k) + getattr(s, k))
        out.missing.update(s.missing)
        out.degraded_missing.update(s.degraded_missing)
        out.info_missing.update(s.info_missing)
    return out


class TimelineSynchronizer:
    """``ApproximateTimeSynchronizer`` per timeline, so that a bag played in a loop loses no set
    at a pass boundary (issue 27): the last images of one pass and the first of the next arrive
    in either order, with no gap between them.

    An image more than ``reset_ns`` behind the newest stamp starts a new timeline (counted in
    ``stats.resets``, ``on_reset(newest_ns, stamp_ns)``); the previous one stays open for its
    stragglers (an image or CameraInfo whose stamp is within ``reset_ns`` of the previous
    timeline's newest and not of the current one's) until the new timeline has advanced
    ``max_wait_ns`` past its first image, then it is flushed (its incomplete groups counted).
    CameraInfos of the new timeline that came before its first image are carried over.
    Same arguments, callbacks and counters (``stats``: all timelines together) as
    ``ApproximateTimeSynchronizer``."""

    def __init__(self, streams: Sequence[str], slop_ns: int, on_reset: Callable[[int, int], None] | None = None,
                 **kwargs: Any):
        self._kw = dict(kwargs, slop_ns=slop_ns)
        self.streams = tuple(streams)
        self.on_reset = on_reset
        self._cur = ApproximateTimeSynchronizer(self.streams, **self._kw)
        self._prev: ApproximateTimeSynchronizer | None = None
        self._first: int | None = None  # first image stamp of the current timeline (after a jump)
        self._cur_newest: int | None = None  # newest image stamp of the current timeline
        self._prev_newest: int | None = None
        self._retired: list[SyncStats] = []
        self._resets = 0
        self._lock = threading.RLock()

    # the limits, as in ApproximateTimeSynchronizer
    @property
    def slop_ns(self) -> int:
        return self._cur.slop_ns

    @property
    def max_wait_ns(self) -> int:
        return self._cur.max_wait_ns

    @property
    def reset_ns(self) -> int:
        return self._cur.reset_ns

    def set_timing(self, slop_ns: int, max_wait_ns: int) -> None:
        with self._lock:
            for s in (self._cur, self._prev):
                if s is not None:
                    s.set_timing(slop_ns, max_wait_ns)
            self._kw.update(slop_ns=int(slop_ns), max_wait_ns=int(max_wait_ns))

    # ------------------------------------------------------------------ routing
    # Timelines are told apart by image stamps only (``_cur_newest`` / ``_prev_newest``): the
    # CameraInfos carried into a new timeline may be the previous pass's.
    def _belongs_to_prev(self, stamp: int) -> bool:
        if self._prev is None or self._prev_newest is None:
            return False
        return (abs(stamp - self._prev_newest) <= self.reset_ns
                and (self._cur_newest is None or abs(stamp - self._cur_newest) > self.reset_ns))

    def _retire_prev(self) -> None:
        prev, self._prev, self._prev_newest = self._prev, None, None
        if prev is not None:
            prev.flush()  # its callbacks count what completes and what does not
            self._retired.append(prev.stats)

    def _maybe_retire_prev(self) -> None:
        if self._prev is not None and self._cur_newest is not None and self._first is not None \
                and self._cur_newest - self._first > self.max_wait_ns:
            self._retire_prev()

    def _new_timeline(self, stamp: int) -> None:
        old, newest = self._cur, self._cur_newest
        self._retire_prev()
        self._cur = ApproximateTimeSynchronizer(self.streams, **self._kw)
        # infos of the new timeline's first set may precede its first image (within the slop: a
        # later stamp would count as time passing and expire the new timeline's first images)
        keep = stamp + self._cur.slop_ns
        with old._lock:
            carried = [(self.streams[i], e.stamp, e.item) for i, h in enumerate(old._infos) for e in h
                       if e.stamp <= keep and e.stamp < newest - self.reset_ns]
        for name, t, item in carried:
            self._cur.add_info(name, t, item)
            self._cur.stats.infos -= 1  # counted once, when it came
        self._prev, self._prev_newest = old, newest
        self._first, self._cur_newest = stamp, None
        self._resets += 1
        if self.on_reset is not None:
            self.on_reset(newest, stamp)

    # ------------------------------------------------------------------ public
    def add(self, stream: str, stamp_ns: int, item: Any) -> list[SyncedSet]:
        stamp = int(stamp_ns)
        with self._lock:
            if self._belongs_to_prev(stamp):
                self._prev_newest = max(self._prev_newest, stamp)
                return self._prev.add(stream, stamp, item)
            if self._cur_newest is not None and stamp < self._cur_newest - self.reset_ns:
                self._new_timeline(stamp)
            sets = self._cur.add(stream, stamp, item)
            self._cur_newest = stamp if self._cur_newest is None else max(self._cur_newest, stamp)
            self._maybe_retire_prev()
            return sets

    def add_info(self, stream: str, stamp_ns: int, item: Any) -> list[SyncedSet]:
        stamp = int(stamp_ns)
        with self._lock:
            if self._belongs_to_prev(stamp):
                return self._prev.add_info(stream, stamp, item)
            return self._cur.add_info(stream, stamp, item)

    def flush(self) -> list[SyncedSet]:
        with self._lock:
            sets = self._prev.flush() if self._prev is not None else []
            return sets + self._cur.flush()

    def pending(self) -> dict[str, int]:
        with self._lock:
            out = self._cur.pending()
            if self._prev is not None:
                out = {k: v + self._prev.pending()[k] for k, v in out.items()}
            return out

    def awaiting_info(self) -> int:
        with self._lock:
            return self._cur.awaiting_info() + (self._prev.awaiting_info() if self._prev is not None else 0)

    @property
    def stats(self) -> SyncStats:
        with self._lock:
            live = [self._cur.stats] + ([self._prev.stats] if self._prev is not None else [])
            out = _merged(self._retired + live)
            out.resets += self._resets
            return out
