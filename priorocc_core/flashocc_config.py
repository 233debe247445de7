"""FlashOCC / BEVDet config file -> this project's YAML config, without mmcv.

    priorocc_config_from_flashocc projects/configs/flashocc/flashocc-r50.py --out training/configs/my-m1.yaml

The file (and its ``_base_`` files when they are there) is read by :mod:`priorocc_core.mmcv_config`,
which evaluates literals and arithmetic only and never runs the file. Mapped: ``data_config`` (cameras,
input size, augmentation ranges), ``grid_config`` (grid, depth bins), ``bda_aug_conf`` (BEV flips),
the model (ResNet backbone, CustomFPN neck, LSS view transformer, CustomResNet + FPN_LSS BEV encoder,
BEVOCCHead2D, PriorOcc's ``semantic_injector``), optimiser, lr schedule, runner length, batch size,
info files, EMA hook, fp16 and ``load_from``; the 4D part (``num_adj``, ``align_after_view_transfromation``,
``pre_process``) becomes ``model.temporal``; a 4D-stereo config (FlashOCC M2, ``BEVStereo4DOCC``
with ``LSSViewTransformerBEVStereo``) becomes the same with ``model.temporal.stereo`` (the stereo
cost volume, backbone out_indices (0, 2, 3)), BEVDepth's camera-aware depth net with ASPP
(``depthnet_cfg``) and SID depth bins. Everything else that would change the network or the
training (panoptic parts, other heads or losses, deformable convs in the depth net, BEV rotation /
scale augmentation, ...) is listed in the output, on stdout and as comments at the top of the YAML;
settings with no meaning here (detection class names, pipelines, evaluation) are listed by name. A
config this project cannot build at all (a model type
that is not a FlashOCC / BEVDet occupancy detector, a Swin or other non-ResNet backbone, another image
neck) is an error naming the key: one line, exit 2, nothing written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from .atomic import atomic_write_bytes
from .classes import CAMERAS
from .config import Config, ConfigError
from .mmcv_config import MMCVConfigError, read_mmcv_config

# FlashOCC / BEVDet occupancy detectors: type -> what of it has no counterpart here ("" = nothing)
MODEL_TYPES = {
    "BEVDetOCC": "",
    "BEVDepthOCC": "",
    "BEVDepthPano": "panoptic FlashOCC (instance centres, panoptic output)",
    "BEVDet4DOCC": "",
    "BEVDepth4DOCC": "",
    "BEVDepth4DPano": "panoptic FlashOCC",
    "BEVStereo4DOCC": "",
}
TEMPORAL_TYPES = ("BEVDet4DOCC", "BEVDepth4DOCC", "BEVDepth4DPano", "BEVStereo4DOCC")
# top-level names of a FlashOCC file that carry nothing this project's config can hold
NO_MEANING_HERE = ("plugin", "plugin_dir", "point_cloud_range", "class_names", "voxel_size", "numC_Trans",
                   "dataset_type", "file_client_args", "train_pipeline", "test_pipeline", "eval_pipeline",
                   "input_modality", "share_data_config", "test_data_config", "evaluation", "dist_params",
                   "log_level", "workflow", "resume_from", "opencv_num_threads", "mp_start_method", "occ_class_names",
                   "key", "metainfo", "backend_args", "custom_imports", "train_pipeline_extra",
                   "train_dataset", "val_dataset")
_MISSING = object()


class FlashOCCConfigError(ValueError):
    """A FlashOCC config that cannot be converted (unsupported model type, inconsistent values)."""


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


class _Section:
    """One dict of the source config: values are taken by name; what is not taken is listed."""

    def __init__(self, conv: "_Converter", d: Any, where: str):
        if d is not None and not isinstance(d, dict):
            raise FlashOCCConfigError(f"{where}: expected a dict, got {_short(d)}")
        self.conv, self.d, self.where, self.used = conv, dict(d or {}), where, set()

    def __contains__(self, key: str) -> bool:
        return key in self.d

    def get(self, key: str, default: Any = _MISSING) -> Any:
        self.used.add(key)
        if key in self.d:
            return self.d[key]
        if default is _MISSING:
            raise FlashOCCConfigError(f"{self.where}.{key} is missing")
        return default

    def sub(self, key: str) -> "_Section":
        return _Section(self.conv, self.get(key, None), f"{self.where}.{key}")

    def expect(self, key: str, expected: Any, why: str) -> None:
        """Value that this project's network has fixed: a different one is listed."""
        v = self.get(key, expected)
        if _norm(v) != _norm(expected):
            self.conv.unmapped(f"{self.where}.{key}={_short(v)}: {why} (here: {_short(expected)})")

    def rest(self, why: str = "no counterpart here") -> None:
        for k, v in self.d.items():
            if k not in self.used and k != "type":
                self.conv.unmapped(f"{self.where}.{k}={_short(v)}: {why}")


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


