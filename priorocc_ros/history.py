"""The temporal history across image sets: when a set may use the previous sets' features.

A temporal model (``model.temporal.num_adj > 0``) fuses the current set's BEV features with those
of the previous sets, warped by the ego motion between them. The model's history is an explicit
value (priorocc_core's ``BEVHistory``); this module decides, per set, whether the history the
node holds may be used, or must be reset first, and why:

    state = HistoryState()                                     # nothing yet
    decision = admit(state, SetMotion(stamp_ns, seq, ego2motion), policy)
    history_in = decision.history                              # None: run the set single-frame / fresh
    ... run the model with history_in -> history_out ...
    state = remember(decision.state, history_out, stamp_ns, seq)

Reset reasons (counted by the node in /diagnostics ``history_resets``):

- ``no_odometry``: no ``motion_frame -> base_frame`` transform at the set's stamp (after waiting
  up to ``max_wait``); the set runs with a fresh history, and the next set starts from it.
- ``bad_odometry``: the transform exists but is unusable (non-finite, not a rigid transform).
- ``time_jump_back``: the set is not newer than the last one (a bag loop, a restart).
- ``gap``: more than ``max_gap_s`` seconds since the last set.
- ``dropped_set``: a set between the last one and this one was lost (its sequence number skipped:
  dropped by the runner or failed before inference; or an incomplete image group in between), so
  the history would skip a frame that the model was trained to see.

The first set after start is not a reset (there was nothing to reset). A set without usable
odometry runs afresh and leaves no history behind (its pose is unknown, so the next set could not
be aligned to it): the node calls ``forget`` after it, as after a failed set. Everything is a value: no
module state; the node keeps one ``HistoryState`` and replaces it after each set.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from priorocc_core.model.temporal import TemporalError, check_pose

RESET_REASONS = ("no_odometry", "bad_odometry", "time_jump_back", "gap", "dropped_set")


@dataclass(frozen=True)
class HistoryPolicy:
    max_gap_s: float = 1.0  # history_max_gap: seconds between sets beyond which the history is dropped
    enabled: bool = True  # temporal:=off runs every set single-frame


@dataclass(frozen=True)
class SetMotion:
    """Where the ego was when a set was taken: its stamp, its sequence number (consecutive for
    consecutive sets), and ``ego2motion`` (4, 4), the base frame in the fixed motion frame
    (``odom`` / ``map``), or None with ``error`` saying why there is none."""

    stamp_ns: int
    seq: int
    ego2motion: np.ndarray | None
    error: str | None = None
    lost: int = 0  # image groups lost (incomplete) since the last set that fed the history


@dataclass(frozen=True)
class HistoryState:
    """What the node carries from set to set: the model's history value (opaque here), and the
    stamp and sequence number of the last set that fed it."""

    history: Any = None
    last_stamp_ns: int | None = None
    last_seq: int | None = None


@dataclass(frozen=True)
class Decision:
    history: Any  # the history the set may use (None: start afresh)
    reset: str | None  # the reason the held history was dropped, None when kept (or nothing was held)
    detail: str = ""  # one line for the log
    state: HistoryState = HistoryState()


def valid_pose(m: np.ndarray | None) -> str | None:
    """None when ``m`` is a usable rigid (4, 4) transform, else why not: the model's own pose check
    (priorocc_core's ``check_pose``, one definition of a usable key-ego pose)."""
    if m is None:
        return "no transform"
    m = np.asarray(m, dtype=np.float64)
    try:
        check_pose(torch.from_numpy(m).reshape(1, *m.shape), "ego2motion", 1)
    except TemporalError as e:
        return str(e)
    return None


def admit(state: HistoryState, motion: SetMotion, policy: HistoryPolicy) -> Decision:
    """Decide whether the set ``motion`` may use ``state.history``; returns the decision and the
    state to run the set with (a reset clears the held history, keeps nothing of it)."""
    held = state.history is not None
    fresh = HistoryState(None, state.last_stamp_ns, state.last_seq)
    if not policy.enabled:
        return Decision(None, None, "temporal fusion off", fresh)

    def reset(reason: str, detail: str) -> Decision:
        return Decision(None, reason if held else None, detail, fresh)

    if motion.ego2motion is None:
        return reset("no_odometry", motion.error or "no odometry at the set's stamp")
    why = valid_pose(motion.ego2motion)
    if why is not None:
        return reset("bad_odometry", f"odometry at the set's stamp unusable: {why}")
    if state.last_stamp_ns is not None and motion.stamp_ns <= state.last_stamp_ns:
        return reset("time_jump_back", f"set stamp {motion.stamp_ns} ns is not after the last "
                                       f"{state.last_stamp_ns} ns (bag loop or restart)")
    if state.last_stamp_ns is not None and motion.stamp_ns - state.last_stamp_ns > policy.max_gap_s * 1e9:
        return reset("gap", f"{(motion.stamp_ns - state.last_stamp_ns) / 1e9:.3f} s since the last set "
                            f"(history_max_gap {policy.max_gap_s} s)")
    if motion.lost:
        return reset("dropped_set", f"{motion.lost} incomplete image group(s) since the last set")
    if state.last_seq is not None and motion.seq != state.last_seq + 1:
        return reset("dropped_set", f"set {motion.seq} follows set {state.last_seq}: "
                                    f"{motion.seq - state.last_seq - 1} set(s) lost in between")
    return Decision(state.history, None, "", state)


def remember(state: HistoryState, history: Any, stamp_ns: int, seq: int) -> HistoryState:
    """The state after a set ran: its output history, stamp and sequence number."""
    return replace(state, history=history, last_stamp_ns=int(stamp_ns), last_seq=int(seq))


def forget(state: HistoryState, stamp_ns: int, seq: int) -> HistoryState:
    """The state after a set that produced no history (it failed): the next set must start afresh."""
    return HistoryState(None, int(stamp_ns), int(seq))
