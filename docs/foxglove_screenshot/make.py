"""docs/img/foxglove_demo.png: the shipped Foxglove layout in a real Foxglove app, headless.

``priorocc_replay BAG`` writes its MCAP; a local HTTP server (loopback, byte ranges, as the app
reads files) serves it with this folder and ``launch/priorocc.foxglove-layout.json``; Debian's
Chromium (software WebGL) opens Foxglove Studio 1.48 (``@foxglove/studio-base`` from npm, the
last open-source release; ``page.html`` mounts its App with the layout and a ``remote-file``
data source) at the bag's end (its last set and final diagnostics), and ``shot.js`` (puppeteer-core) takes the picture.

    make foxglove-screenshot      # apt-get install chromium, npm ci here, then this script
    PYTHONPATH=. .venv/bin/python docs/foxglove_screenshot/make.py --checkpoint models/demo

Not part of ``make test`` (Chromium is ~400 MB). Needs node, npm, chromium.
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LAYOUT = ROOT / "launch" / "priorocc.foxglove-layout.json"


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single byte ranges (``Range: bytes=a-b``), which Foxglove's remote-file
    reader needs; ``/layout.json`` and ``/out.mcap`` are mapped to the files given."""

    mapped: dict[str, Path] = {}

    def log_message(self, *args):  # quiet
        pass

    def translate_path(self, path):
        p = path.split("?", 1)[0]
        return str(self.mapped[p]) if p in self.mapped else super().translate_path(path)

    def send_head(self):
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not rng or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        a, _, b = rng.removeprefix("bytes=").partition("-")
        start, end = (int(a), int(b) if b else size - 1) if a else (size - int(b), size - 1)
        end = min(end, size - 1)
        f = open(path, "rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._left = end - start + 1
        return f

    def copyfile(self, source, outputfile):
        left = getattr(self, "_left", None)
        try:
            if left is None:
                return super().copyfile(source, outputfile)
            while left > 0:
                chunk = source.read(min(left, 1 << 20))
                if not chunk:
                    break
                outputfile.write(chunk)
                left -= len(chunk)
        except (BrokenPipeError, ConnectionResetError):  # the app cancels reads it no longer needs
            pass

    def end_headers(self):
        self.send_header("Access-Control-Allow-Origin", "*")
        if not self.headers.get("Range"):
            self.send_header("Accept-Ranges", "bytes")
        super().end_headers()


def end_ns(bag: Path) -> int:
    """The bag's last log time (the replay's final /diagnostics, after the last set)."""
    from priorocc_ros.bagio import iter_raw

    return max(t for _, _, t, _ in iter_raw(bag, []))


def rfc3339(ns: int) -> str:
    s, frac = divmod(ns, 1_000_000_000)
    return dt.datetime.fromtimestamp(s, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bag", default=str(ROOT / "bags" / "demo"))
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "demo"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "foxglove_demo.png"))
    ap.add_argument("--wait", type=float, default=45.0, help="seconds the app gets to load and draw")
    ap.add_argument("--size", default="1600x1000", help="browser window, WIDTHxHEIGHT")
    ap.add_argument("--png-width", type=int, default=1200, help="width of the saved PNG (256 colours)")
    args = ap.parse_args()
    for exe in ("node", os.environ.get("CHROMIUM", "chromium")):
        if not shutil.which(exe):
            print(f"make.py: {exe} not found (make foxglove-screenshot installs it)", file=sys.stderr)
            return 2
    if not (HERE / "node_modules" / "@foxglove" / "studio-base").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        out_bag = Path(tmp) / "replay"
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        subprocess.run([sys.executable, "-m", "priorocc_ros.replay", args.bag, "--checkpoint", args.checkpoint,
                        "--out", str(out_bag)], env=env, check=True, stdout=subprocess.DEVNULL)
        mcap = next(out_bag.glob("*.mcap"))
        when = rfc3339(end_ns(out_bag))
        RangeHandler.mapped = {"/layout.json": LAYOUT, "/out.mcap": mcap}
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                 functools.partial(RangeHandler, directory=str(HERE)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        url = f"{base}/page.html?ds=remote-file&ds.url={base}/out.mcap&layoutId=priorocc&time={when}"
        w, h = args.size.split("x")
        raw = Path(tmp) / "shot.png"
        try:
            subprocess.run(["node", str(HERE / "shot.js"), url, str(raw), str(int(args.wait * 1000)), w, h],
                           check=True, timeout=args.wait + 300)
        finally:
            server.shutdown()
        from PIL import Image

        from priorocc_core.atomic import atomic_write_with

        img = Image.open(raw).convert("RGB")
        img = img.resize((args.png_width, round(img.height * args.png_width / img.width)), Image.LANCZOS)
        small = img.quantize(256, method=Image.Quantize.MEDIANCUT)
        atomic_write_with(args.out, lambda p: small.save(p, format="PNG", optimize=True))
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
