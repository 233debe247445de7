"""Atomic file writes: a temporary file in the same folder, then ``os.replace``.

A reader never sees a half-written file; a crash leaves the previous version (or nothing).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def default_mode() -> int:
    """rw for everyone the umask allows (``mkstemp``'s own files would be 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temp_path_for(path: Path) -> str:
    """A fresh temporary file name beside ``path`` (the file exists, empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return tmp


def commit_temp(tmp: str, path: Path) -> None:
    os.chmod(tmp, default_mode())
    os.replace(tmp, path)


def discard_temp(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (``fsync`` for files that must survive a power cut)."""
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        commit_temp(tmp, path)
    except BaseException:
        discard_temp(tmp)
        raise
