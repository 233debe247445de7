#!/usr/bin/env python
"""Build a model from a config, run a training forward + backward and an inference forward on
random inputs of the configured size, print every stage's shape, and exit non-zero on any
mismatch with the shapes in docs/design.md.

    python training/integration_test.py --config training/configs/priorocc-r50.yaml
    python training/integration_test.py --checkpoint CKPT_DIR     # e.g. an imported FlashOCC model
    python training/integration_test.py --config training/configs/flashocc-r50-4d.yaml   # temporal
    python training/integration_test.py --config training/configs/flashocc-r50-4d-stereo.yaml   # FlashOCC M2

A temporal model (model.temporal.num_adj > 0) also gets num_adj past frames of a moving ego, the
shapes of its pre-process net, aligned past frames and encoder input, and two sequential frames;
a stereo model one past frame more (the reference frame), the shapes of its stride-4 features and
cost volume, and of the stride-4 features its history keeps.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from priorocc_core import cli  # noqa: E402

from priorocc_core.checkpoint import load_checkpoint  # noqa: E402
from priorocc_core.config import load_config  # noqa: E402
from priorocc_core.geometry import surround_rig  # noqa: E402
from priorocc_core.model import build_model  # noqa: E402
from priorocc_core.model.image_encoder import stage0_shape  # noqa: E402
from priorocc_core.model.temporal import frame_order, reset_history  # noqa: E402


def random_inputs(cfg, b: int, seed: int = 0) -> dict:
    """Random images + a plausible surround rig (six cameras, 60 degrees apart)."""
    g = torch.Generator().manual_seed(seed)
    n = len(cfg.image.cameras)
    h, w = cfg.image.input_size
    cam2ego, K = surround_rig(n, (h, w), focal=w * 0.9, height=1.6)
    dx, dy, dz = cfg.grid.occ_size
    return dict(
        imgs=torch.randn(b, n, 3, h, w, generator=g),
        cam2ego=cam2ego.repeat(b, 1, 1, 1), K=K.repeat(b, 1, 1, 1),
        img_aug=torch.eye(3).repeat(b, n, 1, 1), bev_aug=torch.eye(4).repeat(b, 1, 1),
        voxel_semantics=torch.randint(0, cfg.head.num_classes, (b, dx, dy, dz), generator=g).to(torch.uint8),
        mask_camera=(torch.rand(b, dx, dy, dz, generator=g) > 0.3).to(torch.uint8),
        seg_labels=torch.randint(0, 17, (b, n, h, w), generator=g).to(torch.uint8),
        depth_target=torch.rand(b, n, h, w, generator=g) * 50,
        **(past_frames(cfg, b, g) if cfg.temporal.num_adj else {}),
    )


def ego_pose(b: int, t: int) -> torch.Tensor:
    """(B, 4, 4) ego2global of a car driving 2 m forward and turning 0.05 rad per frame."""
    yaw = 0.05 * t
    e = torch.eye(4)
    e[:2, :2] = torch.tensor([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    e[0, 3], e[1, 3] = 2.0 * t, 0.1 * t
    return e.repeat(b, 1, 1)


def past_frames(cfg, b: int, g: torch.Generator) -> dict:
    """The current frame's ego2global and num_adj past frames (t-1 first), same rig, random images."""
    n = len(cfg.image.cameras)
    h, w = cfg.image.input_size
    cam2ego, K = surround_rig(n, (h, w), focal=w * 0.9, height=1.6)
    adj = [dict(imgs=torch.randn(b, n, 3, h, w, generator=g), cam2ego=cam2ego.repeat(b, 1, 1, 1),
                K=K.repeat(b, 1, 1, 1), img_aug=torch.eye(3).repeat(b, n, 1, 1), ego2global=ego_pose(b, -i - 1))
           for i in range(cfg.temporal.num_adj + int(cfg.temporal.stereo))]
    return dict(ego2global=ego_pose(b, 0), adj=adj)


def expected_shapes(cfg, b: int) -> dict:
    """The shapes docs/design.md fixes, computed from the config."""
    n = len(cfg.image.cameras)
    h, w = cfg.image.input_size
    fh, fw = h // 16, w // 16
    dx, dy, dz = cfg.grid.occ_size
    c = cfg.neck.out_channels
    exp = {
        "images": (b, n, 3, h, w),
        "image features (backbone + neck)": (b * n, c, fh, fw),
        "view transformer: depth": (b * n, cfg.grid.num_depth_bins, fh, fw),
        "BEV (lift-splat)": (b, cfg.view_transformer.out_channels, dy, dx),
        "BEV encoder": (b, cfg.bev_encoder.out_channels, dy, dx),
        "BEV encoder input": (b, cfg.view_transformer.out_channels * (cfg.temporal.num_adj + 1), dy, dx),
        "occupancy logits": (b, dx, dy, dz, cfg.head.num_classes),
        "occupancy labels": (b, dx, dy, dz),
    }
    if cfg.injector.enabled:
        exp["SemanticInjector: 2D logits"] = (b * n, cfg.injector.num_classes, fh, fw)
        exp["SemanticInjector: fused features"] = (b * n, c, fh, fw)
    k, c_bev = cfg.temporal.num_adj, cfg.view_transformer.out_channels
    if cfg.temporal.pre_process.enabled:
        exp["temporal: pre-process (each frame)"] = (b, c_bev, dy, dx)
    if k:
        exp["temporal: past frames aligned"] = (b, k * c_bev, dy, dx)
        exp["temporal: sequential history (each frame)"] = (b, c_bev, dy, dx)
        exp["temporal: sequential occupancy labels"] = (b, dx, dy, dz)
    if cfg.temporal.stereo:
        c4, h4, w4 = stage0_shape(cfg.backbone.depth, (h, w))
        exp["stereo: stride-4 features (backbone stage 0)"] = (b * n, c4, h4, w4)
        exp["stereo: cost volume"] = (b * n, cfg.grid.num_depth_bins, h4, w4)
        exp["stereo: sequential history stride-4 features"] = (b * n, c4, h4, w4)
    return exp


