"""Camera image -> network input: resize / crop / flip / rotate as one ``img_aug`` matrix,
and FlashOCC's normalisation.

FlashOCC normalises with mmcv ``imnormalize(img, mean, std, to_rgb=True)`` applied to
``np.array(PIL_image)``, which is already RGB; ``to_rgb=True`` swaps it to **BGR** and then
subtracts mean[0] = 123.675 from the blue channel. Trained FlashOCC / BEVDet weights expect
exactly that, so ``channel_order="bgr"`` reproduces it (``"rgb"`` is the textbook order).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .config import ImageConfig
from .geometry import img_aug_matrix
from .resize_rows import kept_rows_plan


@dataclass
class ImageAug:
    """One camera's augmentation parameters (FlashOCC's ``sample_augmentation``)."""

    resize: float
    resize_dims: tuple[int, int]  # (W, H) after resize
    crop: tuple[int, int, int, int]  # (x0, y0, x1, y1) in the resized image
    flip: bool
    rotate: float  # degrees

    def matrix(self) -> np.ndarray:
        """3x3 ``img_aug`` mapping original pixels to network-input pixels."""
        x0, y0, x1, y1 = self.crop
        return img_aug_matrix(
            self.resize, (x0, y0), self.flip, x1 - x0, self.rotate, out_hw=(y1 - y0, x1 - x0)
        )


def test_time_aug(src_hw: tuple[int, int], cfg: ImageConfig) -> ImageAug:
    """Deterministic test-time transform: resize to the input width, keep the bottom rows."""
    h, w = src_hw
    fh, fw = cfg.input_size
    resize = float(fw) / float(w) + cfg.resize_test
    new_w, new_h = int(w * resize), int(h * resize)
    crop_h = int((1 - float(np.mean(cfg.crop_h))) * new_h) - fh
    crop_w = int(max(0, new_w - fw) / 2)
    return ImageAug(resize, (new_w, new_h), (crop_w, crop_h, crop_w + fw, crop_h + fh), False, 0.0)


test_time_aug.__test__ = False  # a transform, not a pytest test, wherever it is imported


def train_aug(src_hw: tuple[int, int], cfg: ImageConfig, rng: np.random.Generator) -> ImageAug:
    """Random train-time transform with FlashOCC's ranges."""
    h, w = src_hw
    fh, fw = cfg.input_size
    resize = float(fw) / float(w) + rng.uniform(*cfg.resize_range)
    new_w, new_h = int(w * resize), int(h * resize)
    crop_h = int((1 - rng.uniform(*cfg.crop_h)) * new_h) - fh
    crop_w = int(rng.uniform(0, max(0, new_w - fw)))
    flip = bool(cfg.flip and rng.integers(0, 2))
    rotate = float(rng.uniform(*cfg.rot_range))
    return ImageAug(resize, (new_w, new_h), (crop_w, crop_h, crop_w + fw, crop_h + fh), flip, rotate)


def apply_image_aug(img: Image.Image | np.ndarray, aug: ImageAug, resample=Image.BICUBIC) -> Image.Image:
    """Apply ``aug`` to a PIL image (or an (H, W, 3) uint8 array: only the rows the resize reads
    are copied into Pillow) the way FlashOCC's ``img_transform_core`` does.

    FlashOCC calls ``img.resize(dims)`` without a filter, which is Pillow's BICUBIC for RGB
    images: the default here is the same. Use ``resample=Image.NEAREST`` for label images.
    BICUBIC resizes only the source rows the crop needs where :func:`kept_rows_plan` proves the
    pixels equal to the full resize's (the test-time crop drops 140 of 396 rows: ~30 % less work).
    """
    x0, y0, x1, y1 = aug.crop
    height = img.shape[0] if isinstance(img, np.ndarray) else img.height
    r0, d = (kept_rows_plan(height, aug.resize_dims[1], y0, y1) if resample == Image.BICUBIC
             else (0, 0))
    if isinstance(img, np.ndarray):
        img = Image.fromarray(np.ascontiguousarray(img[r0:]))  # rows r0.. only
    elif r0:
        img = img.crop((0, r0, img.width, img.height))
    img = img.resize((aug.resize_dims[0], aug.resize_dims[1] - d), resample=resample)  # (0, 0): the full resize
    img = img.crop((x0, y0 - d, x1, y1 - d))
    if aug.flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if aug.rotate:
        img = img.rotate(aug.rotate)  # PIL's default nearest, as FlashOCC
    return img


