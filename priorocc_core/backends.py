"""Inference backends behind one parameter: ``torch``, ``onnxruntime``, ``openvino``.

    from priorocc_core.backends import make_predictor
    predictor = make_predictor("model_dir", backend="openvino", precision="bf16")
    pred = predictor.predict(images, K, cam2ego)   # same Prediction as OccupancyPredictor

Every backend returns an object with ``.cfg``, ``.cameras``, ``.predict(images, K, cam2ego)
-> Prediction`` (see :mod:`priorocc_core.inference`); preprocessing and the pooling plan are
shared, only the network runs differently:

* ``torch``: PyTorch eager (``precision`` fp32 / bf16 / fp16; options ``channels_last``,
  ``compile`` (``torch.compile``), ``threads``); CUDA when ``device="cuda"``.
* ``onnxruntime``: the ONNX model of :mod:`priorocc_core.export` (exported on the fly into a
  cache folder unless ``onnx_path`` is given); CPU, or CUDA / TensorRT execution providers
  when present and ``device="cuda"``.
* ``openvino``: the same ONNX model read by OpenVINO (or ``source="torch"``: converted from
  the PyTorch model by ``openvino.convert_model``); ``precision`` fp32 or bf16 (OpenVINO's
  ``INFERENCE_PRECISION_HINT``).

The pooling plan (which voxel each frustum point falls in) depends only on the camera rig;
it is computed once per rig with the same code as the PyTorch model and passed to the
exported graph as inputs (see :mod:`priorocc_core.export` for why).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint, read_config
from .cli import BACKENDS, PRECISIONS, OptionError
from .config import Config
from .inference import OccupancyPredictor, Prediction

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class BackendError(OptionError):
    """An unknown backend / precision / option, or one this machine cannot run."""


def _load(checkpoint) -> tuple[torch.nn.Module, Config]:
    """A checkpoint path, or an already built ``(model, cfg)`` pair."""
    if isinstance(checkpoint, (tuple, list)) and len(checkpoint) == 2:
        model, cfg = checkpoint
        return model.eval(), cfg
    model, cfg, _ = load_checkpoint(checkpoint, "cpu")
    return model, cfg


def _read_config(checkpoint) -> Config:
    """The config stored in a checkpoint, without reading its weights."""
    if isinstance(checkpoint, (tuple, list)) and len(checkpoint) == 2:
        return checkpoint[1]
    return read_config(checkpoint)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))


# --------------------------------------------------------------------------- torch
class TorchPredictor(OccupancyPredictor):
    """PyTorch eager (optionally compiled) in fp32, bf16 or fp16.

    Reduced precision casts the weights (not autocast: on CPU, autocast re-casts every weight
    per call and measured barely faster than fp32). The camera geometry, the pooling plan and
    the BEV pooling sums stay fp32 (see view_transformer.py).
    """

    def __init__(self, model: torch.nn.Module, cfg: Config, device: str | torch.device = "cpu",
                 precision: str = "fp32", channels_last: bool = True, compile: bool = False,
                 threads: int | None = None):
        if precision not in PRECISIONS:
            raise BackendError(f"torch backend: precision must be one of {PRECISIONS}, got {precision!r}")
        set_threads(threads)
        super().__init__(model, cfg, device)
        self.precision = precision
        self.dtype = _DTYPES[precision]
        self.channels_last = bool(channels_last)
        if self.dtype != torch.float32:
            vt = self.model.view_transformer
            keep = {k: getattr(vt, k).clone() for k in ("frustum", "grid_lower", "grid_interval")}
            self.model.to(self.dtype)
            for k, v in keep.items():  # geometry buffers stay fp32: bf16 would move points across voxels
                setattr(vt, k, v)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._forward = self.model.forward_stages
        if compile:
            self._forward = torch.compile(self.model.forward_stages, dynamic=False)

    def run_network(self, batch: dict) -> dict:
        """batch as :meth:`preprocess` makes it -> dict(occ (1, Dx, Dy, Dz) long, seg_logits (1, N, K, h, w) | None)."""
        imgs = batch["imgs"].to(self.dtype)
        b, n = imgs.shape[:2]
        if self.channels_last:
            # (B, N, 3, H, W) -> the backbone sees (B*N, 3, H, W) in NHWC memory order
            imgs = imgs.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (b, n))
        vt = self.model.view_transformer
        plan = vt.plan(batch["cam2ego"], batch["K"], batch["img_aug"], batch["bev_aug"])
        out = self._forward(imgs, batch["cam2ego"], batch["K"], batch["img_aug"], batch["bev_aug"], plan)
        seg = out["seg_logits"]
        return dict(occ=out["occ_logits"].argmax(-1),
                    seg_logits=None if seg is None else seg.float().view(b, n, *seg.shape[1:]))


# --------------------------------------------------------------------------- exported graph (ORT / OpenVINO)
class PlanCache:
    """Pooling plan for the last seen rig, computed with the PyTorch model's own geometry code."""

    def __init__(self, cfg: Config):
        from .geometry import create_frustum

        m = cfg.model
        self.grid = m.grid
        self.frustum = create_frustum(m.grid.depth, tuple(m.image.input_size), m.view_transformer.downsample)
        self.lower = torch.tensor([m.grid.x[0], m.grid.y[0], m.grid.z[0]])
        self.interval = torch.tensor([m.grid.x[2], m.grid.y[2], m.grid.z[2]])
        self._key: np.ndarray | None = None
        self._plan: dict[str, np.ndarray] | None = None

    def __call__(self, batch: dict) -> dict[str, np.ndarray]:
        """-> dict(ranks_bev, ranks_depth, ranks_feat) int64 (P,), reused while the geometry is unchanged."""
        from .geometry import frustum_to_ego
        from .model.bev_pool import pooling_indices

        geo = [batch[k].float().cpu() for k in ("cam2ego", "K", "img_aug", "bev_aug")]
        key = torch.cat([g.flatten() for g in geo]).numpy()
        if self._plan is not None and self._key is not None and np.array_equal(key, self._key):
            return self._plan
        with torch.no_grad():
            coords = frustum_to_ego(self.frustum, *geo)
            plan = pooling_indices(coords, self.lower, self.interval, self.grid.size_xyz)
        self._key = key
        self._plan = {"ranks_bev": plan.ranks_bev.numpy(), "ranks_depth": plan.ranks_depth.numpy(),
                      "ranks_feat": plan.ranks_feat.numpy()}
        return self._plan


