"""Checkpoints: weights in safetensors with the config, class list and step in its metadata.

A checkpoint is either a ``.safetensors`` file or a directory holding ``model.safetensors``
(the authority) and ``config.yaml`` (a readable copy). Loading never unpickles anything:
safetensors stores raw tensors and a JSON header. Writes are atomic (temporary file in the
same folder, then ``os.replace``).
"""
from __future__ import annotations

import json
import pickletools
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_write_bytes, atomic_write_with
from .classes import OCC_CLASSES
from .config import Config, ConfigError
from .errors import PriorOccError

FORMAT = "priorocc-checkpoint/1"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(PriorOccError):
    """A checkpoint that cannot be read or does not fit its model."""


def save_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """safetensors file written atomically; tensors are made contiguous CPU copies."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_with(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def weights_path(path: str | Path) -> Path:
    path = Path(path)
    return path / WEIGHTS_NAME if path.is_dir() or path.suffix != ".safetensors" else path


def save_checkpoint(path: str | Path, model: torch.nn.Module, cfg: Config, step: int = 0,
                    extra_meta: dict[str, Any] | None = None, state_dict: dict[str, torch.Tensor] | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Write ``model``'s weights (or ``state_dict``) with ``cfg``; returns the weights file.

    ``dtype`` (e.g. torch.float16) stores floating-point tensors in that type to halve the file;
    loading casts them back to the model's parameter type."""
    target = weights_path(path)
    sd = state_dict if state_dict is not None else model.state_dict()
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    meta = {
        "format": FORMAT,
        "config": json.dumps(cfg.to_dict()),
        "classes": json.dumps(list(OCC_CLASSES)),
        "step": str(int(step)),
        "extra": json.dumps(extra_meta or {}),
    }
    save_tensors_atomic(target, sd, meta)
    if target.name == WEIGHTS_NAME:
        atomic_write_bytes(target.parent / "config.yaml", cfg.to_yaml().encode(), fsync=True)
    return target


MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


def safetensors_header(path: Path) -> dict | None:
    """The JSON header of a safetensors file, or None when ``path`` is not one.

    The format: 8 bytes little-endian header length n, then n bytes of JSON (an object), then
    the tensor bytes. Recognised by parsing that header, never by a magic byte: the first byte
    is the low byte of n and can take any value (0x80 and ``P`` included)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return None
        n = int.from_bytes(head, "little")
        if n < 2 or n > MAX_HEADER or 8 + n > size:
            return None
        raw = f.read(n)
    if raw[:1] != b"{":
        return None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return header if isinstance(header, dict) else None


def pickle_kind(path: Path) -> str | None:
    """"torch.save zip" / "pickle" when ``path`` really is one (a zip holding ``*/data.pkl``,
    or a stream whose first opcodes decode as a pickle of protocol 2-5), else None."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                if any(name.endswith("data.pkl") for name in z.namelist()):
                    return "torch.save zip"
        except (zipfile.BadZipFile, OSError):
            return None
        return None
    with open(path, "rb") as f:
        head = f.read(2)
        if len(head) < 2 or head[0] != 0x80 or head[1] not in (2, 3, 4, 5):
            return None
        f.seek(0)
        try:
            for i, _ in enumerate(pickletools.genops(f)):  # reads lazily: only the first opcodes
                if i >= 3:
                    break
        except (ValueError, EOFError):
            return None
    return "pickle"


def _check_format(path: Path) -> None:
    if safetensors_header(path) is not None:
        return
    kind = pickle_kind(path)
    if kind is not None:
        raise CheckpointError(
            f"{path}: this is a pickle-based ({kind}, torch.save) file, which is refused: loading it could run "
            "arbitrary code. Convert FlashOCC / BEVDet .pth files with `priorocc_import`.")
    raise CheckpointError(f"{path}: not a readable safetensors checkpoint (corrupt or truncated?): "
                          f"{path.stat().st_size} bytes without a valid safetensors header")


def _open(path: str | Path) -> tuple[Path, dict, Config]:
    """(weights file, metadata, config) of a checkpoint, without reading its tensors."""
    target = weights_path(path)
    if not target.is_file():
        raise CheckpointError(f"{path}: no checkpoint there (expected {target})")
    _check_format(target)
    try:
        from safetensors import safe_open

        with safe_open(str(target), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{target}: not a readable safetensors checkpoint (corrupt or truncated?): {e}") from e
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(f"{target}: safetensors file without PriorOcc metadata (format {meta.get('format')!r}); "
                              "import foreign weights with `priorocc_import`")
    try:
        cfg = Config.from_dict(json.loads(meta["config"]))
    except (ConfigError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{target}: its stored config is invalid: {e}") from e
    return target, meta, cfg


def read_config(path: str | Path) -> Config:
    """The config a checkpoint stores (reads only its header)."""
    return _open(path)[2]


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], Config, dict]:
    """Read tensors, config and metadata without building a model."""
    target, meta, cfg = _open(path)
    try:
        tensors = load_file(str(target))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{target}: not a readable safetensors checkpoint (corrupt or truncated?): {e}") from e
    info = {
        "step": int(meta.get("step", 0)),
        "classes": json.loads(meta.get("classes", "[]")),
        "extra": json.loads(meta.get("extra", "{}")),
        "path": str(target),
    }
    return tensors, cfg, info


def check_state_dict(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Raise naming every missing, unexpected or shape-mismatched tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = sorted(f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
                        for k in set(expected) & set(tensors) if tensors[k].shape != expected[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"shape mismatch in {len(mismatched)} tensors: " + "; ".join(mismatched[:10]))
        if missing:
            parts.append(f"missing {len(missing)} tensors: " + ", ".join(missing[:10]))
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors: " + ", ".join(unexpected[:10]))
        raise CheckpointError(f"{source}: weights do not match the config that claims them: " + " | ".join(parts))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", cfg: Config | None = None):
    """Rebuild the model from the checkpoint alone -> (model in eval mode, cfg, info)."""
    from .model import build_model

    tensors, stored_cfg, info = read_checkpoint(path)
    cfg = cfg or stored_cfg
    model = build_model(cfg.model)
    check_state_dict(model, tensors, str(path))
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval(), cfg, info


def config_yaml_of(path: str | Path) -> str:
    _, cfg, _ = read_checkpoint(path)
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