class _Converter:
    def __init__(self, variables: dict, name: str):
        self.v = variables
        self.notes: list[str] = []
        self.out: dict = {"name": name, "model": {}, "data": {}, "train": {}}

    def unmapped(self, msg: str) -> None:
        self.notes.append(msg)

    def top(self, key: str) -> _Section:
        return _Section(self, self.v.get(key), key)

    # ------------------------------------------------------------------ model
    def convert(self) -> dict:
        if "model" not in self.v:
            raise FlashOCCConfigError("no `model = dict(...)` in the config")
        model = _Section(self, self.v["model"], "model")
        mtype = model.get("type", None)
        if mtype == "PriorOcc" and "grid" in model:  # the plug-in's own mmengine config
            self.out["model"] = {k: v for k, v in model.d.items() if k != "type"}
            model.used.update(model.d)
        elif mtype in MODEL_TYPES:
            if MODEL_TYPES[mtype]:
                self.unmapped(f"model.type={mtype}: {MODEL_TYPES[mtype]} is not in PriorOcc; the converted "
                              "network is without it")
            self.flashocc_model(model)
            self.temporal(model, mtype in TEMPORAL_TYPES)
        else:
            raise FlashOCCConfigError(f"model type {mtype!r} is not supported (FlashOCC / BEVDet occupancy "
                                      f"detectors: {', '.join(MODEL_TYPES)}; or the plug-in's 'PriorOcc')")
        ow = self.v.get("optim_wrapper")
        if isinstance(ow, dict) and "optimizer" not in self.v:  # mmengine (1.x) style
            self.v = {**self.v, "optimizer": ow.get("optimizer"), "optimizer_config": {"grad_clip": ow.get("clip_grad")}}
            rest = {k: v for k, v in ow.items() if k not in ("type", "optimizer", "clip_grad")}
            if ow.get("type", "OptimWrapper") != "OptimWrapper" or rest:
                self.unmapped(f"optim_wrapper: {_short(ow)}: only its optimizer and clip_grad are mapped")
        self.schedule()
        used = {"optim_wrapper", "model", "data_config", "grid_config", "bda_aug_conf", "data", "optimizer", "optimizer_config",
                "lr_config", "runner", "custom_hooks", "fp16", "load_from", "checkpoint_config", "log_config", "data_root",
                "multi_adj_frame_id_cfg"}
        ignored = sorted(k for k in self.v if k not in used and not k.startswith("_"))
        meaningless = [k for k in ignored if k in NO_MEANING_HERE]
        if meaningless:
            self.unmapped("not used (no meaning here): " + ", ".join(meaningless))
        for k in ignored:
            if k not in NO_MEANING_HERE:
                self.unmapped(f"{k}={_short(self.v[k])}: not mapped")
        return self.out

    def flashocc_model(self, model: _Section) -> None:
        m = self.out["model"]
        stereo = "Stereo" in model.d.get("type", "")
        # images and grid
        dc = self.top("data_config")
        cams = list(dc.get("cams", CAMERAS))
        unknown = [c for c in cams if c not in CAMERAS]
        if unknown:
            raise FlashOCCConfigError(f"data_config.cams: unknown cameras {unknown} (nuScenes: {list(CAMERAS)})")
        dc.expect("Ncams", len(cams), "Ncams differs from the number of cams")
        dc.get("src_size")  # read, not kept: the raw size comes from each image (the key is retired)
        m["image"] = {"cameras": cams, "input_size": list(dc.get("input_size")),
                      "resize_range": list(dc.get("resize", (0.0, 0.0))), "rot_range": list(dc.get("rot", (0.0, 0.0))),
                      "flip": bool(dc.get("flip", False)), "crop_h": list(dc.get("crop_h", (0.0, 0.0))),
                      "resize_test": float(dc.get("resize_test", 0.0))}
        dc.rest()
        bda = self.top("bda_aug_conf")
        fx, fy = bda.get("flip_dx_ratio", 0.0), bda.get("flip_dy_ratio", 0.0)
        if fx != fy:
            self.unmapped(f"bda_aug_conf.flip_dy_ratio={fy}: one BEV flip probability here, flip_dx_ratio {fx} used")
        m["image"]["bev_flip_prob"] = float(fx)
        bda.expect("rot_lim", (0.0, 0.0), "BEV rotation augmentation is not implemented")
        bda.expect("scale_lim", (1.0, 1.0), "BEV scale augmentation is not implemented")
        bda.rest()

        vt = model.sub("img_view_transformer")
        gc = _Section(self, vt.get("grid_config", None) or self.v.get("grid_config"), "grid_config")
        grid = {k: [float(x) for x in gc.get(k)] for k in ("x", "y", "z", "depth")}
        gc.rest()
        # backbone and neck
        bb = model.sub("img_backbone")
        if bb.get("type", "ResNet") != "ResNet":
            raise FlashOCCConfigError(f"model.img_backbone.type={bb.d['type']!r} is not supported (only torchvision "
                                      "ResNet backbones here); nothing written")
        else:
            out_idx = list(bb.get("out_indices", (2, 3)))
            if stereo and out_idx[:1] != [0]:
                raise FlashOCCConfigError(f"model.img_backbone.out_indices={out_idx}: a stereo model needs stage 0 "
                                          "first (the cost volume's stride-4 features); nothing written")
            m["backbone"] = {"depth": int(bb.get("depth")), "out_indices": out_idx,
                             "with_cp": bool(bb.get("with_cp", False))}
            pre = bb.get("pretrained", None)
            if pre:
                self.unmapped(f"model.img_backbone.pretrained={pre!r}: model.backbone.pretrained takes a local "
                              "torchvision checkpoint file (load_from initialises the backbone anyway)")
            bb.expect("num_stages", 4, "ResNet with 4 stages here")
            bb.expect("frozen_stages", -1, "no frozen stages here")
            bb.expect("norm_eval", False, "BatchNorm trains here")
            bb.expect("style", "pytorch", "torchvision's (pytorch-style) ResNet here")
            bb.expect("norm_cfg", {"type": "BN", "requires_grad": True}, "BatchNorm here")
            bb.rest()
        neck = model.sub("img_neck")
        if neck.get("type", "CustomFPN") != "CustomFPN":
            raise FlashOCCConfigError(f"model.img_neck.type={neck.d['type']!r} is not supported (the image neck here "
                                      "is CustomFPN); nothing written")
        m["neck"] = {"in_channels": list(neck.get("in_channels")), "out_channels": int(neck.get("out_channels"))}
        neck.expect("num_outs", 1, "one output level here")
        neck.expect("start_level", 0, "start level 0 here")
        neck.expect("out_ids", [0], "output 0 here")
        neck.rest()
        # view transformer
        vtype = vt.get("type", "LSSViewTransformer")
        if stereo != (vtype == "LSSViewTransformerBEVStereo"):
            raise FlashOCCConfigError(f"model.img_view_transformer.type={vtype} with model.type={model.d.get('type')}: "
                                      "the stereo view transformer goes with BEVStereo4DOCC only; nothing written")
        if vtype not in ("LSSViewTransformer", "LSSViewTransformerBEVStereo"):
            self.unmapped(f"model.img_view_transformer.type={vtype}: the depth net here is one 1x1 conv (BEVDepth's "
                          "DepthNet (camera-aware, ASPP) not mapped; its depth supervision weight is)")
        if list(vt.get("input_size", m["image"]["input_size"])) != m["image"]["input_size"]:
            raise FlashOCCConfigError(f"model.img_view_transformer.input_size {vt.d['input_size']} differs from "
                                      f"data_config.input_size {m['image']['input_size']}")
        m["view_transformer"] = {"in_channels": int(vt.get("in_channels")), "out_channels": int(vt.get("out_channels")),
                                 "downsample": int(vt.get("downsample", 16)),
                                 "depth_loss_weight": float(vt.get("loss_depth_weight", 0.0))}
        vt.expect("collapse_z", True, "the BEV map collapses z here")
        m["view_transformer"]["sid"] = bool(vt.get("sid", False))
        if stereo:
            m["view_transformer"]["depth_net"] = "camera_aware"
            dn = _Section(self, vt.get("depthnet_cfg", None), "model.img_view_transformer.depthnet_cfg")
            dn.expect("use_dcn", False, "no deformable conv in the depth net here")
            dn.expect("use_aspp", True, "the depth net here has its ASPP")
            dn.expect("stereo", True, "a stereo model's depth net takes the cost volume")
            m["view_transformer"]["aspp_mid_channels"] = int(dn.get("aspp_mid_channels", vt.d.get("in_channels")))
            self.out["model"].setdefault("temporal", {})["stereo_bias"] = float(dn.get("bias", 0.0))
            dn.get("with_cp", None)
            dn.rest()
        else:
            vt.get("depthnet_cfg", None)
        vt.rest()
        # BEV encoder
        be = model.sub("img_bev_encoder_backbone")
        be.expect("type", "CustomResNet", "the BEV backbone here is CustomResNet")
        c_bev = m["view_transformer"]["out_channels"]
        frames = int(model.d.get("num_adj", 0)) + 1 if model.d.get("type") in TEMPORAL_TYPES else 1
        be.expect("numC_input", c_bev * frames, "the BEV backbone here takes (num_adj + 1) frames of the view "
                  "transformer's output")
        nch = [int(c) for c in be.get("num_channels", [c_bev * 2, c_bev * 4, c_bev * 8])]
        be.expect("stride", [2, 2, 2], "strides 2, 2, 2 here")
        be.expect("backbone_output_ids", None, "all stages are outputs here")
        be.expect("block_type", "Basic", "basic residual blocks here")
        be.get("with_cp", None)
        bn = model.sub("img_bev_encoder_neck")
        bn.expect("type", "FPN_LSS", "the BEV neck here is FPN_LSS")
        bn.expect("in_channels", nch[2] + nch[0], "FPN_LSS here concatenates levels 0 and 2")
        for k, dflt in (("scale_factor", 4), ("input_feature_index", [0, 2]), ("extra_upsample", 2)):
            bn.expect(k, dflt, "FPN_LSS's default here")
        m["bev_encoder"] = {"num_layer": [int(n) for n in be.get("num_layer", [2, 2, 2])], "num_channels": nch,
                            "out_channels": int(bn.get("out_channels"))}
        be.rest()
        bn.rest()
        # occupancy head
        head = model.sub("occ_head")
        head.expect("type", "BEVOCCHead2D", "the occupancy head here is BEVOCCHead2D")
        head.expect("in_dim", m["bev_encoder"]["out_channels"], "the head takes the BEV neck's output here")
        head.expect("use_predicter", True, "the head here always has its MLP predicter")
        dz = int(head.get("Dz", 16))
        m["head"] = {"out_dim": int(head.get("out_dim")), "num_classes": int(head.get("num_classes", 18)),
                     "use_mask": bool(head.get("use_mask", True)), "class_balance": bool(head.get("class_balance", False))}
        loss = _Section(self, head.get("loss_occ", None), "model.occ_head.loss_occ")
        loss.expect("type", "CrossEntropyLoss", "cross-entropy here")
        loss.expect("use_sigmoid", False, "softmax cross-entropy here")
        loss.expect("ignore_index", 255, "255 is ignored here")
        loss.expect("loss_weight", 1.0, "weight 1 here")
        loss.rest()
        head.rest()
        z0, z1 = grid["z"][0], grid["z"][1]
        m["grid"] = {**{k: grid[k] for k in ("x", "y", "z")}, "occ_z": [z0, z1, round((z1 - z0) / dz, 6)],
                     "depth": grid["depth"]}
        # PriorOcc's SemanticInjector
        inj = model.sub("semantic_injector")
        if inj.d:
            inj.expect("type", "SemanticInjector", "PriorOcc's SemanticInjector")
            inj.expect("in_channels", m["neck"]["out_channels"], "the injector works on the neck's output")
            m["injector"] = {"enabled": True, "num_classes": int(inj.get("num_classes", 17)),
                             "mid_channels": int(inj.get("mid_channels", m["neck"]["out_channels"])),
                             "softmax_before_fusion": bool(inj.get("softmax_before_fusion", False)),
                             "loss_weight": float(inj.get("loss_weight", 0.3))}
            inj.rest()
        else:
            m["injector"] = {"enabled": False}
        for k in ("train_cfg", "test_cfg"):
            if model.d.get(k):
                self.unmapped(f"model.{k}: detection settings, not mapped")
                model.get(k)

    def temporal(self, model: _Section, temporal: bool) -> None:
        """BEVDet4D's keys -> model.temporal; then what is left of the model is listed."""
        keys = ("num_adj", "align_after_view_transfromation", "pre_process", "with_prev")
        if not temporal:
            for k in keys:
                if k in model:
                    self.unmapped(f"model.{k}={_short(model.get(k))}: a temporal key in a single-frame model "
                                  f"({model.d.get('type')}), not used by it")
            model.rest("not mapped (no counterpart in PriorOcc)")
            return
        c_bev = self.out["model"]["view_transformer"]["out_channels"]
        num_adj = model.get("num_adj", 1)  # BEVDet4D's default
        if not isinstance(num_adj, int) or num_adj < 1:
            raise FlashOCCConfigError(f"model.num_adj={_short(num_adj)}: expected an integer >= 1")
        t = {**self.out["model"].get("temporal", {}), "num_adj": num_adj,
             "align_after_view_transformation": bool(model.get("align_after_view_transfromation", False)),
             "stereo": model.d.get("type") == "BEVStereo4DOCC"}
        ids = self.v.get("multi_adj_frame_id_cfg")
        if ids is not None and (not isinstance(ids, (list, tuple)) or len(ids) != 3 or ids[0] != 1 or ids[2] != 1
                                or len(range(*ids)) != num_adj):
            self.unmapped(f"multi_adj_frame_id_cfg={_short(ids)}: past keyframes here are t-1 ... t-num_adj "
                          f"(num_adj {num_adj}), consecutive")
        if not model.get("with_prev", True):
            self.unmapped("model.with_prev=False: past frames are always computed here (without gradient), "
                          "not zeroed")
        pre = _Section(self, model.get("pre_process", None), "model.pre_process")
        if pre.d:
            pre.expect("type", "CustomResNet", "the pre-process net here is CustomResNet")
            nl = pre.get("num_layer", [1])
            if not (isinstance(nl, (list, tuple)) and len(nl) == 1 and isinstance(nl[0], int) and nl[0] >= 1):
                raise FlashOCCConfigError(f"model.pre_process.num_layer={_short(nl)}: one stage of >= 1 blocks here")
            pre.expect("numC_input", c_bev, "the pre-process net takes one frame's BEV map")
            pre.expect("num_channels", [c_bev], "the pre-process net keeps C_bev channels")
            pre.expect("stride", [1], "stride 1 here")
            pre.expect("backbone_output_ids", [0], "its one stage is the output")
            pre.expect("block_type", "Basic", "basic residual blocks here")
            pre.get("with_cp", None)
            pre.rest()
            t["pre_process"] = {"enabled": True, "num_layer": int(nl[0])}
        self.out["model"]["temporal"] = t
        model.rest("not mapped (no counterpart in PriorOcc)")

    # ------------------------------------------------------------------ data and schedule
    def schedule(self) -> None:
        t, d = self.out["train"], self.out["data"]
        data = self.top("data")
        root = str(self.v.get("data_root", "data/nuscenes/")).rstrip("/") or "."
        d["dataroot"] = root
        if "samples_per_gpu" in data:
            t["batch_size"] = int(data.get("samples_per_gpu"))
        if "workers_per_gpu" in data:
            d["num_workers"] = int(data.get("workers_per_gpu"))
        for split in ("train", "val"):
            s = data.get(split, None) or {}
            while isinstance(s, dict) and not s.get("ann_file") and isinstance(s.get("dataset"), dict):  # CBGS wrapper
                if s.get("type"):
                    self.unmapped(f"data.{split}.type={s['type']}: dataset wrapper not mapped (no class-balanced "
                                  "sampling here)")
                s = s["dataset"]
            if isinstance(s, dict) and s.get("ann_file"):
                d[f"info_file_{split}"] = str(s["ann_file"])
        data.get("test", None)
        data.rest()
        pipe = [p.get("type") for p in self.v.get("train_pipeline") or [] if isinstance(p, dict)]
        inj = self.out["model"].get("injector", {}).get("enabled", False)
        d["load_seg_labels"] = bool(inj) or "LoadSeg2DLabels" in pipe
        for p in self.v.get("train_pipeline") or []:
            if isinstance(p, dict) and p.get("type") == "LoadSeg2DLabels" and p.get("label_root"):
                d["seg_label_root"] = str(p["label_root"])
        d["load_depth"] = float(self.out["model"].get("view_transformer", {}).get("depth_loss_weight", 0.0)) > 0

        opt = self.top("optimizer")
        if opt.d:
            if opt.get("type", "AdamW") != "AdamW":
                self.unmapped(f"optimizer.type={opt.d['type']}: the trainer here uses AdamW (lr and weight decay kept)")
            t["lr"] = float(opt.get("lr"))
            t["weight_decay"] = float(opt.get("weight_decay", 0.0))
            opt.rest()
        oc = self.top("optimizer_config")
        gc = oc.get("grad_clip", None)
        if "grad_clip" in oc.d:
            g = _Section(self, gc, "optimizer_config.grad_clip")
            t["grad_clip"] = float(g.get("max_norm", 0.0)) if gc else 0.0
            g.expect("norm_type", 2, "L2 gradient norm here")
            g.rest()
        oc.rest()
        lr = self.top("lr_config")
        if lr.d:
            if lr.get("policy", "step") != "step":
                self.unmapped(f"lr_config.policy={lr.d['policy']}: step schedule here; its steps are not mapped")
            else:
                step = lr.get("step", [])
                t["lr_steps"] = [int(s) for s in ([step] if isinstance(step, (int, float)) else step)]
            if lr.get("warmup", None) not in (None, "linear"):
                self.unmapped(f"lr_config.warmup={lr.d['warmup']}: linear warm-up here")
            t["warmup_iters"] = int(lr.get("warmup_iters", 0)) if lr.d.get("warmup") else 0
            t["warmup_ratio"] = float(lr.get("warmup_ratio", 0.001))
            lr.expect("gamma", 0.1, "lr is multiplied by 0.1 at each step here")
            lr.rest()
        run = self.top("runner")
        if run.get("type", "EpochBasedRunner") == "EpochBasedRunner":
            if "max_epochs" in run:
                t["epochs"] = int(run.get("max_epochs"))
        else:
            t["max_iters"] = int(run.get("max_iters"))
            self.unmapped(f"runner.type={run.d['type']}: epochs here; max_iters {t['max_iters']} stops the run, "
                          "lr_steps stay in epochs")
        run.rest()
        hooks = self.v.get("custom_hooks") or []
        ema = [h for h in hooks if isinstance(h, dict) and h.get("type") == "MEGVIIEMAHook"]
        t["ema"] = bool(ema)
        if ema:
            t["ema_decay"] = float(ema[0].get("decay", 0.999))  # MEGVIIEMAHook's default decay
        for h in hooks:
            if not (isinstance(h, dict) and h.get("type") == "MEGVIIEMAHook"):
                self.unmapped(f"custom_hooks: {_short(h)}: not mapped")
        t["amp"] = self.v.get("fp16") is not None
        t["load_from"] = self.v.get("load_from")
        ck = self.top("checkpoint_config")
        if "interval" in ck:
            t["checkpoint_interval"] = int(ck.get("interval"))
        ck.get("max_keep_ckpts", None)
        ck.rest()
        lg = self.top("log_config")
        if "interval" in lg:
            t["log_interval"] = int(lg.get("interval"))
        lg.get("hooks", None)
        lg.rest()


