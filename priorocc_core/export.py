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
A stereo model (FlashOCC M2, model.temporal.stereo) adds what its cost volume needs, computed on
the host by the same functions the PyTorch model uses (HistoryGraph):
  cam_params        (N, 27) float32 the camera-aware depth net's input (model/depth_net.camera_params)
  prev_stereo       (N, C_2, H/4, W/4) float32 the previous frame's stride-4 features (input)
  prev_stereo_valid (1,) float32   0 = none (an empty history: this frame's own features stand in)
  stereo_grid       (N, D*H/4, W/4, 2) float32 where each depth bin of each stride-4 pixel lands in the
                    previous image (model/stereo.currpix2adjgrid, from both frames' cameras and poses)
  stereo_feats      (N, C_2, H/4, W/4) float32 this frame's stride-4 features (output): the next prev_stereo

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
from .geometry import create_frustum
from .model.depth_net import camera_params
from .model.image_encoder import stage0_shape
from .telemetry import keep_third_party_quiet
from .model.stereo import currpix2adjgrid
from .model.temporal import frame_stamp, history_inputs, push_history, stereo_inputs

OPSET = 17


class ExportUnsupported(PriorOccError):
    """A network this exporter cannot write as a graph."""


def check_exportable(cfg: Config) -> None:
    """ExportUnsupported (one line) for what the graph cannot hold yet: the camera-aware depth net
    without stereo (FlashOCC M2's, with stereo, is exported)."""
    if cfg.model.view_transformer.depth_net != "conv" and not cfg.model.temporal.stereo:
        raise ExportUnsupported(f"export: {cfg.name}: the camera-aware depth net without stereo is not exportable: its "
                                "graph would take the camera parameters as an input, which is not written; run it "
                                "with the torch backend")


class ExportWrapper(nn.Module):
    """The network from normalised images + pooling plan to labels (batch of one)."""

    INPUT_NAMES = ("imgs", "ranks_bev", "ranks_depth", "ranks_feat")
    HISTORY_NAMES = ("prev_bev", "prev_valid", "curr2adj")
    STEREO_NAMES = ("cam_params", "prev_stereo", "prev_stereo_valid", "stereo_grid")

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
        self.stereo = cfg.model.temporal.stereo
        self.input_names = (list(self.INPUT_NAMES) + (list(self.HISTORY_NAMES) if self.temporal else [])
                            + (list(self.STEREO_NAMES) if self.stereo else []))
        self.output_names = (["occ"] + (["seg"] if self.with_seg else []) + (["occ_logits"] if logits else [])
                             + (["bev"] if self.temporal else []) + (["stereo_feats"] if self.stereo else []))

    def forward(self, imgs, ranks_bev, ranks_depth, ranks_feat, prev_bev=None, prev_valid=None, curr2adj=None,
                cam_params=None, prev_stereo=None, prev_stereo_valid=None, stereo_grid=None):
        plan = PoolingIndices(ranks_bev, ranks_depth, ranks_feat, self.out_shape)
        f4 = None
        if self.stereo:
            logits, seg, _, bev, f4 = self.model.forward_sequential_stereo(
                imgs, plan, prev_bev, prev_valid, curr2adj, cam_params, prev_stereo, prev_stereo_valid, stereo_grid)
            seg = None if seg is None else seg.unflatten(0, imgs.shape[:2])
        elif self.temporal:
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
        if f4 is not None:
            res.append(f4.float())
        return tuple(res)


class HistoryGraph:
    """The host side of a temporal graph (prev_bev, prev_valid, curr2adj in, bev out; see the top):
    history -> graph inputs, and the graph's bev output -> the next history (model/temporal.py)."""

    def __init__(self, cfg: Config, key: str):
        m = cfg.model
        dx, dy, _ = m.grid.size_xyz
        self.key, self.num_adj = key, m.temporal.num_adj
        self.bev_shape = (1, m.view_transformer.out_channels * m.grid.size_xyz[2], dy, dx)
        self.bev_aug = torch.eye(4)[None]
        self.stereo = m.temporal.stereo
        if self.stereo:  # the shapes and the frustum the PyTorch model has (PriorOcc.stereo_shape, its cv_frustum)
            self.stereo_shape = (len(m.image.cameras), *stage0_shape(m.backbone.depth, tuple(m.image.input_size)))
            self.cv_frustum = create_frustum(m.grid.depth, tuple(m.image.input_size), 4, m.view_transformer.sid)

    def stereo_grid(self, curr2adj, K, img_aug):
        _, _, h4, w4 = self.stereo_shape
        return currpix2adjgrid(self.cv_frustum, curr2adj.float(), K.float(), img_aug.float(), (4 * h4, 4 * w4))

    def feeds(self, history, ego2global, cameras: dict | None = None) -> dict:
        """The graph's history inputs; a stereo graph also needs this set's ``cameras`` (cam2ego, K,
        img_aug, bev_aug (1, N, ...)), as the predictor passes them."""
        prev, valid, curr2adj = history_inputs(history, self.key, self.num_adj, self.bev_shape, ego2global.double(),
                                               self.bev_aug, self.stereo_shape if self.stereo else None)
        out = {"prev_bev": prev.float().numpy(), "prev_valid": valid.numpy(), "curr2adj": curr2adj.numpy()}
        if self.stereo:
            c = {k: v.cpu() for k, v in cameras.items()}
            prev4, v4, grid = stereo_inputs(history, c["cam2ego"], ego2global.double(), self.stereo_shape,
                                            self.stereo_grid, c["K"], c["img_aug"])
            out.update(cam_params=camera_params(c["cam2ego"], c["K"], c["img_aug"], c["bev_aug"]).flatten(0, 1).numpy(),
                       prev_stereo=prev4.cpu().numpy(), prev_stereo_valid=v4.numpy(), stereo_grid=grid.numpy())
        return out

    def push(self, history, bev, ego2global, stamp, stereo_feats=None, cameras: dict | None = None):
        f4 = None if stereo_feats is None else torch.from_numpy(np.asarray(stereo_feats, dtype=np.float32))
        return push_history(history, self.key, self.num_adj, torch.from_numpy(np.asarray(bev, dtype=np.float32)),
                            ego2global, frame_stamp(stamp, 1, "cpu"), self.bev_aug, f4,
                            None if cameras is None or not self.stereo else cameras["cam2ego"].cpu())


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
    if cfg.model.temporal.stereo:  # the previous frame 2 m behind: each camera moved 2 m along ego x
        rig = example_rig(cfg)
        hg = HistoryGraph(cfg, "")
        move = torch.eye(4)
        move[0, 3] = 2.0
        cam_move = torch.linalg.inv(rig["cam2ego"]) @ move @ rig["cam2ego"]  # (1, N, 4, 4) current camera -> previous
        args += (camera_params(*rig.values()).flatten(0, 1), torch.randn(hg.stereo_shape, generator=g), torch.ones(1),
                 hg.stereo_grid(cam_move, rig["K"], rig["img_aug"]))
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
    keep_third_party_quiet()
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
