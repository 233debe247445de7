"""Optional mmdet3d / mmengine integration (priorocc_core.mm_plugin), run by `make test` in its own
venv (.venv-mm, requirements-mm.txt): the network built from the example mmengine config through the
registry in its loss / predict / tensor modes, LoadSeg2DLabels in an mmengine pipeline next to an
mmcv transform, and a few training iterations through mmengine's Runner on the synthetic world with
the project's dataset. Skipped (with the reason) where the OpenMMLab stack is not installed; in CI
(env CI set) its absence is a failure.

Mutations tried (each test failed, then restored): PriorOcc registered under another name;
MMPriorOcc "predict" returning logits; LoadSeg2DLabels reading the camera order reversed;
priorocc_collate returning the bare batch (Runner: forward() got an unexpected keyword); the loss
mode detached from the graph (Runner: loss does not go down).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

try:
    import mmdet3d  # noqa: F401
    import mmengine
except ImportError as e:  # pragma: no cover - depends on the environment
    _why = (f"OpenMMLab stack not importable ({e}); `make test` builds it in .venv-mm from requirements-mm.txt "
            "and runs this file there")
    if os.environ.get("CI"):
        pytest.fail(_why + " — CI must run the plug-in's tests", pytrace=False)
    pytest.skip(_why, allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "priorocc_core" / "mm_plugin" / "configs" / "priorocc_r50_mmengine.py"
TINY_YAML = REPO / "training" / "configs" / "tiny.yaml"

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

    assert plug.REGISTRY_SCOPE == "mmdet3d"  # the registries FlashOCC users build from
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


def test_load_seg_2d_labels_in_a_pipeline(tmp_path):
    """LoadSeg2DLabels built by name inside an mmengine Compose, followed by mmcv's own ToTensor."""
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope
    from PIL import Image

    import priorocc_core.mm_plugin  # noqa: F401
    from priorocc_core.classes import CAMERAS

    init_default_scope("mmdet3d")
    results = {"img_filename": []}
    for i, cam in enumerate(CAMERAS):
        img = tmp_path / "samples" / cam / f"y_{cam}.jpg"
        img.parent.mkdir(parents=True)
        Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(img)
        lab = tmp_path / "seg_2d_labels" / "samples" / cam / f"y_{cam}.png"
        lab.parent.mkdir(parents=True)
        Image.fromarray(np.full((5, 7), 10 + i, np.uint8)).save(lab)
        results["img_filename"].append(f"samples/{cam}/y_{cam}.jpg")  # relative to data_root
    pipeline = Compose([dict(type="LoadSeg2DLabels", data_root=str(tmp_path)),
                        dict(type="ToTensor", keys=["gt_seg_2d"])])
    out = pipeline(results)
    assert isinstance(out["gt_seg_2d"], torch.Tensor) and out["gt_seg_2d"].shape == (6, 5, 7)
    assert out["gt_seg_2d"][:, 0, 0].tolist() == [10, 11, 12, 13, 14, 15]  # camera order kept


@pytest.fixture(scope="module")
def synthetic_world(tmp_path_factory):
    from priorocc_core.data.synthetic import generate_world

    world = tmp_path_factory.mktemp("mm_world") / "world"
    generate_world(world, n_scenes=1, n_keyframes=2, hw=(90, 160), version="v1.0-mini", progress=False)
    return world


def test_runner_trains_on_the_synthetic_world(tmp_path, synthetic_world):
    """mmengine's Runner builds PriorOcc, PriorOccDataset and priorocc_collate by name and trains a few
    iterations; on one fixed (unaugmented) sample the loss must go down."""
    from mmengine.runner import Runner

    import priorocc_core.mm_plugin as plug

    iters = 4
    dataset = dict(type="PriorOccDataset", config_file=str(TINY_YAML), split="train", train=False,
                   cfg_options=[f"data.dataroot={synthetic_world}", "data.num_workers=0"])
    runner = Runner(
        model=dict(type="PriorOcc", **TINY_MODEL),
        work_dir=str(tmp_path / "work"),
        train_dataloader=dict(batch_size=1, num_workers=0, dataset=dataset,
                              sampler=dict(type="DefaultSampler", shuffle=False),
                              collate_fn=dict(type="priorocc_collate")),
        train_cfg=dict(by_epoch=False, max_iters=iters, val_interval=iters + 1),
        optim_wrapper=dict(optimizer=dict(type="AdamW", lr=2e-3, weight_decay=0.0)),
        default_hooks=dict(checkpoint=None, logger=dict(type="LoggerHook", interval=1)),
        default_scope="mmdet3d", randomness=dict(seed=0), cfg=dict(), visualizer=None,
    )
    assert isinstance(runner.model, plug.MMPriorOcc)
    assert isinstance(runner.train_dataloader.dataset, plug.PriorOccDataset)
    assert len(runner.train_dataloader.dataset) == 2
    before = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    assert runner.iter == iters
    hub = runner.message_hub
    loss = [float(v) for v in hub.get_scalar("train/loss").data[0]]
    occ = [float(v) for v in hub.get_scalar("train/loss_occ").data[0]]
    seg = [float(v) for v in hub.get_scalar("train/loss_2d_seg").data[0]]
    assert len(loss) == iters and all(np.isfinite(loss)) and seg[0] > 0
    np.testing.assert_allclose(loss, np.add(occ, seg), rtol=1e-5)  # the total is the sum of the terms
    # each sample is seen iters/2 times: the later visit of the same sample has a lower loss
    assert loss[-2] < loss[0] and loss[-1] < loss[1], loss
    changed = [k for k, v in runner.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("net.backbone.") for k in changed) and any(k.startswith("net.injector.") for k in changed)