class GraphPredictor(OccupancyPredictor):
    """Shared preprocessing / postprocessing around an exported graph (see export.py for its I/O)."""

    def __init__(self, cfg: Config, run, name: str):
        # no torch model here: OccupancyPredictor.__init__ is not called on purpose
        self.cfg = cfg
        self.device = torch.device("cpu")
        self.model = None
        self._run = run  # dict of numpy inputs -> dict of numpy outputs
        self.backend = name
        self.plan = PlanCache(cfg)

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], K: np.ndarray, cam2ego: np.ndarray) -> Prediction:
        t0 = time.perf_counter()
        batch = self.preprocess(images, K, cam2ego)
        feeds = {"imgs": batch["imgs"].numpy(), **self.plan(batch)}
        t1 = time.perf_counter()
        out = self._run(feeds)
        t2 = time.perf_counter()
        occ = np.asarray(out["occ"])[0].astype(np.uint8, copy=False)
        seg = out.get("seg")
        seg = None if seg is None else np.asarray(seg)[0].astype(np.uint8, copy=False)
        return Prediction(occ, seg, batch["img_aug"][0].numpy().astype(np.float64),
                          {"preprocess": t1 - t0, "model": t2 - t1, "postprocess": time.perf_counter() - t2})


def _onnx_file(checkpoint, model, cfg, onnx_path, cache_dir) -> Path:
    """The ONNX file to run: ``onnx_path`` if given, else exported (once) into ``cache_dir``."""
    from .export import export_onnx

    if onnx_path is not None:
        p = Path(onnx_path)
        if not p.is_file():
            raise BackendError(f"onnx_path {p}: no such file (write one with `priorocc_export`)")
        return p
    if cache_dir is None:
        if isinstance(checkpoint, (str, os.PathLike)):
            base = Path(checkpoint)
            cache_dir = (base if base.is_dir() else base.parent) / "onnx"
        else:
            import tempfile

            cache_dir = Path(tempfile.mkdtemp(prefix="priorocc-onnx-"))
    p = Path(cache_dir) / "model.onnx"
    if not p.is_file() or (isinstance(checkpoint, (str, os.PathLike))
                           and p.stat().st_mtime < os.stat(Path(checkpoint)).st_mtime):
        export_onnx(model, cfg, p)
    return p


def _ort_session(path: Path, device: str, threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
    avail = ort.get_available_providers()
    if str(device).startswith("cuda"):
        providers = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in avail]
        if not providers:
            raise BackendError(f"onnxruntime: device {device!r} asked for, but this onnxruntime has only {avail}")
        providers.append("CPUExecutionProvider")
    else:
        providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), so, providers=providers)


