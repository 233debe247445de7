"""Third-party telemetry stays off (priorocc_core.telemetry): importing onnxruntime the way
PriorOcc does writes no session file in $TMPDIR and nothing under $HOME, and NNCF's telemetry is
its stub; a user's own setting wins.

Mutation tried: ``ORT_DISABLE_TELEMETRY`` dropped from ``telemetry.DEFAULTS`` -> the first test
finds ``.ses`` and ``.cache/Microsoft``; ``NNCF_CI`` dropped -> the second finds NNCF's real
telemetry object.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from priorocc_core.telemetry import DEFAULTS

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, tmp_path: Path, **extra) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter without pytest, the telemetry variables unset, TMPDIR and HOME empty folders."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    (tmp_path / "home").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and k != "XDG_CACHE_HOME"}
    env.update(TMPDIR=str(tmp_path / "tmp"), HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT), **extra)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def test_onnxruntime_through_priorocc_leaves_no_telemetry_files(tmp_path):
    # backends._ort_session: what the onnxruntime backend runs (quiet first, then import; the file is absent)
    code = ("from priorocc_core.backends import _ort_session\n"
            "try:\n    _ort_session('no-such.onnx', 'cpu', 1)\nexcept Exception as e:\n    print('raised', type(e).__name__)\n"
            "import sys; assert 'onnxruntime' in sys.modules\n")
    r = _run(code, tmp_path)
    assert r.returncode == 0 and "raised" in r.stdout, r.stdout + r.stderr
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == [], left


def test_nncf_telemetry_is_its_stub_and_a_users_setting_wins(tmp_path):
    code = ("from priorocc_core.telemetry import keep_third_party_quiet\nkeep_third_party_quiet()\n"
            "import os\nfrom unittest.mock import MagicMock\nfrom nncf.telemetry import wrapper\n"
            "print('stub' if isinstance(wrapper.telemetry, MagicMock) else 'live', os.environ['ORT_DISABLE_TELEMETRY'])\n")
    r = _run(code, tmp_path)
    assert r.returncode == 0 and r.stdout.split() == ["stub", "1"], r.stdout + r.stderr
    r = _run(code.replace("import nncf", ""), tmp_path, ORT_DISABLE_TELEMETRY="0")
    assert r.returncode == 0 and r.stdout.split()[-1] == "0", r.stdout + r.stderr
