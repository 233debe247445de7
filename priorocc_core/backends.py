"""Inference backends: small runners from (normalised images, pooling plan) to labels.

    from priorocc_core.backends import make_predictor
    predictor = make_predictor("model_dir", backend="openvino", precision="bf16")
    pred = predictor.predict(images, K, cam2ego)   # a Prediction (priorocc_core.inference)
    predictor.backend                              # the runtime that produced it

Every backend is a :class:`priorocc_core.inference.Predictor` around one runner; preprocessing,
the pooling plan (model/plan.py) and postprocessing (model/postprocess.py) are shared, only the
network runs differently:

* ``torch``: :class:`TorchRunner`, PyTorch eager (``precision`` fp32 / bf16 / fp16; options
  ``channels_last``, ``compile`` (``torch.compile``), ``threads``); CUDA when ``device="cuda"``.
* ``onnxruntime``: :class:`GraphRunner` over the ONNX model of :mod:`priorocc_core.export`
  (exported on the fly into a cache folder unless ``onnx_path`` is given); CPU, or CUDA /
  TensorRT execution providers when present and ``device="cuda"``.
* ``openvino``: :class:`GraphRunner` over the same ONNX model read by OpenVINO (or
  ``source="torch"``: converted from the PyTorch model by ``openvino.convert_model``);
  ``precision`` fp32 or bf16 (OpenVINO's ``INFERENCE_PRECISION_HINT``), or int8: the IR of
  ``priorocc_quantize``, run only if it passes :mod:`priorocc_core.int8_gate` (made from this
  checkpoint, validated against fp32 on a held world), its float layers in the precision recorded
  as validated.

Backend, precision and device names are checked in one place, :func:`priorocc_core.cli.resolve_choice`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import load_checkpoint, read_config
from .cli import OptionError, resolve_choice
from . import int8_gate
from .artifacts import KEY_FILE, cache_root, graph_key, write_key
from .config import Config
from .export import HistoryGraph, graph_history
from .inference import Predictor
from .int8_gate import INT8_NAME, default_int8_path, int8_key, int8_key_file  # noqa: F401  (their home: int8_gate)
from .model.bev_pool import PoolingIndices
from .model.postprocess import seg_labels
from .telemetry import keep_third_party_quiet

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PLAN_INPUTS = ("ranks_bev", "ranks_depth", "ranks_feat")


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
class TorchRunner:
    """PyTorch eager (optionally compiled) in fp32, bf16 or fp16.

    Reduced precision casts the weights (not autocast: on CPU, autocast re-casts every weight
    per call and measured barely faster than fp32). The geometry and the pooling plan stay fp32
    (model/plan.py), the BEV pooling sums too (view_transformer.py). ``logits``: the output also
    holds the occupancy logits (B, Dx, Dy, Dz, K) as float16 (training/evaluate.py --save-logits).
    """

    def __init__(self, model: torch.nn.Module, cfg: Config, device: str | torch.device = "cpu",
                 precision: str = "fp32", channels_last: bool = True, compile: bool = False,
                 threads: int | None = None, logits: bool = False):
        set_threads(threads)
        self.logits = bool(logits)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.dtype = _DTYPES[precision]
        self.input_size = tuple(cfg.model.image.input_size)
        self.channels_last = bool(channels_last)
        if self.dtype != torch.float32:
            self.model.to(self.dtype)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._forward = torch.compile(self.model, dynamic=False) if compile else self.model

    @torch.no_grad()
    def __call__(self, imgs: torch.Tensor, plan: PoolingIndices, history=None, ego2global=None, stamp=None,
                 cameras: dict | None = None) -> dict:
        """history / ego2global (1, 4, 4) / stamp: temporal models (sequential mode); cameras (cam2ego,
        K, img_aug, bev_aug): the camera-aware depth net's geometry; see inference.py."""
        x = imgs.to(self.device, self.dtype)
        if self.channels_last:
            # (B, N, 3, H, W) -> the backbone sees (B*N, 3, H, W) in NHWC memory order
            b, n = x.shape[:2]
            x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (b, n))
        if plan.ranks_bev.device != self.device:
            plan = plan.to(self.device)
        geometry = {} if cameras is None else {k: v.to(self.device) for k, v in cameras.items()}
        if history is None:
            out = self._forward({"imgs": x, **geometry}, plan)
        else:
            batch = {"imgs": x, "ego2global": ego2global.to(self.device), "stamp": stamp,
                     "bev_aug": torch.eye(4, device=self.device)[None], **geometry}
            out = self._forward(batch, plan, history=history)
        return self._labels(out)

    @torch.no_grad()
    def run_batch(self, batch: dict, plan: PoolingIndices) -> dict:
        """A whole dataset batch (evaluation: a temporal batch's ``adj`` frames included, the
        non-sequential mode), already on this runner's device, through the same network -> the
        same outputs as ``__call__``."""
        return self._labels(self._forward(batch, plan))

    def _labels(self, out: dict) -> dict:
        seg = out["seg_logits"]
        res = dict(occ=out["occ"].to(torch.uint8).cpu().numpy(),
                   seg=None if seg is None else seg_labels(seg, self.input_size).to(torch.uint8).cpu().numpy(),
                   history=out.get("history"))
        if self.logits:
            res["logits"] = out["occ_logits"].to(torch.float16).cpu().numpy()
        return res


