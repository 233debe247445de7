"""Ego motion from TF: where the base frame was, in a fixed frame, at an image set's stamp.

REP 105: a robot publishes ``odom -> base_link`` (continuous, drifts slowly) on ``/tf``; a
nuScenes bag (``nuscenes_to_bag``) has ``map -> base_link``, the ego pose of every camera sample.
The temporal model needs the transform between the key ego of two sets, which is
``inv(ego2motion(t)) @ ego2motion(t-1)`` in any fixed frame: ``motion_frame`` (parameter) is
that frame. Lookups follow tf2: interpolated between the samples around the stamp, never
extrapolated; a stamp newer than every sample may still be answered by a sample in flight (the
caller waits up to ``max_wait``), one older than the buffer never will.
"""
from __future__ import annotations

from dataclasses import dataclass


from priorocc_ros.calibration import CalibrationError, TfBuffer
from priorocc_ros.history import SetMotion, valid_pose


@dataclass(frozen=True)
class OdometrySource:
    motion_frame: str = "odom"  # fixed frame (odom on a robot, map for nuScenes bags)
    base_frame: str = "base_link"
    max_interval_ns: int = 1_000_000_000  # two samples further apart than this are not interpolated

    def lookup(self, tf: TfBuffer, stamp_ns: int, seq: int) -> tuple[SetMotion, bool]:
        """(the set's motion, whether a sample may still arrive that answers it). A failed lookup
        gives ``ego2motion`` None and one line naming the frames and the stamp."""
        try:
            m = tf.lookup(self.motion_frame, self.base_frame, stamp_ns, self.max_interval_ns, interpolate=True)
        except CalibrationError as e:
            newest = tf.newest_stamp()
            pending = newest is None or newest < stamp_ns
            where = (f"no odometry {self.motion_frame!r} -> {self.base_frame!r} at {stamp_ns} ns "
                     f"(newest /tf sample {newest} ns): {e}")
            return SetMotion(stamp_ns, seq, None, where), pending
        why = valid_pose(m)
        if why is not None:
            return SetMotion(stamp_ns, seq, m, f"odometry at {stamp_ns} ns: {why}"), False
        return SetMotion(stamp_ns, seq, m), False
