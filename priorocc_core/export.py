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
A temporal model (model.temporal.num_adj = A > 0) adds its history, explicit state the caller holds
(HistoryGraph below builds these from a model/temporal.py BEVHistory):
  prev_bev    (1, A, C, Dy, Dx) float32 past BEV maps, t-1 first, each in its own key ego (inputs)
  prev_valid  (A,) float32      1 = a past frame, 0 = missing (the current frame stands in)
  curr2adj    (1, A, 4, 4) float32 current key ego -> each past key ego (from the ego poses)
  bev         (1, C, Dy, Dx) float32 this frame's BEV map (output): the next call's prev_bev[:, 0]

The pooling plan is passed as inputs, not baked as constants: one ONNX file then serves any
calibration (a recalibrated or different vehicle needs no re-export, and a stale rig cannot be
silently baked in); the plan is computed once per rig on the host by the same code the PyTorch
model uses (model/plan.py PoolingPlanner), so there is still no per-frame geometry work, and the file
stays free of ~3 P int64 constants (P ~ 0.2-0.4 M points for R50). The pooling itself is a
Gather + ScatterElements(reduction="add") (opset 16+).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

import torch
from torch import nn

from .atomic import atomic_write_with
from .config import Config
from .errors import PriorOccError
from .geometry import surround_rig
from .model.bev_pool import PoolingIndices
from .model.plan import PoolingPlanner
from .model.postprocess import occ_labels, seg_labels
from .model.temporal import frame_stamp, history_inputs, push_history

OPSET = 17


class ExportUnsupported(PriorOccError):
    """A network this exporter cannot write as a graph."""


def check_exportable(cfg: Config) -> None:
    """ExportUnsupported (one line) for what the graph cannot hold yet: the camera-aware depth net
    and FlashOCC M2's stereo depth."""
    if cfg.model.temporal.stereo:
        what, inputs = "FlashOCC M2's stereo depth", "the camera parameters, the previous frame's stride-4 features"
    elif cfg.model.view_transformer.depth_net != "conv":
        what, inputs = "the camera-aware depth net", "the camera parameters"
    else:
        return
    raise ExportUnsupported(f"export: {cfg.name}: {what} is not exportable: its graph would take {inputs} as inputs, "
                            "which is not written; run it with the torch backend")


class ExportWrapper(nn.Module):
    """The network from normalised images + pooling plan to labels (batch of one)."""

    INPUT_NAMES = ("imgs", "ranks_bev", "ranks_depth", "ranks_feat")
    HISTORY_NAMES = ("prev_bev", "prev_valid", "curr2adj")

    def __init__(self, model: nn.Module, cfg: Config, logits: bool = False):
        super().__init__()
        check_exportable(cfg)
        self.model = model
        self.n = len(cfg.model.image.cameras)
        self.input_size = tuple(cfg.model.image.input_size)
        dx, dy, dz = cfg.model.grid.size_xyz
        self.out_shape = (1, dz, dy, dx)
        self.with_seg = model.injector is not None
        self.logits = logits
        self.temporal = cfg.model.temporal.num_adj > 0
        self.input_names = list(self.INPUT_NAMES) + (list(self.HISTORY_NAMES) if self.temporal else [])
        self.output_names = (["occ"] + (["seg"] if self.with_seg else []) + (["occ_logits"] if logits else [])
                             + (["bev"] if self.temporal else []))

    def forward(self, imgs, ranks_bev, ranks_depth, ranks_feat, prev_bev=None, prev_valid=None, curr2adj=None):
        plan = PoolingIndices(ranks_bev, ranks_depth, ranks_feat, self.out_shape)
        if self.temporal:
            logits, seg, _, bev = self.model.forward_sequential(imgs, plan, prev_bev, prev_valid, curr2adj)
            seg = None if seg is None else seg.unflatten(0, imgs.shape[:2])
        else:
            out = self.model({"imgs": imgs}, plan)
            logits, seg = out["occ_logits"], out["seg_logits"]
        res = [occ_labels(logits).to(torch.uint8)]
        if self.with_seg:
            res.append(seg_labels(seg, self.input_size).to(torch.uint8))
        if self.logits:
            res.append(logits)
        if self.temporal:
            res.append(bev.float())
        return tuple(res)