def _normalise_lut(cfg: ImageConfig) -> np.ndarray:
    """(3, 256) float32: output channel c of pixel value v, as float32 (v - mean[c]) / std[c]."""
    mean = np.asarray(cfg.mean, dtype=np.float32)
    std = np.asarray(cfg.std, dtype=np.float32)
    return (np.arange(256, dtype=np.float32)[None, :] - mean[:, None]) / std[:, None]


def normalize_image(img_rgb: np.ndarray | Image.Image, cfg: ImageConfig, out: np.ndarray | None = None) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 normalised in ``cfg.channel_order``.

    uint8 input: one table look-up per channel straight into the (3, H, W) output (the same
    float32 arithmetic as mmcv's ``(img - mean) / std``, bit for bit, without the (H, W, 3)
    float copies); other dtypes are computed directly. ``out``: a C-contiguous (3, H, W)
    float32 array to write into (one camera's slot of the batch: no stacking copy); the tensor
    returned then shares its memory."""
    a = np.asarray(img_rgb)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"normalize_image: expected an (H, W, 3) RGB image, got shape {a.shape}")
    if cfg.channel_order not in ("bgr", "rgb"):
        raise ValueError(f"image.channel_order must be 'bgr' or 'rgb', got {cfg.channel_order!r}")
    shape = (3,) + a.shape[:2]
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"normalize_image: out must be C-contiguous float32 {shape}, got {out.dtype} {out.shape}")
    src = (2, 1, 0) if cfg.channel_order == "bgr" else (0, 1, 2)  # FlashOCC: BGR order, mean[0] on blue
    if a.dtype == np.uint8:
        lut = _normalise_lut(cfg)
        for c in range(3):
            np.take(lut[c], a[:, :, src[c]], out=out[c])
        return torch.from_numpy(out)
    f = a.astype(np.float32)[..., list(src)]
    out[...] = ((f - np.asarray(cfg.mean, dtype=np.float32)) / np.asarray(cfg.std, dtype=np.float32)).transpose(2, 0, 1)
    return torch.from_numpy(out)


def resize_crop_fused(img: Image.Image, aug: ImageAug, resample=Image.BICUBIC) -> Image.Image:
    """Resize and crop in one Pillow call (``resize(box=...)``): only the kept rows and columns
    are resampled. Same geometry (pixel centres) as :func:`apply_image_aug`; the pixels differ
    by at most a few levels (Pillow rounds between its two separable passes at other places),
    so it is an option (``fused``), not the default."""
    if aug.flip or aug.rotate:
        return apply_image_aug(img, aug, resample)
    x0, y0, x1, y1 = aug.crop
    sx, sy = img.width / aug.resize_dims[0], img.height / aug.resize_dims[1]
    return img.resize((x1 - x0, y1 - y0), resample=resample, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))


def prepare_camera(img_rgb: np.ndarray | Image.Image, cfg: ImageConfig, aug: ImageAug | None = None,
                   fused: bool = False, out: np.ndarray | None = None):
    """One camera image -> (normalised (3, H, W) tensor, img_aug (3, 3), augmented PIL image).

    fused: resize + crop in one call (:func:`resize_crop_fused`; faster, not FlashOCC's exact pixels).
    out: the (3, H, W) float32 slot to normalise into (see :func:`normalize_image`)."""
    src = img_rgb if isinstance(img_rgb, Image.Image) else np.asarray(img_rgb)
    if aug is None:
        aug = test_time_aug(src.shape[:2] if isinstance(src, np.ndarray) else (src.height, src.width), cfg)
    if fused:
        view = resize_crop_fused(src if isinstance(src, Image.Image) else Image.fromarray(src), aug)
    else:
        view = apply_image_aug(src, aug)
    return normalize_image(view, cfg, out), aug.matrix(), view
