"""The row-cropped bicubic resize (priorocc_core/resize_rows.py) gives FlashOCC's pixels bit for
bit: ``apply_image_aug`` against the full resize then crop (FlashOCC's ``img_transform_core``,
written out here), on random full-range images (a differing integer tap shows on these at once),
the real keyframe's six cameras, every shipped config's test-time transform on nuScenes and other
camera sizes, and random training transforms (flips, rotations, resizes).

Mutations tried: the plan without its tap check (first candidate accepted) -> the training-aug
test fails (sizes where the largest crop's taps differ); ``d`` one row short -> the plan test
and the training-aug test fail (no candidate passes the tap check, so the other tests fall back
to the full resize and stay equal: the tap check is what keeps pixels exact); the test-time plan
returning (0, 0) -> the plan test fails (the pixel tests cannot pass by always resizing the
whole image unnoticed).
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from priorocc_core.config import Config, ImageConfig
from priorocc_core.preprocess import ImageAug, apply_image_aug, test_time_aug, train_aug
from priorocc_core.resize_rows import kept_rows_plan
from tests.conftest import ROOT, require_shared

CONFIGS = ["tiny.yaml", "demo-small.yaml", "flashocc-r50.yaml", "flashocc-r50-4d-stereo.yaml"]
SIZES = [(900, 1600), (720, 1280), (1080, 1920), (1200, 1920), (480, 640)]


def flashocc_aug(img: Image.Image, aug: ImageAug) -> np.ndarray:
    """FlashOCC's img_transform_core: the whole image resized (BICUBIC), then cropped."""
    out = img.resize(aug.resize_dims, resample=Image.BICUBIC).crop(aug.crop)
    if aug.flip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    if aug.rotate:
        out = out.rotate(aug.rotate)
    return np.asarray(out)


def noise(hw, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8))


def image_cfg(name: str) -> ImageConfig:
    return Config.from_yaml(ROOT / "training" / "configs" / name).model.image


def test_nuscenes_test_time_plan_drops_rows():
    """704 x 396 of 1600 x 900 keeping rows 140..395: the plan resizes source rows 300.. to 264
    rows (r0 / d = 900 / 396), i.e. 600 of 900 source rows and 264 of 396 output rows."""
    aug = test_time_aug((900, 1600), image_cfg("flashocc-r50.yaml"))
    assert aug.resize_dims == (704, 396) and aug.crop[1:4:2] == (140, 396)
    assert kept_rows_plan(900, 396, 140, 396) == (300, 132)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("hw", SIZES)
def test_test_time_pixels_equal_flashocc(name, hw):
    aug = test_time_aug(hw, image_cfg(name))
    img = noise(hw, seed=hw[0])
    ref = flashocc_aug(img, aug)
    assert np.array_equal(np.asarray(apply_image_aug(img, aug)), ref)
    assert np.array_equal(np.asarray(apply_image_aug(np.asarray(img), aug)), ref)  # the node's arrays


def test_training_augmentations_equal_flashocc():
    """40 random FlashOCC training transforms (resize range, crop, flip, rotation) of a nuScenes
    camera: equal pixels; some of them use a row plan (so the plan is exercised off test time)."""
    cfg = image_cfg("flashocc-r50.yaml")
    rng = np.random.default_rng(7)
    img = noise((900, 1600), seed=3)
    planned = 0
    for _ in range(40):
        aug = train_aug((900, 1600), cfg, rng)
        y0, y1 = aug.crop[1], aug.crop[3]
        planned += kept_rows_plan(900, aug.resize_dims[1], y0, y1) != (0, 0)
        assert np.array_equal(np.asarray(apply_image_aug(img, aug)), flashocc_aug(img, aug)), aug
    assert planned >= 5, planned


def test_real_keyframe_cameras_equal_flashocc():
    samples = require_shared("nuscenes-real/samples")
    files = sorted(samples.glob("CAM_*/*.jpg"))
    assert len(files) == 6, files
    aug = None
    for f in files:
        img = Image.open(f).convert("RGB")
        aug = aug or test_time_aug((img.height, img.width), image_cfg("flashocc-r50.yaml"))
        assert np.array_equal(np.asarray(apply_image_aug(img, aug)), flashocc_aug(img, aug)), f.name
