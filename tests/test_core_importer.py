"""FlashOCC / BEVDet checkpoint import (mmcv layout fixtures written from the sources)."""
from __future__ import annotations

import collections

import pytest
import torch

from priorocc_core.checkpoint import load_checkpoint
from priorocc_core.config import Config
from priorocc_core.importer import ImportError_, import_checkpoint, main
from priorocc_core.model import build_model
from tests.conftest import ROOT
from tests.fixtures import mmcv_layouts as L


def cfg_of(name: str, small_images=True) -> Config:
    cfg = Config.from_yaml(ROOT / "training" / "configs" / f"{name}.yaml")
    # image size does not change any weight shape; keeps the CPU forward quick
    return cfg.with_overrides(["model.image.input_size=[128, 352]"]) if small_images else cfg


@pytest.mark.parametrize("layout,config", [(L.flashocc_m0, "flashocc-r50-m0"), (L.priorocc_r50, "priorocc-r50"),
                                           (L.flashocc_4d, "flashocc-r50-4d"),
                                           (L.flashocc_m2, "flashocc-r50-4d-stereo")])
def test_published_layout_maps_every_tensor_once(tmp_path, layout, config):
    """Mutations tried: (4D) the pre_process_net rule removed from NAME_TABLE -> its tensors are
    skipped and the test fails; (M2) the depth-net rule back to ``(weight|bias)`` only -> the
    DepthNet's tensors are skipped; DepthNet's ASPP branch channels taken from mid_channels (256)
    instead of aspp_mid_channels -> shapes differ, skipped; the stereo BasicBlock's 1x1 shortcut
    without bias -> its bias is skipped."""
    src = tmp_path / "src.pth"
    L.save_mmcv_checkpoint(src, layout())
    cfg = cfg_of(config)
    state, report = import_checkpoint(src, cfg)
    assert not report.skipped, report.format()
    assert len(report.mapped) == len(layout())
    targets = [t for _, t in report.mapped]
    assert len(set(targets)) == len(targets)  # each exactly once
    assert set(targets) == set(build_model(cfg.model).state_dict())  # and every model tensor is covered
    assert not report.missing
    sd = L.random_state_dict(layout())
    depth = "depth_conv.4.weight" if config.endswith("stereo") else "weight"  # M2: DepthNet's last conv
    assert torch.equal(state[f"view_transformer.depth_net.{depth}"], sd[f"img_view_transformer.depth_net.{depth}"])
    assert torch.equal(state["neck.lateral_convs.1.weight"], sd["img_neck.lateral_convs.1.conv.weight"])
    assert torch.equal(state["occ_head.predicter.2.bias"], sd["occ_head.predicter.2.bias"])


def test_imported_m0_runs_end_to_end(tmp_path):
    src = tmp_path / "m0.pth"
    L.save_mmcv_checkpoint(src, L.flashocc_m0())
    cfg_path = tmp_path / "m0.yaml"
    cfg_of("flashocc-r50-m0").to_yaml(cfg_path)
    assert main([str(src), "--config", str(cfg_path), "--out", str(tmp_path / "ck")]) == 0
    model, cfg, info = load_checkpoint(tmp_path / "ck")
    assert info["extra"]["mapped"] == len(L.flashocc_m0())
    from tests.test_core_model import random_batch

    with torch.no_grad():
        out = model(random_batch(cfg, train=False))
    assert out["occ"].shape == (1, 200, 200, 16)


def test_bevdet_layout_reports_its_skips(tmp_path):
    src = tmp_path / "bevdet.pth"
    L.save_mmcv_checkpoint(src, L.bevdet_r50_cbgs())
    state, report = import_checkpoint(src, cfg_of("priorocc-r50"), allow_missing=True)
    assert report.layout.startswith("BEVDet")
    skipped = dict(report.skipped)
    head = [k for k in skipped if k.startswith("pts_bbox_head.")]
    assert len(head) == len([k for k in L.bevdet_r50_cbgs() if k.startswith("pts_bbox_head.")])
    assert "shape (123, 256, 1, 1) != model (152, 256, 1, 1)" in skipped["img_view_transformer.depth_net.weight"]
    assert set(skipped) - set(head) == {"img_view_transformer.depth_net.weight", "img_view_transformer.depth_net.bias"}
    missing = dict(report.missing)
    assert all("freshly initialised" in why for why in missing.values())
    assert any(k.startswith("injector.") and "SemanticInjector" in why for k, why in missing.items())
    # M0 has a 128-channel BEV neck: BEVDet's 256-channel FPN_LSS is skipped as well
    _, report_m0 = import_checkpoint(src, cfg_of("flashocc-r50-m0"), allow_missing=True)
    assert any(k.startswith("img_bev_encoder_neck.") for k, _ in report_m0.skipped)


