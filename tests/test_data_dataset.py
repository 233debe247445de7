"""OccDataset: samples, augmentation consistency, FlashOCC info pkl, real data, bad input."""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_data_synthetic import WORLD_HW, tiny_world

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _shared(sub: str) -> Path:
    p = SHARED / sub
    if not p.exists():
        if os.environ.get("CI"):
            pytest.fail(f"real data {p} is absent; CI must have it")
        pytest.skip(f"real data {p} is absent (see ../shared/data/README.md)")
    return p


def _cfg(root: Path, **data):
    from priorocc_core.config import Config

    cfg = Config()
    cfg.data.dataroot = str(root)
    cfg.data.version = "v1.0-mini"
    cfg.model.image.input_size = (96, 176)
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def test_sample_keys_shapes_and_collate():
    from priorocc_core.data import OccDataset, collate

    ds = OccDataset(_cfg(tiny_world(), load_depth=True), "train", train=False)
    assert len(ds) == 2
    s = ds[0]
    assert s["imgs"].shape == (6, 3, 96, 176) and s["imgs"].dtype == torch.float32
    assert s["cam2ego"].shape == (6, 4, 4) and s["K"].shape == (6, 3, 3) and s["img_aug"].shape == (6, 3, 3)
    assert torch.equal(s["bev_aug"], torch.eye(4))
    for k in ("voxel_semantics", "mask_camera", "mask_lidar"):
        assert s[k].shape == (200, 200, 16) and s[k].dtype == torch.uint8
    assert s["seg_labels"].shape == (6, 96, 176) and (s["seg_labels"] != 255).float().mean() > 0.5
    assert s["depth_target"].shape == (6, 96, 176) and (s["depth_target"] > 0).any()
    assert isinstance(s["sample_token"], str) and len(s["image_paths"]) == 6
    b = collate([s, ds[1]])
    assert b["imgs"].shape == (2, 6, 3, 96, 176) and b["voxel_semantics"].shape == (2, 200, 200, 16)
    assert b["sample_token"] == [s["sample_token"], ds[1]["sample_token"]]
    # without labels on disk the keys are absent
    ds2 = OccDataset(_cfg(tiny_world(), seg_label_root="/nonexistent", occ_root="/nonexistent"), "all", train=False)
    s2 = ds2[0]
    assert "seg_labels" not in s2 and "voxel_semantics" not in s2 and "depth_target" not in s2


def test_augmentation_consistency():
    """A 3D point projected into the augmented image lands on the same label as before
    augmentation; BEV flips move the ground truth with the geometry."""
    from priorocc_core.data import OccDataset, load_lidar_points, load_occ_gt, load_seg_label, seg_label_path

    ds = OccDataset(_cfg(tiny_world()), "all", train=True)
    ds.cfg.model.image.resize_range = (0.2, 0.4)  # strong augmentation
    torch.manual_seed(7)
    checked, agree, flips = 0, 0, set()
    for trial in range(4):
        s = ds[0]
        rec = ds.records[0]
        gt = load_occ_gt(ds.occ_path(rec))
        pts = load_lidar_points(ds.resolve(rec["lidar"]["path"]))[:, :3].astype(np.float64)
        l2e = np.asarray(rec["lidar"]["lidar2ego"])
        pe = pts @ l2e[:3, :3].T + l2e[:3, 3]
        for n in range(6):
            lab0 = load_seg_label(seg_label_path(ds.seg_root, ds.dataroot, s["image_paths"][n]), WORLD_HW)
            c2e, K, A = (s[k][n].double().numpy() for k in ("cam2ego", "K", "img_aug"))
            e2c = np.linalg.inv(c2e)
            pc = pe @ e2c[:3, :3].T + e2c[:3, 3]
            pc = pc[pc[:, 2] > 0.5]
            p0 = pc @ K.T
            p1 = p0 @ A.T
            u0, v0 = np.floor(p0[:, 0] / p0[:, 2]).astype(int), np.floor(p0[:, 1] / p0[:, 2]).astype(int)
            u1, v1 = np.floor(p1[:, 0] / p1[:, 2]).astype(int), np.floor(p1[:, 1] / p1[:, 2]).astype(int)
            H, W = WORLD_HW
            h, w = s["seg_labels"].shape[-2:]
            ok = (u0 >= 2) & (u0 < W - 2) & (v0 >= 2) & (v0 < H - 2) & (u1 >= 0) & (u1 < w) & (v1 >= 0) & (v1 < h)
            for a, b, c, d in zip(u0[ok], v0[ok], u1[ok], v1[ok]):
                win = lab0[b - 2 : b + 3, a - 2 : a + 3]
                if (win != win[2, 2]).any():  # skip label boundaries (nearest resampling)
                    continue
                checked += 1
                agree += int(s["seg_labels"][n, d, c] == lab0[b, a])
        # BEV: the flipped grid at the flipped point equals the original grid at the point
        bev = s["bev_aug"].double().numpy()
        flips.add((bev[0, 0] < 0, bev[1, 1] < 0))
        occ = pe[(np.abs(pe[:, :2]) < 39).all(1) & (pe[:, 2] > -0.9) & (pe[:, 2] < 5.3)]
        ijk = np.floor((occ - [-40, -40, -1]) / 0.4).astype(int)
        pa = occ @ bev[:3, :3].T
        ijk2 = np.floor((pa - [-40, -40, -1]) / 0.4).astype(int)
        assert np.array_equal(gt["semantics"][ijk[:, 0], ijk[:, 1], ijk[:, 2]],
                              s["voxel_semantics"].numpy()[ijk2[:, 0], ijk2[:, 1], ijk2[:, 2]])
    # nearest resampling under rotation shifts a few samples by a pixel: >= 97 % land on the same label
    assert checked > 1000 and agree / checked > 0.97, (agree, checked)
    assert len(flips) > 1


