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

from priorocc_core.atomic import replace_dir
from priorocc_ros.msgs import deserialize, ros2msg_definition, serialize, typestore
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
        if self.out.exists() and not is_bag_folder(self.out):
            raise FileExistsError(f"--overwrite replaces only a bag: {self.out} is not a bag folder (expected "
                                  f"metadata.yaml and .mcap/.db3 files only); choose another --out")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        clean_partials(self.out)
        parent = tempfile.mkdtemp(prefix=f".{self.out.name}.{os.getpid()}.", suffix=".partial", dir=self.out.parent)
        self._tmp = Path(parent) / self.out.name  # rosbags wants a path that does not exist yet
        self._writer = Writer(self._tmp, version=8, storage_plugin=STORAGE[self.storage])
        self._writer.open()
        return self

    def add_topic(self, topic: str, type_name: str, qos: QoSProfile | None = None) -> None:
        if topic in self._conns:
            return
        assert self._writer is not None
        kw = {"offered_qos_profiles": [rosbags_qos(qos)]} if qos is not None else {}
        # the schema text is msgs.ros2msg_definition: the same the Foxglove live view serves
        self._conns[topic] = self._writer.add_connection(topic, type_name, msgdef=ros2msg_definition(type_name),
                                                         rihs01=typestore().hash_rihs01(type_name), **kw)

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
        replace_dir(self._tmp, self.out)
        shutil.rmtree(self._tmp.parent, ignore_errors=True)


BAG_FILE_SUFFIXES = (".mcap", ".db3", ".db3-shm", ".db3-wal", ".zstd")


def is_bag_folder(path: str | os.PathLike) -> bool:
    """A rosbag2 folder: metadata.yaml (or a storage file) and nothing but bag files."""
    p = Path(path)
    if not p.is_dir():
        return False
    files = list(p.iterdir())
    has_storage = any(f.suffix in (".mcap", ".db3") for f in files)
    return (has_storage or (p / "metadata.yaml").exists()) and all(
        f.is_file() and (f.name == "metadata.yaml" or f.name.endswith(BAG_FILE_SUFFIXES)) for f in files)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_partials(out: str | os.PathLike) -> list[Path]:
    """Remove ``.<name>.<pid>.*.partial`` folders and ``.<name>.old-<pid>`` folders (an old bag moved aside
    by :func:`priorocc_core.atomic.replace_dir`) that a killed writer of ``out`` left behind (their process
    is gone); returns what was removed."""
    out = Path(out)
    removed = []
    for d in [*out.parent.glob(f".{out.name}.*.partial"), *out.parent.glob(f".{out.name}.old-*")]:
        parts = d.name[len(out.name) + 2:].removeprefix("old-").split(".")
        pid = int(parts[0]) if parts and parts[0].isdigit() else None
        if d.is_dir() and (pid is None or (pid != os.getpid() and not _pid_alive(pid))):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


BAG_LAYOUT = "a rosbag2 bag is a folder with metadata.yaml and .mcap / .db3 files (nuscenes_to_bag, priorocc_record)"


def bag_dir(path: str | os.PathLike) -> Path:
    """The bag folder of ``path`` (the folder itself, or its .mcap / .db3 file); BagError naming
    what is wrong: nothing there, a file that is no bag, a folder without metadata.yaml."""
    p = Path(path)
    if p.is_file() and p.suffix in (".mcap", ".db3"):
        p = p.parent
    if not p.exists():
        raise BagError(f"bag {p} does not exist (no such file or folder)")
    if not p.is_dir():
        raise BagError(f"bag {p}: a file, not a bag; {BAG_LAYOUT}")
    if not (p / "metadata.yaml").is_file():
        there = sorted(f.name for f in p.iterdir())
        what = "the folder is empty" if not there else "the folder has " + ", ".join(there[:4]) + (
            " ..." if len(there) > 4 else "")
        raise BagError(f"bag {p}: no metadata.yaml ({what}); {BAG_LAYOUT}")
    return p


