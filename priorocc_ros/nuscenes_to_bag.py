"""Console entry point ``nuscenes_to_bag``: a nuScenes dataroot -> a ROS 2 bag (rosbags).

    nuscenes_to_bag --dataroot data/nuscenes --version v1.0-mini --out bags/scene-0061 \
        [--scenes scene-0061 ...] [--storage mcap|sqlite3] [--keyframes-only] [--occ-root DIR]

Topics (stamps = the sensor's own timestamp; frame ids = nuScenes channel names):
  /<CAM>/image_rect_compressed  sensor_msgs/CompressedImage  original JPEG bytes (no re-encode)
  /<CAM>/camera_info            sensor_msgs/CameraInfo       K, P = [K | 0], R = I, no distortion
  /LIDAR_TOP                    sensor_msgs/PointCloud2      x, y, z, intensity, ring (float32; the
                                                             .pcd.bin bytes unchanged)
  /tf_static                    tf2_msgs/TFMessage           base_link -> each camera and LIDAR_TOP
                                                             (calibrated_sensor), transient local
  /tf                           tf2_msgs/TFMessage           map -> base_link (ego_pose) at every
                                                             sensor timestamp
  /occ_gt/voxels                sensor_msgs/PointCloud2      Occ3D ground truth (keyframes, when
                                                             --occ-root has it): ~/voxels' layout
                                                             (x, y, z, rgb, label) + mask (uint8:
                                                             bit 0 mask_lidar, bit 1 mask_camera)
Sweeps are included unless --keyframes-only. The bag is written under a temporary name and
renamed when complete.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from tqdm import tqdm

from priorocc_core import cli
from priorocc_core.classes import CAMERAS, FREE, OCC_COLORS
from priorocc_core.geometry import transform_from_quat
from priorocc_ros.bagio import AtomicBagWriter
from priorocc_ros.calibration import make_camera_info, matrix_to_transform_stamped
from priorocc_ros.msgs import header, msg_class, new_msg
from priorocc_ros.outputs import POINTFIELD_FLOAT32, POINTFIELD_UINT8, POINTFIELD_UINT32, VoxelGrid, packed_rgb_float
from priorocc_ros.transport.base import RELIABLE_QOS, SENSOR_DATA_QOS, TF_STATIC_QOS

LIDAR = "LIDAR_TOP"
IMAGE_TOPIC = "/{camera}/image_rect_compressed"
INFO_TOPIC = "/{camera}/camera_info"
LIDAR_TOPIC = "/LIDAR_TOP"
OCC_GT_TOPIC = "/occ_gt/voxels"
BASE_FRAME = "base_link"
MAP_FRAME = "map"
GT_POINT_DTYPE = np.dtype({"names": ["x", "y", "z", "rgb", "label", "mask"],
                           "formats": ["<f4", "<f4", "<f4", "<f4", "<u4", "u1"],
                           "offsets": [0, 4, 8, 12, 16, 20], "itemsize": 24})


class ConversionError(RuntimeError):
    pass


def us_to_ns(us: int) -> int:
    return int(us) * 1000


def occ_gt_to_pointcloud2(semantics: np.ndarray, mask_lidar: np.ndarray, mask_camera: np.ndarray, hdr: Any,
                          grid: VoxelGrid = VoxelGrid()) -> Any:
    """Occ3D arrays (200, 200, 16) -> PointCloud2 of the non-free voxels (layout above)."""
    idx = np.argwhere((semantics != FREE) & (semantics < FREE))
    pts = np.zeros(len(idx), dtype=GT_POINT_DTYPE)
    xyz = grid.centres(idx) if len(idx) else np.zeros((0, 3), np.float32)
    lab = semantics[tuple(idx.T)] if len(idx) else np.zeros(0, np.uint8)
    pts["x"], pts["y"], pts["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    pts["rgb"] = packed_rgb_float(OCC_COLORS[lab])
    pts["label"] = lab
    if len(idx):
        pts["mask"] = (mask_lidar[tuple(idx.T)] > 0).astype(np.uint8) | ((mask_camera[tuple(idx.T)] > 0).astype(np.uint8) << 1)
    PF = msg_class("sensor_msgs/msg/PointField")
    fields = [PF(name=n, offset=o, datatype=d, count=1) for n, o, d in (
        ("x", 0, POINTFIELD_FLOAT32), ("y", 4, POINTFIELD_FLOAT32), ("z", 8, POINTFIELD_FLOAT32),
        ("rgb", 12, POINTFIELD_FLOAT32), ("label", 16, POINTFIELD_UINT32), ("mask", 20, POINTFIELD_UINT8))]
    return new_msg("sensor_msgs/msg/PointCloud2", header=hdr, height=1, width=len(pts), fields=fields,
                   is_bigendian=False, point_step=24, row_step=24 * len(pts), data=pts.view(np.uint8).reshape(-1),
                   is_dense=True)


def lidar_pointcloud2(raw: bytes, hdr: Any, source: str) -> Any:
    """nuScenes .pcd.bin (5 float32 per point: x, y, z, intensity, ring) -> PointCloud2, bytes unchanged."""
    if len(raw) % 20:
        raise ConversionError(f"{source}: {len(raw)} bytes is not a multiple of 20 (5 float32 per point)")
    PF = msg_class("sensor_msgs/msg/PointField")
    fields = [PF(name=n, offset=4 * i, datatype=POINTFIELD_FLOAT32, count=1)
              for i, n in enumerate(("x", "y", "z", "intensity", "ring"))]
    n = len(raw) // 20
    return new_msg("sensor_msgs/msg/PointCloud2", header=hdr, height=1, width=n, fields=fields, is_bigendian=False,
                   point_step=20, row_step=20 * n, data=np.frombuffer(raw, dtype=np.uint8), is_dense=True)


@dataclass
class _Event:
    stamp_ns: int
    kind: str  # "sd" (sample_data) | "gt"
    token: str


class NuScenesBagConverter:
    def __init__(self, nusc: Any, occ_root: str | Path | None = None, keyframes_only: bool = False,
                 cameras: Iterable[str] = CAMERAS, with_lidar: bool = True):
        self.nusc = nusc
        self.occ_root = Path(occ_root) if occ_root else None
        self.keyframes_only = keyframes_only
        self.cameras = tuple(cameras)
        self.channels = self.cameras + ((LIDAR,) if with_lidar else ())
        self.stats = {"images": 0, "lidar": 0, "tf": 0, "occ_gt": 0}

    # ------------------------------------------------------------------ helpers
    def scene_tokens(self, names: list[str] | None) -> list[str]:
        by_name = {s["name"]: s["token"] for s in self.nusc.scene}
        if not names:
            return [s["token"] for s in self.nusc.scene]
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConversionError(f"unknown scene(s) {unknown}; the dataroot has {sorted(by_name)}")
        return [by_name[n] for n in names]

    def _scene_sample_data(self, scene: dict) -> list[dict]:
        """Every sample_data of the channels in the scene (sweeps included unless keyframes_only)."""
        out = []
        first = self.nusc.get("sample", scene["first_sample_token"])
        for ch in self.channels:
            if ch not in first["data"]:
                raise ConversionError(f"scene {scene['name']}: first sample has no {ch} data")
            tok = first["data"][ch]
            sd = self.nusc.get("sample_data", tok)
            while sd["prev"]:  # sweeps before the first keyframe belong to the scene too
                prev = self.nusc.get("sample_data", sd["prev"])
                if prev["sample_token"] and self.nusc.get("sample", prev["sample_token"])["scene_token"] != scene["token"]:
                    break
                sd = prev
            while True:
                if sd["is_key_frame"] or not self.keyframes_only:
                    out.append(sd)
                if not sd["next"]:
                    break
                nxt = self.nusc.get("sample_data", sd["next"])
                if self.nusc.get("sample", nxt["sample_token"])["scene_token"] != scene["token"]:
                    break
                sd = nxt
        return out

    def _occ_path(self, scene_name: str, sample_token: str) -> Path | None:
        if self.occ_root is None:
            return None
        for p in (self.occ_root / "gts" / scene_name / sample_token / "labels.npz",
                  self.occ_root / scene_name / sample_token / "labels.npz",
                  self.occ_root / sample_token / "labels.npz"):
            if p.is_file():
                return p
        return None

    def static_transforms(self, sds: list[dict], stamp_ns: int) -> Any:
        seen, tfs = set(), []
        for sd in sds:
            ch = sd["channel"]
            if ch in seen:
                continue
            seen.add(ch)
            cs = self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            tfs.append(matrix_to_transform_stamped(transform_from_quat(cs["translation"], cs["rotation"]),
                                                   BASE_FRAME, ch, stamp_ns))
        return new_msg("tf2_msgs/msg/TFMessage", transforms=tfs)

    # ------------------------------------------------------------------ conversion
    def write_scene(self, w: AtomicBagWriter, scene_token: str, progress: Any = None) -> None:
        from priorocc_core.data.io import load_occ_gt

        scene = self.nusc.get("scene", scene_token)
        sds = self._scene_sample_data(scene)
        events = [_Event(us_to_ns(sd["timestamp"]), "sd", sd["token"]) for sd in sds]
        if self.occ_root is not None:
            tok = scene["first_sample_token"]
            while tok:
                s = self.nusc.get("sample", tok)
                if self._occ_path(scene["name"], tok) is not None:
                    events.append(_Event(us_to_ns(s["timestamp"]), "gt", tok))
                tok = s["next"]
        events.sort(key=lambda e: (e.stamp_ns, e.kind, e.token))
        if not events:
            return
        t0 = events[0].stamp_ns
        w.write("/tf_static", "tf2_msgs/msg/TFMessage", t0, self.static_transforms(sds, t0), TF_STATIC_QOS)
        root = Path(self.nusc.dataroot)
        for ev in events:
            if ev.kind == "gt":
                gt = load_occ_gt(self._occ_path(scene["name"], ev.token))
                w.write(OCC_GT_TOPIC, "sensor_msgs/msg/PointCloud2", ev.stamp_ns,
                        occ_gt_to_pointcloud2(gt["semantics"], gt["mask_lidar"], gt["mask_camera"],
                                              header(ev.stamp_ns, BASE_FRAME)), RELIABLE_QOS)
                self.stats["occ_gt"] += 1
                continue
            sd = self.nusc.get("sample_data", ev.token)
            ch = sd["channel"]
            path = root / sd["filename"]
            try:
                raw = path.read_bytes()
            except OSError as e:
                raise ConversionError(f"{ch} sample_data {sd['token']}: cannot read {path}: {e}") from e
            hdr = header(ev.stamp_ns, ch)
            if ch == LIDAR:
                w.write(LIDAR_TOPIC, "sensor_msgs/msg/PointCloud2", ev.stamp_ns, lidar_pointcloud2(raw, hdr, str(path)),
                        SENSOR_DATA_QOS)
                self.stats["lidar"] += 1
            else:
                cs = self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
                K = np.asarray(cs["camera_intrinsic"], dtype=np.float64)
                if K.shape != (3, 3) or K[0, 0] <= 0:
                    raise ConversionError(f"{ch} calibrated_sensor {cs['token']}: camera_intrinsic is not a 3x3 K: {K.tolist()}")
                w.write(INFO_TOPIC.format(camera=ch), "sensor_msgs/msg/CameraInfo", ev.stamp_ns,
                        make_camera_info(K, sd["width"], sd["height"], hdr), SENSOR_DATA_QOS)
                w.write(IMAGE_TOPIC.format(camera=ch), "sensor_msgs/msg/CompressedImage", ev.stamp_ns,
                        new_msg("sensor_msgs/msg/CompressedImage", header=hdr, format="jpeg",
                                data=np.frombuffer(raw, dtype=np.uint8)), SENSOR_DATA_QOS)
                self.stats["images"] += 1
            ep = self.nusc.get("ego_pose", sd["ego_pose_token"])
            tf = matrix_to_transform_stamped(transform_from_quat(ep["translation"], ep["rotation"]),
                                             MAP_FRAME, BASE_FRAME, us_to_ns(ep["timestamp"]))
            w.write("/tf", "tf2_msgs/msg/TFMessage", ev.stamp_ns, new_msg("tf2_msgs/msg/TFMessage", transforms=[tf]),
                    RELIABLE_QOS)
            self.stats["tf"] += 1
            if progress is not None:
                progress.update(1)

    def count(self, scene_tokens: list[str]) -> int:
        return sum(len(self._scene_sample_data(self.nusc.get("scene", t))) for t in scene_tokens)

    def convert(self, out: str | Path, scenes: list[str] | None = None, storage: str = "mcap",
                overwrite: bool = False, progress: bool = True) -> dict[str, int]:
        tokens = self.scene_tokens(scenes)
        total = self.count(tokens)
        with tqdm(total=total, desc="nuscenes_to_bag", unit="msg", disable=not progress) as bar:
            with AtomicBagWriter(out, storage=storage, overwrite=overwrite) as w:
                for tok in tokens:
                    self.write_scene(w, tok, bar)
        return dict(self.stats)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nuscenes_to_bag", description="nuScenes dataroot -> ROS 2 bag (MCAP or sqlite3)")
    ap.add_argument("--dataroot", required=True, help="nuScenes dataroot (holds samples/, sweeps/, <version>/)")
    ap.add_argument("--version", default="auto", help="table folder, e.g. v1.0-mini, v1.0-trainval (default auto: the only one there)")
    ap.add_argument("--out", required=True, help="output bag folder (must not exist unless --overwrite)")
    ap.add_argument("--scenes", nargs="*", default=None, help="scene names (default: all)")
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    ap.add_argument("--keyframes-only", action="store_true", help="skip sweeps (2 Hz instead of 12 Hz cameras)")
    ap.add_argument("--no-lidar", action="store_true", help="leave LIDAR_TOP out")
    ap.add_argument("--occ-root", default=None, help="Occ3D folder (gts/<scene>/<token>/labels.npz) for /occ_gt/voxels")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    cli.add_debug_arg(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    return cli.run("nuscenes_to_bag", _main, argv)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from nuscenes.nuscenes import NuScenes

    from priorocc_core.data.infos import table_version

    version = table_version(args.dataroot, args.version, ("--dataroot", "--version"))
    nusc = NuScenes(version=version, dataroot=args.dataroot, verbose=not args.quiet)
    conv = NuScenesBagConverter(nusc, occ_root=args.occ_root, keyframes_only=args.keyframes_only,
                                with_lidar=not args.no_lidar)
    try:
        stats = conv.convert(args.out, args.scenes, args.storage, args.overwrite, progress=not args.quiet)
    except (ConversionError, FileExistsError) as e:
        print(cli.error_line("nuscenes_to_bag", str(e)), file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({args.storage}): " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
