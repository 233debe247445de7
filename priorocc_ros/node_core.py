"""The occupancy node's behaviour, written once over ``transport.base.Transport``.

``OccupancyNodeCore(transport)`` declares the parameters (``params.SPECS``), then wires the
node's parts (``priorocc_ros.node``) in the order data flows, as the ros2/examples nodes do:

    inputs (subscriptions + synchroniser) -> calibration -> stages (runner: decode, inference,
    messages; the temporal history between sets) -> publishers;  counters + diagnostics
    (/diagnostics) read by everyone

``occupancy_node.py`` runs it over rclpy or Cyclone DDS; tests and the offline replay run it
over the loopback transport. All message objects are rosbags-style (``priorocc_ros.msgs``).
The counters and their invariant are described in ``node/diagnostics.py``; at shutdown
(``close``) nothing is in progress: pending groups are flushed and counted.
"""
from __future__ import annotations

import gc
import threading
from typing import Any

from priorocc_ros.node.calibration import CalibrationSource
from priorocc_ros.node.counters import LatencyWindow, NodeCounters
from priorocc_ros.node.diagnostics import DIAG_NAME, ERROR, OK, STALE, WARN, NodeDiagnostics
from priorocc_ros.node.inputs import IMAGE_TYPES, INFO_TYPE, TF_TYPE, InputSubscriptions
from priorocc_ros.node.publishers import OutputPublishers
from priorocc_ros.node.stages import SetStages
from priorocc_ros.node.temporal import TemporalHistory
from priorocc_ros.params import (PARAMETERS, SPECS, ParameterError, camera_names, check_value, fill_pattern,
                                 input_topics, model_cameras, set_refusal, unknown_parameter_errors)
from priorocc_ros.pipeline import OccupancyPipeline, PipelineOptions
from priorocc_ros.transport.base import Transport

__all__ = ["OccupancyNodeCore", "ParameterError", "LatencyWindow", "PARAMETERS", "IMAGE_TYPES", "INFO_TYPE",
           "TF_TYPE", "DIAG_NAME", "OK", "WARN", "ERROR", "STALE", "input_topics", "fill_pattern", "camera_names"]


def pipeline_options(p: dict[str, Any]) -> PipelineOptions:
    """The pipeline's options from the parameters (one object, shared by the parts that read it)."""
    return PipelineOptions(
        frame_id=p["base_frame"], publish_voxels=bool(p["publish_voxels"]),
        publish_markers=bool(p["publish_markers"]), publish_bev=bool(p["publish_bev"]),
        publish_overlay=bool(p["publish_overlay"]), overlay_alpha=float(p["overlay_alpha"]),
        overlay_scale=float(p["overlay_scale"]), bev_unknown_from_cameras=bool(p["bev_unknown_from_cameras"]),
        jpeg_reduce=int(p["jpeg_reduce"]), max_image_pixels=int(p["max_image_pixels"]))


def load_predictor(p: dict[str, Any], predictor: Any | None, cameras: tuple[str, ...]) -> Any:
    """The injected ``predictor`` or the one of parameter checkpoint (backend, precision, device),
    checked against the cameras parameter and set to the preprocess parameter."""
    if p["preprocess"] not in ("exact", "fast"):
        raise ParameterError(f"parameter 'preprocess' must be 'exact' or 'fast', got {p['preprocess']!r}")
    if predictor is None:
        if not p["checkpoint"]:
            raise ParameterError("parameter 'checkpoint' is required (a checkpoint directory)")
        from priorocc_core.backends import make_predictor
        from priorocc_core.jpeg import preprocess_mode

        # the mode too: an int8 IR runs (or auto picks it) only with a preprocessing its record validates
        predictor = make_predictor(p["checkpoint"], backend=p["backend"], precision=p["precision"],
                                   device=p["device"], preprocess=preprocess_mode(p["preprocess"], p["jpeg_reduce"]))
    pc = getattr(predictor, "cameras", None)
    if pc is not None and tuple(pc) != cameras:
        raise ParameterError(f"parameter cameras={list(cameras)} must be the model's cameras in its order "
                             f"{list(pc)}; map your recording's camera names with camera_names (docs/ros.md)")
    predictor.fused_resize = p["preprocess"] == "fast"
    return predictor


