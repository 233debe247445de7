"""ROS 2 bags with rosbags: an atomic writer (temporary folder, renamed when complete) and a
tolerant reader.

Bags are folders (``metadata.yaml`` + storage file), MCAP (default) or sqlite3.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from rosbags.interfaces import QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.interfaces import Qos
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer

from priorocc_ros.msgs import deserialize, serialize, typestore
from priorocc_ros.transport.base import QoSProfile

STORAGE = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


class BagError(RuntimeError):
    """A bag that cannot be opened or read (the message names the bag)."""


def rosbags_qos(q: QoSProfile) -> Qos:
    """Our QoSProfile -> rosbags Qos for metadata.yaml's offered_qos_profiles (what
    ``ros2 bag play`` republishes with, e.g. transient local for /tf_static)."""
    inf = QosTime(sec=2147483647, nsec=4294967295)
    return Qos(history=QosHistory.KEEP_LAST, depth=q.depth,
               reliability=QosReliability.RELIABLE if q.reliability == "reliable" else QosReliability.BEST_EFFORT,
               durability=QosDurability.TRANSIENT_LOCAL if q.durability == "transient_local" else QosDurability.VOLATILE,
               deadline=inf, lifespan=inf, liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=inf,
               avoid_ros_namespace_conventions=False)


class AtomicBagWriter:
    """``with AtomicBagWriter(out, storage="mcap") as w: w.write(topic, type, stamp_ns, msg)``.

    Writes into a temporary folder beside ``out`` and renames it to ``out`` only when the
    block finishes without an exception (the temporary folder is removed otherwise).
    ``out`` must not exist unless ``overwrite``.
    """

    def __init__(self, out: str | os.PathLike, storage: str = "mcap", overwrite: bool = False):
        if storage not in STORAGE:
            raise ValueError(f"storage must be one of {sorted(STORAGE)}, got {storage!r}")
        self.out = Path(out)
        self.storage = storage
        self.overwrite = overwrite
        self._conns: dict[str, Any] = {}
        self._writer: Writer | None = None
        self._tmp: Path | None = None
        self.count = 0
        self.counts: dict[str, int] = {}

    def __enter__(self) -> "AtomicBagWriter":
        if self.out.exists() and not self.overwrite:
            raise FileExistsError(f"output bag {self.out} already exists (use --overwrite)")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        parent = tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".partial", dir=self.out.parent)
        self._tmp = Path(parent) / self.out.name  # rosbags wants a path that does not exist yet
        self._writer = Writer(self._tmp, version=8, storage_plugin=STORAGE[self.storage])
        self._writer.open()
        return self

    def add_topic(self, topic: str, type_name: str, qos: QoSProfile | None = None) -> None:
        if topic in self._conns:
            return
        assert self._writer is not None
        kw = {"offered_qos_profiles": [rosbags_qos(qos)]} if qos is not None else {}
        self._conns[topic] = self._writer.add_connection(topic, type_name, typestore=typestore(), **kw)

    def write(self, topic: str, type_name: str, stamp_ns: int, msg: Any, qos: QoSProfile | None = None) -> None:
        self.write_raw(topic, type_name, stamp_ns, serialize(msg, type_name), qos)

    def write_raw(self, topic: str, type_name: str, stamp_ns: int, data: bytes | memoryview,
                  qos: QoSProfile | None = None) -> None:
        self.add_topic(topic, type_name, qos)
        conn = self._conns[topic]
        if conn.msgtype != type_name:
            raise TypeError(f"topic {topic} already carries {conn.msgtype}, not {type_name}")
        assert self._writer is not None
        self._writer.write(conn, int(stamp_ns), data)
        self.count += 1
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._writer is not None and self._tmp is not None
        try:
            self._writer.close()
        except Exception:
            if exc_type is None:
                shutil.rmtree(self._tmp.parent, ignore_errors=True)
                raise
        if exc_type is not None:
            shutil.rmtree(self._tmp.parent, ignore_errors=True)
            return
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.out, old)
            os.replace(self._tmp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self._tmp, self.out)
        shutil.rmtree(self._tmp.parent, ignore_errors=True)


def open_reader(path: str | os.PathLike) -> Reader:
    """Open a ROS 2 bag folder (or its .mcap / .db3 file) with rosbags; BagError if it cannot."""
    p = Path(path)
    if p.is_file() and p.suffix in (".mcap", ".db3"):
        p = p.parent
    if not p.exists():
        raise BagError(f"bag {p} does not exist")
    try:
        r = Reader(p)
        r.open()
    except (ReaderError, OSError, KeyError, ValueError) as e:
        raise BagError(f"bag {p} cannot be opened: {e}") from e
    return r


def _mcap_file(path: Path) -> Path | None:
    p = Path(path)
    if p.is_file() and p.suffix == ".mcap":
        return p
    files = sorted(p.glob("*.mcap")) if p.is_dir() else []
    return files[0] if len(files) == 1 else None


def salvage_mcap(path: str | os.PathLike, errors: list[str]) -> Iterator[tuple[str, str, int, bytes]]:
    """Stream-read an MCAP file whose end is missing (a recording cut short): every complete
    record up to the damage, in file order. (topic, type, log time ns, CDR bytes)."""
    import struct

    from rosbags.rosbag2.storage_mcap import decompress

    f = _mcap_file(Path(path))
    if f is None:
        raise BagError(f"bag {path}: no single .mcap file to salvage")
    data = f.read_bytes()
    if data[:8] != b"\x89MCAP0\r\n":
        raise BagError(f"bag {path}: {f.name} is not an MCAP file (bad magic)")
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}

    def string(b: bytes, o: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<I", b, o)
        return b[o + 4:o + 4 + n].decode(), o + 4 + n

    def records(b: bytes, o: int, end: int):
        while o + 9 <= end:
            op, n = b[o], struct.unpack_from("<Q", b, o + 1)[0]
            if o + 9 + n > end:
                errors.append(f"bag {path}: record at byte {o} is cut short ({n} bytes declared, "
                              f"{end - o - 9} present): the bag is truncated; read what precedes it")
                return
            yield op, b[o + 9:o + 9 + n]
            o += 9 + n

    def handle(op: int, rec: bytes):
        if op == 0x03:
            sid = struct.unpack_from("<H", rec, 0)[0]
            schemas[sid], _ = string(rec, 2)
        elif op == 0x04:
            cid, sid = struct.unpack_from("<HH", rec, 0)
            topic, _ = string(rec, 4)
            channels[cid] = (topic, schemas.get(sid, ""))
        elif op == 0x05:
            cid, _, log_time, _ = struct.unpack_from("<HIQQ", rec, 0)
            if cid in channels:
                topic, ty = channels[cid]
                yield topic, ty, log_time, rec[22:]
        elif op == 0x06:
            _, _, usize, crc = struct.unpack_from("<QQQI", rec, 0)
            comp, o = string(rec, 28)
            (clen,) = struct.unpack_from("<Q", rec, o)
            inner = decompress(rec[o + 8:o + 8 + clen], comp, usize, crc)
            for op2, rec2 in records(inner, 0, len(inner)):
                yield from handle(op2, rec2)

    # skip the header record (opcode 0x01) after the 8-byte magic
    for op, rec in records(data, 8, len(data)):
        if op == 0x0F:  # footer reached: not actually truncated
            return
        yield from handle(op, rec)


def iter_raw(path: str | os.PathLike, errors: list[str]) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, type, log time ns, CDR bytes) in log-time order; an MCAP bag cut short (no
    footer) is salvaged up to the damage, with a note in ``errors``."""
    try:
        r = open_reader(path)
    except BagError as e:
        if "end magic" in str(e) or "footer" in str(e).lower():
            errors.append(f"{e}: the bag is truncated; salvaging the complete records")
            yield from salvage_mcap(path, errors)
            return
        raise
    try:
        it = r.messages(connections=r.connections)
        while True:
            try:
                conn, t, raw = next(it)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 - truncated/corrupt storage
                errors.append(f"bag {path}: reading stopped early: {type(e).__name__}: {e}")
                return
            yield conn.topic, conn.msgtype, t, raw
    finally:
        r.close()


