"""One synchronised camera set -> occupancy -> output messages. Shared by the live node
(``node_core``) and the offline replay (``replay``); no transport, no threads here.

Stages (timed, seconds): ``decode`` (image messages -> RGB arrays), ``model`` (the
predictor: preprocess + network + postprocess), ``build`` (output messages).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from priorocc_ros import outputs
from priorocc_core.jpeg import model_reduce, reduced_K
from priorocc_ros.image_codec import ImageDecodeError, declared_size, decode_any, encode_image, is_jpeg
from priorocc_ros.msgs import header as make_header
from priorocc_ros.outputs import VoxelGrid


class SetError(RuntimeError):
    """A set that cannot be processed; ``kind`` is the counter it goes to (decode, calibration, size,
    inference)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class PipelineOptions:
    """What the pipeline accepts (image size limit, JPEG reduction) and what it publishes."""
    frame_id: str = "base_link"
    publish_voxels: bool = True
    publish_markers: bool = True
    publish_bev: bool = True
    publish_overlay: bool = True
    overlay_alpha: float = 0.5
    overlay_scale: float = 1.0
    bev_unknown_from_cameras: bool = True  # columns no camera sees are -1 in ~/bev
    jpeg_reduce: int = 1  # decode JPEGs at 1/n size (K scaled accordingly); 1 = exact; 0 = auto: the
    # largest DCT reduction that keeps the image at least the network's resize size (network_reduce)
    max_image_pixels: int = 4096 * 4096  # larger images are rejected (SetError 'size')


@dataclass
class PipelineResult:
    stamp_ns: int
    messages: dict[str, Any]  # output key ("voxels", "markers", "bev", "seg_overlay/CAM") -> message
    timings: dict[str, float] = field(default_factory=dict)
    num_occupied: int = 0


# output key -> (ROS type, relative topic)
OUTPUT_TYPES = {
    "voxels": "sensor_msgs/msg/PointCloud2",
    "markers": "visualization_msgs/msg/MarkerArray",
    "bev": "nav_msgs/msg/OccupancyGrid",
    "seg_overlay": "sensor_msgs/msg/Image",
}


def output_topics(cameras: Sequence[str], opts: PipelineOptions) -> dict[str, tuple[str, str]]:
    """{key: (type, '~/key')} for the enabled outputs."""
    out = {}
    if opts.publish_voxels:
        out["voxels"] = (OUTPUT_TYPES["voxels"], "~/voxels")
    if opts.publish_markers:
        out["markers"] = (OUTPUT_TYPES["markers"], "~/markers")
    if opts.publish_bev:
        out["bev"] = (OUTPUT_TYPES["bev"], "~/bev")
    if opts.publish_overlay:
        for cam in cameras:
            out[f"seg_overlay/{cam}"] = (OUTPUT_TYPES["seg_overlay"], f"~/seg_overlay/{cam}")
    return out


