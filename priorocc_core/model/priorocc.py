"""The PriorOcc network: FlashOCC plus an optional SemanticInjector.

images (B, N, 3, H, W) -> (B*N, 3, H, W)   the one (B, N) -> (B*N) reshape
  -> backbone + FPN                       (B*N, 256, H/16, W/16)     image_encoder.py
     (stereo: also stage C2                (B*N, 256, H/4, W/4))
  -> SemanticInjector (optional)           (B*N, 256, H/16, W/16)     semantic_injector.py
  -> (stereo) cost volume with the previous frame's C2 (B*N, D, H/4, W/4)  stereo.py
  -> lift-splat view transformer          (B, C_bev, 200, 200)        view_transformer.py, depth_net.py,
                                                                      bev_pool.py, plan.py
  -> temporal (num_adj > 0): pre-process, past frames aligned and concatenated
                                          (B, (num_adj+1) C_bev, 200, 200)  temporal.py
  -> BEV encoder                          (B, C_enc, 200, 200)        bev_encoder.py
  -> channel-to-height head               (B, 200, 200, 16, 18)       occ_head.py
seg logits (B*N, K, h, w) -> (B, N, K, h, w)   the one (B*N) -> (B, N) reshape

One contract in training and evaluation: ``forward(batch, plan=None, history=None)`` returns the
outputs; ``losses(outputs, batch)`` is a separate call. A temporal model (model.temporal.num_adj > 0)
takes its past frames from ``batch["adj"]`` (non-sequential: recomputed from their images, without
gradient) or from ``history`` (sequential: a :class:`~.temporal.BEVHistory`, returned updated as
``outputs["history"]``); docs/design.md, "Temporal".
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..config import ConfigError, ModelConfig
from .bev_encoder import BEVResNet, FPNLSS
from .bev_pool import PoolingIndices
from .image_encoder import CustomFPN, ResNetBackbone, stage0_shape
from .occ_head import OccHead2D
from .postprocess import occ_labels
from .semantic_injector import SemanticInjector, loss_2d_seg
from . import stereo as st
from . import temporal as tp
from .depth_net import camera_params
from .view_transformer import LSSViewTransformer

GEOMETRY_KEYS = ("cam2ego", "K", "img_aug", "bev_aug")


class PriorOcc(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        tc = cfg.temporal
        self.stereo = tc.stereo
        if tc.stereo and (tc.num_adj < 1 or tuple(cfg.backbone.out_indices)[:1] != (0,)):
            raise ConfigError(f"model.temporal.stereo needs num_adj >= 1 (got {tc.num_adj}) and backbone.out_indices "
                              f"starting with 0, the stride-4 stage of the cost volume (got "
                              f"{list(cfg.backbone.out_indices)})")
        self.backbone = ResNetBackbone(cfg.backbone.depth, cfg.backbone.out_indices, cfg.backbone.with_cp)
        neck_in = self.backbone.out_channels[1:] if tc.stereo else self.backbone.out_channels
        if tuple(neck_in) != tuple(cfg.neck.in_channels):
            raise ValueError(
                f"neck.in_channels {tuple(cfg.neck.in_channels)} does not match the ResNet-{cfg.backbone.depth} "
                f"stages {tuple(neck_in)}")
        self.neck = CustomFPN(cfg.neck.in_channels, cfg.neck.out_channels)
        inj = cfg.injector
        self.injector = (SemanticInjector(cfg.neck.out_channels, inj.mid_channels, inj.num_classes, inj.softmax_before_fusion)
                         if inj.enabled else None)
        vt = cfg.view_transformer
        if vt.in_channels != cfg.neck.out_channels:
            raise ValueError(f"view_transformer.in_channels {vt.in_channels} != neck.out_channels {cfg.neck.out_channels}")
        try:
            self.view_transformer = LSSViewTransformer(cfg.grid, cfg.image.input_size, vt.in_channels, vt.out_channels,
                                                       vt.downsample, vt.sid, vt.depth_net, vt.aspp_mid_channels,
                                                       tc.stereo)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if tc.num_adj < 0 or (tc.num_adj == 0 and tc.pre_process.enabled) or tc.pre_process.num_layer < 1:
            raise ConfigError(f"model.temporal: num_adj {tc.num_adj} must be >= 0, pre_process needs num_adj >= 1 "
                              f"and num_layer >= 1 (got pre_process {tc.pre_process})")
        self.num_adj = tc.num_adj
        c_frame = vt.out_channels * cfg.grid.size_xyz[2]  # one frame's BEV channels, z collapsed
        self.pre_process_net = tp.build_pre_process(c_frame, tc.pre_process.num_layer) if tc.pre_process.enabled else None
        enc = cfg.bev_encoder
        self.bev_backbone = BEVResNet(c_frame * (tc.num_adj + 1), enc.num_channels, enc.num_layer)
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
        return self.encode_images_stereo(imgs)[0]

    def encode_images_stereo(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B*N, 3, H, W) -> (FPN features (B*N, C, H/16, W/16), stereo models: the stride-4 stage
        (B*N, C_2, H/4, W/4) that feeds the cost volume, else None)."""
        outs = self.backbone(imgs)
        if self.stereo:
            return self.neck(outs[1:]), outs[0]
        return self.neck(outs), None

    def inject(self, feats: torch.Tensor):
        """(B*N, C, h, w) -> (features, seg logits (B*N, K, h, w) or None)."""
        return (feats, None) if self.injector is None else self.injector(feats)

    def features_to_bev(self, feats: torch.Tensor, plan: PoolingIndices, cam: torch.Tensor | None = None,
                        cost: torch.Tensor | None = None):
        """(B*N, C, h, w) -> (bev (B, C_bev, Dy, Dx), depth (B*N, D, h, w)); the camera-aware depth net
        also takes cam (B*N, 27) and, stereo, the cost volume (B*N, D, 4h, 4w)."""
        return self.view_transformer(feats, plan, cam, cost)

    def camera_params(self, cam2ego, K, img_aug, bev_aug) -> torch.Tensor | None:
        """The camera-aware depth net's input (B*N, 27) (:func:`.depth_net.camera_params`); None for the 1x1 conv."""
        if not self.view_transformer.camera_aware:
            return None
        return camera_params(cam2ego.float(), K.float(), img_aug.float(), bev_aug.float()).flatten(0, 1)

    def stereo_grid(self, curr2adj: torch.Tensor, K: torch.Tensor, img_aug: torch.Tensor) -> torch.Tensor:
        """Where each (depth bin, stride-4 pixel) of this frame lands in the previous image
        (:func:`.stereo.currpix2adjgrid`): curr2adj (B, N, 4, 4) (:func:`.stereo.currcam2adjcam`), K and
        img_aug (B, N, 3, 3) of this frame -> (B*N, D*H/4, W/4, 2). Geometry only: the exported graph
        takes it as an input, computed on the host by this same function."""
        _, _, h4, w4 = self.stereo_shape(1, 1)
        frustum = self.view_transformer.cv_frustum.to(curr2adj.device)
        return st.currpix2adjgrid(frustum, curr2adj.float(), K.float(), img_aug.float(), (4 * h4, 4 * w4))

    @torch.no_grad()
    def stereo_cost(self, curr4: torch.Tensor, prev4: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """The cost volume (B*N, D, H/4, W/4) of this frame's stride-4 features curr4 against the
        previous frame's prev4 (B*N, C_2, H/4, W/4) along ``grid`` (:meth:`stereo_grid`). Without
        gradient, as BEVStereo4D."""
        return st.cost_volume(prev4.to(curr4.dtype), curr4, grid.to(curr4.dtype), self.cfg.temporal.stereo_bias)

    def bev_to_logits(self, bev: torch.Tensor) -> torch.Tensor:
        """(B, C_bev, Dy, Dx) -> occupancy logits (B, Dx, Dy, Dz, K)."""
        return self.occ_head(self.bev_neck(self.bev_backbone(bev)))

    def forward(self, batch: dict, plan: PoolingIndices | None = None, history: tp.BEVHistory | None = None) -> dict:
        """batch: imgs (B, N, 3, H, W) and, unless ``plan`` is given, the geometry cam2ego (B, N, 4, 4),
        K (B, N, 3, 3), img_aug (B, N, 3, 3), bev_aug (B, 4, 4); optional cam_mask (B, N) bool (False:
        that camera's features are masked out, i.e. its points dropped from the plan, plan.masked).
        Temporal models: see :meth:`forward_temporal`.

        -> occ_logits (B, Dx, Dy, Dz, K), occ (B, Dx, Dy, Dz) labels (outside training),
        seg_logits (B, N, K2d, h, w) or None, depth (B*N, D, h, w)."""
        if self.num_adj:
            return self.forward_temporal(batch, plan, history)
        if history is not None:
            raise tp.TemporalError("history: given to a single-frame model (model.temporal.num_adj is 0)")
        imgs = batch["imgs"]
        b, n = imgs.shape[:2]
        if plan is None:
            plan = self.planner(*(batch[k] for k in GEOMETRY_KEYS))
        plan = self.planner.masked(plan, batch.get("cam_mask"))  # cameras masked out: their features pool nothing
        feats, seg = self.inject(self.encode_images(imgs.flatten(0, 1)))  # (B*N, C, h, w)
        cam = self.camera_params(*(batch[k] for k in GEOMETRY_KEYS)) if self.view_transformer.camera_aware else None
        bev, depth = self.features_to_bev(feats, plan, cam)  # (B, C_bev, Dy, Dx)
        logits = self.bev_to_logits(bev)  # (B, Dx, Dy, Dz, K)
        out = dict(occ_logits=logits, depth=depth, seg_logits=None if seg is None else seg.unflatten(0, (b, n)))
        if not self.training:
            out["occ"] = occ_labels(logits)
        return out

    # ------------------------------------------------------------------ temporal (num_adj > 0)
    def history_key(self) -> str:
        """Identity of the BEV features this model produces (config + depth net weights)."""
        return tp.history_key(dataclasses.asdict(self.cfg), self.view_transformer.depth_net_fingerprint())

    @property
    def bev_lower_step(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """((x_min, y_min), (step_x, step_y)) of the BEV grid: cell index <-> metres."""
        g = self.cfg.grid
        return (g.x[0], g.y[0]), (g.x[2], g.y[2])

    def frame_to_bev(self, imgs: torch.Tensor, plan: PoolingIndices, cam: torch.Tensor | None = None,
                     stereo_prev: tuple | None = None):
        """One frame: (B, N, 3, H, W) -> (bev (B, C_bev, Dy, Dx) after the pre-process net,
        depth (B*N, D, h, w), seg logits (B*N, K, h, w) or None). Camera-aware depth net: cam
        (B*N, 27). Stereo: stereo_prev = (prev4 (B*N, C_2, H/4, W/4) of the previous frame, or None
        for this frame itself (a scene's start), grid (:meth:`stereo_grid`)); then this frame's
        stride-4 features come back as a fourth value."""
        feats, f4 = self.encode_images_stereo(imgs.flatten(0, 1))  # (B*N, C, h, w), (B*N, C_2, H/4, W/4)
        feats, seg = self.inject(feats)
        cost = None
        if self.stereo:
            prev4, grid = stereo_prev
            cost = self.stereo_cost(f4, f4 if prev4 is None else prev4, grid)
        bev, depth = self.features_to_bev(feats, plan, cam, cost)  # (B, C_bev, Dy, Dx)
        if self.pre_process_net is not None:
            bev = self.pre_process_net(bev)[0]
        return (bev, depth, seg, f4) if self.stereo else (bev, depth, seg)

    def bev_shape(self, b: int) -> tuple[int, int, int, int]:
        """(B, C_bev * Dz, Dy, Dx) of one frame's BEV map."""
        dx, dy, dz = self.cfg.grid.size_xyz
        return (b, self.cfg.view_transformer.out_channels * dz, dy, dx)

    def forward_sequential(self, imgs: torch.Tensor, plan: PoolingIndices, prev: torch.Tensor, valid: torch.Tensor,
                           curr2adj: torch.Tensor, cam: torch.Tensor | None = None):
        """The sequential mode's network, also the exported temporal graph's: the current images
        (B, N, 3, H, W) and the history as tensors (:func:`.temporal.history_inputs`: prev
        (B, A, C, Dy, Dx), valid (A,), curr2adj (B, A, 4, 4)) -> (occ logits (B, Dx, Dy, Dz, K),
        seg logits (B*N, K2d, h, w) or None, depth (B*N, D, h, w), this frame's bev (B, C, Dy, Dx)).
        cam (B*N, 27): the camera-aware depth net's input. Not for stereo models (forward_temporal)."""
        bev, depth, seg = self.frame_to_bev(imgs, plan, cam)
        logits = self.bev_to_logits(tp.fuse_past(bev, prev, valid, curr2adj, *self.bev_lower_step))
        return logits, seg, depth, bev

    def forward_sequential_stereo(self, imgs: torch.Tensor, plan: PoolingIndices, prev: torch.Tensor,
                                  valid: torch.Tensor, curr2adj: torch.Tensor, cam: torch.Tensor, prev4: torch.Tensor,
                                  prev4_valid: torch.Tensor, grid: torch.Tensor):
        """:meth:`forward_sequential` of a stereo model, also its exported graph's: plus cam (B*N, 27),
        the previous frame's stride-4 features prev4 (B*N, C_2, H/4, W/4), prev4_valid (1,) (0: an
        empty history, this frame's own features stand in, exactly), grid (:meth:`stereo_grid`) ->
        (occ logits, seg logits or None, depth, this frame's bev, its stride-4 features)."""
        feats, f4 = self.encode_images_stereo(imgs.flatten(0, 1))  # (B*N, C, h, w), (B*N, C_2, H/4, W/4)
        feats, seg = self.inject(feats)
        v = prev4_valid.to(f4.dtype).view(1, 1, 1, 1)
        cost = self.stereo_cost(f4, v * prev4.to(f4.dtype) + (1.0 - v) * f4, grid)
        bev, depth = self.features_to_bev(feats, plan, cam, cost)  # (B, C_bev, Dy, Dx)
        if self.pre_process_net is not None:
            bev = self.pre_process_net(bev)[0]
        logits = self.bev_to_logits(tp.fuse_past(bev, prev, valid, curr2adj, *self.bev_lower_step, current_last=True))
        return logits, seg, depth, bev, f4

    def stereo_shape(self, b: int, n: int) -> tuple[int, int, int, int]:
        """(B*N, C_2, H/4, W/4) of a stereo model's stride-4 features (the history keeps one)."""
        return (b * n, *stage0_shape(self.cfg.backbone.depth, tuple(self.cfg.image.input_size)))

    def past_bevs(self, batch: dict, imgs: torch.Tensor, ego2global: torch.Tensor):
        """Non-sequential mode: the num_adj past frames of ``batch["adj"]`` (index 0 = t-1), computed
        without gradient and aligned to the current key ego -> (num_adj x (B, C, Dy, Dx), t-1 first;
        stereo: the current frame's ``stereo_prev`` for :meth:`frame_to_bev`, else None).

        A stereo model takes one frame more (the last: BEVStereo4D's extra reference frame, of which
        only the stride-4 features are computed) and walks the frames from the oldest, each frame's
        cost volume against the frame before it; the others walk from t-1 as before."""
        adj = batch.get("adj")
        want = self.num_adj + int(self.stereo)
        if not isinstance(adj, (list, tuple)) or len(adj) != want:
            got = f"{len(adj)} frames" if isinstance(adj, (list, tuple)) else repr(type(adj).__name__)
            extra = " plus the stereo reference frame" if self.stereo else ""
            raise tp.TemporalError(f"batch['adj']: expected a list of {want} past frames (t-1 first: num_adj "
                                   f"{self.num_adj}{extra}), got {got}")
        b = imgs.shape[0]
        bev_aug = batch["bev_aug"]
        lower, step = self.bev_lower_step
        poses = []
        for i, a in enumerate(adj):
            where = f"batch['adj'][{i}]"
            for k, shape in (("imgs", imgs.shape), ("cam2ego", batch["cam2ego"].shape), ("K", batch["K"].shape),
                             ("img_aug", batch["img_aug"].shape)):
                if not isinstance(a.get(k), torch.Tensor) or a[k].shape != shape:
                    got = tuple(a[k].shape) if isinstance(a.get(k), torch.Tensor) else "missing"
                    raise tp.TemporalError(f"{where}['{k}']: {got}, expected {tuple(shape)} as the current frame's "
                                           "(same cameras, same image size)")
            poses.append(tp.check_pose(a.get("ego2global"), f"{where}['ego2global']", b))
        prev4 = prev_cams = None
        if self.stereo:  # the extra reference frame: its stride-4 features and cameras only
            with torch.no_grad():
                prev4 = self.backbone.stage0(adj[-1]["imgs"].flatten(0, 1))  # (B*N, C_2, H/4, W/4)
            prev_cams = (adj[-1]["cam2ego"], poses[-1])
        out = [None] * self.num_adj
        for i in (reversed(range(self.num_adj)) if self.stereo else range(self.num_adj)):
            a, e_adj = adj[i], poses[i]
            # FlashOCC's mlp_input: the current frame's cameras with this frame's intrinsics and augmentation
            cam = self.camera_params(batch["cam2ego"], a["K"], a["img_aug"], bev_aug)
            stereo_prev = None
            if self.stereo:
                stereo_prev = (prev4, self.stereo_grid(st.currcam2adjcam(a["cam2ego"], e_adj, *prev_cams), a["K"],
                                                       a["img_aug"]))
            with torch.no_grad():
                if self.cfg.temporal.align_after_view_transformation:
                    plan = self.planner(a["cam2ego"], a["K"], a["img_aug"], bev_aug)
                    r = self.frame_to_bev(a["imgs"], plan, cam, stereo_prev)
                    f = tp.warp_bev(r[0], tp.augment_curr2adj(tp.curr2adj_from_poses(ego2global, e_adj), bev_aug),
                                    lower, step)
                else:
                    cam2curr = tp.adjcam2currego(a["cam2ego"], e_adj, ego2global)
                    r = self.frame_to_bev(a["imgs"], self.planner(cam2curr, a["K"], a["img_aug"], bev_aug), cam,
                                          stereo_prev)
                    f = r[0]
            if self.stereo:
                prev4, prev_cams = r[3], (a["cam2ego"], e_adj)
            out[i] = f
        if not self.stereo:
            return out, None
        return out, (prev4, self.stereo_grid(st.currcam2adjcam(batch["cam2ego"], ego2global, *prev_cams), batch["K"],
                                             batch["img_aug"]))

    def forward_temporal(self, batch: dict, plan: PoolingIndices | None, history: tp.BEVHistory | None) -> dict:
        """batch: the current frame's keys as :meth:`forward` plus ego2global (B, 4, 4) (the pose of
        its key ego), optional stamp (B,) seconds and, without ``history``, adj: num_adj dicts (t-1
        first; stereo: num_adj + 1) of imgs, cam2ego, K, img_aug, ego2global. With ``history``
        (sequential mode): only the current images are encoded; outputs["history"] is the history
        after this frame."""
        imgs = batch["imgs"]
        b, n = imgs.shape[:2]
        if plan is None:
            plan = self.planner(*(batch[k] for k in GEOMETRY_KEYS))
        plan = self.planner.masked(plan, batch.get("cam_mask"))
        ego2global = tp.check_pose(batch.get("ego2global"), "batch['ego2global']", b)
        cam = self.camera_params(*(batch[k] for k in GEOMETRY_KEYS)) if self.view_transformer.camera_aware else None
        out = {}
        if history is None:
            if self.stereo:  # the past frames first: the current frame's cost volume needs t-1's features
                past, stereo_prev = self.past_bevs(batch, imgs, ego2global)
                bev, depth, seg, _ = self.frame_to_bev(imgs, plan, cam, stereo_prev)  # (B, C, Dy, Dx)
            else:
                bev, depth, seg = self.frame_to_bev(imgs, plan, cam)  # (B, C, Dy, Dx)
                past = self.past_bevs(batch, imgs, ego2global)[0]
            logits = self.bev_to_logits(torch.cat(tp.frame_order(bev, past, self.stereo), dim=1))
        else:  # missing past frames (a scene's start, a reset): the current frame stands in
            key, bev_aug = self.history_key(), batch["bev_aug"]
            stereo_shape = self.stereo_shape(b, n) if self.stereo else None
            prev, valid, curr2adj = tp.history_inputs(history, key, self.num_adj, self.bev_shape(b), ego2global, bev_aug,
                                                      stereo_shape)
            f4 = None
            if self.stereo:
                prev4, prev4_valid, grid = tp.stereo_inputs(history, batch["cam2ego"], ego2global, stereo_shape,
                                                            self.stereo_grid, batch["K"], batch["img_aug"])
                logits, seg, depth, bev, f4 = self.forward_sequential_stereo(imgs, plan, prev, valid, curr2adj, cam,
                                                                             prev4, prev4_valid, grid)
            else:
                logits, seg, depth, bev = self.forward_sequential(imgs, plan, prev, valid, curr2adj, cam)
            out["history"] = tp.push_history(history, key, self.num_adj, bev, ego2global,
                                             tp.frame_stamp(batch.get("stamp"), b, bev.device), bev_aug, f4,
                                             batch["cam2ego"] if self.stereo else None)
        out.update(occ_logits=logits, depth=depth, seg_logits=None if seg is None else seg.unflatten(0, (b, n)))
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
