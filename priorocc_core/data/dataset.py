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
A temporal model (model.temporal.num_adj > 0) also gets
    ego2global (4, 4) float32: the key ego -> global (the frame cam2ego maps into);
    adj: list of num_adj dicts (stereo: num_adj + 1, the last BEVStereo4D's extra reference frame),
    index 0 = t-1 (the previous keyframe of the same scene), 1 = t-2, ...,
    each imgs, cam2ego (into that frame's own key ego), K, img_aug, ego2global as above; at a
    scene's first keyframes the missing ones are the current frame repeated (FlashOCC). A previous
    frame is augmented exactly as its key frame (BEVDet4D: the same resize / crop / flip / rotate
    per camera) and shares bev_aug.
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
from .infos import check_cameras, key_ego2global, load_info_file, open_nuscenes, previous_frames, records_from_nuscenes
from .io import DataError, load_lidar_points, load_occ_gt, load_seg_label, read_image_rgb, seg_label_path

TENSOR_KEYS = ("imgs", "cam2ego", "K", "img_aug", "bev_aug", "voxel_semantics", "mask_camera", "mask_lidar",
               "seg_labels", "depth_target")
FRAME_KEYS = ("imgs", "cam2ego", "K", "img_aug", "ego2global")  # what each previous frame of ``adj`` holds


def config_num_adj(cfg: Config) -> int:
    """The number of previous keyframes a sample carries: model.temporal.num_adj (0 when the config
    has no temporal section), plus one for a stereo model (BEVStereo4D's extra reference frame,
    whose stride-4 features feed the oldest frame's cost volume)."""
    t = getattr(cfg.model, "temporal", None)
    n = int(getattr(t, "num_adj", 0) or 0)
    return n + 1 if n and getattr(t, "stereo", False) else n


def checked_pose(m, sample: str, what: str, source: str) -> np.ndarray:
    """A (4, 4) ego pose of a record as float64; DataError naming the sample when it is missing,
    of another shape or not finite."""
    if m is None:
        raise DataError(f"sample {sample} in {source}: {what} ego pose is missing; expected a finite 4x4 ego2global")
    a = np.asarray(m, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise DataError(f"sample {sample} in {source}: {what} ego pose is "
                        f"{'not finite' if a.shape == (4, 4) else f'of shape {a.shape}'}; expected a finite 4x4 "
                        "ego2global")
    return a


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
    cfg.data.info_file_{train,val}; any other value is a split name for :func:`resolve_split`.
    ``num_adj``: previous keyframes per sample (default: the config's model.temporal.num_adj)."""

    def __init__(self, cfg: Config, split: str = "train", train: bool = True, records: list[dict] | None = None,
                 num_adj: int | None = None):
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
        self.num_adj = config_num_adj(cfg) if num_adj is None else int(num_adj)
        if self.num_adj < 0:
            raise DataError(f"num_adj {self.num_adj}: expected >= 0 previous keyframes")
        self.adjacent = previous_frames(self.records, self.num_adj, self.source)  # per sample, t-1 first

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
    def _frame(self, rec: dict, augs: list | None = None, rng=None, like: dict | None = None) -> dict:
        """One keyframe's cameras -> imgs, cam2ego (into the frame's key ego), K, img_aug (tensors),
        ego2global (4, 4) float64, augs, src_hw, paths. ``augs`` None: drawn with ``rng`` (training)
        or test-time; given (a previous frame): reused, and ``like`` (the key frame) must have the
        same cameras and image sizes."""
        tok = rec["token"]
        who = tok if like is None else f"{like['token']}'s previous keyframe {tok}"  # errors name the sample
        key2global = checked_pose(key_ego2global(rec, self.cfg.data.key_ego, self.cameras), who, "key", self.source)
        g2key = invert_rigid(key2global)
        if like is not None and sorted(rec["cams"]) != sorted(like["cams"]):
            raise DataError(f"sample {like['token']} in {self.source}: its previous keyframe {tok} has cameras "
                            f"{sorted(rec['cams'])}, expected the same as the sample's {sorted(like['cams'])}")
        imgs, cam2ego, Ks, mats, paths, src_hws, new_augs = [], [], [], [], [], [], []
        for n, cam in enumerate(self.cameras):
            c = rec["cams"].get(cam)
            if c is None:
                raise DataError(f"sample {who} in {self.source}: no camera {cam} (has {sorted(rec['cams'])})")
            path = self.resolve(c["path"])
            pil = read_image_rgb(path)
            src_hw = (pil.height, pil.width)
            if augs is None:
                aug = train_aug(src_hw, self.icfg, rng) if self.train else test_time_aug(src_hw, self.icfg)
            else:
                aug = augs[n]
                if src_hw != like["src_hw"][n]:
                    raise DataError(f"sample {like['token']} in {self.source}: its previous keyframe {tok} has a "
                                    f"{cam} image {path} of {src_hw[1]}x{src_hw[0]} px, expected "
                                    f"{like['src_hw'][n][1]}x{like['src_hw'][n][0]} as the sample's")
            imgs.append(normalize_image(apply_image_aug(pil, aug), self.icfg))
            mats.append(aug.matrix())
            Ks.append(np.asarray(c["K"], dtype=np.float64))
            e2g = checked_pose(c.get("ego2global"), who, f"camera {cam}", self.source)
            cam2ego.append(g2key @ e2g @ np.asarray(c["sensor2ego"]))
            paths.append(path)
            src_hws.append(src_hw)
            new_augs.append(aug)
        return {"imgs": torch.stack(imgs), "cam2ego": torch.from_numpy(np.stack(cam2ego)).float(),
                "K": torch.from_numpy(np.stack(Ks)).float(), "img_aug": torch.from_numpy(np.stack(mats)).float(),
                "ego2global": key2global, "augs": new_augs, "src_hw": src_hws, "paths": paths, "token": tok,
                "cams": rec["cams"], "float64": (cam2ego, Ks, mats)}

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item())) if self.train else None
        f = self._frame(rec, rng=rng)
        g2key = invert_rigid(f["ego2global"])
        labels, have_label = [], False
        for path, src_hw, aug in zip(f["paths"], f["src_hw"], f["augs"]):
            lab = None
            if self.cfg.data.load_seg_labels:
                lp = seg_label_path(self.seg_root, self.dataroot, path)
                if lp.is_file():
                    lab = augment_label(load_seg_label(lp, src_hw), aug)
                    have_label = True
            labels.append(lab)
        h, w = self.icfg.input_size
        occ2ego = checked_pose(rec.get("ego2global"), rec["token"], "keyframe (LIDAR_TOP)", self.source)
        out = {
            "imgs": f["imgs"],
            "cam2ego": f["cam2ego"],
            "K": f["K"],
            "img_aug": f["img_aug"],
            "occ2key": torch.from_numpy(g2key @ occ2ego),
            "sample_token": rec["token"],
            "scene_name": str(rec.get("scene_name")),
            "image_paths": [str(p) for p in f["paths"]],
        }
        if self.num_adj:
            out["ego2global"] = torch.from_numpy(f["ego2global"]).float()
            out["adj"] = [self._previous(j, i, f) for j in self.adjacent[i]]
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
            cam2ego, Ks, mats = f["float64"]
            out["depth_target"] = torch.from_numpy(np.stack([
                depth_map(pts_ego, cam2ego[n], Ks[n], mats[n], (h, w)) for n in range(len(self.cameras))]))
        p = float(self.cfg.data.camera_dropout)
        if self.train and p > 0 and len(self.cameras) > 1:  # drawn last: the other draws are today's
            keep = np.ones(len(self.cameras), dtype=bool)
            if rng.random() < p:
                keep[int(rng.integers(len(self.cameras)))] = False
            out["cam_mask"] = torch.from_numpy(keep)  # (N,) -> batch (B, N), PriorOcc.forward
        return out

    def _previous(self, j: int, i: int, key: dict) -> dict:
        """Previous frame ``j`` of sample ``i`` (FRAME_KEYS), augmented as the key frame ``key``; the
        key frame itself where the scene has no earlier keyframe (j == i)."""
        f = key if j == i else self._frame(self.records[j], augs=key["augs"], like=key)
        return {"imgs": f["imgs"], "cam2ego": f["cam2ego"], "K": f["K"], "img_aug": f["img_aug"],
                "ego2global": torch.from_numpy(f["ego2global"]).float()}


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
    """Stack samples into a batch: tensors get a leading B dim, strings / lists become lists;
    ``adj`` (a temporal sample's previous frames) becomes a list of num_adj dicts of stacked
    tensors (t-1 first), so ``batch["adj"][0]["imgs"]`` is (B, N, 3, H, W).
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
        if k == "adj":
            out[k] = _collate_frames(vals, [s.get("sample_token") for s in samples])
            continue
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else list(vals)
    return out


def _collate_frames(frames: list[list[dict]], tokens: list) -> list[dict]:
    """Per-sample lists of previous frames -> one dict of (B, ...) tensors per history position."""
    lengths = {len(f) for f in frames}
    if len(lengths) != 1:
        raise DataError(f"collate: samples {tokens} carry {[len(f) for f in frames]} previous frames; expected the "
                        "same number in every sample")
    out = []
    for t in range(lengths.pop()):
        keys = [sorted(f[t]) for f in frames]
        if any(k != keys[0] for k in keys):
            raise DataError(f"collate: previous frame t-{t + 1} of samples {tokens} has keys {keys}; expected the same")
        out.append({k: torch.stack([f[t][k] for f in frames]) for k in keys[0]})
    return out


def batch_to(batch, device: torch.device | str, non_blocking: bool = False):
    """``batch`` with every tensor moved to ``device``, through nested dicts, lists and tuples (the
    temporal batch's ``adj``); anything else as it is."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {k: batch_to(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(batch_to(v, device, non_blocking) for v in batch)
    return batch