# --------------------------------------------------------------------------- exported graph (ORT / OpenVINO)
class GraphRunner:
    """An exported graph (see export.py for its inputs and outputs): ``run`` maps a dict of numpy
    inputs to a dict of numpy outputs."""

    def __init__(self, run, engine: Any = None, history: HistoryGraph | None = None):
        self._run = run
        self.engine = engine  # the onnxruntime session / OpenVINO compiled model, for inspection
        self.history = history  # temporal models: how the graph's history inputs / output are laid out

    def __call__(self, imgs: torch.Tensor, plan: PoolingIndices, history=None, ego2global=None, stamp=None,
                 cameras: dict | None = None) -> dict:
        """cameras (cam2ego, K, img_aug, bev_aug): a stereo graph's geometry (HistoryGraph.feeds)."""
        feeds = {"imgs": imgs.cpu().numpy(), **{k: getattr(plan, k).cpu().numpy() for k in PLAN_INPUTS}}
        if history is None:
            out = self._run(feeds)
            return {"occ": out["occ"], "seg": out.get("seg")}
        h = self.history
        if h is None:
            raise BackendError("this graph has no history inputs (exported from a single-frame model)")
        feeds.update(h.feeds(history, ego2global, cameras))
        out = self._run(feeds)
        return {"occ": out["occ"], "seg": out.get("seg"),
                "history": h.push(history, out["bev"], ego2global, stamp, out.get("stereo_feats"), cameras)}


def _onnx_file(checkpoint, model, cfg, onnx_path, cache_dir) -> Path:
    """The ONNX file to run: ``onnx_path`` if given, else the export cached under its key
    (artifacts.py: model code, weights, config, tool versions) in ``cache_dir`` (default the user
    cache, :func:`priorocc_core.artifacts.cache_root`), exported when that key has none yet."""
    from .export import export_onnx

    if onnx_path is not None:
        p = Path(onnx_path)
        if not p.is_file():
            raise BackendError(f"onnx_path {p}: no such file (write one with `priorocc_export`)")
        return p
    if model is None:
        raise BackendError("an ONNX export needs the model's weights (a checkpoint, not only onnx_path)")
    key = graph_key(checkpoint, model, cfg, "onnx")
    folder = Path(cache_dir if cache_dir is not None else cache_root()) / "graphs" / key.digest
    p = folder / "model.onnx"
    if not p.is_file():
        export_onnx(model, cfg, p)
        write_key(folder / KEY_FILE, key)
    return p


def _ort_session(path: Path, device: str, threads: int | None):
    keep_third_party_quiet()
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
                      threads=None) -> GraphRunner:
    path = _onnx_file(checkpoint, model, cfg, onnx_path, cache_dir)
    sess = _ort_session(path, device, threads)
    names = [o.name for o in sess.get_outputs()]

    def run(feeds):
        return dict(zip(names, sess.run(names, feeds)))

    return GraphRunner(run, sess, graph_history(cfg, model, path))


