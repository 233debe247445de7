"""2D label sources: projection of the Occ3D ground truth vs exact labels, tiny SegFormer,
the generator script (resumable, skips unreadable images)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_data_synthetic import WORLD_HW, tiny_world


def test_projection_labels_agree_with_exact_labels():
    from priorocc_core.config import Config
    from priorocc_core.data import OccDataset, load_occ_gt, load_seg_label, seg_label_path
    from priorocc_core.data.labels import ProjectionLabeler, agreement, merge_labels
    from priorocc_core.geometry import invert_rigid

    cfg = Config()
    cfg.data.dataroot, cfg.data.version = str(tiny_world()), "v1.0-mini"
    ds = OccDataset(cfg, "all", train=False)
    both = total = 0
    for rec in ds.records:
        proj = ProjectionLabeler(load_occ_gt(ds.occ_path(rec))["semantics"])
        g2k = invert_rigid(np.asarray(rec["ego2global"]))
        for cam, c in rec["cams"].items():
            ref = load_seg_label(seg_label_path(ds.seg_root, ds.dataroot, ds.resolve(c["path"])), WORLD_HW)
            lab = proj(g2k @ np.asarray(c["ego2global"]) @ np.asarray(c["sensor2ego"]), np.asarray(c["K"]), WORLD_HW)
            a, cover = agreement(lab, ref)
            m = (lab != 255) & (ref != 255)
            both += int((lab[m] == ref[m]).sum())
            total += int(m.sum())
            assert cover > 0.5, (cam, cover)
    assert total > 0 and both / total >= 0.95, both / total
    x = np.array([[255, 3], [255, 255]], np.uint8)
    y = np.array([[4, 5], [255, 6]], np.uint8)
    assert merge_labels([x, y]).tolist() == [[4, 3], [255, 6]]


@pytest.fixture(scope="module")
def tiny_segformer(tmp_path_factory):
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    cfg = SegformerConfig(num_labels=19, num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1],
                          hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16)
    d = tmp_path_factory.mktemp("segformer")
    SegformerForSemanticSegmentation(cfg).save_pretrained(d)
    return d


def test_segformer_labeler_from_local_folder(tiny_segformer):
    from priorocc_core.data.labels import SegFormerLabeler

    seg = SegFormerLabeler(str(tiny_segformer), "cpu")
    imgs = [np.random.default_rng(i).integers(0, 255, (60, 100, 3), dtype=np.uint8) for i in range(2)]
    out = seg(imgs)
    assert len(out) == 2 and out[0].shape == (60, 100) and out[0].dtype == np.uint8
    assert set(np.unique(out[0]).tolist()) <= set(range(17)) | {255}


def test_generator_script(tmp_path, tiny_segformer):
    from training.generate_2d_seg_labels import main

    root = tmp_path / "w"
    shutil.copytree(tiny_world(), root)
    jpgs = sorted((root / "samples" / "CAM_FRONT").glob("*.jpg"))
    data = jpgs[0].read_bytes()
    jpgs[0].write_bytes(data[: len(data) // 3])  # unreadable
    out = tmp_path / "labels"
    args = ["--dataroot", str(root), "--version", "v1.0-mini", "--sources", "projection,segformer", "--model",
            str(tiny_segformer), "--out", str(out), "--batch-size", "3", "--no-progress"]
    assert main(args) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["done"] == 11 and len(rep["failed"]) == 1 and jpgs[0].name in rep["failed"][0]["image"]
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == 11
    # projection wins where it labels; SegFormer fills the rest (sky etc.)
    exact = root / "seg_2d_labels" / pngs[0].relative_to(out)
    a, b = np.asarray(__import__("PIL.Image").Image.open(pngs[0])), np.asarray(__import__("PIL.Image").Image.open(exact))
    m = b != 255
    assert (a[m] == b[m]).mean() > 0.6
    # resumable: a second run skips everything already written
    assert main(args) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["done"] == 0 and rep["skipped_existing"] == 11