def open_reader(path: str | os.PathLike) -> Reader:
    """Open a ROS 2 bag folder (or its .mcap / .db3 file) with rosbags; BagError if it cannot."""
    p = bag_dir(path)
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

    def records(b: bytes, o: int, end: int, where: str = ""):
        while o + 9 <= end:
            op, n = b[o], struct.unpack_from("<Q", b, o + 1)[0]
            if o + 9 + n > end:
                if op == 0x06 and not where:  # a chunk cut short: read its complete messages one by one
                    yield -1, b[o + 9:end]
                    return
                errors.append(f"bag {path}: {where}record at byte {o} is cut short ({n} bytes declared, "
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
        elif op == -1:  # partial chunk
            if len(rec) < 40:
                errors.append(f"bag {path}: the last chunk is cut inside its header; its messages are lost")
                return
            comp, o = string(rec, 28)
            body = rec[o + 8:]
            if comp:
                errors.append(f"bag {path}: the last chunk ({comp}-compressed) is cut short; its messages are lost")
                return
            for op2, rec2 in records(body, 0, len(body), where="inside the last chunk, "):
                yield from handle(op2, rec2)

    # skip the header record (opcode 0x01) after the 8-byte magic
    for op, rec in records(data, 8, len(data)):
        if op == 0x0F:  # footer reached: not actually truncated
            return
        yield from handle(op, rec)


def _db3_file(path: Path) -> Path | None:
    p = Path(path)
    if p.is_file() and p.suffix == ".db3":
        return p
    files = sorted(p.glob("*.db3")) if p.is_dir() else []
    return files[0] if len(files) == 1 else None


def salvage_sqlite3(path: str | os.PathLike, errors: list[str]) -> Iterator[tuple[str, str, int, bytes]]:
    """Read a cut sqlite3 bag message by message: a copy padded to the size its header
    declares opens; every row that still reads is yielded in write order (topic, type, log time
    ns, CDR bytes), the others are counted in ``errors``."""
    import sqlite3
    import struct

    f = _db3_file(Path(path))
    if f is None:
        raise BagError(f"bag {path}: no single .db3 file to salvage")
    data = f.read_bytes()
    if data[:16] != b"SQLite format 3\x00":
        raise BagError(f"bag {path}: {f.name} is not an SQLite database (bad header)")
    page = struct.unpack(">H", data[16:18])[0]
    page = 65536 if page == 1 else page
    pages = struct.unpack(">I", data[28:32])[0]
    with tempfile.TemporaryDirectory(prefix="priorocc_salvage_") as tmp:
        copy = Path(tmp) / f.name
        copy.write_bytes(data + b"\0" * max(0, page * pages - len(data)))
        del data
        con = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
        try:
            try:
                topics = {i: (n, t) for i, n, t in con.execute("SELECT id, name, type FROM topics")}
            except sqlite3.DatabaseError as e:
                raise BagError(f"bag {path}: the topics table is unreadable ({e}); nothing can be salvaged") from e
            try:
                (top,) = con.execute("SELECT max(id) FROM messages").fetchone()
            except sqlite3.DatabaseError:
                top = None
            top = int(top) if top else pages * (page // 32)  # no index: an upper bound on rows
            bad, streak = 0, 0
            for rid in range(1, top + 1):
                try:
                    row = con.execute("SELECT topic_id, timestamp, data FROM messages WHERE id = ?", (rid,)).fetchone()
                except sqlite3.DatabaseError:
                    row = None
                    bad += 1
                if row is None:
                    streak += 1
                    if streak > 256:  # rows are written in order: past the cut nothing reads
                        break
                    continue
                streak = 0
                tid, t, raw = row
                if tid in topics:
                    yield topics[tid][0], topics[tid][1], int(t), bytes(raw)
            if bad:
                errors.append(f"bag {path}: the sqlite3 bag is damaged from row {rid - streak + 1} on; "
                              f"read the rows before it")
        finally:
            con.close()


def iter_raw(path: str | os.PathLike, errors: list[str]) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, type, log time ns, CDR bytes) in log-time order; a bag cut short (MCAP without
    footer, sqlite3 cut inside) is salvaged message by message, with a note in ``errors``."""
    try:
        r = open_reader(path)
    except BagError as e:
        if "end magic" in str(e) or "footer" in str(e).lower():
            errors.append(f"{e}: the bag is truncated; salvaging the complete records")
            yield from salvage_mcap(path, errors)
            return
        if _db3_file(Path(path)) is not None and ("malformed" in str(e) or "database" in str(e).lower()):
            errors.append(f"{e}: the bag is damaged; salvaging the readable messages")
            yield from salvage_sqlite3(path, errors)
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


def metadata_topics(path: str | os.PathLike) -> dict[str, tuple[str, int]]:
    """{topic: (type, message count)} from ``metadata.yaml`` alone ({} when absent or unreadable)."""
    import yaml

    m = Path(path) / "metadata.yaml"
    try:
        info = yaml.safe_load(m.read_text())["rosbag2_bagfile_information"]
        return {t["topic_metadata"]["name"]: (t["topic_metadata"]["type"], int(t["message_count"]))
                for t in info["topics_with_message_count"]}
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return {}


def bag_topics(path: str | os.PathLike) -> dict[str, tuple[str, int]]:
    """{topic: (type, message count)} from the bag's metadata (for a damaged bag: metadata.yaml,
    else counted by a salvaging scan)."""
    try:
        r = open_reader(path)
    except BagError as e:
        salvage = salvage_mcap if "end magic" in str(e) else \
            salvage_sqlite3 if _db3_file(Path(path)) is not None and "database" in str(e).lower() else None
        if salvage is None:
            raise
        out = metadata_topics(path)
        if out:
            return out
        for topic, ty, _, _ in salvage(path, []):
            out[topic] = (ty, out.get(topic, ("", 0))[1] + 1)
        return out
    try:
        return {c.topic: (c.msgtype, c.msgcount) for c in r.connections}
    finally:
        r.close()