def read_messages(path: str | os.PathLike, topics: list[str] | None = None,
                  errors: list[str] | None = None) -> Iterator[tuple[str, str, int, Any]]:
    """Yield (topic, type, log time ns, deserialised message) in log-time order.

    A message that does not deserialise is skipped and described in ``errors`` (if given,
    else raised); so is damage to the storage (a truncated bag yields what precedes it).
    """
    errs: list[str] = []
    for topic, ty, t, raw in iter_raw(path, errs):
        if errs and errors is None:
            raise BagError(errs[0])
        if topics is not None and topic not in topics:
            continue
        try:
            m = deserialize(raw, ty)
        except Exception as e:  # noqa: BLE001
            msg = f"bag {path}: message on {topic} at {t} ns does not deserialise as {ty}: {e}"
            if errors is None:
                raise BagError(msg) from e
            errors.append(msg)
            continue
        yield topic, ty, t, m
    if errs:
        if errors is None:
            raise BagError(errs[0])
        errors.extend(errs)


def bag_topics(path: str | os.PathLike) -> dict[str, tuple[str, int]]:
    """{topic: (type, message count)} from the bag's metadata (counted by a scan for a
    truncated MCAP)."""
    try:
        r = open_reader(path)
    except BagError as e:
        if "end magic" not in str(e):
            raise
        out: dict[str, tuple[str, int]] = {}
        for topic, ty, _, _ in salvage_mcap(path, []):
            out[topic] = (ty, out.get(topic, ("", 0))[1] + 1)
        return out
    try:
        return {c.topic: (c.msgtype, c.msgcount) for c in r.connections}
    finally:
        r.close()
