"""Write a synthetic world as a nuScenes dataroot with Occ3D ground truth and 2D labels.

Layout written under ``out``::

    <version>/{attribute,calibrated_sensor,category,ego_pose,instance,log,map,sample,
               sample_annotation,sample_data,scene,sensor,visibility}.json
    samples/<CAM>/<logfile>__<CAM>__<timestamp>.jpg
    samples/LIDAR_TOP/<logfile>__LIDAR_TOP__<timestamp>.pcd.bin     (P, 5) float32
    gts/<scene_name>/<sample_token>/labels.npz                      Occ3D ground truth
    seg_2d_labels/samples/<CAM>/<image stem>.png                    exact 2D labels
    splits.json                                                     {"train": [...], "val": [...], "all": [...]}
    synthetic.json                                                  generation parameters and timing

Moving objects are frozen during one keyframe's capture (all six cameras see them where
the lidar does); the ego moves during the capture, and each camera's ``ego_pose`` is the
pose at its own timestamp, as in nuScenes. The Occ3D ground truth of a keyframe is in the ego
frame of its LIDAR_TOP ``ego_pose``. ``ego_speed`` / ``turn_rate`` / ``moving_objects`` shape the
ego's path and the traffic (world.build_scene); the defaults give the worlds generated before
these options existed.
"""
from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from pyquaternion import Quaternion

from ..io import write_bytes_atomic, write_jpeg_atomic, write_json_atomic, write_occ_gt_atomic, write_png_atomic
from .render import (
    BoxTable,
    camera_visibility,
    lidar_visibility,
    render_camera,
    render_lidar,
    voxel_centres_ego,
)
from .rig import Rig, load_rig
from .world import CATEGORY_OF, KEYFRAME_S, VOXEL, Z_MIN, Scene, build_scene

KEYFRAME_US = int(round(KEYFRAME_S * 1e6))
T0_US = 1_533_000_000_000_000

# nuScenes taxonomy (names are facts of the dataset format; descriptions are ours)
CATEGORIES = [
    "human.pedestrian.adult", "human.pedestrian.child", "human.pedestrian.wheelchair",
    "human.pedestrian.stroller", "human.pedestrian.personal_mobility", "human.pedestrian.police_officer",
    "human.pedestrian.construction_worker", "animal", "vehicle.car", "vehicle.motorcycle", "vehicle.bicycle",
    "vehicle.bus.bendy", "vehicle.bus.rigid", "vehicle.truck", "vehicle.construction",
    "vehicle.emergency.ambulance", "vehicle.emergency.police", "vehicle.trailer", "movable_object.barrier",
    "movable_object.trafficcone", "movable_object.pushable_pullable", "movable_object.debris",
    "static_object.bicycle_rack",
]
ATTRIBUTES = [
    "vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider", "cycle.without_rider",
    "pedestrian.sitting_lying_down", "pedestrian.standing", "pedestrian.moving",
]
VISIBILITY = [("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100")]


def _token(seed: int, *key) -> str:
    return hashlib.md5(("priorocc-synthetic/%d/" % seed + "/".join(map(str, key))).encode()).hexdigest()


def _yaw_quat(yaw: float) -> list[float]:
    q = Quaternion(axis=[0.0, 0.0, 1.0], angle=yaw)
    return [q.w, q.x, q.y, q.z]


class _Tables:
    def __init__(self):
        self.t = {n: [] for n in ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map",
                                  "sample", "sample_annotation", "sample_data", "scene", "sensor", "visibility")}

    def add(self, table: str, rec: dict) -> dict:
        self.t[table].append(rec)
        return rec

    def write(self, folder: Path) -> None:
        for name, recs in self.t.items():
            write_json_atomic(folder / f"{name}.json", recs, indent=0)


SYNTHETIC_VERSION = "v1.0-mini"  # the table folder a world gets unless asked otherwise (data.version auto reads any)


