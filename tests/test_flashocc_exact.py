"""FlashOCC-exact inputs on the real keyframe, with a FlashOCC-layout M0 checkpoint imported.

FlashOCC (``bevdet.py`` ``prepare_inputs``) puts every camera in the *key ego* frame: the ego
pose of the first camera (CAM_FRONT_LEFT), ``sensor2keyego = keyego2global^-1 @ ego2global_cam @
sensor2ego``; its ``img_transform_core`` resizes with ``img.resize(dims)``, Pillow's default
filter (BICUBIC), then crops the bottom rows. Published weights expect both. The references
below are written from those definitions with nuscenes-devkit and Pillow, not with the project's
code. Mutation checks (each fails this test): ``key_ego2global`` returning the LIDAR_TOP ego pose
(the old frame: cam2ego off by ~0.4 m), ``resample=Image.BILINEAR`` in ``apply_image_aug`` (the
old filter), the ``key_ego`` default set to lidar; issue 28: ``inference.preprocess`` normalising
every camera into the batch's first slot (``out=imgs[0, 0]``, the others left uninitialised).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from priorocc_core.classes import CAMERAS
from priorocc_core.config import Config
from priorocc_core.geometry import invert_rigid, transform_from_quat
from tests.conftest import ROOT, require_shared
from tests.fixtures import mmcv_layouts as L

TOKEN = "ca9a282c9e77460f8360f564131a8af5"


def _pose(rec) -> np.ndarray:
    return transform_from_quat(rec["translation"], rec["rotation"])


@pytest.fixture(scope="module")
def m0(tmp_path_factory):
    """A FlashOCC-M0 checkpoint in FlashOCC's own tensor names, imported strictly."""
    from priorocc_core.importer import main

    d = tmp_path_factory.mktemp("m0")
    src = d / "flashocc-r50-M0.pth"
    L.save_mmcv_checkpoint(src, L.flashocc_m0())
    assert main([str(src), "--config", str(ROOT / "training/configs/flashocc-r50-m0.yaml"), "--out", str(d / "ck")]) == 0
    return d / "ck"


def test_imported_m0_sees_the_real_keyframe_as_flashocc_does(m0):
    real = require_shared("nuscenes-real")
    from nuscenes.nuscenes import NuScenes

    from priorocc_core.checkpoint import read_checkpoint
    from priorocc_core.data import OccDataset
    from priorocc_core.inference import preprocess

    tensors, cfg, info = read_checkpoint(m0)
    assert info["extra"]["mapped"] == len(L.flashocc_m0()) and info["extra"]["missing"] == 0
    assert "FlashOCC" in info["extra"]["layout"]
    assert cfg.data.key_ego == "first_camera" and tuple(cfg.model.image.input_size) == (256, 704)
    cfg = cfg.with_overrides([f"data.dataroot={real}", "data.version=v1.0-mini", "data.val_split=all",
                              "data.load_seg_labels=false"])
    s = OccDataset(cfg, split="val", train=False)[0]
    assert s["sample_token"] == TOKEN

    # ---- key ego: FlashOCC's definition, from the devkit's tables
    nusc = NuScenes(version="v1.0-mini", dataroot=str(real), verbose=False)
    sample = nusc.get("sample", TOKEN)
    sds = [nusc.get("sample_data", sample["data"][c]) for c in CAMERAS]
    assert CAMERAS[0] == "CAM_FRONT_LEFT"
    key2global = _pose(nusc.get("ego_pose", sds[0]["ego_pose_token"]))
    lidar2global = _pose(nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"]))
    ref = np.stack([invert_rigid(key2global) @ _pose(nusc.get("ego_pose", sd["ego_pose_token"]))
                    @ _pose(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])) for sd in sds])
    np.testing.assert_allclose(s["cam2ego"].numpy(), ref, atol=2e-5, rtol=0)
    # the key ego is not the lidar's: on this keyframe they are ~0.4 m apart along x (one voxel)
    occ2key = s["occ2key"].numpy()
    np.testing.assert_allclose(occ2key, invert_rigid(key2global) @ lidar2global, atol=1e-9)
    assert np.linalg.norm(occ2key[:3, 3]) > 0.3

    # ---- resize: FlashOCC's img.resize(dims) (Pillow's default filter) then the bottom crop
    Ks = np.stack([np.asarray(nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])["camera_intrinsic"])
                   for sd in sds])
    batch = preprocess([np.asarray(Image.open(real / sd["filename"]).convert("RGB")) for sd in sds], Ks, ref, cfg)
    for n, sd in enumerate(sds):
        pil = Image.open(real / sd["filename"]).convert("RGB")
        w, h = pil.size
        resize = 704 / w
        dims = (int(w * resize), int(h * resize))
        flashocc = pil.resize(dims)  # no filter argument, exactly as FlashOCC calls it
        crop_h = dims[1] - 256
        flashocc = np.asarray(flashocc.crop((0, crop_h, 704, crop_h + 256)))
        bilinear = np.asarray(pil.resize(dims, Image.BILINEAR).crop((0, crop_h, 704, crop_h + 256)))
        assert not np.array_equal(flashocc, bilinear)  # the filter is visible in the pixels
        # mmcv imnormalize(to_rgb=True) on the RGB array: BGR order, mean/std per channel
        bgr = flashocc[..., ::-1].astype(np.float32)
        norm = (bgr - np.float32([123.675, 116.28, 103.53])) / np.float32([58.395, 57.12, 57.375])
        want = torch.from_numpy(np.ascontiguousarray(norm.transpose(2, 0, 1)))
        assert torch.equal(s["imgs"][n], want), sd["channel"]  # the dataset, bitwise
        assert torch.equal(batch["imgs"][0, n], want), sd["channel"]  # the deployed preprocessing, bitwise
    np.testing.assert_allclose(batch["cam2ego"][0].numpy(), ref, atol=2e-5)