def _flashocc_infos(root: Path):
    """Info dicts in FlashOCC's bevdetv2-nuscenes_infos layout (tools/create_data_bevdet.py)."""
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)
    infos = []
    for sample in nusc.sample:
        lsd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        lcs = nusc.get("calibrated_sensor", lsd["calibrated_sensor_token"])
        lpose = nusc.get("ego_pose", lsd["ego_pose_token"])
        scene = nusc.get("scene", sample["scene_token"])
        info = {"lidar_path": "./data/nuscenes/" + lsd["filename"], "token": sample["token"], "sweeps": [],
                "cams": {}, "lidar2ego_translation": lcs["translation"], "lidar2ego_rotation": lcs["rotation"],
                "ego2global_translation": lpose["translation"], "ego2global_rotation": lpose["rotation"],
                "timestamp": sample["timestamp"], "gt_boxes": np.zeros((0, 7)), "gt_names": np.array(["car"]),
                "scene_token": sample["scene_token"], "scene_name": scene["name"],
                "occ_path": "./data/nuscenes/gts/%s/%s" % (scene["name"], sample["token"])}
        for cam in ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT"):
            sd = nusc.get("sample_data", sample["data"][cam])
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            pose = nusc.get("ego_pose", sd["ego_pose_token"])
            info["cams"][cam] = {"data_path": "./data/nuscenes/" + sd["filename"], "type": cam,
                                 "sample_data_token": sd["token"], "sensor2ego_translation": cs["translation"],
                                 "sensor2ego_rotation": cs["rotation"], "ego2global_translation": pose["translation"],
                                 "ego2global_rotation": pose["rotation"], "timestamp": sd["timestamp"],
                                 "sensor2lidar_rotation": np.eye(3), "sensor2lidar_translation": np.zeros(3),
                                 "cam_intrinsic": np.array(cs["camera_intrinsic"])}
        infos.append(info)
    return infos


def test_flashocc_info_pkl_and_cache(tmp_path):
    from priorocc_core.data import DataError, OccDataset, load_info_file, write_info_cache

    root = tiny_world()
    pkl = tmp_path / "bevdetv2-nuscenes_infos_train.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"infos": _flashocc_infos(root), "metadata": {"version": "v1.0-mini"}}, f)
    ref = OccDataset(_cfg(root), "all", train=False)
    ds = OccDataset(_cfg(root, info_file_train=str(pkl)), "train", train=False)
    a, b = ref[1], ds[1]
    assert a["sample_token"] == b["sample_token"] and a["scene_name"] == b["scene_name"]
    for k in ("imgs", "cam2ego", "K", "voxel_semantics", "seg_labels"):
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-4), k
    # the project's own cache round-trips
    cache = tmp_path / "infos.json"
    write_info_cache(ref.records, cache)
    assert load_info_file(cache) == ref.records
    # a pkl that smuggles code is refused
    evil = tmp_path / "evil.pkl"
    with open(evil, "wb") as f:
        pickle.dump({"infos": [os.system]}, f)
    with pytest.raises(DataError, match="evil.pkl.*refuses"):
        load_info_file(evil)


def test_real_keyframe_and_real_occ3d():
    from priorocc_core.data import OccDataset, load_occ_gt

    real = _shared("nuscenes-real")
    ds = OccDataset(_cfg(real, load_depth=True), "all", train=False)
    s = ds[0]
    assert s["sample_token"] == "ca9a282c9e77460f8360f564131a8af5" and s["imgs"].shape == (6, 3, 96, 176)
    assert (s["depth_target"] > 0).sum() > 100
    # CAM_FRONT looks forward: its optical axis in ego is about +x
    front = s["cam2ego"][1].numpy()
    assert front[0, 2] > 0.99
    occ = _shared("occ3d-real")
    gt = load_occ_gt(next(occ.glob("*/labels.npz")))
    assert gt["semantics"].shape == (200, 200, 16) and gt["mask_camera"].any()


