"""The one inference path: camera images -> preprocess -> pooling plan -> runner -> Prediction.

    from priorocc_core.backends import make_predictor
    predictor = make_predictor("model_dir")                 # backend torch / onnxruntime / openvino
    pred = predictor.predict(images, K, cam2ego)   # N (H, W, 3) uint8 RGB, (N, 3, 3), (N, 4, 4)
    pred.occupancy  # (Dx, Dy, Dz) uint8 class per voxel, index [x, y, z]

``preprocess`` is a plain function (the node, the replay, the demo and the benchmark use it);
the pooling plan comes from :class:`priorocc_core.model.plan.PoolingPlanner`; a *runner* (see
:mod:`priorocc_core.backends`) maps (normalised images, plan) to labels; labels come from
:mod:`priorocc_core.model.postprocess` wherever the network runs. cam2ego is camera -> key
ego (docs/design.md: the ego at the first camera's timestamp for FlashOCC-exact models).

A temporal model (``model.temporal.num_adj`` > 0) runs in the sequential mode: each call also takes
``ego2global`` (4, 4) (the pose of the key ego) and the ``history`` the previous call returned
(None or ``reset_history()`` to start, e.g. at a scene change), and its Prediction carries the next
``history``: explicit state, never kept by the predictor (docs/design.md, "Temporal").

    pred = predictor.predict(images, K, cam2ego, ego2global=pose, history=pred.history)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .config import Config
from .model.bev_pool import PoolingIndices
from .model.plan import PoolingPlanner
from .model.temporal import BEVHistory, TemporalError, check_pose, reset_history
from .preprocess import prepare_camera


@dataclass
class Prediction:
    occupancy: np.ndarray  # (Dx, Dy, Dz) uint8 labels
    seg2d: np.ndarray | None  # (N, H_in, W_in) uint8 labels at network-input size, or None
    img_aug: np.ndarray  # (N, 3, 3) original pixels -> network-input pixels
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    history: BEVHistory | None = None  # temporal models: the history to pass to the next call


@dataclass
class Prepared:
    """A set ready for the network: normalised images, the pooling plan, the image augmentation."""
    imgs: torch.Tensor  # (1, N, 3, H, W)
    plan: PoolingIndices
    img_aug: torch.Tensor  # (1, N, 3, 3)
    preprocess_s: float
    ego2global: torch.Tensor | None = None  # (1, 4, 4) float64, temporal models
    stamp: float | None = None  # seconds, temporal models (stored in the history)
    # cam2ego, K (1, N, 4, 4) / (1, N, 3, 3): the camera-aware depth net's input (FlashOCC M2), else None
    cameras: dict | None = None


def preprocess(images: Sequence[np.ndarray], K: np.ndarray, cam2ego: np.ndarray, cfg: Config,
               device: str | torch.device = "cpu", fused: bool = False) -> dict:
    """N (H, W, 3) uint8 RGB images + calibration -> a batch of one sample: imgs (1, N, 3, H, W)
    float32 normalised, cam2ego (1, N, 4, 4), K (1, N, 3, 3), img_aug (1, N, 3, 3), bev_aug (1, 4, 4).
    ``fused`` (False: FlashOCC's exact pixels): resize + crop in one Pillow call, see
    :func:`priorocc_core.preprocess.resize_crop_fused` (BENCHMARKS.md: speed and voxel agreement)."""
    cameras = tuple(cfg.model.image.cameras)
    n = len(cameras)
    if len(images) != n:
        raise ValueError(f"predict: expected {n} images ({', '.join(cameras)}), got {len(images)}")
    K = np.asarray(K, dtype=np.float64)
    cam2ego = np.asarray(cam2ego, dtype=np.float64)
    if K.shape != (n, 3, 3) or cam2ego.shape != (n, 4, 4):
        raise ValueError(f"predict: expected K (N,3,3) and cam2ego (N,4,4) for N={n}, got {K.shape} and {cam2ego.shape}")
    fh, fw = cfg.model.image.input_size
    imgs = np.empty((1, n, 3, fh, fw), np.float32)  # each camera normalised into its slot: no stacking copy
    augs = []
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"predict: image {i} ({cameras[i]}) must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
        _, aug, _ = prepare_camera(img, cfg.model.image, fused=fused, out=imgs[0, i])
        augs.append(aug)
    f32 = dict(dtype=torch.float32, device=device)
    return dict(
        imgs=torch.from_numpy(imgs).to(device),
        cam2ego=torch.as_tensor(cam2ego, **f32)[None],
        K=torch.as_tensor(K, **f32)[None],
        img_aug=torch.as_tensor(np.stack(augs), **f32)[None],
        bev_aug=torch.eye(4, **f32)[None],
    )


# A runner: (imgs (1, N, 3, H, W) float32, plan) -> dict(occ (1, Dx, Dy, Dz) uint8, seg (1, N, H, W) uint8 | None);
# temporal models: also history=, ego2global= (1, 4, 4), stamp= keywords -> also "history" (the next one);
# a camera-aware depth net (torch only): also cameras= (cam2ego, K, img_aug, bev_aug of the set)
Runner = Callable[..., dict]


class Predictor:
    """preprocess -> plan -> ``runner`` -> :class:`Prediction` for one synchronised image set.

    ``backend`` names the runtime that produced the outputs (torch, onnxruntime, openvino);
    ``fused_resize`` (False: FlashOCC's exact pixels) selects the fused resize + crop."""

    fused_resize: bool = False

    def __init__(self, cfg: Config, runner: Runner, backend: str, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.runner = runner
        self.backend = backend
        self.device = torch.device(device)
        self.planner = PoolingPlanner.from_config(cfg.model)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.cfg.model.image.cameras)

    @property
    def temporal(self) -> bool:
        """True when the model fuses past frames (sequential mode: ego2global and history per call)."""
        return self.cfg.model.temporal.num_adj > 0

    def preprocess(self, images: Sequence[np.ndarray], K: np.ndarray, cam2ego: np.ndarray) -> dict:
        return preprocess(images, K, cam2ego, self.cfg, self.device, fused=self.fused_resize)

    @torch.no_grad()
    def prepare(self, images: Sequence[np.ndarray], K: np.ndarray, cam2ego: np.ndarray,
                ego2global: np.ndarray | None = None, stamp: float | None = None,
                camera_mask: Sequence[bool] | None = None) -> Prepared:
        """Preprocessing and the pooling plan: what a pipelined caller runs before the network
        (node_core's decode stage), so that it overlaps the previous set's inference.
        ego2global (4, 4) and stamp (seconds): temporal models only (ignored otherwise).
        camera_mask (N,) bool: False = that camera sent nothing, its features are masked out
        (its points leave the plan, which every backend takes as an input); None = all used."""
        t0 = time.perf_counter()
        e = None
        if self.temporal:
            e = None if ego2global is None else torch.as_tensor(np.asarray(ego2global, dtype=np.float64))[None]
            e = check_pose(e, "predict: ego2global", 1)  # TemporalError: missing, not (4, 4), not finite
        batch = self.preprocess(images, K, cam2ego)
        plan = self.planner(batch["cam2ego"], batch["K"], batch["img_aug"], batch["bev_aug"])
        if camera_mask is not None:
            plan = self.planner.masked(plan, torch.as_tensor(np.asarray(camera_mask, dtype=bool))[None])
        cams = ({k: batch[k] for k in ("cam2ego", "K", "img_aug", "bev_aug")}
                if self.cfg.model.view_transformer.depth_net != "conv" else None)
        return Prepared(batch["imgs"], plan, batch["img_aug"], time.perf_counter() - t0, e, stamp, cams)

    @torch.no_grad()
    def run(self, prepared: Prepared, history: BEVHistory | None = None) -> Prediction:
        """The network and postprocessing of a prepared set; temporal models: ``history`` the
        previous Prediction's (None: start afresh) -> Prediction.history."""
        t1 = time.perf_counter()
        if self.temporal:
            if prepared.ego2global is None:
                raise TemporalError("predict: ego2global missing (this model fuses past frames)")
            cams = {} if prepared.cameras is None else {"cameras": prepared.cameras}
            out = self.runner(prepared.imgs, prepared.plan, history=reset_history() if history is None else history,
                              ego2global=prepared.ego2global, stamp=prepared.stamp, **cams)
        elif history is not None:
            raise TemporalError("predict: history given to a single-frame model (model.temporal.num_adj is 0)")
        else:
            out = self.runner(prepared.imgs, prepared.plan, **({} if prepared.cameras is None else
                                                               {"cameras": prepared.cameras}))
        t2 = time.perf_counter()
        occ = np.asarray(out["occ"])[0].astype(np.uint8, copy=False)
        seg = out.get("seg")
        seg = None if seg is None else np.asarray(seg)[0].astype(np.uint8, copy=False)
        return Prediction(occ, seg, prepared.img_aug[0].cpu().numpy().astype(np.float64),
                          {"preprocess": prepared.preprocess_s, "model": t2 - t1, "postprocess": time.perf_counter() - t2},
                          out.get("history"))

    def predict(self, images: Sequence[np.ndarray], K: np.ndarray, cam2ego: np.ndarray,
                ego2global: np.ndarray | None = None, history: BEVHistory | None = None,
                stamp: float | None = None, camera_mask: Sequence[bool] | None = None) -> Prediction:
        """N (H, W, 3) uint8 RGB images, (N, 3, 3) K of those images, (N, 4, 4) cam2ego -> Prediction.
        Temporal models: ego2global (4, 4) of the key ego, the previous Prediction's history (None
        to start), stamp seconds -> Prediction.history for the next call."""
        return self.run(self.prepare(images, K, cam2ego, ego2global, stamp, camera_mask), history)
