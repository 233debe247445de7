"""ONNX export of the inference path (``priorocc_export``).

Graph inputs
  imgs        (1, N, 3, H, W) float32, normalised as preprocess.normalize_image does
  ranks_bev   (P,) int64   \\
  ranks_depth (P,) int64    > the pooling plan of the rig (model.bev_pool.PoolingIndices)
  ranks_feat  (P,) int64   /
Graph outputs
  occ         (1, Dx, Dy, Dz) uint8 class per voxel
  seg         (1, N, H, W) uint8 2D class per pixel (only with the SemanticInjector)
  occ_logits  (1, Dx, Dy, Dz, K) float32 (only with ``--logits``)

The pooling plan is passed as inputs, not baked as constants: one ONNX file then serves any
calibration (a recalibrated or different vehicle needs no re-export, and a stale rig cannot be
silently baked in); the plan is computed once per rig on the host by the same code the PyTorch
model uses (model/plan.py PoolingPlanner), so there is still no per-frame geometry work, and the file
stays free of ~3 P int64 constants (P ~ 0.2-0.4 M points for R50). The pooling itself is a
Gather + ScatterElements(reduction="add") (opset 16+).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_write_with
from .config import Config
from .geometry import surround_rig
from .model.bev_pool import PoolingIndices
from .model.plan import PoolingPlanner
from .model.postprocess import occ_labels, seg_labels

OPSET = 17


class ExportWrapper(nn.Module):
    """The network from normalised images + pooling plan to labels (batch of one)."""

    INPUT_NAMES = ("imgs", "ranks_bev", "ranks_depth", "ranks_feat")

    def __init__(self, model: nn.Module, cfg: Config, logits: bool = False):
        super().__init__()
        self.model = model
        self.n = len(cfg.model.image.cameras)
        self.input_size = tuple(cfg.model.image.input_size)
        dx, dy, dz = cfg.model.grid.size_xyz
        self.out_shape = (1, dz, dy, dx)
        self.with_seg = model.injector is not None
        self.logits = logits
        self.output_names = ["occ"] + (["seg"] if self.with_seg else []) + (["occ_logits"] if logits else [])

    def forward(self, imgs, ranks_bev, ranks_depth, ranks_feat):
        plan = PoolingIndices(ranks_bev, ranks_depth, ranks_feat, self.out_shape)
        out = self.model({"imgs": imgs}, plan)
        logits = out["occ_logits"]
        res = [occ_labels(logits).to(torch.uint8)]
        if self.with_seg:
            res.append(seg_labels(out["seg_logits"], self.input_size).to(torch.uint8))
        if self.logits:
            res.append(logits)
        return tuple(res)


def example_inputs(cfg: Config, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Example (imgs, ranks_bev, ranks_depth, ranks_feat) for tracing: a plausible 6-camera rig."""
    g = torch.Generator().manual_seed(seed)
    n = len(cfg.model.image.cameras)
    h, w = cfg.model.image.input_size
    plan = PoolingPlanner.from_config(cfg.model)(*example_rig(cfg).values())
    return (torch.randn(1, n, 3, h, w, generator=g), plan.ranks_bev, plan.ranks_depth, plan.ranks_feat)


def example_rig(cfg: Config) -> dict[str, torch.Tensor]:
    """(1, N, ...) geometry (cam2ego, K, img_aug, bev_aug in that order) of N cameras evenly spread in yaw, 1.5 m high (network-input pixels)."""
    n = len(cfg.model.image.cameras)
    h, w = cfg.model.image.input_size
    cam2ego, K = surround_rig(n, (h, w), focal=w * 0.9, height=1.5)
    return dict(cam2ego=cam2ego[None], K=K[None], img_aug=torch.eye(3).repeat(1, n, 1, 1), bev_aug=torch.eye(4)[None])


def export_onnx(model: nn.Module, cfg: Config, path: str | Path, logits: bool = False, opset: int = OPSET) -> Path:
    """Write the ONNX model of ``model`` (fp32, eval) to ``path`` atomically; returns the path."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    wrapper = ExportWrapper(model, cfg, logits).eval()
    args = example_inputs(cfg)

    def write(tmp: str) -> None:
        with torch.no_grad():
            torch.onnx.export(
                wrapper, args, tmp, dynamo=False, opset_version=opset,
                input_names=list(ExportWrapper.INPUT_NAMES), output_names=wrapper.output_names,
                dynamic_axes={k: {0: "points"} for k in ExportWrapper.INPUT_NAMES[1:]},
                do_constant_folding=True)
        onnx.checker.check_model(tmp)

    return atomic_write_with(path, write)


def verify_onnx(model: nn.Module, cfg: Config, path: str | Path, seed: int = 1) -> dict:
    """Run onnxruntime and PyTorch fp32 on the same random input; -> agreement figures."""
    import onnxruntime as ort

    wrapper = ExportWrapper(model.float().eval(), cfg).eval()
    args = example_inputs(cfg, seed)
    with torch.no_grad():
        ref = [t.numpy() for t in wrapper(*args)]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = dict(zip(ExportWrapper.INPUT_NAMES, (a.numpy() for a in args)))
    got = sess.run(wrapper.output_names, feeds)
    res = {"occ_agreement": float((got[0] == ref[0]).mean())}
    if wrapper.with_seg:
        res["seg_agreement"] = float((got[1] == ref[1]).mean())
    return res


def _main(argv) -> int:
    ap = argparse.ArgumentParser(prog="priorocc_export", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="checkpoint directory or .safetensors file")
    ap.add_argument("-o", "--output", help="ONNX file to write (default <checkpoint>/onnx/model.onnx)")
    ap.add_argument("--logits", action="store_true", help="also output occ_logits (B, Dx, Dy, Dz, K)")
    ap.add_argument("--opset", type=int, default=OPSET)
    ap.add_argument("--no-verify", action="store_true", help="skip the onnxruntime vs PyTorch check")
    a = ap.parse_args(argv)
    from .checkpoint import load_checkpoint

    model, cfg, _ = load_checkpoint(a.checkpoint)
    base = Path(a.checkpoint)
    out = Path(a.output) if a.output else (base if base.is_dir() else base.parent) / "onnx" / "model.onnx"
    export_onnx(model, cfg, out, logits=a.logits, opset=a.opset)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    if not a.no_verify:
        res = verify_onnx(model, cfg, out)
        print("onnxruntime vs torch fp32: " + ", ".join(f"{k} {v * 100:.3f}%" for k, v in res.items()))
        if res["occ_agreement"] < 0.999:
            print("priorocc_export: voxel agreement below 99.9%", file=sys.stderr)
            return 1
    return 0


def main(argv=None) -> int:
    from . import cli

    return cli.run("priorocc_export", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