def _make_onnxruntime(checkpoint, model, cfg, precision, device, onnx_path=None, cache_dir=None,
                      threads=None) -> GraphPredictor:
    if precision != "fp32":
        raise BackendError(f"onnxruntime backend: only precision 'fp32' is supported on CPU, got {precision!r}")
    sess = _ort_session(_onnx_file(checkpoint, model, cfg, onnx_path, cache_dir), device, threads)
    names = [o.name for o in sess.get_outputs()]

    def run(feeds):
        return dict(zip(names, sess.run(names, feeds)))

    pred = GraphPredictor(cfg, run, "onnxruntime")
    pred.session = sess
    return pred


def _make_openvino(checkpoint, model, cfg, precision, device, onnx_path=None, cache_dir=None,
                   threads=None, source="onnx") -> GraphPredictor:
    import openvino as ov

    if precision not in ("fp32", "bf16", "fp16"):
        raise BackendError(f"openvino backend: precision must be fp32, bf16 or fp16, got {precision!r}")
    core = ov.Core()
    ov_device = "GPU" if str(device).startswith("cuda") else "CPU"
    if ov_device not in core.available_devices:
        raise BackendError(f"openvino: device {ov_device} not available (have {core.available_devices})")
    if source == "onnx":
        ov_model = core.read_model(str(_onnx_file(checkpoint, model, cfg, onnx_path, cache_dir)))
    elif source == "torch":
        from .export import ExportWrapper, example_inputs

        wrapper = ExportWrapper(model, cfg).eval()
        with torch.no_grad():
            ov_model = ov.convert_model(wrapper, example_input=example_inputs(cfg))
        for port, name in zip(ov_model.inputs, ExportWrapper.INPUT_NAMES):
            port.get_tensor().set_names({name})
        for port, name in zip(ov_model.outputs, wrapper.output_names):
            port.get_tensor().set_names({name})
    else:
        raise BackendError(f"openvino backend: source must be 'onnx' or 'torch', got {source!r}")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}[precision],
                              "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = core.compile_model(ov_model, ov_device, config)
    names = [o.get_any_name() for o in compiled.outputs]
    request = compiled.create_infer_request()

    def run(feeds):
        res = request.infer(feeds)
        return {n: res[compiled.output(n)] for n in names}

    pred = GraphPredictor(cfg, run, "openvino")
    pred.compiled = compiled
    return pred


# --------------------------------------------------------------------------- factory
def make_predictor(checkpoint, backend: str = "torch", precision: str = "fp32", device: str = "cpu", **opts):
    """A predictor with ``.cfg``, ``.cameras``, ``.predict(images, K, cam2ego) -> Prediction``.

    checkpoint: a checkpoint directory / .safetensors file, or a ``(model, cfg)`` pair.
    backend: one of ``torch``, ``onnxruntime``, ``openvino``; precision: fp32, bf16, fp16.
    opts (torch): channels_last=True, compile=False, threads=None.
    opts (onnxruntime): onnx_path=None, cache_dir=None, threads=None.
    opts (openvino): onnx_path=None, cache_dir=None, threads=None, source="onnx" | "torch".
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    allowed = {"torch": {"channels_last", "compile", "threads"},
               "onnxruntime": {"onnx_path", "cache_dir", "threads"},
               "openvino": {"onnx_path", "cache_dir", "threads", "source"}}[backend]
    unknown = set(opts) - allowed
    if unknown:
        raise BackendError(f"backend {backend!r}: unknown option(s) {sorted(unknown)}; allowed {sorted(allowed)}")
    if str(device).startswith("cuda") and backend == "torch" and not torch.cuda.is_available():
        raise BackendError("device 'cuda' asked for, but torch.cuda.is_available() is False")
    if backend != "torch" and opts.get("onnx_path") is not None and opts.get("source", "onnx") == "onnx":
        model, cfg = None, _read_config(checkpoint)  # the graph is all we run: weights stay unread
    else:
        model, cfg = _load(checkpoint)
    if backend == "torch":
        if str(device).startswith("cpu") and precision == "fp16":
            raise BackendError("torch backend: fp16 on CPU is not supported here (use bf16)")
        return TorchPredictor(model, cfg, device, precision, **opts)
    if backend == "onnxruntime":
        return _make_onnxruntime(checkpoint, model, cfg, precision, device, **opts)
    return _make_openvino(checkpoint, model, cfg, precision, device, **opts)
