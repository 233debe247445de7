"""Derived artifacts (exported ONNX graphs, their OpenVINO / int8 IRs): keyed on what produced them.

A graph exported from a checkpoint depends on four things: the code that builds and exports the
network, the weights, the config, and the versions of the tools that wrote and will read it. The
key is a hash of all four; a cached graph lives in a folder named by its key, so a change of any
of them (a ``git pull`` of new model code, weights replaced in place, an upgraded torch) makes a
new key and a fresh export, and the old graph is never run again.

    key = graph_key(checkpoint_or_model, cfg)     # a GraphKey: .digest, .parts
    folder = cache_root() / "graphs" / key.digest  # model.onnx + key.json

Where the cache lives: ``$PRIOROCC_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/priorocc`` (default
``~/.cache/priorocc``): a user cache folder, never inside the repository or a checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from .atomic import atomic_write_bytes
from .config import Config

CACHE_ENV = "PRIOROCC_CACHE_DIR"
KEY_FILE = "key.json"
_PKG = Path(__file__).resolve().parent
# The code a graph is made of: the network, its config schema and class list, the checkpoint
# reader that fills its weights, the export wrapper. Anything else (the node, preprocessing on the
# host, metrics) runs outside the graph and does not change it.
GRAPH_SOURCES = ("model", "export.py", "config.py", "classes.py", "checkpoint.py", "geometry.py")


def cache_root() -> Path:
    """The user cache folder for derived artifacts (see the module docstring)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "priorocc"


def _source_files() -> list[Path]:
    files = []
    for name in GRAPH_SOURCES:
        p = _PKG / name
        files.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return files


def code_digest() -> str:
    """sha256 over the graph's source files (path and content), read now: an edited file changes it."""
    h = hashlib.sha256()
    for p in _source_files():
        h.update(p.relative_to(_PKG).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _tensors_digest(items) -> str:
    """sha256 over (name, tensor) pairs in name order: names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for name, t in sorted(items, key=lambda kv: kv[0]):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@lru_cache(maxsize=32)
def _weights_digest(path: str, stat_key: tuple) -> str:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return _tensors_digest((name, f.get_tensor(name)) for name in f.keys())


def weights_digest(path) -> str:
    """The tensors of a safetensors file (not its bytes: the header's metadata and layout may
    differ between two saves of the same weights), memoised within a process on the file's
    identity and change time (ctime moves on every write and cannot be set back, unlike the
    mtime a copy or checkout restores)."""
    st = os.stat(path)
    return _weights_digest(str(path), (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))


def weights_file(checkpoint) -> Path:
    """The weights file of a checkpoint folder or ``.safetensors`` path."""
    p = Path(checkpoint)
    return p / "model.safetensors" if p.is_dir() else p


def state_digest(model: torch.nn.Module) -> str:
    """The weights of an in-memory model, digested as ``weights_digest`` digests a file."""
    return _tensors_digest(model.state_dict().items())


def tool_versions(*extra: str) -> dict[str, str]:
    """Versions of the tools that write or read the graph (torch, onnx, and ``extra`` packages)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"torch": torch.__version__}
    for pkg in ("onnx",) + tuple(extra):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


@dataclass(frozen=True)
class GraphKey:
    """What a derived graph was made from, and its digest (the cache folder's name)."""

    parts: dict

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.parts, sort_keys=True).encode()).hexdigest()[:24]


def graph_key(checkpoint, model: torch.nn.Module | None, cfg: Config, kind: str = "onnx",
              tools: tuple[str, ...] = (), **options) -> GraphKey:
    """The key of a graph of ``kind`` (``onnx``, ``int8``...) exported from ``checkpoint`` (a path)
    or, for an in-memory ``(model, cfg)``, from ``model``'s weights; ``options`` are the export's
    own settings (e.g. ``logits``)."""
    if isinstance(checkpoint, (str, os.PathLike)):
        weights = weights_digest(weights_file(checkpoint))
    elif model is not None:
        weights = state_digest(model)
    else:
        raise ValueError("graph_key: give a checkpoint path or the model")
    config = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()
    return GraphKey(dict(kind=kind, code=code_digest(), weights=weights, config=config,
                         tools=tool_versions(*tools), options=dict(sorted(options.items()))))


def write_key(path: Path, key: GraphKey, **records) -> None:
    """Record ``key`` (its digest and parts) in the file ``path``, beside the artifact it describes;
    ``records``: more named facts about that artifact, e.g. an int8 IR's ``validation`` (int8_gate.py)."""
    data = json.dumps({"digest": key.digest, "parts": key.parts, **records}, indent=1, sort_keys=True).encode()
    atomic_write_bytes(Path(path), data)


def read_key(path: Path) -> dict | None:
    """The recorded key of ``path`` (a key file), or None when absent or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def key_difference(recorded: dict | None, key: GraphKey) -> list[str]:
    """Names of the key's parts that differ from a recorded key (``["missing"]`` when none was recorded)."""
    if not recorded or "parts" not in recorded:
        return ["missing"]
    old = recorded["parts"]
    return [k for k in key.parts if old.get(k) != key.parts[k]]
