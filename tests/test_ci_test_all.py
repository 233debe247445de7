""".ci/test_all.py (what `make test` runs): every run runs, the last line is the total of all runs,
the exit code is non-zero when any run failed or produced no report.

Mutations tried (each failed here, then restored): main() returning 0 whatever the runs did; the
second run skipped after a failing first; failures of a run that left no report not counted;
the runs' temporary folder not checked (``litter`` never counted).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "test_all.py"


def _run(tmp_path, *cmds):
    argv = [sys.executable, str(SCRIPT)]
    for c in cmds:
        argv += ["--", *c]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_total_of_both_runs_and_exit_code(tmp_path):
    (tmp_path / "test_a.py").write_text("def test_1(): pass\ndef test_2(): assert False\n")
    (tmp_path / "test_b.py").write_text("import pytest\ndef test_3(): pass\n@pytest.mark.skip\ndef test_4(): pass\n")
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    r = _run(tmp_path, pytest_cmd + ["test_a.py"], pytest_cmd + ["test_b.py"])
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 1
    assert lines[-1] == "total: 2 passed, 1 failed, 1 skipped"
    assert "1 failed, 1 passed" in r.stdout and "1 passed, 1 skipped" in r.stdout  # both pytest closing lines

    r = _run(tmp_path, pytest_cmd + ["test_b.py"], pytest_cmd + ["test_b.py"])
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "total: 2 passed, 0 failed, 2 skipped"


def test_a_run_without_report_is_a_failure(tmp_path):
    (tmp_path / "test_b.py").write_text("def test_3(): pass\n")
    r = _run(tmp_path, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_b.py"],
             [str(tmp_path / "no-such-venv" / "python"), "-m", "pytest"])
    assert r.returncode == 1 and r.stdout.strip().splitlines()[-1] == "total: 1 passed, 1 failed, 0 skipped"


def test_files_left_in_the_work_tree_are_a_failure(tmp_path):
    """A test that writes into the repository (a cache, an export) fails the total. Mutation: the
    before/after comparison dropped -> exit 0 and no failure counted."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("__pycache__/\n.pytest_cache/\n")
    (tmp_path / "test_w.py").write_text("from pathlib import Path\n"
                                       "def test_w(): Path(__file__).with_name('left.onnx').write_text('x')\n")
    r = _run(tmp_path, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_w.py"])
    assert r.returncode == 1, r.stdout
    assert "left.onnx" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "total: 1 passed, 1 failed, 0 skipped"
    r = _run(tmp_path, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_w.py"])
    assert r.returncode == 0, r.stdout  # already there before this run: not this run's doing


def test_files_left_in_the_temporary_folder_are_a_failure(tmp_path):
    """What a test (or a process it starts) leaves in the temporary folder, a ``mkdtemp`` never
    removed, fails the total and is named; the runs' folder is removed afterwards; pytest's own
    ``tmp_path`` folders are not litter. Mutation: the litter check dropped -> exit 0."""
    outer = tmp_path / "outer"
    outer.mkdir()
    (tmp_path / "test_t.py").write_text(
        "import os, tempfile\n"
        "def test_t(tmp_path):\n"
        "    (tmp_path / 'kept.txt').write_text('pytest cleans this')\n"
        "    if os.environ.get('LITTER'):\n"
        "        d = tempfile.mkdtemp(prefix='left-behind-')\n"
        "        open(os.path.join(d, 'x'), 'w').close()\n"
        "    print('TMP=' + tempfile.gettempdir())\n")
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_t.py"]
    base = {k: v for k, v in os.environ.items() if k not in ("TMPDIR", "PYTEST_DEBUG_TEMPROOT")}
    argv = [sys.executable, str(SCRIPT), "--", *cmd]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env=dict(base, LITTER="1", PYTEST_DEBUG_TEMPROOT=str(outer)))
    assert r.returncode == 1, r.stdout
    assert "left 1 item(s) in their temporary folder" in r.stdout and "left-behind-" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "total: 1 passed, 1 failed, 0 skipped"
    run_tmp = next(line[4:] for line in r.stdout.splitlines() if line.startswith("TMP="))
    assert not os.path.exists(run_tmp)  # the runs' folder is gone, litter and all
    assert list(outer.glob("pytest-of-*/pytest-*/test_t0/kept.txt"))  # pytest's folders stay pytest's
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env=dict(base, PYTEST_DEBUG_TEMPROOT=str(outer)))
    assert r.returncode == 0, r.stdout
