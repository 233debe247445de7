"""Sample records: from a nuScenes dataroot (nuscenes-devkit), from FlashOCC / BEVDet info
pkl files, or from the project's own JSON info cache.

A record is a plain dict (JSON-serialisable)::

    token, scene_name, scene_token, timestamp,
    prev: token of the previous keyframe of the same scene ("" at the scene's first keyframe),
    ego2global (4, 4) of the keyframe (LIDAR_TOP sample_data's ego pose: the Occ3D frame),
    lidar: {path, lidar2ego (4, 4)} or None,
    cams: {CAM: {path, K (3, 3), sensor2ego (4, 4), ego2global (4, 4) at the camera's timestamp,
                 sample_data_token}},
    occ_path: folder holding labels.npz or None

Paths are stored as given (relative to the dataroot, or absolute) and resolved by the dataset.
The nuScenes path takes ``prev`` from the sample table; FlashOCC infos carry no link, so it is
rebuilt as FlashOCC's ``get_adj_info`` finds it: the keyframe before in timestamp order with the same
``scene_token`` (:func:`link_previous`). :func:`previous_frames` follows the links for a temporal model.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from ..classes import CAMERAS
from ..geometry import transform_from_quat
from .io import DataError, write_json_atomic

CACHE_FORMAT = "priorocc-info-v1"
AUTO_VERSION = "auto"  # data.version / --version default: the dataroot's one table folder


# --------------------------------------------------------------------------- nuScenes
def table_version(dataroot: str | Path, version: str = AUTO_VERSION,
                  names: tuple[str, str] = ("data.dataroot", "data.version")) -> str:
    """The nuScenes table folder (``v1.0-mini``, ``v1.0-trainval``, ...) to read in ``dataroot``.
    ``version`` "auto": the only folder there holding ``sample.json``. ``names``: how the caller
    calls the two inputs (config keys or flags), for the error message."""
    root = Path(dataroot)
    if not root.is_dir():
        raise DataError(f"{names[0]} {root}: no such folder (expected a nuScenes dataroot; "
                        "training/make_synthetic.py --out DIR writes a synthetic one)")
    found = sorted(p.name for p in root.iterdir() if (p / "sample.json").is_file())
    if version != AUTO_VERSION:
        if not (root / version).is_dir():
            raise DataError(f"{names[1]} {version}: no table folder {root / version}/ (table folders there: "
                            f"{', '.join(found) or 'none'}; {names[1]} {AUTO_VERSION} takes the only one)")
        return version
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(f"{names[0]} {root}: no nuScenes table folder (a v1.0-*/ folder with sample.json) in it")
    raise DataError(f"{names[0]} {root}: several table folders ({', '.join(found)}); choose one with {names[1]}")


def open_nuscenes(dataroot: str | Path, version: str = AUTO_VERSION,
                  names: tuple[str, str] = ("data.dataroot", "data.version")):
    """-> (NuScenes of ``dataroot``, the version read); errors as :func:`table_version`."""
    from nuscenes.nuscenes import NuScenes

    v = table_version(dataroot, version, names)
    return NuScenes(version=v, dataroot=str(dataroot), verbose=False), v


def records_from_nuscenes(nusc, scene_names: list[str] | None = None) -> list[dict]:
    """Records for every keyframe of the given scenes (all scenes if None), in scene order."""
    want = None if scene_names is None else set(scene_names)
    out = []
    for scene in nusc.scene:
        if want is not None and scene["name"] not in want:
            continue
        tok = scene["first_sample_token"]
        while tok:
            sample = nusc.get("sample", tok)
            out.append(_record_from_sample(nusc, sample, scene["name"]))
            tok = sample["next"]
    return out


def _record_from_sample(nusc, sample: dict, scene_name: str) -> dict:
    lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"]) if "LIDAR_TOP" in sample["data"] else None
    rec = {"token": sample["token"], "scene_name": scene_name, "scene_token": sample["scene_token"],
           "timestamp": sample["timestamp"], "prev": sample["prev"], "cams": {}, "lidar": None, "occ_path": None}
    if lidar_sd is not None:
        pose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
        cs = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
        rec["ego2global"] = transform_from_quat(pose["translation"], pose["rotation"]).tolist()
        rec["lidar"] = {"path": lidar_sd["filename"],
                        "lidar2ego": transform_from_quat(cs["translation"], cs["rotation"]).tolist()}
    for ch, sd_tok in sample["data"].items():
        sd = nusc.get("sample_data", sd_tok)
        if sd["sensor_modality"] != "camera":
            continue
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        rec["cams"][ch] = {
            "path": sd["filename"],
            "K": np.asarray(cs["camera_intrinsic"], dtype=np.float64).tolist(),
            "sensor2ego": transform_from_quat(cs["translation"], cs["rotation"]).tolist(),
            "ego2global": transform_from_quat(pose["translation"], pose["rotation"]).tolist(),
            "sample_data_token": sd_tok,
        }
    if "ego2global" not in rec:  # no lidar: use CAM_FRONT's pose as the keyframe's
        first = rec["cams"].get("CAM_FRONT") or next(iter(rec["cams"].values()))
        rec["ego2global"] = first["ego2global"]
    return rec


KEY_EGOS = ("first_camera", "lidar")


def key_ego2global(rec: dict, key_ego: str, cameras) -> np.ndarray:
    """(4, 4) key ego -> global of a record: the frame the network's cam2ego and output are in.

    "first_camera": the ego pose at the timestamp of ``cameras[0]`` (CAM_FRONT_LEFT), FlashOCC's
    ``keyego2global = ego2globals[:, 0]``; "lidar": the keyframe's LIDAR_TOP ego pose, the frame of
    the Occ3D ground truth (``rec["ego2global"]``)."""
    if key_ego == "first_camera":
        cam = rec["cams"].get(cameras[0])
        if cam is None:
            raise DataError(f"sample {rec.get('token')}: key_ego first_camera needs camera {cameras[0]}")
        return np.asarray(cam["ego2global"], dtype=np.float64)
    if key_ego == "lidar":
        return np.asarray(rec["ego2global"], dtype=np.float64)
    raise DataError(f"data.key_ego {key_ego!r}: expected one of {KEY_EGOS}")


# --------------------------------------------------------------------------- FlashOCC / BEVDet pkl
class _InfoUnpickler(pickle.Unpickler):
    """Unpickler for info files: builtins containers and numpy arrays / scalars only."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"), ("builtins", "set"), ("builtins", "frozenset"),
        ("builtins", "complex"), ("builtins", "slice"), ("collections", "OrderedDict"),
    }

    def __init__(self, f, path):
        super().__init__(f)
        self._path = path

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise DataError(
            f"info file {self._path}: refuses to unpickle {module}.{name}; info files may hold only builtins "
            "and numpy arrays (is this really a FlashOCC / BEVDet info .pkl?)"
        )


