"""Import FlashOCC / BEVDet / PriorOcc (mmcv / mmengine) checkpoints without mmcv.

    priorocc_import flashocc-r50-M0.pth --config training/configs/flashocc-r50-m0.yaml --out ckpts/m0

The ``.pth`` is read with ``torch.load(weights_only=True)``, which refuses any pickled object
that needs code to rebuild. Every tensor goes through :data:`NAME_TABLE`, one explicit list of
(source pattern -> this project's name) rules; tensors whose shape differs from the target
model are skipped and listed, as mmcv's non-strict loading does when FlashOCC starts from
BEVDet's weights. A model tensor that nothing fills is an error that lists the names (a
silently re-initialised layer is a wrong model for inference) unless ``--allow-missing``, which
starting a training run from BEVDet weights uses, and which reports them. The report names the
layout it recognised in the source (FlashOCC, PriorOcc, BEVDet; mmcv or mmengine container).
"""
from __future__ import annotations

import argparse
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import Config, load_config
from .errors import PriorOccError

# (source regex, target template, what it is). First match wins. Source names are those of
# FlashOCC's BEVDetOCC / BEVDet4DOCC / BEVStereo4DOCC (projects/mmdet3d_plugin/models/detectors/bevdet_occ.py,
# bevdet4d.py: the 4D model adds only ``pre_process_net``; its BEV encoder takes (num_adj + 1) x C_bev
# channels, which the shapes check; the stereo model's DepthNet, model_utils/depthnet.py, keeps its
# names under view_transformer.depth_net, priorocc_core/model/depth_net.py) and PriorOcc's
# SemanticInjector (projects/mmdet3d_plugin/models/model_utils/semantic_injector.py).
NAME_TABLE: list[tuple[str, str, str]] = [
    # image backbone: mmdet ResNet uses torchvision's layer names
    (r"^img_backbone\.(.+)$", r"backbone.\1", "ResNet backbone"),
    # image neck: mmcv ConvModule wraps the conv as `.conv`, no norm, no activation
    (r"^img_neck\.lateral_convs\.(\d+)\.conv\.(weight|bias)$", r"neck.lateral_convs.\1.\2", "FPN lateral conv"),
    (r"^img_neck\.fpn_convs\.0\.conv\.(weight|bias)$", r"neck.fpn_convs.0.\1", "FPN output conv"),
    # SemanticInjector: nn.Sequential indices -> named layers
    (r"^semantic_injector\.seg_head\.0\.weight$", r"injector.seg_head.conv.weight", "SegHead 3x3 conv"),
    (r"^semantic_injector\.seg_head\.1\.(.+)$", r"injector.seg_head.bn.\1", "SegHead BN"),
    (r"^semantic_injector\.seg_head\.3\.(weight|bias)$", r"injector.seg_head.classifier.\1", "SegHead 1x1 classifier"),
    (r"^semantic_injector\.fusion_layer\.0\.weight$", r"injector.fusion.conv.weight", "FusionLayer 1x1 conv"),
    (r"^semantic_injector\.fusion_layer\.1\.(.+)$", r"injector.fusion.bn.\1", "FusionLayer BN"),
    # view transformer: one 1x1 conv (depth logits first, then context), or BEVDepth's camera-aware DepthNet
    # (with the stereo cost volume's convs), whose module names are kept as they are
    (r"^img_view_transformer\.depth_net\.(.+)$", r"view_transformer.depth_net.\1", "depth net (LSS conv / DepthNet)"),
    # BEVDet4D's pre-process net (model.temporal.pre_process): a stride-1 CustomResNet per frame
    (r"^pre_process_net\.layers\.(.+)$", r"pre_process_net.layers.\1", "BEVDet4D pre-process CustomResNet"),
    # BEV encoder
    (r"^img_bev_encoder_backbone\.layers\.(.+)$", r"bev_backbone.layers.\1", "CustomResNet BEV backbone"),
    (r"^img_bev_encoder_neck\.((?:conv|up2)\..+)$", r"bev_neck.\1", "FPN_LSS BEV neck"),
    # occupancy head: final_conv is a ConvModule (conv + ReLU)
    (r"^occ_head\.final_conv\.conv\.(weight|bias)$", r"occ_head.final_conv.\1", "occupancy head 3x3 conv"),
    (r"^occ_head\.predicter\.([02])\.(weight|bias)$", r"occ_head.predicter.\1.\2", "occupancy head MLP"),
]