def test_bad_inputs(tmp_path):
    from PIL import Image

    from priorocc_core.data import DataError, OccDataset, load_occ_gt

    root = tmp_path / "w"
    shutil.copytree(tiny_world(), root)
    ds = OccDataset(_cfg(root), "all", train=False)
    rec = ds.records[0]
    img = ds.resolve(rec["cams"]["CAM_FRONT"]["path"])
    # 2D label PNG of the wrong size
    lab = root / "seg_2d_labels" / img.relative_to(root).with_suffix(".png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(lab)
    with pytest.raises(DataError, match=str(lab.name)):
        ds[0]
    lab.unlink()
    # truncated JPEG
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"{img.name}.*truncated"):
        ds[0]
    # missing image
    img.unlink()
    with pytest.raises(DataError, match=f"{img.name}.*does not exist"):
        ds[0]
    # labels.npz with the wrong shape / dtype
    bad = tmp_path / "labels.npz"
    np.savez(bad, semantics=np.zeros((200, 200, 8), np.uint8), mask_lidar=np.zeros((200, 200, 16), np.uint8),
             mask_camera=np.zeros((200, 200, 16), np.uint8))
    with pytest.raises(DataError, match="labels.npz.*semantics.*shape"):
        load_occ_gt(bad)
    np.savez(bad, semantics=np.zeros((200, 200, 16), np.int64), mask_lidar=np.zeros((200, 200, 16), np.uint8),
             mask_camera=np.zeros((200, 200, 16), np.uint8))
    with pytest.raises(DataError, match="labels.npz.*dtype"):
        load_occ_gt(bad)
    gtf = ds.occ_path(ds.records[1])
    shutil.copy(bad, gtf)
    with pytest.raises(DataError, match=str(gtf.parent.name)):
        ds[1]
    # unknown camera name
    cfg = _cfg(root)
    cfg.model.image.cameras = ("CAM_FRONT", "CAM_TOP")
    with pytest.raises(DataError, match="CAM_TOP"):
        OccDataset(cfg, "all", train=False)


def test_docs_sample_key_table_names_every_key():
    """docs/data.md's table of sample keys names every key a sample has (issue 31 item 10: it
    lacked ``occ2key``; mutation: that row removed)."""
    import re

    from priorocc_core.data import OccDataset

    table = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text().split("Per sample")[1]
    documented = {k for row in re.findall(r"^\| (.+?) \|", table, re.M) for k in re.findall(r"`(\w+)`", row)}
    s = OccDataset(_cfg(tiny_world(), load_depth=True), "train", train=False)[0]
    assert set(s) - documented == set()


def test_table_version_auto_reads_the_only_folder(tmp_path):
    """Issue 31 item 4: ``data.version`` auto (the default) reads the dataroot's only table folder,
    whatever make_synthetic named it; two folders, or none, or no dataroot: a DataError naming the
    input. Before: Config() read v1.0-trainval while tiny.yaml / priorocc_quantize read v1.0-mini
    (mutation: DataConfig.version back to "v1.0-trainval" fails the v1.0-mini world below)."""
    from priorocc_core.config import Config
    from priorocc_core.data import DataError, OccDataset
    from priorocc_core.data.infos import table_version

    root = tmp_path / "w"
    shutil.copytree(tiny_world(), root)  # v1.0-mini, as make_synthetic writes by default
    cfg = Config()
    cfg.data.dataroot, cfg.data.train_split = str(root), "all"
    assert len(OccDataset(cfg, "train", train=False)) == 2
    (root / "v1.0-mini").rename(root / "v1.0-trainval")
    assert table_version(root) == "v1.0-trainval" and len(OccDataset(cfg, "train", train=False)) == 2
    shutil.copytree(root / "v1.0-trainval", root / "v1.0-test")
    with pytest.raises(DataError, match=r"several table folders \(v1.0-test, v1.0-trainval\); choose one with data.version"):
        OccDataset(cfg, "train", train=False)
    cfg.data.version = "v1.0-test"
    assert len(OccDataset(cfg, "train", train=False)) == 2
    cfg.data.version = "v1.0-mini"
    with pytest.raises(DataError, match="data.version v1.0-mini: no table folder .* v1.0-test, v1.0-trainval"):
        OccDataset(cfg, "train", train=False)
    cfg.data.dataroot = str(tmp_path / "absent")
    with pytest.raises(DataError, match=r"data.dataroot .*absent: no such folder") as e:
        OccDataset(cfg, "train", train=False)
    assert "data.version" not in str(e.value)  # before: "no table folder v1.0-mini/ (data.version)"


def test_loader_workers_fit_the_cpus():
    """Issue 31 item 10: data.num_workers above this process's CPUs is lowered to them, with one
    line (a converted FlashOCC config keeps num_workers 4; on 2 cores torch warned over several
    lines). Mutation: fit_loader_workers returning cfg unchanged."""
    from priorocc_core.config import Config
    from priorocc_core.data import fit_loader_workers

    cfg = Config()
    cpus = len(os.sched_getaffinity(0))
    cfg.data.num_workers = cpus + 3
    fitted, note = fit_loader_workers(cfg)
    assert fitted.data.num_workers == cpus and note == f"data.num_workers {cpus + 3} > {cpus} CPUs here: using {cpus}"
    assert cfg.data.num_workers == cpus + 3  # the given config is not changed
    cfg.data.num_workers = 0
    assert fit_loader_workers(cfg) == (cfg, None)
