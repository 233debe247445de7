"""OccDataset: nuScenes keyframes + Occ3D ground truth + 2D labels -> network samples.

Per sample (N cameras, network input H x W, see docs/design.md):
    imgs (N, 3, H, W) float32 normalised; cam2ego (N, 4, 4) float32 camera -> key ego
    (cfg.data.key_ego: by default the ego pose at the first camera's timestamp, FlashOCC's),
    through each camera's own ego pose: key2global^-1 @ cam_ego2global @ sensor2ego;
    K (N, 3, 3); img_aug (N, 3, 3); bev_aug (4, 4);
    occ2key (4, 4) float64: the Occ3D ground truth's frame (LIDAR_TOP ego) -> key ego;
    voxel_semantics (Dx, Dy, Dz) uint8, mask_camera / mask_lidar (Dx, Dy, Dz) uint8 as the
    file holds them, in the ground truth's own frame (FlashOCC trains on them as they are),
    with bev_aug applied (only when the sample's labels.npz exists);
    seg_labels (N, H, W) uint8, 255 = ignore (when cfg.data.load_seg_labels and PNGs exist);
    depth_target (N, H, W) float32 metres, 0 = none (when cfg.data.load_depth);
    sample_token, scene_name (str); image_paths (list of N str).
Keys whose data is absent are absent.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import Config
from ..geometry import apply_bev_aug_to_grid, bev_aug_matrix, invert_rigid
from ..preprocess import apply_image_aug, normalize_image, test_time_aug, train_aug
from .infos import check_cameras, key_ego2global, load_info_file, open_nuscenes, records_from_nuscenes
from .io import DataError, load_lidar_points, load_occ_gt, load_seg_label, read_image_rgb, seg_label_path

TENSOR_KEYS = ("imgs", "cam2ego", "K", "img_aug", "bev_aug", "voxel_semantics", "mask_camera", "mask_lidar",
               "seg_labels", "depth_target")


def resolve_split(dataroot: Path, split: str, scene_names: list[str]) -> list[str]:
    """Scene names of ``split``: "all"; a key of <dataroot>/splits.json (synthetic worlds);
    a nuScenes split (train, val, mini_train, ...); or a comma-separated list of names."""
    if split == "all":
        return list(scene_names)
    sj = dataroot / "splits.json"
    if sj.is_file():
        splits = json.loads(sj.read_text())
        if split in splits:
            return list(splits[split])
    from nuscenes.utils.splits import create_splits_scenes

    official = create_splits_scenes()
    if split in official:
        present = set(scene_names)
        return [s for s in official[split] if s in present]
    names = [s.strip() for s in split.split(",") if s.strip()]
    if names and all(n in scene_names for n in names):
        return names
    raise DataError(
        f"split {split!r}: not 'all', not in {sj} and not a nuScenes split or list of scenes of {dataroot} "
        f"(scenes there: {scene_names[:5]}{'...' if len(scene_names) > 5 else ''})"
    )


def fit_loader_workers(cfg: Config) -> tuple[Config, str | None]:
    """``cfg`` with data.num_workers at most this process's CPUs (DataLoader warns above), and
    the one line saying so when it was lowered (None when it fits)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = cfg.data.num_workers
    if n <= cpus:
        return cfg, None
    return cfg.with_overrides([f"data.num_workers={cpus}"]), f"data.num_workers {n} > {cpus} CPUs here: using {cpus}"