def run(model, cfg, b: int) -> list[str]:
    batch = random_inputs(cfg, b)
    shapes = {"images": tuple(batch["imgs"].shape)}
    errors = []
    # inference, stage by stage
    model.eval()
    with torch.no_grad():
        t0 = time.perf_counter()
        feats, f4 = model.encode_images_stereo(batch["imgs"].flatten(0, 1))
        shapes["image features (backbone + neck)"] = tuple(feats.shape)
        fused, seg = model.inject(feats)
        if seg is not None:
            shapes["SemanticInjector: 2D logits"] = tuple(seg.shape)
            shapes["SemanticInjector: fused features"] = tuple(fused.shape)
        geometry = (batch["cam2ego"], batch["K"], batch["img_aug"], batch["bev_aug"])
        cost = past = None
        if cfg.temporal.num_adj:  # the past frames first: a stereo model's cost volume needs t-1's features
            past, stereo_prev = model.past_bevs(batch, batch["imgs"], batch["ego2global"].double())
            shapes["temporal: past frames aligned"] = tuple(torch.cat(past, dim=1).shape)
            if stereo_prev is not None:
                shapes["stereo: stride-4 features (backbone stage 0)"] = tuple(f4.shape)
                cost = model.stereo_cost(f4, *stereo_prev)
                shapes["stereo: cost volume"] = tuple(cost.shape)
        bev, depth = model.features_to_bev(fused, model.planner(*geometry), model.camera_params(*geometry), cost)
        shapes["view transformer: depth"] = tuple(depth.shape)
        shapes["BEV (lift-splat)"] = tuple(bev.shape)
        if model.pre_process_net is not None:
            bev = model.pre_process_net(bev)[0]
            shapes["temporal: pre-process (each frame)"] = tuple(bev.shape)
        if past is not None:
            bev = torch.cat(frame_order(bev, past, cfg.temporal.stereo), dim=1)
        shapes["BEV encoder input"] = tuple(bev.shape)
        enc = model.bev_neck(model.bev_backbone(bev))
        shapes["BEV encoder"] = tuple(enc.shape)
        logits = model.occ_head(enc)
        shapes["occupancy logits"] = tuple(logits.shape)
        shapes["occupancy labels"] = tuple(model(batch)["occ"].shape)
        t_inf = time.perf_counter() - t0
        if cfg.temporal.num_adj:
            hist = reset_history()
            for t in range(2):  # two frames of the sequential mode: the second one takes the first's history
                frame = {k: v for k, v in batch.items() if k != "adj"}
                frame["ego2global"] = ego_pose(b, t)
                out = model(frame, history=hist)
                hist = out["history"]
            shapes["temporal: sequential history (each frame)"] = tuple(hist.feats[0].shape)
            if cfg.temporal.stereo:
                shapes["stereo: sequential history stride-4 features"] = tuple(hist.stereo_feats.shape)
            shapes["temporal: sequential occupancy labels"] = tuple(out["occ"].shape)
    exp = expected_shapes(model.cfg, b)
    for name, shape in shapes.items():
        ok = exp.get(name) == shape
        print(f"  {name:46s} {str(shape):28s} {'ok' if ok else f'EXPECTED {exp.get(name)}'}")
        if not ok:
            errors.append(f"{name}: got {shape}, expected {exp.get(name)}")
    for name in set(exp) - set(shapes):
        errors.append(f"{name}: stage missing")
    # training forward + backward
    model.train()
    t0 = time.perf_counter()
    losses = model.losses(model(batch), batch)
    total = sum(losses.values())
    total.backward()
    t_train = time.perf_counter() - t0
    print("  losses: " + ", ".join(f"{k}={v.item():.4f}" for k, v in losses.items()))
    if not torch.isfinite(total):
        errors.append("training loss is not finite")
    if ("loss_2d_seg" in losses) != cfg.injector.enabled:
        errors.append("loss_2d_seg must be present exactly when the injector is on")
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    if no_grad:
        errors.append(f"parameters without gradient: {no_grad[:5]}")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"  parameters: {n_params / 1e6:.2f} M; inference {t_inf:.2f} s, train fwd+bwd {t_train:.2f} s (batch {b})")
    return errors


def main(argv=None) -> int:
    return cli.run("integration_test.py", _main, argv)


def _main(argv) -> int:
    ap = argparse.ArgumentParser(prog="integration_test.py", description=__doc__.split("\n\n")[0])
    cli.add_debug_arg(ap)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="config YAML")
    src.add_argument("--checkpoint", help="checkpoint (directory or .safetensors)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--cfg-options", nargs="*", default=[], help="key=value overrides")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    if args.checkpoint:
        model, cfg, _ = load_checkpoint(args.checkpoint)
        print(f"checkpoint {args.checkpoint} ({cfg.name})")
    else:
        cfg = load_config(args.config, args.cfg_options)
        model = build_model(cfg.model)
        print(f"config {args.config} ({cfg.name}), injector {'on' if cfg.model.injector.enabled else 'off'}, "
              f"past frames {cfg.model.temporal.num_adj}")
    errors = run(model, cfg.model, args.batch)
    if errors:
        print("FAILED:\n  " + "\n  ".join(errors))
        return 1
    print("all stage shapes match docs/design.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