# Source prefixes with no counterpart here, and why.
KNOWN_SKIPS: list[tuple[str, str]] = [
    (r"^pts_bbox_head\.", "3D detection head (CenterHead): no counterpart in an occupancy network"),
    (r"^language_self_gating\.", "PriorOcc's optional LanguageSelfGating: not implemented here"),
]


class ImportError_(PriorOccError):
    """A source checkpoint that cannot be imported (named so as not to shadow ImportError)."""


@dataclass
class ImportReport:
    source: str
    layout: str = "unknown"  # what the source looks like, from its tensor names and container
    mapped: list[tuple[str, str]] = field(default_factory=list)  # (source, target)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (target, reason)

    def format(self) -> str:
        lines = [f"import of {self.source} (recognised layout: {self.layout}): {len(self.mapped)} mapped, "
                 f"{len(self.skipped)} skipped, {len(self.missing)} model tensors not in the source"]
        for src, why in self.skipped:
            lines.append(f"  skipped  {src}: {why}")
        groups: dict[str, int] = {}
        for tgt, why in self.missing:
            groups[why] = groups.get(why, 0) + 1
        for why, count in groups.items():
            lines.append(f"  missing  {count} tensors: {why}")
        return "\n".join(lines)

    def print(self, file=None) -> None:
        print(self.format(), file=file or sys.stdout)


def read_source_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read an mmcv / mmengine checkpoint (``state_dict`` + ``meta``) or a bare state dict."""
    path = Path(path)
    if not path.is_file():
        raise ImportError_(f"{path}: no such checkpoint file")
    from .checkpoint import pickle_kind

    if pickle_kind(path) is None:
        raise ImportError_(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): neither a torch.save "
                           f"zip nor a pickle ({path.stat().st_size} bytes)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ImportError_(
            f"{path}: refused: the file contains pickled objects that need code to rebuild "
            f"(torch.load(weights_only=True) said: {str(e).splitlines()[0]}). Only tensors, numbers, strings "
            "and containers are accepted.") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise ImportError_(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {e}") from e
    if not isinstance(obj, dict):
        raise ImportError_(f"{path}: expected a dict (state_dict or {{'state_dict', 'meta'}}), got {type(obj).__name__}")
    meta = obj.get("meta", {}) if isinstance(obj.get("meta", {}), dict) else {}
    container = ("mmcv/mmengine checkpoint (state_dict + meta)" if "state_dict" in obj
                 else "checkpoint with 'model'" if "model" in obj else "bare state dict")
    meta = {**meta, "_container": container}
    sd = obj.get("state_dict", obj.get("model", obj))
    if not isinstance(sd, dict):
        raise ImportError_(f"{path}: 'state_dict' is a {type(sd).__name__}, expected a dict of tensors")
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ImportError_(f"{path}: contains no tensors")
    return tensors, meta


def map_name(name: str) -> tuple[str | None, str]:
    for pattern, template, what in NAME_TABLE:
        if re.match(pattern, name):
            return re.sub(pattern, template, name), what
    for pattern, why in KNOWN_SKIPS:
        if re.match(pattern, name):
            return None, why
    return None, "no rule in the name table"


def detect_layout(names, container: str = "state dict") -> str:
    """Which published network a source's tensor names come from."""
    prefixes = {n.split(".", 1)[0] for n in names}
    temporal = ", temporal (BEVDet4D pre_process_net)" if "pre_process_net" in prefixes else ""
    if any(n.startswith("img_view_transformer.depth_net.cost_volumn_net.") for n in names):
        temporal += ", stereo depth (BEVStereo4D cost volume)"
    if "semantic_injector" in prefixes and "occ_head" in prefixes:
        net = f"PriorOcc (FlashOCC BEVDetOCC + SemanticInjector{temporal})"
    elif "occ_head" in prefixes:
        net = f"FlashOCC BEVDetOCC (BEVOCCHead2D{temporal})"
    elif "pts_bbox_head" in prefixes:
        net = "BEVDet (CenterHead detector)"
    elif "img_backbone" in prefixes:
        net = "mmdet3d camera detector (img_backbone only recognised)"
    else:
        net = "not recognised"
    return f"{net}, {container}"


