"""Optional mmdet3d / mmengine integration: build the network from an mmengine-style config
through the registry. Skipped (with the reason) where mmengine is not installed: it is an optional
dependency, not part of requirements.txt."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

mmengine = pytest.importorskip("mmengine", reason="mmengine not installed (optional mm_plugin dependency: "
                                                  "pip install mmengine mmcv-lite mmdet mmdet3d --no-deps)")

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "priorocc_core" / "mm_plugin" / "configs" / "priorocc_r50_mmengine.py"

TINY_MODEL = dict(
    image=dict(input_size=[64, 176]),
    grid=dict(depth=[1.0, 45.0, 2.0]),
    backbone=dict(depth=18),
    neck=dict(in_channels=[256, 512], out_channels=32),
    injector=dict(mid_channels=32),
    view_transformer=dict(in_channels=32, out_channels=8),
    bev_encoder=dict(num_layer=[1, 1, 1], num_channels=[16, 32, 64], out_channels=16),
    head=dict(out_dim=16),
)


def _batch(b=1, h=64, w=176):
    g = torch.Generator().manual_seed(0)
    cam2ego = torch.eye(4).repeat(b, 6, 1, 1)
    cam2ego[..., :3, :3] = torch.tensor([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
    K = torch.tensor([[60.0, 0, w / 2], [0, 60.0, h / 2], [0, 0, 1]]).repeat(b, 6, 1, 1)
    return dict(imgs=torch.randn(b, 6, 3, h, w, generator=g), cam2ego=cam2ego, K=K,
                img_aug=torch.eye(3).repeat(b, 6, 1, 1), bev_aug=torch.eye(4).repeat(b, 1, 1),
                voxel_semantics=torch.randint(0, 18, (b, 200, 200, 16), generator=g),
                mask_camera=torch.ones(b, 200, 200, 16, dtype=torch.uint8),
                seg_labels=torch.randint(0, 17, (b, 6, h, w), generator=g).to(torch.uint8))


def test_build_from_mmengine_config_through_registry():
    from mmengine.config import Config

    cfg = Config.fromfile(str(EXAMPLE))  # custom_imports registers the plug-in
    import priorocc_core.mm_plugin as plug

    cfg.model.update({k: {**cfg.model.get(k, {}), **v} for k, v in TINY_MODEL.items()})
    model = plug.MODELS.build(cfg.model)
    assert isinstance(model, plug.MMPriorOcc)
    assert model.model_cfg.backbone.depth == 18 and model.model_cfg.injector.enabled
    batch = _batch()
    logits = model(batch, mode="tensor")
    assert logits.shape == (1, 200, 200, 16, 18)
    pred = model(batch, mode="predict")
    assert len(pred) == 1 and pred[0].shape == (200, 200, 16) and pred[0].dtype == np.uint8
    model.train()
    losses = model(batch, mode="loss")
    assert set(losses) >= {"loss_occ", "loss_2d_seg"} and all(torch.isfinite(v) for v in losses.values())

    inj = plug.MODELS.build(dict(type="SemanticInjector", channels=32, mid_channels=16, num_classes=17))
    feats, seg = inj(torch.randn(2, 32, 4, 11))
    assert feats.shape == (2, 32, 4, 11) and seg.shape == (2, 17, 4, 11)
    # the FlashOCC names of the released model are the registered ones
    assert plug.MODELS.get("PriorOcc") is plug.MMPriorOcc
    assert plug.TRANSFORMS.get("LoadSeg2DLabels") is plug.LoadSeg2DLabels
    assert plug.DATASETS.get("PriorOccDataset") is plug.PriorOccDataset


def test_load_seg_2d_labels_transform(tmp_path):
    from PIL import Image

    import priorocc_core.mm_plugin as plug
    from priorocc_core.classes import CAMERAS

    results = {"curr": {"cams": {}}}
    for i, cam in enumerate(CAMERAS):
        img = tmp_path / "samples" / cam / f"x_{cam}.jpg"
        img.parent.mkdir(parents=True)
        Image.fromarray(np.zeros((9, 16, 3), np.uint8)).save(img)
        lab = tmp_path / "seg_2d_labels" / "samples" / cam / f"x_{cam}.png"
        lab.parent.mkdir(parents=True)
        Image.fromarray(np.full((9, 16), i, np.uint8)).save(lab)
        results["curr"]["cams"][cam] = {"data_path": str(img)}
    t = plug.TRANSFORMS.build(dict(type="LoadSeg2DLabels", data_root=str(tmp_path)))
    out = t(results)
    assert out["gt_seg_2d"].shape == (6, 9, 16) and out["gt_seg_2d"][3, 0, 0] == 3
    (tmp_path / "seg_2d_labels" / "samples" / CAMERAS[0] / f"x_{CAMERAS[0]}.png").unlink()
    with pytest.raises(ValueError, match="does not exist"):
        t(results)
