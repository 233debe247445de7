"""The PriorOcc network: FlashOCC plus an optional SemanticInjector.

images (B, N, 3, H, W)
  -> backbone + FPN                       (B*N, 256, H/16, W/16)     image_encoder.py
  -> SemanticInjector (optional)           (B*N, 256, H/16, W/16)     semantic_injector.py
  -> lift-splat view transformer          (B, C_bev, 200, 200)        view_transformer.py, bev_pool.py
  -> BEV encoder                          (B, C_enc, 200, 200)        bev_encoder.py
  -> channel-to-height head               (B, 200, 200, 16, 18)       occ_head.py
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .bev_encoder import BEVResNet, FPNLSS
from .image_encoder import CustomFPN, ResNetBackbone
from .occ_head import OccHead2D
from .semantic_injector import SemanticInjector, loss_2d_seg
from .view_transformer import LSSViewTransformer

GEOMETRY_KEYS = ("cam2ego", "K", "img_aug", "bev_aug")


class PriorOcc(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNetBackbone(cfg.backbone.depth, cfg.backbone.out_indices, cfg.backbone.pretrained, cfg.backbone.with_cp)
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

    # ------------------------------------------------------------------ stages
    def encode_images(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, N, 3, H, W) -> (B*N, C, H/16, W/16)."""
        b, n = imgs.shape[:2]
        return self.neck(self.backbone(imgs.flatten(0, 1)))

    def inject(self, feats: torch.Tensor):
        """(B*N, C, h, w) -> (features, seg logits (B*N, K, h, w) or None)."""
        if self.injector is None:
            return feats, None
        return self.injector(feats)

    def features_to_bev(self, feats, b, n, cam2ego, K, img_aug, bev_aug, plan=None):
        """(B*N, C, h, w) -> (bev (B, C_bev, Dy, Dx), depth (B*N, D, h, w))."""
        return self.view_transformer(feats.view(b, n, *feats.shape[1:]), cam2ego, K, img_aug, bev_aug, plan)

    def bev_to_logits(self, bev: torch.Tensor) -> torch.Tensor:
        """(B, C_bev, Dy, Dx) -> occupancy logits (B, Dx, Dy, Dz, K)."""
        return self.occ_head(self.bev_neck(self.bev_backbone(bev)))

    def forward_stages(self, imgs, cam2ego, K, img_aug, bev_aug, plan=None) -> dict:
        b, n = imgs.shape[:2]
        feats = self.encode_images(imgs)
        feats, seg_logits = self.inject(feats)
        bev, depth = self.features_to_bev(feats, b, n, cam2ego, K, img_aug, bev_aug, plan)
        logits = self.bev_to_logits(bev)
        return dict(occ_logits=logits, depth=depth, seg_logits=seg_logits)

    # ------------------------------------------------------------------ entry point
    def forward(self, batch: dict) -> dict:
        """Training: dict of named scalar losses. Inference: predictions.

        batch: imgs (B, N, 3, H, W), cam2ego (B, N, 4, 4), K (B, N, 3, 3), img_aug (B, N, 3, 3),
        bev_aug (B, 4, 4); training adds voxel_semantics and mask_camera (B, Dx, Dy, Dz),
        optional seg_labels (B, N, H, W) and depth_target (B, N, H, W).
        """
        imgs = batch["imgs"]
        b, n = imgs.shape[:2]
        out = self.forward_stages(imgs, *(batch[k] for k in GEOMETRY_KEYS))
        if not self.training:
            seg = out["seg_logits"]
            return dict(
                occ_logits=out["occ_logits"],
                occ=out["occ_logits"].argmax(-1),
                seg_logits=None if seg is None else seg.view(b, n, *seg.shape[1:]),
            )
        return self.losses(out, batch)

    def losses(self, out: dict, batch: dict) -> dict:
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
                    seg, labels.flatten(0, 1), self.cfg.injector.loss_resolution)
        w = self.cfg.view_transformer.depth_loss_weight
        if w > 0:
            if batch.get("depth_target") is None:
                raise KeyError("view_transformer.depth_loss_weight > 0 but the batch has no 'depth_target'")
            losses["loss_depth"] = w * self.view_transformer.depth_loss(out["depth"], batch["depth_target"])
        return losses