class OccDataset(torch.utils.data.Dataset):
    """See the module docstring. ``split`` "train" / "val" use cfg.data.{train,val}_split and
    cfg.data.info_file_{train,val}; any other value is a split name for :func:`resolve_split`."""

    def __init__(self, cfg: Config, split: str = "train", train: bool = True, records: list[dict] | None = None):
        self.cfg = cfg
        self.train = train
        d = cfg.data
        self.icfg = cfg.model.image
        self.cameras = tuple(self.icfg.cameras)
        check_cameras(self.cameras, "config model.image.cameras")
        self.dataroot = Path(d.dataroot)
        self.occ_root = Path(d.occ_root) if d.occ_root else self.dataroot / "gts"
        self.seg_root = Path(d.seg_label_root) if d.seg_label_root else self.dataroot / "seg_2d_labels"
        self.occ_shape = tuple(cfg.model.grid.occ_size)
        info_file = {"train": d.info_file_train, "val": d.info_file_val}.get(split)
        split_name = {"train": d.train_split, "val": d.val_split}.get(split, split)
        if records is not None:
            self.records, self.source = list(records), "records given"
        elif info_file:
            self.records, self.source = load_info_file(info_file), str(info_file)
        else:
            nusc, version = open_nuscenes(self.dataroot, d.version)
            scenes = resolve_split(self.dataroot, split_name, [s["name"] for s in nusc.scene])
            self.records = records_from_nuscenes(nusc, scenes)
            self.source = str(self.dataroot / version)
        if not self.records:
            raise DataError(f"no samples for split {split_name!r} in {getattr(self, 'source', info_file)}")

    def __len__(self) -> int:
        return len(self.records)

    # ------------------------------------------------------------------ paths
    def resolve(self, p: str) -> Path:
        """A path from a record: absolute, relative to the dataroot, or FlashOCC's
        ``./data/nuscenes/samples/...`` (re-rooted at the dataroot from ``samples/`` / ``sweeps/``)."""
        path = Path(p)
        if path.is_absolute() and path.exists():
            return path
        if not path.is_absolute() and (self.dataroot / path).exists():
            return self.dataroot / path
        parts = path.parts
        for anchor in ("samples", "sweeps"):
            if anchor in parts:
                k = len(parts) - 1 - parts[::-1].index(anchor)
                return self.dataroot / Path(*parts[k:])
        return path if path.is_absolute() else self.dataroot / path

    def occ_path(self, rec: dict) -> Path:
        return self.occ_root / str(rec.get("scene_name")) / rec["token"] / "labels.npz"

    # ------------------------------------------------------------------ sample
    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item())) if self.train else None
        g2key = invert_rigid(key_ego2global(rec, self.cfg.data.key_ego, self.cameras))
        imgs, cam2ego, Ks, augs, paths, labels = [], [], [], [], [], []
        have_label = False
        for cam in self.cameras:
            c = rec["cams"].get(cam)
            if c is None:
                raise DataError(f"sample {rec['token']} in {self.source}: no camera {cam} (has {sorted(rec['cams'])})")
            path = self.resolve(c["path"])
            pil = read_image_rgb(path)
            src_hw = (pil.height, pil.width)
            aug = train_aug(src_hw, self.icfg, rng) if self.train else test_time_aug(src_hw, self.icfg)
            imgs.append(normalize_image(apply_image_aug(pil, aug), self.icfg))
            augs.append(aug.matrix())
            Ks.append(np.asarray(c["K"], dtype=np.float64))
            cam2ego.append(g2key @ np.asarray(c["ego2global"]) @ np.asarray(c["sensor2ego"]))
            paths.append(str(path))
            lab = None
            if self.cfg.data.load_seg_labels:
                lp = seg_label_path(self.seg_root, self.dataroot, path)
                if lp.is_file():
                    lab = augment_label(load_seg_label(lp, src_hw), aug)
                    have_label = True
            labels.append(lab)
        h, w = self.icfg.input_size
        out = {
            "imgs": torch.stack(imgs),
            "cam2ego": torch.from_numpy(np.stack(cam2ego)).float(),
            "K": torch.from_numpy(np.stack(Ks)).float(),
            "img_aug": torch.from_numpy(np.stack(augs)).float(),
            "occ2key": torch.from_numpy(g2key @ np.asarray(rec["ego2global"], dtype=np.float64)),
            "sample_token": rec["token"],
            "scene_name": str(rec.get("scene_name")),
            "image_paths": paths,
        }
        flip_x = flip_y = False
        if self.train:
            flip_x = bool(rng.random() < self.icfg.bev_flip_prob)
            flip_y = bool(rng.random() < self.icfg.bev_flip_prob)
        bev_aug = bev_aug_matrix(flip_x, flip_y)
        out["bev_aug"] = torch.from_numpy(bev_aug).float()
        occ_file = self.occ_path(rec)
        if occ_file.is_file():
            gt = load_occ_gt(occ_file, self.occ_shape)
            for k_src, k_out in (("semantics", "voxel_semantics"), ("mask_camera", "mask_camera"),
                                 ("mask_lidar", "mask_lidar")):
                out[k_out] = torch.from_numpy(apply_bev_aug_to_grid(gt[k_src], bev_aug))
        if have_label:
            out["seg_labels"] = torch.from_numpy(np.stack(
                [lab if lab is not None else np.full((h, w), 255, np.uint8) for lab in labels]))
        if self.cfg.data.load_depth:
            if not rec.get("lidar"):
                raise DataError(f"sample {rec['token']} in {self.source}: data.load_depth needs a LIDAR_TOP sweep")
            pts = load_lidar_points(self.resolve(rec["lidar"]["path"]))[:, :3].astype(np.float64)
            l2key = out["occ2key"].numpy() @ np.asarray(rec["lidar"]["lidar2ego"])  # lidar -> its ego -> key ego
            pts_ego = pts @ l2key[:3, :3].T + l2key[:3, 3]
            out["depth_target"] = torch.from_numpy(np.stack([
                depth_map(pts_ego, cam2ego[n], Ks[n], augs[n], (h, w)) for n in range(len(self.cameras))]))
        return out