def check_image_size(msg: Any, source: str, max_pixels: int, jpeg_reduce: int = 1) -> None:
    """Reject, before decoding, raw images larger than ``max_pixels``, compressed ones whose
    header declares a decoded size over ``max_pixels`` (a decompression bomb: a few hundred
    bytes can declare 16000 x 16000; a JPEG decoded at 1/``jpeg_reduce`` allocates only that) or
    that are larger than 3 bytes per allowed pixel."""
    if hasattr(msg, "encoding"):
        n = int(msg.width) * int(msg.height)
        if n > max_pixels:
            raise SetError("size", f"{source}: image {msg.width}x{msg.height} exceeds the limit of {max_pixels} pixels "
                                   f"(parameter max_image_pixels)")
    else:
        n = len(msg.data)
        if n > 3 * max_pixels:
            raise SetError("size", f"{source}: compressed image of {n} bytes exceeds the limit "
                                   f"({3 * max_pixels} bytes for {max_pixels} pixels, parameter max_image_pixels)")
        wh = declared_size(msg.data)
        r = jpeg_reduce if wh is not None and is_jpeg(msg) else 1
        if wh is not None and -(-wh[0] // r) * -(-wh[1] // r) > max_pixels:
            raise SetError("size", f"{source}: compressed image ({n} bytes) declares {wh[0]}x{wh[1]} pixels"
                                   f"{f' ({-(-wh[0] // r)}x{-(-wh[1] // r)} decoded at 1/{r})' if r > 1 else ''}, over "
                                   f"the limit of {max_pixels} (parameter max_image_pixels); not decoded")


class OccupancyPipeline:
    """predictor: priorocc_core.inference.Predictor (or anything with .predict and .cfg)."""

    def __init__(self, predictor: Any, cameras: Sequence[str], opts: PipelineOptions | None = None):
        self.predictor = predictor
        self.cameras = tuple(cameras)
        self.opts = opts or PipelineOptions()
        if self.opts.jpeg_reduce not in (0, 1, 2, 4, 8):
            raise ValueError(f"jpeg_reduce must be 0 (auto), 1, 2, 4 or 8, got {self.opts.jpeg_reduce}")
        pc = getattr(predictor, "cameras", None)
        if pc is not None and tuple(pc) != self.cameras:
            raise ValueError(f"camera order {self.cameras} differs from the model's {tuple(pc)}")
        grid_cfg = getattr(getattr(getattr(predictor, "cfg", None), "model", None), "grid", None)
        self.grid = VoxelGrid.from_grid_config(grid_cfg) if grid_cfg is not None else VoxelGrid()
        self._vis_key: bytes | None = None
        self._vis: np.ndarray | None = None

    # ---------------------------------------------------------------- stages
    def decode(self, image_msgs: Sequence[Any], K: np.ndarray,
               expected_hw: Sequence[tuple[int, int] | None] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
        """N image messages + (N, 3, 3) K -> N (H, W, 3) uint8 RGB and the K of the decoded size.
        expected_hw: per camera the (height, width) its CameraInfo describes (binning and ROI
        applied; None = unknown); a decoded image of another size is a SetError naming both.
        A message None (a camera missing from a degraded set) gives an image None and its K as given."""
        imgs, Ks = [], []
        hws = list(expected_hw) if expected_hw is not None else [None] * len(self.cameras)
        for cam, msg, k, hw in zip(self.cameras, image_msgs, K, hws):
            if msg is None:
                imgs.append(None)
                Ks.append(np.asarray(k, dtype=np.float64))
                continue
            check_image_size(msg, cam, self.opts.max_image_pixels, self.opts.jpeg_reduce or 1)
            try:
                reduce = self._reduce(msg, cam) if is_jpeg(msg) else 1
                img = decode_any(msg, source=cam, reduce=reduce)
            except ImageDecodeError as e:
                raise SetError("decode", str(e)) from e
            if hw is not None:
                want = (-(-hw[0] // reduce), -(-hw[1] // reduce))
                if tuple(img.shape[:2]) != want:
                    raise SetError("calibration", f"{cam}: image is {img.shape[1] * reduce}x{img.shape[0] * reduce} but "
                                                  f"its CameraInfo (width, height, binning, roi) describes "
                                                  f"{hw[1]}x{hw[0]}; expected images of the CameraInfo's size")
            imgs.append(img)
            Ks.append(reduced_K(k, reduce))
        return imgs, np.stack(Ks)

    def _reduce(self, msg: Any, cam: str) -> int:
        """The DCT reduction for one JPEG: the fixed ``jpeg_reduce``, or with 0 the largest the
        network's resize allows (needs the predictor's ImageConfig; 1 without one)."""
        if self.opts.jpeg_reduce:
            return self.opts.jpeg_reduce
        icfg = getattr(getattr(getattr(self.predictor, "cfg", None), "model", None), "image", None)
        if icfg is None:
            return 1
        wh = declared_size(msg.data)
        if wh is None:
            return 1  # no readable header: decode in full, the decoder reports what is wrong
        return model_reduce((wh[1], wh[0]), icfg)

    def visibility(self, cam2ego: np.ndarray, K: np.ndarray, hw: list[tuple[int, int]]) -> np.ndarray:
        key = np.concatenate([np.asarray(cam2ego).ravel(), np.asarray(K).ravel(), np.asarray(hw).ravel()]).tobytes()
        if key != self._vis_key:
            self._vis = outputs.camera_visibility(cam2ego, K, hw, self.grid)
            self._vis_key = key
        assert self._vis is not None
        return self._vis

    def predict(self, imgs: Sequence[np.ndarray], K: np.ndarray, cam2ego: np.ndarray, prepared: Any = None,
                temporal: dict | None = None, camera_mask: Sequence[bool] | None = None) -> Any:
        """Decoded images + their K + cam2ego (or what ``prepare`` made of them) -> the
        predictor's result; SetError 'inference'. temporal (temporal models only): ``history``
        (None: start afresh), ``ego2global`` (4, 4) and ``stamp`` seconds, see Predictor.predict."""
        try:
            if prepared is not None:
                return self.predictor.run(prepared, **({"history": temporal["history"]} if temporal else {}))
            extra = {} if camera_mask is None else {"camera_mask": camera_mask}
            return self.predictor.predict(imgs, K, cam2ego, **(temporal or {}), **extra)
        except Exception as e:  # noqa: BLE001 - reported per set
            raise SetError("inference", f"inference failed: {type(e).__name__}: {e}") from e

    def prepare(self, imgs: Sequence[np.ndarray], K: np.ndarray, cam2ego: np.ndarray,
                temporal: dict | None = None, camera_mask: Sequence[bool] | None = None) -> Any:
        """The predictor's preprocessing + pooling plan (``Predictor.prepare``), or None for a
        predictor without that split (``predict`` then does everything). SetError 'inference'.
        temporal: ``ego2global`` and ``stamp`` of a temporal model's set. camera_mask (N,) bool:
        False = a camera missing from the set, its features masked out (None: every camera)."""
        if not hasattr(self.predictor, "prepare"):
            return None
        try:
            extra = {k: temporal[k] for k in ("ego2global", "stamp")} if temporal else {}
            if camera_mask is not None:
                extra["camera_mask"] = camera_mask
            return self.predictor.prepare(imgs, K, cam2ego, **extra)
        except Exception as e:  # noqa: BLE001 - reported per set
            raise SetError("inference", f"preprocessing failed: {type(e).__name__}: {e}") from e

    def mask_unseen(self, pred: Any, present: Sequence[bool], known: Sequence[bool], K: np.ndarray,
                    cam2ego: np.ndarray, hw: list[tuple[int, int]]) -> Any:
        """A degraded set's prediction with the columns that only its missing cameras would see
        marked unknown (IGNORE: absent from ~/voxels and ~/markers, -1 in ~/bev), not free.
        present (N,): the camera sent its image; known (N,): its calibration is known (the last
        one it had); a missing camera never calibrated makes every column the present cameras do
        not see unknown. K / cam2ego / hw per camera (decoded images). Returns a copy."""
        from priorocc_core.classes import IGNORE

        p, kn = np.asarray(present, dtype=bool), np.asarray(known, dtype=bool)
        if p.all():
            return pred
        sel = np.flatnonzero(p)
        seen = self.visibility(np.asarray(cam2ego)[sel], np.asarray(K)[sel], [hw[i] for i in sel])
        gone = np.flatnonzero(~p)
        if kn[gone].all():
            lost = self.visibility(np.asarray(cam2ego)[gone], np.asarray(K)[gone], [hw[i] for i in gone]) & ~seen
        else:
            lost = ~seen
        occ = np.array(pred.occupancy, copy=True)
        occ[lost] = IGNORE  # (Dx, Dy) columns, every z
        out = copy.copy(pred)
        out.occupancy = occ
        return out

    @property
    def temporal(self) -> bool:
        """Whether the predictor's model fuses past frames (takes a history)."""
        return bool(getattr(self.predictor, "temporal", False))

    def run(self, stamp_ns: int, image_msgs: Sequence[Any], K: np.ndarray, cam2ego: np.ndarray,
            expected_hw: Sequence[tuple[int, int] | None] | None = None) -> PipelineResult:
        """Decode, predict and build every enabled output for one set, one stage after the other
        (the node and the replay run the three stages in their own threads instead, runner.py).

        image_msgs: N Image/CompressedImage in camera order; K (N, 3, 3) for the images' native
        size; cam2ego (N, 4, 4) camera -> base_link; expected_hw see ``decode``. Raises SetError.
        """
        t0 = time.perf_counter()
        imgs, Kd = self.decode(image_msgs, K, expected_hw)
        t1 = time.perf_counter()
        pred = self.predict(imgs, Kd, cam2ego)
        t2 = time.perf_counter()
        msgs = self.build(stamp_ns, pred, imgs, Kd, cam2ego)
        t3 = time.perf_counter()
        return self.result(stamp_ns, pred, msgs, {"decode": t1 - t0, "model": t2 - t1, "build": t3 - t2})

    @staticmethod
    def result(stamp_ns: int, pred: Any, msgs: dict[str, Any], timings: dict[str, float]) -> PipelineResult:
        timings = dict(timings)
        for k, v in (getattr(pred, "timings", None) or {}).items():
            timings[f"model.{k}"] = v
        occ = np.asarray(pred.occupancy)
        return PipelineResult(stamp_ns, msgs, timings, int(outputs.occupied_mask(occ).sum()))

    def build(self, stamp_ns: int, pred: Any, imgs: Sequence[np.ndarray], K: np.ndarray,
              cam2ego: np.ndarray, present: Sequence[bool] | None = None) -> dict[str, Any]:
        """The enabled outputs; present (N,) bool: no overlay for a camera missing from the set."""
        o = self.opts
        occ = np.asarray(pred.occupancy)
        out: dict[str, Any] = {}
        if o.publish_voxels:
            out["voxels"] = outputs.voxels_to_pointcloud2(occ, make_header(stamp_ns, o.frame_id), self.grid)
        if o.publish_markers:
            out["markers"] = outputs.voxels_to_markers(occ, make_header(stamp_ns, o.frame_id), self.grid)
        if o.publish_bev:
            vis = None
            if o.bev_unknown_from_cameras:
                vis = self.visibility(cam2ego, K, [im.shape[:2] for im in imgs])
            out["bev"] = outputs.voxels_to_occupancy_grid(occ, make_header(stamp_ns, o.frame_id), self.grid, vis)
        if o.publish_overlay and getattr(pred, "seg2d", None) is not None:
            for i, cam in enumerate(self.cameras):
                if present is not None and not present[i]:
                    continue
                ov = outputs.seg_overlay(imgs[i], pred.img_aug[i], pred.seg2d[i], o.overlay_alpha, o.overlay_scale)
                out[f"seg_overlay/{cam}"] = encode_image(ov, make_header(stamp_ns, o.frame_id))
        return out
