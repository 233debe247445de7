"""priorocc_config_from_flashocc: FlashOCC / BEVDet config files -> this project's YAML configs.

The fixtures in tests/fixtures/flashocc/ are written for this project in FlashOCC's format and carry
the values of FlashOCC's flashocc-r50-M0.py / flashocc-r50.py / flashocc-r50-4d-stereo.py /
flashocc-stbase-4d-stereo-512x1408_4x4_2e-4.py (read from FlashOCC's repository); priorocc-r50.py is PriorOcc's own config in that format (docs/design.md).

Mutations tried (each made a test here fail, then restored): FPN_LSS out_channels taken from the
BEV backbone's second stage; occ_z step = the pooling z step instead of range / Dz; the depth bins
replaced by M1's; the temporal keys dropped without a note; the `sid` flag not taken (4D); the _base_
merge letting the base win; `for` bodies not run (data[...].update); calls of any builtin allowed
(open() writes the marker file); the unsupported-type check removed; the injector's mid_channels
fixed at 256. The temporal tests carry their own mutations.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from priorocc_core.config import Config, load_config
from priorocc_core.flashocc_config import FlashOCCConfigError, convert_flashocc_config, main
from priorocc_core.mmcv_config import read_mmcv_config
from priorocc_core.model import build_model

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "flashocc"
CONFIGS = REPO / "training" / "configs"

# Where a converted FlashOCC file differs from our shipped YAML, and why (each a fact of the source):
EXPECTED_DIFFERENCES = {
    "model.backbone.with_cp": True,  # FlashOCC checkpoints the ResNet stages (memory only, same tensors)
    "data.info_file_train": "data/nuscenes/bevdetv2-nuscenes_infos_train.pkl",  # its ann_file
    "data.info_file_val": "data/nuscenes/bevdetv2-nuscenes_infos_val.pkl",
    "train.amp": False,  # `fp16 = ...` is commented out in FlashOCC's files
}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def _shapes(cfg: Config) -> dict[str, tuple]:
    # built on the CPU: under torch.device("meta") the frustum's linspace came back on the CPU once
    # other tests had run torch.compile / the dynamo exporter in the process (mixed-device stack)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("src, ours, bins, c_enc", [
    ("flashocc-r50-M0.py", "flashocc-r50-m0.yaml", 44, 128),
    ("flashocc-r50.py", "flashocc-r50.yaml", 88, 256),
])
def test_flashocc_files_convert_to_our_configs(src, ours, bins, c_enc):
    cfg, notes = convert_flashocc_config(FIX / src)
    ref = load_config(CONFIGS / ours)
    got, want = _flat(cfg.to_dict()), _flat(ref.to_dict())
    assert set(got) == set(want)
    diff = {k: got[k] for k in got if got[k] != want[k]}
    assert diff == EXPECTED_DIFFERENCES, diff  # every other field, model, data and schedule, is equal
    assert cfg.model.grid.num_depth_bins == bins and cfg.model.bev_encoder.out_channels == c_enc
    # the two networks have the same tensors, name for name and shape for shape
    shapes = _shapes(cfg)
    assert shapes == _shapes(ref)
    assert shapes["view_transformer.depth_net.weight"][0] == bins + 64
    # nothing that changes the network went unmentioned
    assert any("pretrained='torchvision://resnet50'" in n for n in notes)
    assert not any(n.startswith("model.") and "pretrained" not in n for n in notes), notes


def test_m0_and_m1_layouts_differ():
    """The shape comparison above can fail: M0 and M1 differ in the depth net and the encoder."""
    m0 = _shapes(convert_flashocc_config(FIX / "flashocc-r50-M0.py")[0])
    m1 = _shapes(convert_flashocc_config(FIX / "flashocc-r50.py")[0])
    assert m0.keys() == m1.keys() and m0["view_transformer.depth_net.weight"] != m1["view_transformer.depth_net.weight"]
    assert m0["occ_head.final_conv.weight"] == (128, 128, 3, 3) and m1["occ_head.final_conv.weight"] == (256, 256, 3, 3)


def test_priorocc_config_in_flashocc_format():
    cfg, notes = convert_flashocc_config(FIX / "priorocc-r50.py")
    ref = load_config(CONFIGS / "priorocc-r50.yaml")
    m = cfg.model
    assert m.injector.enabled and (m.injector.num_classes, m.injector.mid_channels, m.injector.loss_weight) == (17, 256, 0.3)
    assert m.view_transformer.depth_loss_weight == 3.0 and cfg.data.load_depth  # BEVDepth-style supervision
    assert m.head.class_balance and cfg.data.load_seg_labels
    assert _shapes(cfg) == _shapes(ref)  # the injector's tensors included
    assert any("LSSViewTransformerBEVDepth" in n and "DepthNet" in n for n in notes)
    # the plug-in's own mmengine config (model type PriorOcc with our sections) gives our model section
    cfg2, _ = convert_flashocc_config(REPO / "priorocc_core" / "mm_plugin" / "configs" / "priorocc_r50_mmengine.py")
    assert cfg2.model == ref.model and cfg2.train.load_from == ref.train.load_from


def test_injector_settings_are_taken_from_the_file(tmp_path):
    src = (FIX / "priorocc-r50.py").read_text().replace(
        "mid_channels=256, num_classes=17,\n                           loss_weight=0.3, softmax_before_fusion=False",
        "mid_channels=128, num_classes=11,\n                           loss_weight=0.5, softmax_before_fusion=True")
    assert "mid_channels=128" in src
    (tmp_path / "variant.py").write_text(src)
    inj = convert_flashocc_config(tmp_path / "variant.py")[0].model.injector
    assert (inj.enabled, inj.mid_channels, inj.num_classes, inj.loss_weight, inj.softmax_before_fusion) == (
        True, 128, 11, 0.5, True)


def test_4d_stereo_converts_to_flashocc_m2_with_stereo_depth(capsys, tmp_path):
    """FlashOCC's M2 file (flashocc-r50-4d-stereo.py) -> FlashOCC M2: num_adj 1, pre-process, past
    cameras lifted into the current ego, stereo depth (the cost volume's stage 0 kept in
    out_indices, BEVDepth's DepthNet with ASPP 96, SID bins, bias 5), i.e. our
    flashocc-r50-4d-stereo.yaml network tensor for tensor; nothing of the model is left unmapped
    and no WARNING is printed.

    Mutations tried: the temporal keys dropped (the old single-frame conversion) -> fails on
    num_adj; ``stereo`` not set in model.temporal -> fails on the tuple; stage 0 dropped from
    out_indices (the old conversion) -> fails on out_indices; depthnet_cfg's aspp_mid_channels
    ignored (256) -> the shapes differ."""
    cfg, notes = convert_flashocc_config(FIX / "flashocc-r50-4d-stereo.py")
    t, vt = cfg.model.temporal, cfg.model.view_transformer
    assert (t.num_adj, t.align_after_view_transformation, t.pre_process.enabled, t.pre_process.num_layer, t.stereo,
            t.stereo_bias) == (1, False, True, 1, True, 5.0)
    assert (vt.out_channels, vt.sid, vt.depth_net, vt.aspp_mid_channels, vt.depth_loss_weight) == (
        80, True, "camera_aware", 96, 0.05)
    assert cfg.model.backbone.out_indices == (0, 2, 3)
    assert not any(n.startswith("WARNING") for n in notes)
    assert [n for n in notes if n.startswith("model.")] == [n for n in notes if "pretrained=" in n], notes
    assert _shapes(cfg) == _shapes(load_config(CONFIGS / "flashocc-r50-4d-stereo.yaml"))
    assert main([str(FIX / "flashocc-r50-4d-stereo.py"), "--out", str(tmp_path / "m2.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert not any(line.startswith("WARNING") for line in out)
    assert out[1].startswith("temporal: 1 past frame(s)") and "stereo depth on" in out[1]
    assert load_config(tmp_path / "m2.yaml").model.temporal.stereo


def test_stereo_model_with_a_plain_view_transformer_is_refused(tmp_path):
    """BEVStereo4DOCC whose view transformer is not LSSViewTransformerBEVStereo (or whose backbone
    drops stage 0): one line naming the key, exit 2, nothing written.

    Mutation tried: the type pairing check removed -> a stereo config without the camera-aware
    depth net is written (exit 0)."""
    src = (FIX / "flashocc-r50-4d-stereo.py").read_text()
    for bad, key in ((src.replace("type='LSSViewTransformerBEVStereo'", "type='LSSViewTransformer'"),
                      "model.img_view_transformer.type=LSSViewTransformer"),
                     (src.replace("out_indices=(0, 2, 3)", "out_indices=(2, 3)"), "model.img_backbone.out_indices")):
        (tmp_path / "src.py").write_text(bad)
        out = tmp_path / "x.yaml"
        r = subprocess.run([sys.executable, "-m", "priorocc_core.flashocc_config", str(tmp_path / "src.py"),
                            "--out", str(out)], capture_output=True, text=True, cwd=REPO)
        assert r.returncode == 2 and key in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_4d_without_stereo_maps_whole(tmp_path):
    """A BEVDet4D-OCC file (the M2 file with a plain LSS view transformer): every model key maps,
    other pre-process depths and frame settings are taken or listed."""
    src = (FIX / "flashocc-r50-4d-stereo.py").read_text()
    src = src.replace("type='BEVStereo4DOCC'", "type='BEVDet4DOCC'").replace(
        "type='LSSViewTransformerBEVStereo'", "type='LSSViewTransformer'").replace("sid=True, ", "").replace(
        "out_indices=(0, 2, 3)", "out_indices=(2, 3)")
    (tmp_path / "bevdet4d.py").write_text(src)
    cfg, notes = convert_flashocc_config(tmp_path / "bevdet4d.py")
    assert cfg.model.temporal.num_adj == 1 and not any(n.startswith("WARNING") for n in notes)
    assert [n for n in notes if n.startswith("model.")] == [n for n in notes if "pretrained=" in n], notes
    assert not cfg.model.temporal.stereo and cfg.model.view_transformer.depth_net == "conv"
    (tmp_path / "sid.py").write_text(src.replace("in_channels=256, out_channels=numC_Trans,",
                                                 "in_channels=256, out_channels=numC_Trans, sid=True,"))
    sid_cfg, notes = convert_flashocc_config(tmp_path / "sid.py")
    assert sid_cfg.model.view_transformer.sid and not any("sid" in n for n in notes)  # SID bins without stereo: taken
    src2 = src.replace("num_layer=[1, ]", "num_layer=[2, ]").replace(
        "align_after_view_transfromation=False", "align_after_view_transfromation=True, with_prev=False").replace(
        "multi_adj_frame_id_cfg = (1, 1 + 1, 1)", "multi_adj_frame_id_cfg = (1, 2 + 1, 2)").replace(
        "num_adj=len(range(*multi_adj_frame_id_cfg))", "num_adj=1").replace(
        "numC_input=numC_Trans * (len(range(*multi_adj_frame_id_cfg)) + 1)", "numC_input=numC_Trans * 2")
    (tmp_path / "variant.py").write_text(src2)
    cfg, notes = convert_flashocc_config(tmp_path / "variant.py")
    t = cfg.model.temporal
    assert (t.num_adj, t.align_after_view_transformation, t.pre_process.num_layer) == (1, True, 2)
    text = "\n".join(notes)
    assert "model.with_prev=False" in text and "multi_adj_frame_id_cfg=(1, 3, 2)" in text


@pytest.mark.parametrize("fixture, key", [("flashocc-stbase-4d-stereo.py", "model.img_backbone.type='SwinTransformer'"),
                                          ("flashocc-r50.py", "model.img_neck.type='FPN_LSS'")])
def test_config_we_cannot_build_is_refused_in_one_line(tmp_path, fixture, key):
    """FlashOCC's M3 (Swin-B backbone, FPN_LSS image neck; a TypeError traceback before) and a
    ResNet model with another image neck: one line naming the key, exit 2, nothing written.

    Mutation tried: the backbone check back to a note -> the Swin file ends in a TypeError
    traceback (its neck's in_channels is one int), exit 1."""
    src = (FIX / fixture).read_text()
    if fixture == "flashocc-r50.py":
        src = src.replace("img_neck=dict(type='CustomFPN',", "img_neck=dict(type='FPN_LSS',")
        assert "type='FPN_LSS', in_channels=[1024" in src
    (tmp_path / "src.py").write_text(src)
    out = tmp_path / "x.yaml"
    r = subprocess.run([sys.executable, "-m", "priorocc_core.flashocc_config", str(tmp_path / "src.py"),
                        "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr.count("\n") == 1 and key in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "src.py"]


def test_base_files_merge_as_mmcv_does(tmp_path):
    (tmp_path / "_base_").mkdir()
    (tmp_path / "_base_" / "runtime.py").write_text(
        "log_config = dict(interval=50, hooks=[dict(type='TextLoggerHook')])\n"
        "optimizer = dict(type='AdamW', lr=1e-4, weight_decay=1e-2)\n"
        "checkpoint_config = dict(interval=3)\n")
    child = (FIX / "flashocc-r50-M0.py").read_text()
    child = child.replace("_base_ = ['../../../mmdetection3d/configs/_base_/datasets/nus-3d.py',\n"
                          "          '../../../mmdetection3d/configs/_base_/default_runtime.py']",
                          "_base_ = ['./_base_/runtime.py']")
    child = child.replace("optimizer = dict(type='AdamW', lr=1e-4, weight_decay=1e-2)", "optimizer = dict(lr=2e-4)")
    child = child.replace("checkpoint_config = dict(interval=1, max_keep_ckpts=5)", "")
    (tmp_path / "m0.py").write_text(child)
    cfg, notes = convert_flashocc_config(tmp_path / "m0.py")
    assert cfg.train.log_interval == 50 and cfg.train.checkpoint_interval == 3  # from the base
    assert cfg.train.lr == 2e-4 and cfg.train.weight_decay == 1e-2  # child key wins, the rest merges
    assert not any("_base_" in n for n in notes)
    variables, _ = read_mmcv_config(tmp_path / "m0.py")
    assert variables["data"]["train"]["type"] == "NuScenesDatasetOccpancy"  # the `for ... update` loop ran
    (tmp_path / "d.py").write_text("_base_ = './_base_/runtime.py'\nlog_config = dict(_delete_=True, interval=7)\n")
    assert read_mmcv_config(tmp_path / "d.py")[0]["log_config"] == {"interval": 7}


def test_config_files_are_not_executed(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "evil.py").write_text(
        f"import os\nos.system('touch {marker}')\nx = __import__('os').system('touch {marker}')\n"
        f"y = open('{marker}', 'w')\nz = (lambda: 1)()\nbig = 'a' * 10**9\nbig2 = list(range(10**12))\n"
        "ok = dict(a=[1, 2][1] * 3, b=-(2 ** 3), c=f'{1 + 1}x', d=len(range(*(1, 4, 1))))\n")
    variables, notes = read_mmcv_config(tmp_path / "evil.py")
    assert not marker.exists()
    assert variables == {"ok": {"a": 6, "b": -8, "c": "2x", "d": 3}}
    assert [n.split(":")[1] for n in notes] == ["1", "2", "3", "4", "5", "6", "7"]  # each one named by line


def test_cli_writes_yaml_and_reports(tmp_path, capsys):
    out = tmp_path / "cfgs" / "m1.yaml"
    assert main([str(FIX / "flashocc-r50.py"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "88 depth bins, C_enc 256" in printed and "not mapped (" in printed
    text = out.read_text()
    assert text.startswith("# Converted by priorocc_config_from_flashocc") and "pretrained" in text.split("name:")[0]
    assert load_config(out) == convert_flashocc_config(FIX / "flashocc-r50.py")[0]  # the YAML reads back whole
    assert sorted(p.name for p in out.parent.iterdir()) == ["m1.yaml"]  # no temp file left


def test_unsupported_model_type_is_one_line_error(tmp_path):
    src = (FIX / "flashocc-r50.py").read_text().replace("type='BEVDetOCC'", "type='BEVFormerOcc'")
    (tmp_path / "bevformer.py").write_text(src)
    with pytest.raises(FlashOCCConfigError, match="'BEVFormerOcc' is not supported"):
        convert_flashocc_config(tmp_path / "bevformer.py")
    out = tmp_path / "x.yaml"
    r = subprocess.run([sys.executable, "-m", "priorocc_core.flashocc_config", str(tmp_path / "bevformer.py"),
                        "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "BEVFormerOcc" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "bevformer.py"]
