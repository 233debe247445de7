"""The node's counters as one dict (``stats``) and as /diagnostics (``publish``): level OK, WARN
when a loss counter grew since the last message, ERROR when the counters do not add up or the
image topics carry another type.

Counters (keys in /diagnostics):
  sets_in      complete sets from the synchroniser
  sets_out     sets whose outputs were published
  sets_dropped stale sets replaced by newer ones (runner)
  sets_failed  sets that raised (decode, calibration, size, inference), per kind in errors_<kind>
  incomplete_sets  groups of images that never formed a complete set (a camera missing,
               missing_camera:=wait)
  degraded_sets  sets run with cameras missing (missing_camera:=degrade); part of sets_in and
               then of out / dropped / failed; per camera degraded_without_<CAM>; silent_cameras
               names the cameras missing from the last set (WARN while degraded sets grow)
  groups_in    every group the synchroniser closed (complete or incomplete)
  in_progress  sets queued for or inside one of the three stages
  calibration_changes  a camera had another calibration than in its previous set (the
               new one is used; per camera calibration_changes_<CAM>)
  Invariant (checked, as ``invariant`` / ``unaccounted``):
      groups_in = sets_out + sets_dropped + sets_failed + incomplete_sets + in_progress
"""
from __future__ import annotations

from typing import Any, Callable

from priorocc_ros import outputs
from priorocc_ros.msgs import header as make_header
from priorocc_ros.node.counters import NodeCounters
from priorocc_ros.node.inputs import InputSubscriptions
from priorocc_ros.runner import InferenceRunner
from priorocc_ros.transport.base import RELIABLE_QOS, Transport

DIAG_NAME = "priorocc: occupancy"
DIAG_TYPE = "diagnostic_msgs/msg/DiagnosticArray"
# DiagnosticStatus levels
OK, WARN, ERROR, STALE = 0, 1, 2, 3
# counters that, when they grow, mean inputs are being dropped (diagnostics go WARN)
LOSS_KEYS = ("sets_dropped", "sets_failed", "incomplete_sets", "degraded_sets", "images_rejected", "camera_info_invalid",
             "tf_rejected", "late_messages", "duplicate_messages", "time_resets", "camera_info_timeouts")
STAT_KEYS = ("sets_in", "sets_out", "sets_dropped", "sets_failed", "incomplete_sets", "degraded_sets", "images_received",
             "images_rejected", "camera_info_invalid", "tf_rejected", "time_resets", "input_qos_switches",
             "history_resets", "odometry_missing", "odometry_invalid")


class NodeDiagnostics:
    """extra: what runs and why (backend choice), added to every message. The header's
    frame_id is empty, as diagnostic_updater leaves it (diagnostics belong to no frame)."""

    def __init__(self, transport: Transport, counters: NodeCounters, inputs: InputSubscriptions,
                 runner: InferenceRunner, extra: dict[str, Any], stopping: Callable[[], bool]):
        self.t = transport
        self.log = transport.logger
        self.counters = counters
        self.inputs = inputs
        self.runner = runner
        self.extra = extra
        self.stopping = stopping
        self._prev: dict[str, int] = {}
        self.pub = transport.create_publisher(DIAG_TYPE, "/diagnostics", RELIABLE_QOS)

    def stats(self) -> dict[str, Any]:
        c, errs, last_error, times = self.counters.snapshot()
        d: dict[str, Any] = {k: c.get(k, 0) for k in STAT_KEYS}
        rel = self.inputs.reliabilities()
        d["inputs_reliable"] = f"{rel['reliable']}/{sum(rel.values())}"
        sync = self.inputs.sync
        st = sync.stats
        d.update(late_messages=st.late, duplicate_messages=st.duplicate,
                 superseded_messages=st.superseded, sync_overflow=st.overflow,
                 sets_awaiting_camera_info=sync.awaiting_info(), camera_info_timeouts=st.info_timeouts)
        for k, v in c.items():  # temporal models: history resets by reason; degraded sets per camera
            if k.startswith(("history_resets_", "degraded_without_", "calibration_changes")):
                d[k] = v
        d["silent_cameras"] = ",".join(c for c in self.inputs.cameras if c in self.inputs.silent)
        for k, v in errs.items():
            d[f"errors_{k}"] = v
        for k, v in self.t.error_counts().items():
            d[f"transport_{k}"] = v
        in_progress = self.runner.in_progress()
        d["in_progress"] = in_progress
        d["groups_in"] = st.sets + st.incomplete
        d["unaccounted"] = d["groups_in"] - (d["sets_out"] + d["sets_dropped"] + d["sets_failed"]
                                             + d["incomplete_sets"] + in_progress)
        d["invariant"] = (f"groups_in {d['groups_in']} = out {d['sets_out']} + dropped {d['sets_dropped']} + "
                          f"failed {d['sets_failed']} + incomplete {d['incomplete_sets']} + in_progress {in_progress}")
        d["rate_hz"] = (len(times) - 1) / (times[-1] - times[0]) if len(times) >= 2 and times[-1] > times[0] else 0.0
        d["runner_dropped"] = self.runner.stats.dropped
        for k, v in dict(getattr(self.t, "stats", {})).items():  # samples not decoded, callbacks that raised
            d[f"transport_{k}"] = v
        for stage, ps in self.counters.latency.percentiles().items():
            for q, v in ps.items():
                if q != "n":
                    d[f"latency_{stage}_{q}_ms"] = v * 1e3
        d["last_error"] = last_error
        return d

    def publish(self) -> None:
        """One /diagnostics message (and, first, the input checks that run at its period)."""
        self.inputs.adapt_reliability()
        problems = self.inputs.check_types()
        st = self.stats()
        loss = {k: st[k] for k in LOSS_KEYS}
        loss.update({k: v for k, v in st.items() if k.startswith("transport_")})
        grew = {k: v - self._prev.get(k, 0) for k, v in loss.items() if v > self._prev.get(k, 0)}
        self._prev = loss
        level, msg = OK, f"ok: {st['sets_out']}/{st['sets_in']} sets published"
        if st["sets_in"] == 0:
            level, msg = WARN, "waiting for complete image sets"
        if grew:
            level = WARN
            if st["silent_cameras"]:
                grew.pop("degraded_sets", None)
                msg_silent = f"camera(s) silent: {st['silent_cameras']} (sets degraded); "
            else:
                msg_silent = ""
            msg = (msg_silent + (f"dropping inputs: " + ", ".join(f"{k} +{v}" for k, v in sorted(grew.items()))
                                 + "; " if grew else "") + f"{st['sets_out']}/{st['sets_in']} sets published")
        if st["unaccounted"] and st["in_progress"] == 0 and self.runner.idle():
            level, msg = ERROR, f"counters do not add up: {st['invariant']}"
        if problems:
            level, msg = ERROR, "no images: " + next(iter(problems.values()))
            st["input_type_problems"] = "; ".join(f"{c}: {v}" for c, v in problems.items())
        diag = outputs.diagnostics(make_header(self.t.now_ns(), ""), DIAG_NAME, self.t.name,
                                   level, msg, {**self.extra, **st})
        try:
            self.pub.publish(diag)
        except Exception as e:  # noqa: BLE001 - diagnostics must never take the node down
            self.log.error(f"publishing diagnostics failed: {e}")