def test_missing_tensors_fail_the_import_unless_allowed(tmp_path, capsys):
    """priorocc_import is strict for inference: a FlashOCC M0 file with two tensors removed exits
    non-zero naming them and writes nothing; --allow-missing writes the model and reports them.
    Mutation check: dropping the ``if report.missing and not allow_missing`` raise fails this test."""
    layout = L.flashocc_m0()
    gone = ["occ_head.predicter.2.bias", "img_neck.fpn_convs.0.conv.weight"]
    src = tmp_path / "m0-cut.pth"
    L.save_mmcv_checkpoint(src, {k: v for k, v in layout.items() if k not in gone})
    cfg_path = tmp_path / "m0.yaml"
    cfg_of("flashocc-r50-m0").to_yaml(cfg_path)
    out = tmp_path / "ck"
    assert main([str(src), "--config", str(cfg_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "occ_head.predicter.2.bias" in err and "neck.fpn_convs.0.weight" in err and "2 tensors" in err
    assert "FlashOCC BEVDetOCC" in err and not out.exists()
    assert main([str(src), "--config", str(cfg_path), "--out", str(out), "--allow-missing"]) == 0
    report = capsys.readouterr().out
    assert "recognised layout: FlashOCC BEVDetOCC (BEVOCCHead2D), mmcv/mmengine checkpoint" in report
    assert "missing  2 tensors" in report
    assert load_checkpoint(out)[2]["extra"]["missing"] == 2


def test_wrong_shape_is_named_with_both_shapes(tmp_path, capsys):
    """Issue 27 item 5: a tensor of another shape is reported with both shapes, not as "not in
    it" (which sent users looking for a missing key). Mutation: the wrong_shape branch of the
    error dropped -> the message says "not in it" without shapes; this test fails."""
    layout = dict(L.flashocc_m0())
    name = "occ_head.predicter.2.bias"
    n = layout[name][0]  # layouts are {name: shape}
    layout[name] = (n + 3,)
    src = tmp_path / "m0-shape.pth"
    L.save_mmcv_checkpoint(src, layout)
    cfg_path = tmp_path / "m0.yaml"
    cfg_of("flashocc-r50-m0").to_yaml(cfg_path)
    assert main([str(src), "--config", str(cfg_path), "--out", str(tmp_path / "ck")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"{name} has shape ({n + 3},) in the source" in err and f"({n},)" in err, err
    assert "not in it" not in err


class NeedsCode:  # a pickled object that needs this class to rebuild
    def __init__(self):
        self.x = 1


def test_pickled_object_is_refused(tmp_path):
    src = tmp_path / "evil.pth"
    torch.save({"state_dict": collections.OrderedDict(a=torch.zeros(1)), "meta": {"obj": NeedsCode()}}, src)
    with pytest.raises(ImportError_, match="refused"):
        import_checkpoint(src, cfg_of("flashocc-r50-m0"))


def test_truncated_file_and_foreign_model(tmp_path):
    src = tmp_path / "m0.pth"
    L.save_mmcv_checkpoint(src, L.flashocc_m0())
    cut = tmp_path / "cut.pth"
    cut.write_bytes(src.read_bytes()[: 100_000])
    with pytest.raises(ImportError_, match="truncated or corrupt"):
        import_checkpoint(cut, cfg_of("flashocc-r50-m0"))
    import torchvision

    other = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), other)
    with pytest.raises(ImportError_, match="does not look like a FlashOCC"):
        import_checkpoint(other, cfg_of("flashocc-r50-m0"))