def openvino_config(precision: str, threads: int | None = None, int8_float: str = "f32") -> dict[str, Any]:
    """The OpenVINO compile config of a precision. int8: the quantised layers run int8 and the
    layers the recipe keeps in float (quantize.KEEP_FLOAT) run in ``int8_float``, the precision
    the IR was validated with (its record's ``float_precision``, default f32), said explicitly:
    left to the plugin they would run bf16 on a CPU with avx512_bf16 / AMX (its default there),
    whatever was validated."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY",
                              "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16", "fp16": "f16",
                                                           "int8": int8_float}[precision]}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def _make_openvino(checkpoint, model, cfg, precision, device, onnx_path=None, cache_dir=None,
                   threads=None, source="onnx", int8_path=None, preprocess="exact") -> GraphRunner:
    import openvino as ov

    int8_float = "f32"
    core = ov.Core()
    ov_device = "GPU" if str(device).startswith("cuda") else "CPU"
    if ov_device not in core.available_devices:
        raise BackendError(f"openvino: device {ov_device} not available (have {core.available_devices})")
    if precision == "int8":
        p = Path(int8_path) if int8_path is not None else (
            default_int8_path(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else None)
        if p is None:
            raise BackendError("openvino int8: an in-memory (model, cfg) needs int8_path (the IR of priorocc_quantize)")
        status = int8_gate.check(p, checkpoint, cfg, preprocess)  # made from this checkpoint, validated (mode too)
        if not status.ok:
            raise BackendError(f"openvino int8: {status.reason}")
        int8_float = str(status.record.get("float_precision", "f32"))
        ov_model = core.read_model(str(p))
    elif source == "onnx":
        path = _onnx_file(checkpoint, model, cfg, onnx_path, cache_dir)
        ov_model = core.read_model(str(path))
    elif source == "torch":
        from .export import ExportWrapper, example_inputs

        if model is None:
            raise BackendError("openvino source='torch' needs the model's weights (a checkpoint, not only onnx_path)")
        wrapper = ExportWrapper(model, cfg).eval()
        with torch.no_grad():
            ov_model = ov.convert_model(wrapper, example_input=example_inputs(cfg))
        for port, name in zip(ov_model.inputs, wrapper.input_names):
            port.get_tensor().set_names({name})
        for port, name in zip(ov_model.outputs, wrapper.output_names):
            port.get_tensor().set_names({name})
    else:
        raise BackendError(f"openvino backend: source must be 'onnx' or 'torch', got {source!r}")
    compiled = core.compile_model(ov_model, ov_device, openvino_config(precision, threads, int8_float))
    names = [o.get_any_name() for o in ov_model.outputs]  # compiled outputs may add internal names (bev)
    request = compiled.create_infer_request()

    def run(feeds):
        res = request.infer(feeds)
        return {n: res[compiled.output(n)] for n in names}

    history = None
    if cfg.model.temporal.num_adj:
        if precision == "int8":
            raise BackendError("openvino int8: temporal models are not quantised (priorocc_quantize is single-frame)")
        history = graph_history(cfg, model, path if source == "onnx" else None)
    return GraphRunner(run, compiled, history)


# --------------------------------------------------------------------------- factory
OPTIONS = {"torch": {"channels_last", "compile", "threads"},
           "onnxruntime": {"onnx_path", "cache_dir", "threads"},
           "openvino": {"onnx_path", "cache_dir", "threads", "source", "int8_path"}}


def _int8_status(checkpoint, backend: str, opts: dict, preprocess: str = "exact"):
    """For ``backend: auto``: the gate's verdict on the checkpoint's int8 IR (default path or
    ``int8_path``), None when there is none (autoselect then never considers int8)."""
    if backend != "auto" or not isinstance(checkpoint, (str, os.PathLike)):
        return None
    p = Path(opts["int8_path"]) if opts.get("int8_path") else default_int8_path(checkpoint)
    if not p.is_file():
        return None
    return int8_gate.check(p, checkpoint, _read_config(checkpoint), preprocess)


def make_predictor(checkpoint, backend: str = "torch", precision: str = "fp32", device: str = "cpu",
                   preprocess: str = "exact", **opts) -> Predictor:
    """A :class:`~priorocc_core.inference.Predictor` (``.cfg``, ``.cameras``, ``.backend``,
    ``.predict(images, K, cam2ego) -> Prediction``) running ``checkpoint`` on ``backend``.

    checkpoint: a checkpoint directory / .safetensors file, or a ``(model, cfg)`` pair.
    backend / precision / device: checked by :func:`priorocc_core.cli.resolve_choice`.
    opts (torch): channels_last=True, compile=False, threads=None.
    opts (onnxruntime): onnx_path=None, cache_dir=None, threads=None.
    opts (openvino): onnx_path=None, cache_dir=None, threads=None, source="onnx" | "torch",
    int8_path=None (precision int8: the IR of priorocc_quantize; default <checkpoint>/openvino/int8.xml).
    backend / precision / device ``"auto"``: chosen by :func:`priorocc_core.autoselect.resolve`;
    the result carries the choice and its reason as ``.choice``.
    preprocess: the preprocessing the caller will run (:mod:`priorocc_core.jpeg`: ``exact``,
    ``fused``, ``fast``; ``preprocess_mode`` names the node's parameters); the predictor's
    ``fused_resize`` is set from it, and an int8 IR runs (or ``auto`` picks it) only if its record
    validates that mode (:func:`priorocc_core.int8_gate.check`).
    """
    from .jpeg import PREPROCESS_MODES

    try:
        choice = resolve_choice(backend, precision, device,
                                int8=_int8_status(checkpoint, backend, opts, preprocess))
    except OptionError as e:
        raise BackendError(str(e)) from None
    backend, precision, device = choice.backend, choice.precision, choice.device
    unknown = set(opts) - OPTIONS[backend]
    if unknown:
        raise BackendError(f"backend {backend!r}: unknown option(s) {sorted(unknown)}; allowed {sorted(OPTIONS[backend])}")
    if backend == "openvino" and precision == "int8":
        model, cfg = None, _read_config(checkpoint)  # the quantised IR is all we run
    elif backend != "torch" and opts.get("onnx_path") is not None and opts.get("source", "onnx") == "onnx":
        model, cfg = None, _read_config(checkpoint)  # the graph is all we run: weights stay unread
    else:
        model, cfg = _load(checkpoint)
    if backend == "torch":
        runner = TorchRunner(model, cfg, device, precision, **opts)
    elif backend == "onnxruntime":
        runner = _make_onnxruntime(checkpoint, model, cfg, precision, device, **opts)
    else:
        runner = _make_openvino(checkpoint, model, cfg, precision, device, preprocess=preprocess, **opts)
    pred = Predictor(cfg, runner, backend, device if backend == "torch" else "cpu")
    pred.choice = choice
    pred.fused_resize = PREPROCESS_MODES.get(preprocess, {}).get("fused_resize", False)
    return pred
