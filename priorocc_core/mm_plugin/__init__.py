"""Optional mmdet3d / mmengine registry integration, for FlashOCC users' mmengine-style configs.

    # in an mmengine config
    custom_imports = dict(imports=["priorocc_core.mm_plugin"], allow_failed_imports=False)
    model = dict(type="PriorOcc", backbone=dict(depth=50), injector=dict(enabled=True), ...)

Importing this package registers, into ``mmdet3d.registry`` (or ``mmengine.registry`` when mmdet3d
is not installed):

* MODELS ``PriorOcc``: :class:`MMPriorOcc`, an ``mmengine.model.BaseModel`` around the project's
  network; keyword arguments are the sections of :class:`priorocc_core.config.ModelConfig`
  (grid, image, backbone, neck, injector, view_transformer, bev_encoder, head). ``forward(inputs,
  data_samples=None, mode)``: ``loss`` -> dict of losses, ``predict`` -> list of (200, 200, 16) uint8
  label arrays, ``tensor`` -> occupancy logits (B, 200, 200, 16, 18). ``inputs`` is the project's
  batch dict (imgs, cam2ego, K, img_aug, bev_aug, voxel_semantics, mask_camera, seg_labels).
* MODELS ``SemanticInjector``: the plug-in itself (SegHead + FusionLayer).
* TRANSFORMS ``LoadSeg2DLabels``: loads each camera's 2D label PNG (docs/design.md layout) into
  ``results["gt_seg_2d"]`` (N, H, W) uint8, for FlashOCC / BEVDet pipelines (camera paths from
  ``results["curr"]["cams"][CAM]["data_path"]`` or ``results["img_filename"]``).
* DATASETS ``PriorOccDataset``: the project's :class:`priorocc_core.data.OccDataset` built from a
  project YAML config file (``config_file``, ``split``, ``train``, ``cfg_options``).
* FUNCTIONS ``priorocc_collate``: the project's ``collate`` wrapped as ``{"inputs": batch}``, the
  form mmengine's ``BaseModel.train_step`` passes to ``forward``; use it as the data loader's
  ``collate_fn=dict(type="priorocc_collate")`` with ``PriorOccDataset``.

Works with ``mmengine`` + ``mmcv-lite`` (no compiled mmcv ops are used). ``register_all()`` is
idempotent. The package is optional: the project's own training never imports it.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..classes import CAMERAS, IGNORE

try:  # mmdet3d's registries when present, else mmengine's root registries
    from mmdet3d.registry import DATASETS, MODELS, TRANSFORMS

    REGISTRY_SCOPE = "mmdet3d"
except ImportError:  # pragma: no cover - depends on the environment
    try:
        from mmengine.registry import DATASETS, MODELS, TRANSFORMS

        REGISTRY_SCOPE = "mmengine"
    except ImportError as e:
        raise ImportError(
            "priorocc_core.mm_plugin needs mmengine (and optionally mmdet3d with mmcv-lite): "
            "pip install mmengine mmcv-lite mmdet mmdet3d --no-deps (see docs/training.md)") from e

from mmengine.model import BaseModel
from mmengine.registry import FUNCTIONS

try:
    from mmcv.transforms import BaseTransform
except ImportError:  # pragma: no cover
    BaseTransform = object


def _model_config(kwargs: dict):
    from ..config import Config

    return Config.from_dict({"model": kwargs}).model


class MMPriorOcc(BaseModel):
    """mmengine BaseModel wrapper of :class:`priorocc_core.model.PriorOcc` (registered as ``PriorOcc``)."""

    def __init__(self, data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None, **model_cfg: Any):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        from ..model import build_model

        self.model_cfg = _model_config(model_cfg)
        self.net = build_model(self.model_cfg)

    def forward(self, inputs: dict, data_samples: Optional[Sequence] = None, mode: str = "tensor"):
        if mode == "loss":
            self.net.train(self.training)
            return self.net.losses(self.net(inputs), inputs)
        was = self.net.training
        self.net.eval()
        try:
            out = self.net(inputs)
        finally:
            self.net.train(was)
        if mode == "predict":
            return [o for o in out["occ"].to(torch.uint8).cpu().numpy()]
        if mode == "tensor":
            return out["occ_logits"]
        raise ValueError(f"MMPriorOcc.forward: unknown mode {mode!r} (loss, predict, tensor)")


class LoadSeg2DLabels(BaseTransform):
    """Load the 2D label PNG of every camera image -> results["gt_seg_2d"] (N, H, W) uint8.

    label_root: folder of the labels (``<data_root>/seg_2d_labels`` by default); data_root: the
    nuScenes dataroot the image paths are relative to. Missing PNGs give all-ignore (255) maps when
    ``allow_missing`` (the image's size), else an error naming the file.
    """

    def __init__(self, data_root: str = "data/nuscenes", label_root: Optional[str] = None,
                 cameras: Sequence[str] = CAMERAS, allow_missing: bool = False):
        self.data_root = data_root
        self.label_root = label_root or f"{data_root.rstrip('/')}/seg_2d_labels"
        self.cameras = tuple(cameras)
        self.allow_missing = allow_missing

    def _paths(self, results: dict) -> list[str]:
        if "curr" in results and "cams" in results["curr"]:
            return [results["curr"]["cams"][c]["data_path"] for c in self.cameras]
        if "img_filename" in results:
            return list(results["img_filename"])
        raise KeyError("LoadSeg2DLabels: results has neither ['curr']['cams'] nor 'img_filename'")

    def transform(self, results: dict) -> dict:
        from pathlib import Path

        from PIL import Image

        from ..data.io import DataError, load_seg_label, seg_label_path

        labels = []
        for p in self._paths(results):
            img_path = Path(p)
            if not img_path.is_absolute() and not img_path.exists():
                img_path = Path(self.data_root) / img_path
            lp = seg_label_path(self.label_root, self.data_root, img_path)
            if lp.is_file():
                labels.append(load_seg_label(lp))
            elif self.allow_missing and img_path.is_file():
                with Image.open(img_path) as im:
                    labels.append(np.full((im.height, im.width), IGNORE, dtype=np.uint8))
            else:
                raise DataError(f"2D label {lp} for image {img_path} does not exist")
        results["gt_seg_2d"] = np.stack(labels)
        return results

    def __call__(self, results: dict) -> dict:  # also usable without mmcv's BaseTransform
        return self.transform(results)


class PriorOccDataset(torch.utils.data.Dataset):
    """The project's OccDataset built from a project YAML config (registered as ``PriorOccDataset``)."""

    def __init__(self, config_file: str, split: str = "train", train: bool = True,
                 cfg_options: Optional[Sequence[str]] = None, **_ignored):
        from ..config import load_config
        from ..data import OccDataset

        self.cfg = load_config(config_file, list(cfg_options or []))
        self.ds = OccDataset(self.cfg, split=split, train=train)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        return self.ds[i]


def priorocc_collate(samples: Sequence[dict]) -> dict:
    """OccDataset samples -> ``{"inputs": batch}`` (registered in FUNCTIONS as ``priorocc_collate``)."""
    from ..data import collate

    return {"inputs": collate(list(samples))}


def _import_own_modules(registry) -> Optional[str]:
    """Let a registry import its own package's modules now (mmengine does it lazily on the first
    build). With mmcv-lite, mmdet3d.models / mmdet3d.datasets fail to import (compiled mmcv ops,
    numba, ...); then the registry is marked as imported so that building PriorOcc's modules,
    which need none of that, still works. Returns the import error, if any."""
    if getattr(registry, "_imported", True):
        return None
    try:
        registry.import_from_location()
        return None
    except ImportError as e:
        registry._imported = True
        return f"{registry.scope}.{registry.name}: {e}"


def register_all() -> dict[str, list[str]]:
    """Register everything (idempotent); returns {registry: [names]}."""
    import warnings

    from ..model.semantic_injector import SemanticInjector

    import importlib

    from mmengine.registry import Registry

    # every registry of the scope (a Runner with default_scope="mmdet3d" also builds its hooks,
    # loops, visualizers, ...: mmdet3d.visualization needs compiled mmcv ops too)
    scope_registries = [r for r in vars(importlib.import_module(f"{REGISTRY_SCOPE}.registry")).values()
                        if isinstance(r, Registry)]
    failed = [m for m in (_import_own_modules(r) for r in scope_registries) if m]
    if failed:
        warnings.warn("priorocc_core.mm_plugin: the registries' own modules could not be imported (expected with "
                      "mmcv-lite); only PriorOcc's modules are available: " + "; ".join(failed), stacklevel=2)

    MODELS.register_module(name="PriorOcc", module=MMPriorOcc, force=True)
    MODELS.register_module(name="SemanticInjector", module=SemanticInjector, force=True)
    TRANSFORMS.register_module(name="LoadSeg2DLabels", module=LoadSeg2DLabels, force=True)
    DATASETS.register_module(name="PriorOccDataset", module=PriorOccDataset, force=True)
    FUNCTIONS.register_module(name="priorocc_collate", module=priorocc_collate, force=True)
    return {"models": ["PriorOcc", "SemanticInjector"], "transforms": ["LoadSeg2DLabels"],
            "datasets": ["PriorOccDataset"], "functions": ["priorocc_collate"], "scope": [REGISTRY_SCOPE],
            "unavailable": failed}


register_all()

__all__ = ["DATASETS", "FUNCTIONS", "MODELS", "TRANSFORMS", "LoadSeg2DLabels", "MMPriorOcc", "PriorOccDataset",
           "priorocc_collate", "register_all"]