class HistoryGraph:
    """The host side of a temporal graph (prev_bev, prev_valid, curr2adj in, bev out; see the top):
    history -> graph inputs, and the graph's bev output -> the next history (model/temporal.py)."""

    def __init__(self, cfg: Config, key: str):
        dx, dy, _ = cfg.model.grid.size_xyz
        self.key, self.num_adj = key, cfg.model.temporal.num_adj
        self.bev_shape = (1, cfg.model.view_transformer.out_channels * cfg.model.grid.size_xyz[2], dy, dx)
        self.bev_aug = torch.eye(4)[None]

    def feeds(self, history, ego2global) -> dict:
        prev, valid, curr2adj = history_inputs(history, self.key, self.num_adj, self.bev_shape, ego2global.double(),
                                               self.bev_aug)
        return {"prev_bev": prev.float().numpy(), "prev_valid": valid.numpy(), "curr2adj": curr2adj.numpy()}

    def push(self, history, bev, ego2global, stamp):
        return push_history(history, self.key, self.num_adj, torch.from_numpy(np.asarray(bev, dtype=np.float32)),
                            ego2global, frame_stamp(stamp, 1, "cpu"), self.bev_aug)


def graph_history(cfg: Config, model, path: Path | None) -> HistoryGraph | None:
    """Temporal models: the HistoryGraph of a graph, keyed on the model (when its weights are here)
    or on the config and the graph file's bytes."""
    if cfg.model.temporal.num_adj == 0:
        return None
    if model is not None:
        return HistoryGraph(cfg, model.history_key())
    h = hashlib.sha1(json.dumps(cfg.to_dict()["model"], sort_keys=True).encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return HistoryGraph(cfg, h.hexdigest()[:16])


def example_inputs(cfg: Config, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Example (imgs, ranks_bev, ranks_depth, ranks_feat[, prev_bev, prev_valid, curr2adj]) for
    tracing: a plausible 6-camera rig; temporal models: a full history of an ego driving forward."""
    g = torch.Generator().manual_seed(seed)
    n = len(cfg.model.image.cameras)
    h, w = cfg.model.image.input_size
    plan = PoolingPlanner.from_config(cfg.model)(*example_rig(cfg).values())
    args = (torch.randn(1, n, 3, h, w, generator=g), plan.ranks_bev, plan.ranks_depth, plan.ranks_feat)
    a = cfg.model.temporal.num_adj
    if a:
        dx, dy, dz = cfg.model.grid.size_xyz
        c = cfg.model.view_transformer.out_channels * dz
        curr2adj = torch.eye(4).repeat(1, a, 1, 1)
        curr2adj[0, :, 0, 3] = torch.arange(1, a + 1, dtype=torch.float32) * 2.0  # 2 m per frame
        args += (torch.randn(1, a, c, dy, dx, generator=g), torch.ones(a), curr2adj)
    return args


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
                input_names=wrapper.input_names, output_names=wrapper.output_names,
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
    feeds = dict(zip(wrapper.input_names, (a.numpy() for a in args)))
    got = sess.run(wrapper.output_names, feeds)
    res = {"occ_agreement": float((got[0] == ref[0]).mean())}
    if wrapper.with_seg:
        res["seg_agreement"] = float((got[1] == ref[1]).mean())
    return res


def _main(argv) -> int:
    from . import cli

    ap = argparse.ArgumentParser(prog="priorocc_export", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="checkpoint directory or .safetensors file")
    ap.add_argument("-o", "--output", help="ONNX file to write (default <checkpoint>/onnx/model.onnx)")
    ap.add_argument("--logits", action="store_true", help="also output occ_logits (B, Dx, Dy, Dz, K)")
    ap.add_argument("--opset", type=int, default=OPSET)
    ap.add_argument("--no-verify", action="store_true", help="skip the onnxruntime vs PyTorch check")
    cli.add_debug_arg(ap)
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
