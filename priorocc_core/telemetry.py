"""Third-party usage telemetry stays off unless the user turned it on.

onnxruntime (1.32) starts Microsoft's 1DS telemetry on import: a session file ``.ses`` in
``$TMPDIR``, a device id and an event database under ``~/.cache/Microsoft/DeveloperTools``, and
an uploader; NNCF sends Google Analytics events for ``nncf.quantize`` through openvino-telemetry.
A perception node on a robot, a training job and the test suite should not do either on their
own, so every PriorOcc entry that imports them calls :func:`keep_third_party_quiet` first. It
only sets what the user has not set: ``ORT_DISABLE_TELEMETRY=0`` (onnxruntime) or an empty
``NNCF_CI`` (NNCF's switch that turns its telemetry into a stub) turns them back on.

Not covered: OpenVINO's model converter (``openvino.convert_model``, the openvino backend's
``source="torch"``, not the default) reports conversions through openvino-telemetry, whose only
switches are the user's opt-out file (``opt_in_out --opt_out``, in ~/intel) and ``CI=true``;
PriorOcc changes neither for the user (tests/test_backends.py sets ``CI`` for its conversion).
"""
from __future__ import annotations

import os

DEFAULTS = {"ORT_DISABLE_TELEMETRY": "1", "NNCF_CI": "1"}


def keep_third_party_quiet() -> None:
    """Set :data:`DEFAULTS` in this process's environment where unset (before the first import of
    onnxruntime / nncf; child processes inherit them)."""
    for k, v in DEFAULTS.items():
        os.environ.setdefault(k, v)
