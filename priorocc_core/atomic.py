"""Atomic file writes: a temporary file in the same folder, then ``os.replace``.

A reader never sees a half-written file; a crash leaves the previous version (or nothing). The one
place the project writes files atomically: bytes (:func:`atomic_write_bytes`), a file a library
writes by name (:func:`atomic_write_with`), a set of files written together (:func:`atomic_write_files`)
and folders (:func:`temp_dir_for` + :func:`replace_dir`).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence


def default_mode(base: int = 0o666) -> int:
    """``base`` as far as the umask allows: rw for files (``mkstemp``'s own would be 0600),
    ``0o777`` for folders (``mkdtemp``'s own would be 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def temp_path_for(path: Path) -> str:
    """A fresh temporary file name beside ``path`` (the file exists, empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return tmp


def temp_dir_for(path: Path) -> Path:
    """A fresh temporary folder beside ``path``, to be renamed onto it (:func:`replace_dir`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    os.chmod(tmp, default_mode(0o777))  # the finished folder gets a plain mkdir's mode
    return tmp


def replace_dir(tmp: Path, final: Path) -> None:
    """Rename the finished folder ``tmp`` onto ``final`` (the old one is moved aside, then removed)."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove what interrupted writes left in ``folder`` (not below it): the temporary files of
    :func:`temp_path_for` (``.NAME.*.tmp``), the folders of :func:`temp_dir_for` (``.NAME.tmp-*``)
    and moved-aside ``.NAME.old-*`` folders. Call it when no writer is running there (a tool's start)."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        n = p.name
        stale = n.startswith(".") and (".tmp-" in n or ".old-" in n or (n.endswith(".tmp") and n.count(".") >= 3))
        if not stale:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


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


def atomic_write_with(path: str | Path, write: Callable[[str], object]) -> Path:
    """``write(tmp)`` fills a fresh temporary file beside ``path`` (a library that writes by file name:
    safetensors, torch.onnx); it replaces ``path`` only when ``write`` returns."""
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        write(tmp)
        commit_temp(tmp, path)
    except BaseException:
        discard_temp(tmp)
        raise
    return path


def atomic_write_files(paths: Sequence[str | Path], write: Callable[[Path], object]) -> list[Path]:
    """``write(folder)`` writes files named as ``paths`` into a temporary folder beside the first; each
    then replaces its target, in the order given (put the file readers open first last: an OpenVINO
    IR's .bin before its .xml)."""
    paths = [Path(p) for p in paths]
    tmp = temp_dir_for(paths[0])
    try:
        write(tmp)
        for p in paths:
            commit_temp(str(tmp / p.name), p)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths
