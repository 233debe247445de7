"""The PriorOcc network: FlashOCC plus an optional SemanticInjector.

images (B, N, 3, H, W) -> (B*N, 3, H, W)   the one (B, N) -> (B*N) reshape
  -> backbone + FPN                       (B*N, 256, H/16, W/16)     image_encoder.py
  -> SemanticInjector (optional)           (B*N, 256, H/16, W/16)     semantic_injector.py
  -> lift-splat view transformer          (B, C_bev, 200, 200)        view_transformer.py, bev_pool.py, plan.py
  -> BEV encoder                          (B, C_enc, 200, 200)        bev_encoder.py
  -> channel-to-height head               (B, 200, 200, 16, 18)       occ_head.py
seg logits (B*N, K, h, w) -> (B, N, K, h, w)   the one (B*N) -> (B, N) reshape

One contract in training and evaluation: ``forward(batch, plan=None)`` returns the outputs;
``losses(outputs, batch)`` is a separate call.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .bev_encoder import BEVResNet, FPNLSS
from .bev_pool import PoolingIndices
from .image_encoder import CustomFPN, ResNetBackbone
from .occ_head import OccHead2D
from .postprocess import occ_labels
from .semantic_injector import SemanticInjector, loss_2d_seg
from .view_transformer import LSSViewTransformer

GEOMETRY_KEYS = ("cam2ego", "K", "img_aug", "bev_aug")


class PriorOcc(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNetBackbone(cfg.backbone.depth, cfg.backbone.out_indices, cfg.backbone.with_cp)
        if tuple(self.backbone.out_channels) != tuple(cfg.neck.in_channels):
            raise ValueError(
                f"neck.in_channels {tuple(cfg.neck.in_channels)} does not match the ResNet-{cfg.backbone.depth} "
                f"stages {tuple(self.backbone.out_channels)}")
        self.neck = CustomFPN(cfg.neck.in_channels, cfg.neck.out_channels)
        inj = cfg.injector
        self.injector = (SemanticInjector(cfg.neck.out_channels, inj.mid_channels, inj.num_classes, inj.softmax_before_fusion)
                         if inj.enabled else None)
        vt = cfg.view_transformer
        if vt.in_channels != cfg.neck.out_channels:
            raise ValueError(f"view_transformer.in_channels {vt.in_channels} != neck.out_channels {cfg.neck.out_channels}")
        self.view_transformer = LSSViewTransformer(cfg.grid, cfg.image.input_size, vt.in_channels, vt.out_channels, vt.downsample)
        enc = cfg.bev_encoder
        self.bev_backbone = BEVResNet(vt.out_channels * cfg.grid.size_xyz[2], enc.num_channels, enc.num_layer)
        self.bev_neck = FPNLSS(enc.num_channels[0] + enc.num_channels[-1], enc.out_channels)
        dz = cfg.grid.occ_size[2]
        self.occ_head = OccHead2D(enc.out_channels, cfg.head.out_dim, dz, cfg.head.num_classes, cfg.head.use_mask,
                                 cfg.head.class_balance, cfg.head.class_weights)

    @property
    def planner(self):
        """The pooling planner (model/plan.py) this network's geometry goes through."""
        return self.view_transformer.planner

    # ------------------------------------------------------------------ stages (forward's own steps)
    def encode_images(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B*N, 3, H, W) -> (B*N, C, H/16, W/16)."""
        return self.neck(self.backbone(imgs))

    def inject(self, feats: torch.Tensor):
        """(B*N, C, h, w) -> (features, seg logits (B*N, K, h, w) or None)."""
        return (feats, None) if self.injector is None else self.injector(feats)

    def features_to_bev(self, feats: torch.Tensor, plan: PoolingIndices):
        """(B*N, C, h, w) -> (bev (B, C_bev, Dy, Dx), depth (B*N, D, h, w))."""
        return self.view_transformer(feats, plan)

    def bev_to_logits(self, bev: torch.Tensor) -> torch.Tensor:
        """(B, C_bev, Dy, Dx) -> occupancy logits (B, Dx, Dy, Dz, K)."""
        return self.occ_head(self.bev_neck(self.bev_backbone(bev)))

    def forward(self, batch: dict, plan: PoolingIndices | None = None) -> dict:
        """batch: imgs (B, N, 3, H, W) and, unless ``plan`` is given, the geometry cam2ego (B, N, 4, 4),
        K (B, N, 3, 3), img_aug (B, N, 3, 3), bev_aug (B, 4, 4).

        -> occ_logits (B, Dx, Dy, Dz, K), occ (B, Dx, Dy, Dz) labels (outside training),
        seg_logits (B, N, K2d, h, w) or None, depth (B*N, D, h, w)."""
        imgs = batch["imgs"]
        b, n = imgs.shape[:2]
        if plan is None:
            plan = self.planner(*(batch[k] for k in GEOMETRY_KEYS))
        feats, seg = self.inject(self.encode_images(imgs.flatten(0, 1)))  # (B*N, C, h, w)
        bev, depth = self.features_to_bev(feats, plan)  # (B, C_bev, Dy, Dx)
        logits = self.bev_to_logits(bev)  # (B, Dx, Dy, Dz, K)
        out = dict(occ_logits=logits, depth=depth, seg_logits=None if seg is None else seg.unflatten(0, (b, n)))
        if not self.training:
            out["occ"] = occ_labels(logits)
        return out

    def losses(self, out: dict, batch: dict) -> dict:
        """Named scalar losses of ``forward``'s outputs against the batch's targets: voxel_semantics
        and mask_camera (B, Dx, Dy, Dz), optional seg_labels (B, N, H, W) and depth_target (B, N, H, W)."""
        if "voxel_semantics" not in batch:
            raise KeyError("training batch has no 'voxel_semantics' (occupancy ground truth)")
        losses = {"loss_occ": self.occ_head.loss(out["occ_logits"], batch["voxel_semantics"], batch.get("mask_camera"))}
        if self.injector is not None:
            seg = out["seg_logits"]
            labels = batch.get("seg_labels")
            if labels is None:
                losses["loss_2d_seg"] = seg.sum() * 0.0  # no labels in this batch; keeps DDP's graph whole
            else:
                losses["loss_2d_seg"] = self.cfg.injector.loss_weight * loss_2d_seg(
                    seg.flatten(0, 1), labels.flatten(0, 1), self.cfg.injector.loss_resolution)
        w = self.cfg.view_transformer.depth_loss_weight
        if w > 0:
            if batch.get("depth_target") is None:
                raise KeyError("view_transformer.depth_loss_weight > 0 but the batch has no 'depth_target'")
            losses["loss_depth"] = w * self.view_transformer.depth_loss(out["depth"], batch["depth_target"])
        return losses
