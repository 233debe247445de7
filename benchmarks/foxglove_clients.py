"""Raw WebSocket clients for the Foxglove server tests: a stalled client, a malformed one, one
that disconnects in the middle of a frame. Written on plain sockets (RFC 6455 framing) so a
test controls every byte; the well-behaved client is a third-party one (tests/js)."""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

JS_DIR = Path(__file__).resolve().parents[1] / "tests" / "js"  # the npm client package lives with the tests
SUBPROTOCOL = "foxglove.sdk.v1"


def connect(port: int, subprotocol: str = SUBPROTOCOL, rcvbuf: int | None = None,
            timeout: float = 10.0) -> tuple[socket.socket, bytes]:
    """Open the WebSocket handshake; (socket, bytes received after the handshake).
    ``rcvbuf``: a small receive buffer makes a stalled client fill up quickly."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError(f"handshake: server closed ({buf[:200]!r})")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(f"handshake refused: {head.decode(errors='replace')}")
    return s, rest


def frame(payload: bytes, opcode: int = 1) -> bytes:
    """One masked client frame (opcode 1 text, 2 binary)."""
    mask = os.urandom(4)
    n = len(payload)
    hdr = bytes([0x80 | opcode])
    if n < 126:
        hdr += bytes([0x80 | n])
    elif n < 65536:
        hdr += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        hdr += bytes([0x80 | 127]) + struct.pack(">Q", n)
    m = (mask * (n // 4 + 1))[:n]
    return hdr + mask + bytes(a ^ b for a, b in zip(payload, m))


class FrameReader:
    """Server frames from one socket, in order (a frame split across reads is kept whole)."""

    def __init__(self, s: socket.socket, rest: bytes = b""):
        self.s, self.buf = s, rest

    def _frame(self) -> tuple[int, bytes] | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        n, off = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return None
            n, off = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n, off = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < off + n:
            return None
        self.buf = buf[off + n:]
        return buf[0] & 0x0F, buf[off:off + n]

    def next(self, deadline: float) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame; TimeoutError past ``deadline`` (time.monotonic)."""
        while True:
            f = self._frame()
            if f is not None:
                return f
            if time.monotonic() >= deadline:
                raise TimeoutError("no frame from the server in time")
            try:
                chunk = self.s.recv(1 << 20)
            except TimeoutError:  # the socket's own timeout: keep waiting until the deadline
                continue
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk


def subscribe_all(s: socket.socket, rest: bytes, topics: set[str] | None = None, timeout: float = 30.0) -> list[dict]:
    """Subscribe to the advertised channels (all those in the first advertisement, or those on
    ``topics``, waiting until every one is advertised); returns the channels."""
    chans: dict[str, dict] = {}
    reader = FrameReader(s, rest)
    deadline = time.monotonic() + timeout
    while True:
        op, payload = reader.next(deadline)
        if op != 1:
            continue
        m = json.loads(payload)
        if m.get("op") == "advertise":
            for c in m["channels"]:
                chans[c["topic"]] = c
            if (topics is None and chans) or (topics is not None and topics <= set(chans)):
                break
    want = [c for t, c in chans.items() if topics is None or t in topics]
    subs = [{"id": i + 1, "channelId": c["id"]} for i, c in enumerate(want)]
    s.sendall(frame(json.dumps({"op": "subscribe", "subscriptions": subs}).encode()))
    return want


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    return int(m.group(1)) * 1024 if m else 0


def js_client_ready() -> Path:
    """tests/js with its node_modules (``npm ci`` from the committed package-lock.json on first
    use). Skips without Node.js/npm (fails when CI is set)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        msg = "Node.js and npm are needed for the third-party Foxglove client (apt-get install nodejs npm)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    if not (JS_DIR / "node_modules" / "@foxglove" / "ws-protocol").is_dir():
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True,
                           timeout=600)
        if r.returncode != 0:
            pytest.fail(f"npm ci in {JS_DIR} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return JS_DIR
