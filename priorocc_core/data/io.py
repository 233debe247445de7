"""File readers and atomic writers for the on-disk formats the data pipeline uses.

Every reader checks what it reads and raises :class:`DataError` naming the file and what
was expected, so a bad file in a 30k-sample dataset is found by its path, not by a shape
mismatch deep in the network.

Formats
-------
* camera image: JPEG / PNG, read as (H, W, 3) uint8 RGB.
* Occ3D ground truth ``labels.npz``: uint8 ``semantics``, ``mask_lidar``, ``mask_camera``,
  each GridConfig.occ_size (200, 200, 16) indexed [x, y, z] in the ego frame at the keyframe's
  LIDAR_TOP timestamp (Occ3D's frame; docs/design.md).
* 2D label PNG: (H, W) uint8 class index 0-16, 255 = ignore, same size as its image, at
  ``<label_root>/<image path relative to dataroot, suffix .png>`` (docs/design.md).
* LIDAR_TOP sweep ``.pcd.bin``: float32 (P, 5) = x, y, z, intensity, ring, in the lidar frame.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile

from ..atomic import atomic_write_bytes as _atomic_write_bytes
from ..config import GridConfig
from ..errors import PriorOccError

OCC_KEYS = ("semantics", "mask_lidar", "mask_camera")


class DataError(PriorOccError):
    """An input file or record that does not have the expected form."""


# --------------------------------------------------------------------------- readers
def read_image_rgb(path: str | Path) -> Image.Image:
    """Read a camera image fully (so a truncated JPEG fails here) as an RGB PIL image."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"camera image {path} does not exist")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise DataError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; refusing to read images silently padded")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:  # PIL reports truncation / garbage as OSError
        raise DataError(f"camera image {path} cannot be decoded (truncated or not an image): {e}") from e
    return rgb


def load_occ_gt(path: str | Path, shape: tuple[int, int, int] = GridConfig().occ_size) -> dict[str, np.ndarray]:
    """Read an Occ3D ``labels.npz`` -> dict of uint8 arrays ``semantics``, ``mask_lidar``,
    ``mask_camera``, each ``shape`` (Dx, Dy, Dz) indexed [x, y, z]."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Occ3D ground truth {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in OCC_KEYS if k not in npz.files]
            if missing:
                raise DataError(
                    f"Occ3D ground truth {path}: missing arrays {missing} (expected {list(OCC_KEYS)}, "
                    f"found {npz.files})"
                )
            out = {k: npz[k] for k in OCC_KEYS}
    except DataError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError (pickled object arrays), EOFError
        raise DataError(f"Occ3D ground truth {path} cannot be read as an .npz file: {e}") from e
    for k, a in out.items():
        if a.shape != tuple(shape):
            raise DataError(f"Occ3D ground truth {path}: array {k!r} has shape {a.shape}, expected {tuple(shape)}")
        if a.dtype != np.uint8:
            raise DataError(f"Occ3D ground truth {path}: array {k!r} has dtype {a.dtype}, expected uint8")
    sem = out["semantics"]
    if sem.max(initial=0) > 17:
        raise DataError(f"Occ3D ground truth {path}: semantics has value {int(sem.max())}, expected 0-17")
    return out


def seg_label_path(label_root: str | Path, dataroot: str | Path, image_path: str | Path) -> Path:
    """Where the 2D label PNG of ``image_path`` lives (docs/design.md layout)."""
    image_path = Path(image_path)
    try:
        rel = image_path.resolve().relative_to(Path(dataroot).resolve())
    except ValueError:
        # an image outside the dataroot: keep its last two components (<CAM>/<file>) under samples/
        rel = Path("samples") / image_path.parent.name / image_path.name
    return Path(label_root) / rel.with_suffix(".png")


def load_seg_label(path: str | Path, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read a 2D label PNG -> (H, W) uint8; checks the size against ``expected_hw`` (H, W)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"2D label {path} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "P", "I;16", "I"):
                raise DataError(f"2D label {path}: mode {im.mode!r}, expected a single-channel uint8 PNG ('L')")
            a = np.asarray(im)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"2D label {path} cannot be decoded: {e}") from e
    if a.ndim != 2:
        raise DataError(f"2D label {path}: shape {a.shape}, expected (H, W)")
    if a.dtype != np.uint8:
        if a.max(initial=0) > 255:
            raise DataError(f"2D label {path}: values above 255")
        a = a.astype(np.uint8)
    if expected_hw is not None and a.shape != tuple(expected_hw):
        raise DataError(
            f"2D label {path}: size {a.shape[1]}x{a.shape[0]} (WxH), expected {expected_hw[1]}x{expected_hw[0]} "
            "(the size of its camera image)"
        )
    bad = (a > 16) & (a != 255)
    if bad.any():
        raise DataError(f"2D label {path}: value {int(a[bad][0])} is not a class 0-16 or 255 (ignore)")
    return a


def load_lidar_points(path: str | Path, dims: int = 5) -> np.ndarray:
    """Read a nuScenes ``.pcd.bin`` -> (P, dims) float32 (x, y, z, intensity, ring) in the lidar frame."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"lidar sweep {path} does not exist")
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % dims:
        raise DataError(f"lidar sweep {path}: {raw.size} float32 values is not a multiple of {dims}")
    return raw.reshape(-1, dims)


# --------------------------------------------------------------------------- atomic writers
def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    _atomic_write_bytes(Path(path), data)


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 0) -> None:
    _atomic_write_bytes(Path(path), json.dumps(obj, indent=indent).encode())


def write_png_atomic(path: str | Path, array: np.ndarray) -> None:
    """(H, W) uint8 label or (H, W, 3) uint8 RGB -> PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", compress_level=1)
    _atomic_write_bytes(Path(path), buf.getvalue())


def write_jpeg_atomic(path: str | Path, rgb: np.ndarray, quality: int = 92) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=quality)
    _atomic_write_bytes(Path(path), buf.getvalue())


def write_occ_gt_atomic(path: str | Path, semantics: np.ndarray, mask_lidar: np.ndarray, mask_camera: np.ndarray) -> None:
    """Write an Occ3D ``labels.npz`` (compressed, uint8 arrays)."""
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        semantics=semantics.astype(np.uint8),
        mask_lidar=mask_lidar.astype(np.uint8),
        mask_camera=mask_camera.astype(np.uint8),
    )
    _atomic_write_bytes(Path(path), buf.getvalue())
