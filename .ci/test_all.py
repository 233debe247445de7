"""Run several pytest commands one after the other and close with their total.

    python .ci/test_all.py -- CMD1 ... -- CMD2 ...

Every command runs (with ``--junitxml`` added), whatever the others did; each prints its own pytest
closing line. The last line is the total over all runs, ``total: N passed, N failed, N skipped``
(collection errors and runs that produced no report count as failed); the exit code is non-zero
when any run failed.

Run inside a git work tree, it also checks that the runs left the tree as they found it: a file
that ``git status --porcelain`` shows after the runs and did not show before (an export, a
cache, an output written into the repository instead of a temporary or user cache folder) is
listed and counted as one more failure.

The runs get a temporary folder of their own (``TMPDIR``; pytest's own base folder stays where it
was, ``PYTEST_DEBUG_TEMPROOT``, so a failed test's ``tmp_path`` is kept as pytest keeps it):
whatever a test or a process it started leaves there (a ``tempfile.mkdtemp`` never removed, a
tool's temporary file) is listed and counted as one more failure, and the folder is removed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path


def split_commands(argv: list[str]) -> list[list[str]]:
    cmds: list[list[str]] = []
    for a in argv:
        if a == "--":
            cmds.append([])
        elif cmds:
            cmds[-1].append(a)
        else:
            raise SystemExit(f"test_all.py: expected '-- CMD ...', got {a!r}")
    return [c for c in cmds if c]


def junit_counts(path: Path) -> tuple[int, int, int] | None:
    """(passed, failed, skipped) of a pytest junit XML file, None when absent or unreadable."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tests = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return tests - failed - skipped, failed, skipped


def tree_status() -> set[str] | None:
    """``git status --porcelain`` lines of the work tree around the current folder (None outside one)."""
    try:
        r = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(r.stdout.splitlines()) if r.returncode == 0 else None


def main(argv: list[str]) -> int:
    cmds = split_commands(argv)
    if not cmds:
        raise SystemExit("test_all.py: no command given")
    total = [0, 0, 0]
    lines, worst = [], 0
    before = tree_status()
    with tempfile.TemporaryDirectory(prefix="priorocc-tests-") as tmp:
        run_tmp = Path(tmp) / "tmp"
        run_tmp.mkdir()
        env = dict(os.environ, TMPDIR=str(run_tmp))
        env.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
        for i, cmd in enumerate(cmds):
            xml = Path(tmp) / f"run{i}.xml"
            try:
                rc = subprocess.call(cmd + [f"--junitxml={xml}"], env=env)
            except OSError as e:
                print(f"test_all.py: cannot run {cmd[0]}: {e}", flush=True)
                rc = 127
            counts = junit_counts(xml)
            if counts is None:  # crashed, or never started: one failure so the total shows it
                counts = (0, 1, 0)
                print(f"test_all.py: {' '.join(cmd)} exited {rc} without a test report", flush=True)
            elif rc != 0 and counts[1] == 0:  # e.g. pytest's internal errors / usage errors
                counts = (counts[0], 1, counts[2])
            worst = worst or (rc if rc != 0 else 0)
            total = [t + c for t, c in zip(total, counts)]
            label = next((a for a in cmd if "python" in Path(a).name), cmd[0])
            lines.append(f"run {i + 1} ({label}): {counts[0]} passed, {counts[1]} failed, {counts[2]} skipped, "
                         f"exit {rc}")
        litter = sorted(p.name for p in run_tmp.iterdir())
        if litter:
            total[1] += 1
            lines.append(f"the runs left {len(litter)} item(s) in their temporary folder (TMPDIR, now removed): "
                         + "; ".join(litter[:10]))
    after = tree_status()
    left = sorted(after - before) if before is not None and after is not None else []
    if left:
        total[1] += 1
        lines.append(f"the runs left {len(left)} file(s) in the repository (git status): " + "; ".join(left[:10]))
    print("\n".join(lines))
    print(f"total: {total[0]} passed, {total[1]} failed, {total[2]} skipped", flush=True)
    return 1 if (worst or total[1]) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