class OccupancyNodeCore:
    """The node. ``predictor`` may be injected (tests); otherwise it is loaded from the
    ``checkpoint`` parameter with priorocc_core.backends.make_predictor."""

    def __init__(self, transport: Transport, predictor: Any | None = None,
                 parameters: dict[str, Any] | None = None, block: bool = False, latency_window: int = 1000):
        """parameters: defaults overriding PARAMETERS (the transport's user values still win).
        block: the synchroniser waits for the runner instead of dropping sets (offline replay).
        latency_window: samples kept per latency stage. ParameterError for unusable parameters."""
        self.t = transport
        self.log = transport.logger
        self._stopping = threading.Event()
        stopping = self._stopping.is_set

        # parameters: unknown names (a typo) and unusable values are errors naming the parameter
        unknown = unknown_parameter_errors(set(parameters or {}) | transport.user_parameter_names())
        if unknown:
            raise ParameterError("; ".join(unknown))
        defaults = dict(PARAMETERS)
        defaults.update(parameters or {})
        self.p = p = {k: transport.declare_parameter(k, v, SPECS[k]) for k, v in defaults.items()}
        bad = [r for r in (check_value(k, v) for k, v in p.items()) if r]
        if bad:
            raise ParameterError("; ".join(bad))
        # the model's cameras: the parameter, else the injected predictor's or the checkpoint's
        self.cameras = model_cameras(p, predictor)
        p["cameras"] = list(self.cameras)
        raw_topics = input_topics(p)  # ParameterError before anything heavy
        if p["input_reliability"] not in ("auto", "best_effort", "reliable"):
            raise ParameterError(f"parameter 'input_reliability' must be auto, best_effort or reliable, "
                                 f"got {p['input_reliability']!r}")
        topics = {cam: (transport.resolve_topic(it), transport.resolve_topic(ct)) for cam, (it, ct) in raw_topics.items()}

        # the model and what runs it
        predictor = load_predictor(p, predictor, self.cameras)
        choice = getattr(predictor, "choice", None)
        # what runs and why, for the log and /diagnostics (injected test predictors may have none)
        self.backend_info = choice.as_dict() if choice is not None else {"backend": "injected"}
        if p["checkpoint"]:
            self.log.info(f"loaded checkpoint {p['checkpoint']}: " +
                          ", ".join(f"{k} {v}" for k, v in self.backend_info.items()))
        self.opts = pipeline_options(p)
        self.pipeline = OccupancyPipeline(predictor, self.cameras, self.opts)

        # the parts, in the order data flows
        self.counters = NodeCounters(self.log, latency_window)
        self.calibration = CalibrationSource(self.cameras, {c: ct for c, (_, ct) in topics.items()},
                                             p["calibration_file"], self.opts.frame_id, self.counters, self.log)
        self.history = TemporalHistory(self.pipeline.temporal, p, self.calibration.tf, self.counters, self.log)
        self.outputs = OutputPublishers(transport, self.cameras, self.opts)
        self.stages = SetStages(self.pipeline, self.calibration, self.outputs, self.counters, p, block,
                                transport.now_ns, stopping, self.history)
        self.inputs = InputSubscriptions(transport, self.cameras, topics, p, self.opts, self.calibration,
                                         self.counters, self.stages.submit, stopping, on_lost=self.history.lost)
        self.diagnostics = NodeDiagnostics(transport, self.counters, self.inputs, self.stages.runner,
                                           self.backend_info, stopping)
        self._diag_timer = transport.create_timer(float(p["diagnostics_period"]), self.publish_diagnostics)
        self.live_parameters = transport.on_set_parameters(self.set_parameters)

        # Move the long-lived heap (torch, the model, message classes) out of the garbage
        # collector's reach: building a MarkerArray allocates ~10^5 small objects per set, and
        # full collections over the model's heap made that 5x slower (measured, see docs/ros.md).
        gc.collect()
        gc.freeze()
        self.log.info(f"subscribed to {len(self.cameras)} cameras ({self.inputs.image_type.split('/')[-1]}: "
                      f"{', '.join(self.input_topics.values())}), slop {p['slop']} s; "
                      f"publishing {sorted(self.outputs.pubs)} in frame {self.opts.frame_id}")

    # ------------------------------------------------------------------ live parameters
    def set_parameters(self, changes: dict[str, Any]) -> str | None:
        """A live change (``ros2 param set``): None when every change of this node's parameters
        is applied, else the reason none is (read-only, out of range, wrong type). Names that
        are not this node's (use_sim_time: rclpy's own) are left to the middleware."""
        mine = {k: v for k, v in changes.items() if k in SPECS}
        for k, v in mine.items():
            reason = set_refusal(k, v)
            if reason is not None:
                self.log.warning(f"refused: {reason}")
                return reason
        for k, v in mine.items():
            old, self.p[k] = self.p[k], v
            self._apply(k, v)
            self.log.info(f"parameter {k}: {old!r} -> {v!r} (applied)")
        return None

    def _apply(self, name: str, value: Any) -> None:
        """Hand a live parameter's new value (already in ``self.p``) to the part that uses it."""
        if name in ("publish_voxels", "publish_markers", "publish_bev", "publish_overlay"):
            setattr(self.opts, name, bool(value))
            self.outputs.refresh()
        elif name in ("overlay_alpha", "overlay_scale", "max_image_pixels", "bev_unknown_from_cameras"):
            setattr(self.opts, name, type(getattr(self.opts, name))(value))
        elif name in ("slop", "max_wait"):
            self.inputs.sync.set_timing(int(float(self.p["slop"]) * 1e9), int(float(self.p["max_wait"]) * 1e9))
        elif name == "diagnostics_period":
            old, self._diag_timer = self._diag_timer, self.t.create_timer(float(value), self.publish_diagnostics)
            old.cancel()
        # calibration_wait: read by the stages at every set

    # ------------------------------------------------------------------ what the parts hold
    @property
    def runner(self):
        return self.stages.runner

    @property
    def latency(self) -> LatencyWindow:
        return self.counters.latency

    @property
    def last_error(self) -> str:
        return self.counters.snapshot()[2]

    @property
    def sync(self):
        return self.inputs.sync

    @property
    def input_topics(self) -> dict[str, str]:
        return self.inputs.input_topics

    @property
    def info_topics(self) -> dict[str, str]:
        return self.inputs.info_topics

    @property
    def image_type(self) -> str:
        return self.inputs.image_type

    # ------------------------------------------------------------------ public hooks (replay, tools, tests)
    def subscribed_topics(self) -> dict[str, str]:
        """{resolved input topic: type} the node subscribes to."""
        return self.inputs.subscribed_topics()

    def published_topics(self) -> dict[str, str]:
        """{resolved output topic: type}, /diagnostics included."""
        out = self.outputs.published_topics()
        out[self.t.resolve_topic("/diagnostics")] = "diagnostic_msgs/msg/DiagnosticArray"
        return out

    def calibration_for(self, s) -> tuple:
        """(N, 3, 3) K, (N, 4, 4) cam2ego and expected (h, w) per camera of a set."""
        return self.calibration.for_set(s, self.p["max_wait"])

    def adapt_input_reliability(self, wait: bool = False) -> None:
        self.inputs.adapt_reliability(wait)

    def check_input_types(self) -> dict[str, str]:
        return self.inputs.check_types()

    def stats(self) -> dict[str, Any]:
        return self.diagnostics.stats()

    def publish_diagnostics(self) -> None:
        self.diagnostics.publish()

    def flush(self) -> None:
        """End of input: sets that can still complete go to inference, the rest are counted
        incomplete (the synchroniser's callbacks do both)."""
        self.inputs.sync.flush()

    # ------------------------------------------------------------------ lifecycle
    def wait_idle(self, timeout: float | None = None) -> bool:
        return self.runner.wait_idle(timeout)

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Flush the synchroniser (complete sets go to inference, the rest are counted
        incomplete), stop inference (processing what is queued when ``drain``, else counting it
        dropped; a set still running after ``timeout`` s is counted dropped) and publish the
        final diagnostics: nothing is left uncounted."""
        if self._stopping.is_set():
            return
        try:
            self.flush()
        except Exception as e:  # noqa: BLE001
            self.log.error(f"flushing the synchroniser failed: {e}")
        self._stopping.set()
        self.inputs.join(5.0)  # no subscription is made after close
        self.runner.stop(drain=drain, timeout=timeout)
        self.publish_diagnostics()
        st = self.stats()
        if st["unaccounted"]:
            self.log.error(f"counters do not add up at shutdown: {st['invariant']}")