def augment_label(label: np.ndarray, aug) -> np.ndarray:
    """Warp an (H, W) uint8 label with the image's augmentation (nearest), ignore (255)
    where the warped image has no source pixel. The labels are shifted by one so that the
    zero PIL fills in outside the image maps back to 255."""
    shifted = Image.fromarray(((label.astype(np.int16) + 1) % 256).astype(np.uint8), mode="L")
    warped = np.asarray(apply_image_aug(shifted, aug, resample=Image.NEAREST)).astype(np.int16)
    return ((warped - 1) % 256).astype(np.uint8)


def depth_map(points_ego: np.ndarray, cam2ego: np.ndarray, K: np.ndarray, img_aug: np.ndarray,
              hw: tuple[int, int], min_depth: float = 0.1) -> np.ndarray:
    """Sparse depth (H, W) float32 metres along the optical axis, 0 = none; nearest point per
    pixel; pixel index = floor of the projected coordinate."""
    e2c = invert_rigid(cam2ego)
    pc = points_ego @ e2c[:3, :3].T + e2c[:3, 3]
    d = pc[:, 2]
    keep = d > min_depth
    pc, d = pc[keep], d[keep]
    uvw = pc @ (img_aug @ K).T
    u = np.floor(uvw[:, 0] / uvw[:, 2]).astype(np.int64)
    v = np.floor(uvw[:, 1] / uvw[:, 2]).astype(np.int64)
    h, w = hw
    ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    u, v, d = u[ok], v[ok], d[ok]
    order = np.argsort(-d, kind="stable")  # far first, nearest written last
    out = np.zeros(hw, dtype=np.float32)
    out[v[order], u[order]] = d[order]
    return out


def collate(samples: list[dict]) -> dict:
    """Stack samples into a batch: tensors get a leading B dim, strings / lists become lists.
    seg_labels / depth_target missing in some samples are filled with 255 / 0 (no label);
    other keys must be present in all samples or none."""
    if not samples:
        raise DataError("collate: empty list of samples")
    keys = []
    for s in samples:
        keys += [k for k in s if k not in keys]
    out = {}
    for k in keys:
        vals = [s.get(k) for s in samples]
        if any(v is None for v in vals):
            if k in ("seg_labels", "depth_target"):
                n, _, h, w = samples[0]["imgs"].shape
                fill = (torch.full((n, h, w), 255, dtype=torch.uint8) if k == "seg_labels"
                        else torch.zeros((n, h, w), dtype=torch.float32))
                vals = [v if v is not None else fill for v in vals]
            else:
                missing = [s.get("sample_token") for s in samples if k not in s]
                raise DataError(f"collate: {k!r} is missing in samples {missing} but present in others")
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else list(vals)
    return out
