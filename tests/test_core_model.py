"""The network: shapes per docs/design.md, the injector switch, losses, configs."""
from __future__ import annotations

import pytest
import torch

from priorocc_core.config import Config, ConfigError
from priorocc_core.geometry import surround_rig
from priorocc_core.model import build_model


def random_batch(cfg, b=1, train=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(cfg.model.image.cameras)
    h, w = cfg.model.image.input_size
    cam2ego, K = surround_rig(n, (h, w), focal=h * 1.5, height=1.5)
    batch = dict(
        imgs=torch.randn(b, n, 3, h, w, generator=g),
        cam2ego=cam2ego.repeat(b, 1, 1, 1),
        K=K.repeat(b, 1, 1, 1),
        img_aug=torch.eye(3).repeat(b, n, 1, 1),
        bev_aug=torch.eye(4).repeat(b, 1, 1),
    )
    if train:
        batch["voxel_semantics"] = torch.randint(0, 18, (b, 200, 200, 16), generator=g).to(torch.uint8)
        batch["mask_camera"] = (torch.rand(b, 200, 200, 16, generator=g) > 0.5).to(torch.uint8)
        batch["seg_labels"] = torch.randint(0, 17, (b, n, h, w), generator=g).to(torch.uint8)
    return batch


def test_inference_shapes(tiny_cfg):
    model = build_model(tiny_cfg.model).eval()
    with torch.no_grad():
        out = model(random_batch(tiny_cfg, train=False))
    assert out["occ_logits"].shape == (1, 200, 200, 16, 18)
    assert out["occ"].shape == (1, 200, 200, 16)
    h, w = tiny_cfg.model.image.input_size
    assert out["seg_logits"].shape == (1, 6, 17, h // 16, w // 16)


def test_one_contract_in_train_and_eval(tiny_cfg):
    """forward returns the same outputs in training (no labels there) and evaluation; losses are
    computed from them by a separate call and are the same either way."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg.model).eval()
    batch = random_batch(tiny_cfg)
    with torch.no_grad():
        ev = model(batch)
        model.train()
        for m in model.modules():  # BatchNorm in eval statistics, to compare like with like
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        tr = model(batch)
    assert set(tr) == {"occ_logits", "depth", "seg_logits"} and set(ev) == set(tr) | {"occ"}
    assert torch.allclose(tr["occ_logits"], ev["occ_logits"], atol=1e-5)
    assert torch.allclose(model.losses(tr, batch)["loss_occ"], model.losses(ev, batch)["loss_occ"], atol=1e-5)


def test_injector_switch_changes_params_and_losses(tiny_cfg):
    on = build_model(tiny_cfg.model)
    off_cfg = tiny_cfg.with_overrides(["model.injector.enabled=false"])
    off = build_model(off_cfg.model)
    n_on = sum(p.numel() for p in on.parameters())
    n_off = sum(p.numel() for p in off.parameters())
    c, k, m = tiny_cfg.model.neck.out_channels, 17, tiny_cfg.model.injector.mid_channels
    injector_params = (c * m * 9 + 2 * m + m * k + k) + ((c + k) * c + 2 * c)
    assert n_on - n_off == injector_params
    batch = random_batch(tiny_cfg)
    on.train(), off.train()
    l_on, l_off = on.losses(on(batch), batch), off.losses(off(batch), batch)
    assert set(l_on) == {"loss_occ", "loss_2d_seg"}
    assert set(l_off) == {"loss_occ"}
    sum(l_off.values()).backward()
    with torch.no_grad():
        assert off.eval()(random_batch(tiny_cfg, train=False))["seg_logits"] is None


def test_occ_loss_honours_mask(tiny_cfg):
    model = build_model(tiny_cfg.model)
    logits = torch.zeros(1, 200, 200, 16, 18)
    logits[..., 4] = 10.0  # predicts "car" everywhere
    sem = torch.full((1, 200, 200, 16), 17, dtype=torch.long)
    mask = torch.zeros(1, 200, 200, 16, dtype=torch.bool)
    mask[0, :10] = True
    sem[0, :10] = 4  # inside the mask the prediction is right
    loss_masked = model.occ_head.loss(logits, sem, mask)
    assert loss_masked < 1e-3
    model.occ_head.use_mask = False
    assert model.occ_head.loss(logits, sem, mask) > 5.0


def test_training_step_reduces_loss_on_fixed_batch(tiny_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_cfg.model).train()
    batch = random_batch(tiny_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    first = None
    for _ in range(6):
        loss = sum(model.losses(model(batch), batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first


def test_depth_loss_option(tiny_cfg):
    cfg = tiny_cfg.with_overrides(["model.view_transformer.depth_loss_weight=3.0"])
    model = build_model(cfg.model).train()
    batch = random_batch(cfg)
    with pytest.raises(KeyError, match="depth_target"):
        model.losses(model(batch), batch)
    h, w = cfg.model.image.input_size
    batch["depth_target"] = torch.zeros(1, 6, h, w)
    batch["depth_target"][:, :, 40:, :] = 10.0
    losses = model.losses(model(batch), batch)
    assert losses["loss_depth"] > 0


def test_config_unknown_key_is_named(tmp_path, tiny_cfg):
    d = tiny_cfg.to_dict()
    d["model"]["injector"]["wieght"] = 1.0
    with pytest.raises(ConfigError, match="model.injector.wieght"):
        Config.from_dict(d)
    d = tiny_cfg.to_dict()
    d["model"]["backbone"]["depth"] = "fifty"
    with pytest.raises(ConfigError, match="model.backbone.depth"):
        Config.from_dict(d)
    with pytest.raises(ConfigError, match="unknown key"):
        tiny_cfg.with_overrides(["train.lrr=1"])


def test_config_yaml_round_trip(tmp_path, tiny_cfg):
    p = tmp_path / "c.yaml"
    tiny_cfg.to_yaml(p)
    assert Config.from_yaml(p) == tiny_cfg


@pytest.mark.parametrize("name,bins,c_enc,injector", [
    ("flashocc-r50-m0", 44, 128, False), ("flashocc-r50", 88, 256, False), ("priorocc-r50", 88, 256, True)])
def test_reference_configs_match_design(name, bins, c_enc, injector):
    from tests.conftest import ROOT

    cfg = Config.from_yaml(ROOT / "training" / "configs" / f"{name}.yaml")
    m = cfg.model
    assert m.grid.num_depth_bins == bins
    assert m.bev_encoder.out_channels == c_enc and m.head.out_dim == c_enc
    assert m.injector.enabled is injector
    assert m.backbone.depth == 50 and tuple(m.neck.in_channels) == (1024, 2048) and m.neck.out_channels == 256
    assert m.view_transformer.out_channels == 64 and tuple(m.image.input_size) == (256, 704)
    assert m.grid.occ_size == (200, 200, 16) and m.grid.size_xyz == (200, 200, 1)
    assert m.injector.num_classes == 17 and m.injector.loss_weight == pytest.approx(0.3)


@pytest.mark.parametrize("opts", [[], ["model.injector.enabled=false"]])
def test_integration_script_passes_on_tiny(opts, capsys):
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("integration_test", ROOT / "training" / "integration_test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--config", str(ROOT / "training" / "configs" / "tiny.yaml"), "--cfg-options", *opts]) == 0
    out = capsys.readouterr().out
    assert "BEV (lift-splat)" in out and "occupancy logits" in out
    assert ("SemanticInjector" in out) == (not opts)


def test_explicit_class_weights_weight_the_occupancy_loss():
    """head.class_weights: the loss is the weighted mean sum_i w[y_i] ce_i / sum_i w[y_i] over masked voxels
    (torch's weighted cross-entropy mean); a wrong length is refused."""
    import torch
    import torch.nn.functional as F

    from priorocc_core.model.occ_head import OccHead2D

    w = [float(i + 1) for i in range(18)]
    head = OccHead2D(8, 8, dz=2, num_classes=18, class_weights=w)
    logits = torch.randn(1, 3, 3, 2, 18)
    target = torch.randint(0, 18, (1, 3, 3, 2))
    mask = torch.rand(1, 3, 3, 2) > 0.3
    want = F.cross_entropy(logits[mask], target[mask], weight=torch.tensor(w))
    assert head.loss(logits, target, mask).item() == pytest.approx(want.item(), rel=1e-5)
    assert OccHead2D(8, 8, 2, 18).loss(logits, target, mask).item() == pytest.approx(
        F.cross_entropy(logits[mask], target[mask]).item(), rel=1e-5)
    with pytest.raises(ValueError, match="class_weights"):
        OccHead2D(8, 8, 2, 18, class_weights=[1.0] * 17)


def test_backbone_weights_come_from_the_builder_not_the_constructor(tmp_path, tiny_cfg):
    """build_model loads ``backbone.pretrained`` (a torchvision ResNet file, classifier ignored); the
    module constructors read no file: PriorOcc(cfg) with a path that does not exist builds.

    Mutation caught: the load_resnet_weights call dropped from build_model (conv1 stays at its random
    init); moving the file read back into ResNetBackbone.__init__ fails the constructor half."""
    import torchvision

    from priorocc_core.model import PriorOcc

    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": ref.state_dict()}, path)
    cfg = tiny_cfg.with_overrides([f"model.backbone.pretrained={path}"])
    model = build_model(cfg.model)
    assert torch.equal(model.backbone.conv1.weight, ref.conv1.weight)
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)
    PriorOcc(tiny_cfg.with_overrides([f"model.backbone.pretrained={tmp_path / 'absent.pth'}"]).model)
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        build_model(tiny_cfg.with_overrides([f"model.backbone.pretrained={tmp_path / 'absent.pth'}"]).model)