def load_flashocc_pkl(path: str | Path) -> tuple[list[dict], dict]:
    """Read ``bevdetv2-nuscenes_infos_*.pkl`` safely -> (raw infos, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"info file {path} does not exist")
    with open(path, "rb") as f:
        try:
            data = _InfoUnpickler(f, path).load()
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"info file {path} cannot be unpickled: {e}") from e
    if not isinstance(data, dict) or "infos" not in data or not isinstance(data["infos"], list):
        raise DataError(f"info file {path}: expected dict(infos=[...], metadata=...) as FlashOCC writes it")
    return data["infos"], data.get("metadata", {})


def records_from_flashocc(infos: list[dict], source: str | Path) -> list[dict]:
    """Convert FlashOCC / BEVDet info dicts to records."""
    out = []
    for i, info in enumerate(infos):
        try:
            rec = {"token": info["token"], "timestamp": int(info.get("timestamp", 0)),
                   "scene_name": info.get("scene_name"), "scene_token": info.get("scene_token"), "cams": {},
                   "lidar": None, "occ_path": info.get("occ_path")}
            rec["ego2global"] = transform_from_quat(info["ego2global_translation"], info["ego2global_rotation"]).tolist()
            if info.get("lidar_path"):
                rec["lidar"] = {"path": str(info["lidar_path"]), "lidar2ego": transform_from_quat(
                    info["lidar2ego_translation"], info["lidar2ego_rotation"]).tolist()}
            for ch, c in info["cams"].items():
                rec["cams"][ch] = {
                    "path": str(c["data_path"]),
                    "K": np.asarray(c["cam_intrinsic"], dtype=np.float64).tolist(),
                    "sensor2ego": transform_from_quat(c["sensor2ego_translation"], c["sensor2ego_rotation"]).tolist(),
                    "ego2global": transform_from_quat(c["ego2global_translation"], c["ego2global_rotation"]).tolist(),
                    "sample_data_token": c.get("sample_data_token", ""),
                }
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"info file {source}: info #{i} lacks or has a malformed field: {e!r}") from e
        if rec["scene_name"] is None and rec["occ_path"]:
            rec["scene_name"] = Path(str(rec["occ_path"])).parent.name
        out.append(rec)
    return link_previous(out)


# --------------------------------------------------------------------------- previous keyframes
def link_previous(records: list[dict]) -> list[dict]:
    """Give every record without a ``prev`` key the token of the keyframe before it in timestamp
    order with the same scene (``scene_token``, else ``scene_name``), "" for a scene's first: the
    frame FlashOCC's ``get_adj_info`` picks. Records that name no scene get ``prev`` None (unknown).
    Returns ``records`` (changed in place)."""
    scenes: dict[str, list[dict]] = {}
    for r in records:
        if "prev" in r:
            continue
        key = r.get("scene_token") or r.get("scene_name")
        if key is None:
            r["prev"] = None
            continue
        scenes.setdefault(str(key), []).append(r)
    for recs in scenes.values():
        recs.sort(key=lambda r: r.get("timestamp", 0))
        for before, r in zip([None] + recs[:-1], recs):
            r["prev"] = before["token"] if before is not None else ""
    return records


def previous_frames(records: list[dict], num_adj: int, source: str) -> list[list[int]]:
    """For each record, the indices into ``records`` of its ``num_adj`` previous keyframes, t-1
    first, following ``prev``. Where the scene has no earlier keyframe the record's own index
    stands in (FlashOCC / BEVDet4D repeat the current frame at a scene's start), so a history never
    crosses a scene. A link that is unknown, points outside ``records``, into another scene or not
    back in time is a DataError naming the sample."""
    if num_adj <= 0:
        return [[] for _ in records]
    link_previous(records)
    index = {r["token"]: i for i, r in enumerate(records)}
    out = []
    for i in range(len(records)):
        frames, j = [], i  # j: the earliest frame reached; None once the scene's start is passed
        for _ in range(num_adj):
            if j is None:  # before the scene's first keyframe: repeat the current frame
                frames.append(i)
                continue
            cur = records[j]
            prev = cur.get("prev")
            if prev is None:
                raise DataError(f"sample {cur['token']} in {source}: no scene_token / scene_name and no prev link, "
                                f"so its previous keyframes cannot be found (needed by model.temporal.num_adj "
                                f"{num_adj})")
            if prev == "":
                frames.append(i)
                j = None
                continue
            if prev not in index:
                raise DataError(f"sample {cur['token']} in {source}: previous keyframe {prev} is not among the "
                                f"samples (expected whole scenes)")
            k = index[prev]
            if _scene(records[k]) != _scene(cur):
                raise DataError(f"sample {cur['token']} in {source}: previous keyframe {prev} belongs to scene "
                                f"{_scene(records[k])}, expected {_scene(cur)}")
            if "timestamp" in cur and records[k].get("timestamp", -1) >= cur["timestamp"]:
                raise DataError(f"sample {cur['token']} in {source}: previous keyframe {prev} is not earlier "
                                f"(timestamp {records[k].get('timestamp')} >= {cur['timestamp']})")
            frames.append(k)
            j = k
        out.append(frames)
    return out


def _scene(rec: dict):
    return rec.get("scene_token") or rec.get("scene_name")


# --------------------------------------------------------------------------- project cache
def write_info_cache(records: list[dict], path: str | Path, meta: dict | None = None) -> None:
    write_json_atomic(path, {"format": CACHE_FORMAT, "meta": meta or {}, "records": records}, indent=None)


def load_info_file(path: str | Path) -> list[dict]:
    """Records from a FlashOCC / BEVDet ``.pkl`` or the project's JSON cache."""
    path = Path(path)
    if path.suffix == ".pkl":
        infos, _ = load_flashocc_pkl(path)
        return records_from_flashocc(infos, path)
    if not path.is_file():
        raise DataError(f"info file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"info file {path} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        raise DataError(f"info file {path}: expected a PriorOcc info cache (format {CACHE_FORMAT!r}) or a .pkl")
    return data["records"]


def check_cameras(cameras, source: str) -> None:
    unknown = [c for c in cameras if c not in CAMERAS]
    if unknown:
        raise DataError(f"{source}: unknown camera name(s) {unknown}; known cameras: {list(CAMERAS)}")