def import_state_dict(source: dict[str, torch.Tensor], cfg: Config, source_name: str = "<state_dict>",
                      allow_missing: bool = False, container: str = "state dict"):
    """Map ``source`` onto a freshly built model of ``cfg`` -> (full state dict, report).

    A model tensor the source does not fill is an error listing the names, unless
    ``allow_missing`` (those keep their fresh initialisation and are listed in the report)."""
    from .model import build_model

    model = build_model(cfg.model)
    target = model.state_dict()
    report = ImportReport(source_name, detect_layout(source, container))
    out = dict(target)
    used: set[str] = set()
    wrong_shape: dict[str, str] = {}  # model tensor -> "source NAME (shape) vs model (shape)"
    for name, tensor in source.items():
        tgt, what = map_name(name)
        if tgt is None:
            report.skipped.append((name, what))
            continue
        if tgt not in target:
            report.skipped.append((name, f"maps to {tgt}, which this config's model does not have ({what})"))
            continue
        if tuple(tensor.shape) != tuple(target[tgt].shape):
            report.skipped.append((name, f"shape {tuple(tensor.shape)} != model {tuple(target[tgt].shape)} ({what})"))
            wrong_shape[tgt] = (f"{name} has shape {tuple(tensor.shape)} in the source, the model's {tgt} "
                                f"{tuple(target[tgt].shape)}")
            continue
        if tgt in used:
            raise ImportError_(f"{source_name}: two source tensors map to {tgt}")
        used.add(tgt)
        out[tgt] = tensor.to(target[tgt].dtype).clone()
        report.mapped.append((name, tgt))
    if not report.mapped:
        sample = ", ".join(list(source)[:3])
        raise ImportError_(f"{source_name}: none of its {len(source)} tensors maps to this network; it does not look "
                           f"like a FlashOCC / BEVDet / PriorOcc checkpoint (first keys: {sample})")
    for name in target:
        if name in used:
            continue
        if name in wrong_shape:
            why = f"wrong shape: {wrong_shape[name]}: freshly initialised"
        elif name.startswith("injector."):
            why = "SemanticInjector: freshly initialised (the source has no injector)"
        else:
            why = "not in the source (or skipped above): freshly initialised"
        report.missing.append((name, why))
    if report.missing and not allow_missing:
        names = [n for n, _ in report.missing if n not in wrong_shape]
        if wrong_shape:  # a tensor that is there with another shape is not "missing": say both shapes
            shapes = "; ".join(list(wrong_shape.values())[:10]) + (
                f"; ... and {len(wrong_shape) - 10} more" if len(wrong_shape) > 10 else "")
            raise ImportError_(
                f"{source_name} (recognised layout: {report.layout}): {len(wrong_shape)} tensors have another shape "
                f"than the target network's (a config that does not match the checkpoint: e.g. depth bins, "
                f"channels, classes): {shapes}" + (f"; and {len(names)} tensors are not in it" if names else ""))
        shown = ", ".join(names[:60]) + (f", ... and {len(names) - 60} more" if len(names) > 60 else "")
        raise ImportError_(
            f"{source_name} (recognised layout: {report.layout}): {len(names)} tensors of the target network are not "
            f"in it and would stay randomly initialised: {shown}. Use --allow-missing only to start training "
            "from these weights (e.g. BEVDet), never for inference.")
    return out, report


def import_checkpoint(src: str | Path, cfg: Config, allow_missing: bool = False):
    """Read ``src`` (.pth) and map it onto ``cfg``'s model -> (state dict, report)."""
    tensors, meta = read_source_state_dict(src)
    return import_state_dict(tensors, cfg, str(src), allow_missing, meta.get("_container", "state dict"))


def _main(argv) -> int:
    from . import cli
    from .checkpoint import save_checkpoint
    from .model import build_model

    ap = argparse.ArgumentParser(prog="priorocc_import", description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="FlashOCC / BEVDet / PriorOcc .pth checkpoint")
    ap.add_argument("--config", required=True, help="project config YAML describing the target network")
    ap.add_argument("--out", required=True, help="output checkpoint directory")
    ap.add_argument("--allow-missing", action="store_true",
                    help="write the model even when some of its tensors are not in the source (they keep their "
                         "fresh initialisation and are reported): for starting training, never for inference")
    cli.add_debug_arg(ap)
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    state, report = import_checkpoint(args.src, cfg, allow_missing=args.allow_missing)
    report.print()
    model = build_model(cfg.model)
    model.load_state_dict(state, strict=True)
    path = save_checkpoint(args.out, model, cfg, step=0, extra_meta={"imported_from": str(args.src),
                                                                      "layout": report.layout,
                                                                      "mapped": len(report.mapped),
                                                                      "skipped": len(report.skipped),
                                                                      "missing": len(report.missing)})
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from . import cli

    return cli.run("priorocc_import", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
