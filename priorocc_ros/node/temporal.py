"""The node's temporal history part: odometry per set, the reset policy, the history value.

For a temporal model (``model.temporal.num_adj > 0``) each set runs with the history of the
previous sets (``priorocc_core``'s ``BEVHistory``, explicit state returned by every prediction)
and the key-ego pose from TF (``motion_frame -> base_frame`` at the set's stamp,
``priorocc_ros/odometry.py``). When the history may be used is ``priorocc_ros/history.py``'s
policy; every reset is counted by reason (``history_resets_<reason>`` and ``history_resets`` in
/diagnostics), with a WARN line the first time a reason occurs and an info line after.

Threads: ``motion`` runs in the decode stage (it may wait for odometry in flight), ``lost`` in
the synchroniser's (an incomplete group), ``admit`` / ``done`` in the inference stage, which
handles sets one at a time in their order: set k+1 always sees set k's history.
A single-frame model (or ``temporal:=off``) gets ``history None`` and no pose: as before.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from priorocc_ros.calibration import TfBuffer
from priorocc_ros.history import Decision, HistoryPolicy, HistoryState, SetMotion, admit, forget, remember
from priorocc_ros.node.counters import NodeCounters
from priorocc_ros.odometry import OdometrySource


class TemporalHistory:
    """p: the node's parameters (temporal, motion_frame, base_frame read at construction;
    history_max_gap and max_wait live). model_temporal: whether the model fuses past frames."""

    def __init__(self, model_temporal: bool, p: dict[str, Any], tf: TfBuffer, counters: NodeCounters, log):
        self.p = p
        self.tf = tf
        self.counters = counters
        self.log = log
        mode = str(p["temporal"])
        self.enabled = model_temporal and mode != "off"
        if mode == "on" and not model_temporal:
            log.warning("temporal:=on, but the model is single-frame (model.temporal.num_adj 0): running single-frame")
        self.odometry = OdometrySource(str(p["motion_frame"]), str(p["base_frame"]))
        self.state = HistoryState()  # replaced after every set, by the inference stage only
        self._lock = threading.Lock()
        self._lost: list[int] = []  # stamps of incomplete groups not yet passed by a set
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ decode stage
    def motion(self, stamp_ns: int, seq: int, stop: Callable[[], bool]) -> SetMotion | None:
        """The set's key-ego pose, waiting up to ``max_wait`` for odometry still on its way; None
        for single-frame runs."""
        if not self.enabled:
            return None
        deadline = time.monotonic() + float(self.p["max_wait"])
        while True:
            m, pending = self.odometry.lookup(self.tf, stamp_ns, seq)
            if m.ego2motion is not None or not pending or time.monotonic() >= deadline or stop():
                break
            time.sleep(0.01)
        with self._lock:
            lost = sum(1 for t in self._lost if t < stamp_ns)
            self._lost = [t for t in self._lost if t >= stamp_ns]
        return SetMotion(m.stamp_ns, m.seq, m.ego2motion, m.error, lost)

    # ------------------------------------------------------------------ synchroniser
    def lost(self, stamp_ns: int) -> None:
        """An image group at ``stamp_ns`` never became a set (incomplete)."""
        if self.enabled:
            with self._lock:
                self._lost.append(int(stamp_ns))

    # ------------------------------------------------------------------ inference stage
    def admit(self, motion: SetMotion | None) -> Decision | None:
        """The history this set may use (counting a reset); None for single-frame runs."""
        if motion is None:
            return None
        d = admit(self.state, motion, HistoryPolicy(float(self.p["history_max_gap"]), True))
        if motion.error is not None:  # the set runs afresh and leaves no history: counted either way
            key = "odometry_missing" if motion.ego2motion is None else "odometry_invalid"
            self.counters.count(key)
            self._log_once(key, f"temporal: {motion.error}; the set runs without history "
                                f"(counted in /diagnostics {key})")
        if d.reset is not None:
            self.counters.count("history_resets")
            self.counters.count(f"history_resets_{d.reset}")
            self._log_once(d.reset, f"temporal history reset ({d.reset}): {d.detail} "
                                    f"(counted in /diagnostics history_resets)")
        self.state = d.state
        return d

    def _log_once(self, key: str, line: str) -> None:
        """WARN the first time ``key`` happens, info after (the counters carry the number)."""
        if key not in self._warned:
            self._warned.add(key)
            self.log.warning(line)
        else:
            self.log.info(line)

    def done(self, motion: SetMotion | None, history: Any) -> None:
        """After the set's inference: keep its history (None: it failed, or had no pose)."""
        if motion is None:
            return
        if history is None or motion.ego2motion is None or motion.error is not None:
            self.state = forget(self.state, motion.stamp_ns, motion.seq)
        else:
            self.state = remember(self.state, history, motion.stamp_ns, motion.seq)