def _fill(defaults: dict, given: dict) -> dict:
    """``given`` laid over ``defaults`` key by key (sections merge, values replace)."""
    out = dict(defaults)
    for k, v in given.items():
        out[k] = _fill(defaults[k], v) if isinstance(v, dict) and isinstance(defaults.get(k), dict) else v
    return out


def convert_flashocc_config(path: str | Path) -> tuple[Config, list[str]]:
    """The project's Config for the FlashOCC config file at ``path``, and the list of what was not
    mapped."""
    path = Path(path)
    try:
        variables, notes = read_mmcv_config(path)
    except MMCVConfigError as e:
        raise FlashOCCConfigError(str(e)) from None
    conv = _Converter(variables, path.stem.lower())
    given = conv.convert()
    try:
        cfg = Config.from_dict(_fill(Config().to_dict(), given))
    except ConfigError as e:
        raise FlashOCCConfigError(f"{path}: converted values do not fit the config schema: {e}") from None
    return cfg, notes + conv.notes


def to_yaml_text(cfg: Config, source: str | Path, notes: list[str]) -> str:
    head = [f"# Converted by priorocc_config_from_flashocc from {source}."]
    if notes:
        head.append("# Not mapped (the converted network / training differ from the source here):")
        head += [f"#  - {n}" for n in notes]
    else:
        head.append("# Everything in the source was mapped.")
    body = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None, width=110)
    return "\n".join(head) + "\n" + body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="priorocc_config_from_flashocc", description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="FlashOCC / BEVDet config file (.py), e.g. projects/configs/flashocc/flashocc-r50.py")
    ap.add_argument("--out", required=True, help="YAML config to write (atomically)")
    ap.add_argument("--debug", action="store_true", help="show a traceback on errors")
    args = ap.parse_args(argv)
    try:
        cfg, notes = convert_flashocc_config(args.config)
        atomic_write_bytes(args.out, to_yaml_text(cfg, args.config, notes).encode())
    except (FlashOCCConfigError, OSError) as e:
        if args.debug:
            raise
        print(f"priorocc_config_from_flashocc: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({cfg.name}: {cfg.model.grid.num_depth_bins} depth bins, C_enc "
          f"{cfg.model.bev_encoder.out_channels}, injector {'on' if cfg.model.injector.enabled else 'off'})")
    for n in notes:
        if n.startswith("WARNING"):
            print(n)
    if cfg.model.temporal.num_adj:
        print(f"temporal: {cfg.model.temporal.num_adj} past frame(s), align_after_view_transformation "
              f"{cfg.model.temporal.align_after_view_transformation}, pre_process "
              f"{'on' if cfg.model.temporal.pre_process.enabled else 'off'}, stereo depth "
              f"{'on (one more reference frame)' if cfg.model.temporal.stereo else 'off'}")
    if notes:
        print(f"not mapped ({len(notes)}):")
        for n in notes:
            print(f"  - {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