def generate_world(
    out: str | Path,
    n_scenes: int = 2,
    n_keyframes: int = 10,
    seed: int = 0,
    hw: tuple[int, int] = (900, 1600),
    version: str = SYNTHETIC_VERSION,
    rig: Rig | None = None,
    jpeg_quality: int = 92,
    progress: bool = True,
    lidar_azimuth: int = 1084,
    ego_speed: float | None = None,
    turn_rate: float = 0.0,
    moving_objects: bool = True,
) -> dict:
    """Generate ``n_scenes`` x ``n_keyframes`` keyframes under ``out``; returns a summary dict
    (paths, counts, seconds). ego_speed (m/s, None = drawn per scene), turn_rate (deg/s, > 0 left),
    moving_objects: see world.build_scene."""
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rig = rig or load_rig()
    h, w = hw
    tab = _Tables()
    S = seed
    # static tables
    for name in CATEGORIES:
        tab.add("category", {"token": _token(S, "category", name), "name": name,
                             "description": f"nuScenes category {name} (synthetic world)"})
    for name in ATTRIBUTES:
        tab.add("attribute", {"token": _token(S, "attribute", name), "name": name,
                              "description": f"nuScenes attribute {name} (synthetic world)"})
    for tok, level in VISIBILITY:
        tab.add("visibility", {"token": tok, "level": level, "description": f"visible fraction {level[1:]} %"})
    channels = list(rig.cameras) + ["LIDAR_TOP"]  # the rig's cameras (six for nuScenes', fewer for a preset)
    for ch in channels:
        tab.add("sensor", {"token": _token(S, "sensor", ch), "channel": ch,
                           "modality": "lidar" if ch == "LIDAR_TOP" else "camera"})
    cat_tok = {n: _token(S, "category", n) for n in CATEGORIES}
    attr_tok = {n: _token(S, "attribute", n) for n in ATTRIBUTES}
    centres = voxel_centres_ego()
    pool = ThreadPoolExecutor(max_workers=2)
    pending = []
    scene_names = []
    n_images = 0
    timing = {"render": 0.0, "masks": 0.0, "lidar": 0.0}

    iterator = range(n_scenes)
    for si in iterator:
        scene = build_scene(seed, si, n_keyframes, ego_speed=ego_speed, turn_rate=turn_rate,
                            moving_objects=moving_objects)
        name = f"synth-{seed:04d}-{si:04d}"
        scene_names.append(name)
        logfile = f"synth{seed:04d}-{si:04d}"
        log_tok = _token(S, "log", si)
        tab.add("log", {"token": log_tok, "logfile": logfile, "vehicle": "synth", "date_captured": "2018-08-01",
                        "location": "priorocc-synthetic-town"})
        tab.add("map", {"token": _token(S, "map", si), "log_tokens": [log_tok], "category": "semantic_prior",
                        "filename": ""})
        cs_tok = {}
        for ch in channels:
            cs_tok[ch] = _token(S, "calib", si, ch)
            cal = rig.lidar if ch == "LIDAR_TOP" else rig.cameras[ch]
            tab.add("calibrated_sensor", {
                "token": cs_tok[ch], "sensor_token": _token(S, "sensor", ch),
                "translation": list(cal.translation), "rotation": list(cal.rotation),
                "camera_intrinsic": [] if ch == "LIDAR_TOP" else rig.K_at(ch, hw).tolist(),
            })
        l2g = scene.local2global()
        heading = scene.heading_quarter * np.pi / 2  # the road's global yaw
        t_scene = T0_US + si * 100_000_000
        sample_toks = [_token(S, "sample", si, k) for k in range(n_keyframes)]
        prev_sd = {ch: "" for ch in channels}
        sd_recs = {ch: [] for ch in channels}
        ann_by_obj: dict[int, list[dict]] = {}
        for k in range(n_keyframes):
            ts_lidar = t_scene + k * KEYFRAME_US
            tab.add("sample", {"token": sample_toks[k], "timestamp": ts_lidar, "scene_token": _token(S, "scene", si),
                               "prev": sample_toks[k - 1] if k else "",
                               "next": sample_toks[k + 1] if k + 1 < n_keyframes else ""})
            boxes = BoxTable.from_scene(scene, k)
            sem = scene.occupancy(k)
            ego2local_k = scene.ego2local(k)
            mask_cam = np.zeros(sem.shape, dtype=bool)
            obj_pixels: dict[int, int] = {}
            for ch in channels:
                cal = rig.lidar if ch == "LIDAR_TOP" else rig.cameras[ch]
                ts = ts_lidar + cal.time_offset_us
                kf = k + cal.time_offset_us / KEYFRAME_US
                e2l = scene.ego2local(kf)
                e2g = l2g @ e2l
                ep_tok = _token(S, "ego_pose", si, k, ch)
                tab.add("ego_pose", {"token": ep_tok, "timestamp": ts, "rotation": _yaw_quat(heading + scene.ego_yaw(kf)),
                                     "translation": [float(e2g[0, 3]), float(e2g[1, 3]), 0.0]})
                sd_tok = _token(S, "sample_data", si, k, ch)
                if ch == "LIDAR_TOP":
                    fname = f"samples/LIDAR_TOP/{logfile}__LIDAR_TOP__{ts}.pcd.bin"
                    t0 = time.perf_counter()
                    lidar = render_lidar(scene, boxes, e2l @ cal.sensor2ego, n_azimuth=lidar_azimuth)
                    write_bytes_atomic(out / fname, lidar["points"].tobytes())
                    mask_lidar = lidar_visibility(sem.shape, lidar, ego2local_k)
                    timing["lidar"] += time.perf_counter() - t0
                    hw_rec = (0, 0)
                else:
                    fname = f"samples/{ch}/{logfile}__{ch}__{ts}.jpg"
                    K = rig.K_at(ch, hw)
                    cam2local = e2l @ cal.sensor2ego
                    t0 = time.perf_counter()
                    r = render_camera(scene, boxes, cam2local, K, hw, noise_seed=int(_token(S, "noise", si, k, ch)[:7], 16))
                    t1 = time.perf_counter()
                    mask_cam |= camera_visibility(sem, r, K, cam2local, ego2local_k, centres)
                    timing["render"] += t1 - t0
                    timing["masks"] += time.perf_counter() - t1
                    ids, counts = torch.unique(r["obj"][r["obj"] >= 0], return_counts=True)
                    for i, c in zip(ids.tolist(), counts.tolist()):
                        obj_pixels[i] = obj_pixels.get(i, 0) + c
                    stem = Path(fname).stem
                    pending.append(pool.submit(write_jpeg_atomic, out / fname, r["rgb"], jpeg_quality))
                    pending.append(pool.submit(write_png_atomic, out / "seg_2d_labels" / "samples" / ch / f"{stem}.png",
                                               r["label"]))
                    n_images += 1
                    hw_rec = (h, w)
                rec = tab.add("sample_data", {
                    "token": sd_tok, "sample_token": sample_toks[k], "ego_pose_token": ep_tok,
                    "calibrated_sensor_token": cs_tok[ch], "timestamp": ts,
                    "fileformat": "pcd" if ch == "LIDAR_TOP" else "jpg", "is_key_frame": True,
                    "height": hw_rec[0], "width": hw_rec[1], "filename": fname, "prev": prev_sd[ch], "next": "",
                })
                if prev_sd[ch]:
                    sd_recs[ch][-1]["next"] = sd_tok
                sd_recs[ch].append(rec)
                prev_sd[ch] = sd_tok
            write_occ_gt_atomic(out / "gts" / name / sample_toks[k] / "labels.npz", sem, mask_lidar, mask_cam)
            _annotate(tab, scene, k, sample_toks[k], l2g, heading, lidar, obj_pixels, ann_by_obj, hw, S, si,
                      attr_tok)
        # instances: chain each object's annotations
        for oid, anns in ann_by_obj.items():
            o = scene.objects[oid]
            inst_tok = _token(S, "instance", si, oid)
            for i, a in enumerate(anns):
                a["instance_token"] = inst_tok
                a["prev"] = anns[i - 1]["token"] if i else ""
                a["next"] = anns[i + 1]["token"] if i + 1 < len(anns) else ""
                tab.add("sample_annotation", a)
            tab.add("instance", {"token": inst_tok, "category_token": cat_tok[CATEGORY_OF[o.cls]],
                                 "nbr_annotations": len(anns), "first_annotation_token": anns[0]["token"],
                                 "last_annotation_token": anns[-1]["token"]})
        tab.add("scene", {"token": _token(S, "scene", si), "log_token": log_tok, "nbr_samples": n_keyframes,
                          "name": name, "description": "synthetic street: parked and moving traffic, pedestrians, "
                                                       "cyclists, construction site",
                          "first_sample_token": sample_toks[0], "last_sample_token": sample_toks[-1]})
        if progress:
            print(f"[make_synthetic] scene {si + 1}/{n_scenes} {name}: {n_keyframes} keyframes "
                  f"({time.perf_counter() - t_start:.1f} s)", flush=True)
    for f in pending:
        f.result()
    pool.shutdown()
    tab.write(out / version)
    n_val = max(1, n_scenes // 5) if n_scenes > 1 else 0
    splits = {"train": scene_names[: n_scenes - n_val] if n_val else list(scene_names),
              "val": scene_names[n_scenes - n_val:] if n_val else list(scene_names),
              "all": list(scene_names)}
    write_json_atomic(out / "splits.json", splits, indent=1)
    seconds = time.perf_counter() - t_start
    summary = {"out": str(out), "version": version, "scenes": n_scenes, "keyframes": n_keyframes, "seed": seed,
               "image_hw": [h, w], "images": n_images, "seconds": round(seconds, 2),
               "timing": {k: round(v, 2) for k, v in timing.items()}, "rig": rig.source, "splits": splits,
               "motion": {"ego_speed_m_s": ego_speed, "turn_rate_deg_s": turn_rate, "moving_objects": moving_objects},
               "torch_threads": torch.get_num_threads()}
    write_json_atomic(out / "synthetic.json", summary, indent=1)
    return summary


def _annotate(tab, scene: Scene, k, sample_tok, l2g, heading, lidar, obj_pixels, ann_by_obj, hw, S, si, attr_tok):
    """sample_annotation records for the annotated objects within 50 m of the ego at keyframe k."""
    eu, ev = scene.ego_uv(k)
    hit_box = lidar["box"][lidar["hit"]]
    boxes = BoxTable.from_scene(scene, k)
    hit_obj = boxes.obj[hit_box[hit_box >= 0].numpy()] if len(boxes.obj) else np.zeros(0, dtype=np.int64)
    lidar_counts = np.bincount(hit_obj, minlength=len(scene.objects)) if len(hit_obj) else np.zeros(len(scene.objects))
    px_scale = (hw[0] * hw[1]) / (900 * 1600)
    for o in scene.objects:
        if not o.annotate:
            continue
        lo, hi = o.bbox(k)
        cu, cv = (lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2
        if abs(cu - eu) * VOXEL > 50 or abs(cv - ev) * VOXEL > 50:
            continue
        c_local = np.array([cu * VOXEL, cv * VOXEL, Z_MIN + VOXEL * (lo[2] + hi[2]) / 2, 1.0])
        c_g = l2g @ c_local
        du, dv, dz = (hi - lo) * VOXEL
        along_u = du >= dv
        yaw = heading + (0.0 if along_u else np.pi / 2) + (np.pi if o.yaw_flip else 0.0)
        length, width = (du, dv) if along_u else (dv, du)
        px = obj_pixels.get(o.obj_id, 0) / px_scale
        vis = "1" if px < 1 else "2" if px < 200 else "3" if px < 2000 else "4"
        ann = {"token": _token(S, "ann", si, o.obj_id, k), "sample_token": sample_tok,
               "visibility_token": vis, "attribute_tokens": [attr_tok[o.attribute]] if o.attribute else [],
               "translation": [float(c_g[0]), float(c_g[1]), float(c_g[2])],
               "size": [float(width), float(length), float(dz)], "rotation": _yaw_quat(float(yaw)),
               "num_lidar_pts": int(lidar_counts[o.obj_id]), "num_radar_pts": 0}
        ann_by_obj.setdefault(o.obj_id, []).append(ann)
