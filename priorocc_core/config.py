"""Typed configuration: a dataclass tree, read from and written to YAML.

Unknown or mistyped keys are errors that name the key's dotted path. A checkpoint stores
``Config.to_dict()`` so that the checkpoint alone rebuilds its model.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .atomic import atomic_write_bytes
from .classes import CAMERAS
from .errors import PriorOccError


class ConfigError(PriorOccError):
    """A config file or override that does not fit the schema."""


# --------------------------------------------------------------------------- schema
@dataclass
class GridConfig:
    """Occupancy grid and lift-splat pooling grid (Occ3D-nuScenes)."""

    x: tuple[float, float, float] = (-40.0, 40.0, 0.4)  # (min, max, step) metres
    y: tuple[float, float, float] = (-40.0, 40.0, 0.4)
    z: tuple[float, float, float] = (-1.0, 5.4, 6.4)  # BEV pooling: one z cell, collapsed
    occ_z: tuple[float, float, float] = (-1.0, 5.4, 0.4)  # occupancy output: 16 cells
    depth: tuple[float, float, float] = (1.0, 45.0, 0.5)  # depth bin centres arange(*depth)

    @property
    def size_xyz(self) -> tuple[int, int, int]:
        """(Dx, Dy, Dz) of the BEV pooling grid."""
        return tuple(int(round((a[1] - a[0]) / a[2])) for a in (self.x, self.y, self.z))

    @property
    def occ_size(self) -> tuple[int, int, int]:
        """(Dx, Dy, Dz) of the occupancy output, e.g. (200, 200, 16)."""
        return tuple(int(round((a[1] - a[0]) / a[2])) for a in (self.x, self.y, self.occ_z))

    @property
    def occ_origin(self) -> tuple[float, float, float]:
        """Minimum corner (x, y, z) in metres of the occupancy grid."""
        return (self.x[0], self.y[0], self.occ_z[0])

    @property
    def voxel_size(self) -> float:
        """Edge of the (cubic) occupancy voxels in metres."""
        if not (self.x[2] == self.y[2] == self.occ_z[2]):
            raise ConfigError(f"grid: voxels are not cubic (x {self.x[2]}, y {self.y[2]}, occ_z {self.occ_z[2]})")
        return float(self.x[2])

    @property
    def occ_range(self) -> tuple[float, float, float, float, float, float]:
        """(x_min, y_min, z_min, x_max, y_max, z_max) of the occupancy grid (pc_range)."""
        return (self.x[0], self.y[0], self.occ_z[0], self.x[1], self.y[1], self.occ_z[1])

    @property
    def num_depth_bins(self) -> int:
        start, stop, step = self.depth
        return len(range(int(round((stop - start) / step))))


@dataclass
class ImageConfig:
    cameras: tuple[str, ...] = CAMERAS
    input_size: tuple[int, int] = (256, 704)  # (H, W) network input
    # FlashOCC normalisation: mmcv imnormalize(to_rgb=True) on an RGB PIL image, which
    # actually yields BGR channel order; kept for weight compatibility.
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    channel_order: str = "bgr"  # order of channels fed to the backbone: "bgr" (FlashOCC) or "rgb"
    # train-time augmentation (FlashOCC ranges)
    resize_range: tuple[float, float] = (-0.06, 0.11)
    rot_range: tuple[float, float] = (-5.4, 5.4)
    flip: bool = True
    crop_h: tuple[float, float] = (0.0, 0.0)
    resize_test: float = 0.0
    bev_flip_prob: float = 0.5

    def __post_init__(self) -> None:
        cams = tuple(self.cameras)
        dup = sorted({c for c in cams if cams.count(c) > 1})
        if not cams or dup:
            raise ConfigError(f"model.image.cameras: {list(cams)}; expected one or more distinct camera names"
                              + (f" (duplicated: {', '.join(dup)})" if dup else ""))


@dataclass
class BackboneConfig:
    depth: int = 50  # torchvision ResNet 18 / 34 / 50 / 101
    out_indices: tuple[int, ...] = (2, 3)  # stages C4, C5
    pretrained: Optional[str] = None  # local torchvision checkpoint file
    with_cp: bool = False  # gradient checkpointing of the stages


@dataclass
class NeckConfig:
    in_channels: tuple[int, ...] = (1024, 2048)
    out_channels: int = 256


@dataclass
class InjectorConfig:
    enabled: bool = True
    num_classes: int = 17  # 2D classes: Occ3D 0-16
    mid_channels: int = 256
    softmax_before_fusion: bool = False  # variant: fuse probabilities instead of logits
    loss_weight: float = 0.3
    # "label": upsample logits to the label size (PriorOcc); "feature": nearest-downsample labels
    loss_resolution: str = "label"


@dataclass
class ViewTransformerConfig:
    in_channels: int = 256
    out_channels: int = 64  # C_bev (context channels)
    downsample: int = 16
    depth_loss_weight: float = 0.0  # > 0 turns on depth supervision (needs a depth target)
    sid: bool = False  # FlashOCC's spacing-increasing depth bins (same count as grid.depth's arange)
    # "conv": one 1x1 conv (FlashOCC's LSSViewTransformer); "camera_aware": BEVDepth's DepthNet
    # (camera MLP + SE, three BasicBlocks, ASPP; LSSViewTransformerBEVDepth / BEVStereo)
    depth_net: str = "conv"
    aspp_mid_channels: int = 96  # camera_aware: ASPP's branch channels (FlashOCC's aspp_mid_channels)


@dataclass
class BEVEncoderConfig:
    num_layer: tuple[int, ...] = (2, 2, 2)
    num_channels: tuple[int, ...] = (128, 256, 512)
    out_channels: int = 256  # C_enc


@dataclass
class HeadConfig:
    out_dim: int = 256  # = C_enc in FlashOCC
    num_classes: int = 18
    use_mask: bool = True  # train on voxels inside mask_camera
    class_balance: bool = False  # class weights 1 / log(frequency) (FlashOCC's, Occ3D-nuScenes counts)
    class_weights: tuple[float, ...] = ()  # explicit cross-entropy weight per class (num_classes values); overrides class_balance


@dataclass
class PreProcessConfig:
    """FlashOCC's ``pre_process``: a CustomResNet of ``num_layer`` stride-1 BasicBlocks on each
    frame's BEV features (C_bev -> C_bev) before the frames are concatenated."""

    enabled: bool = False
    num_layer: int = 1


@dataclass
class TemporalConfig:
    """BEVDet4D / FlashOCC-4D history: ``num_adj`` previous keyframes' BEV features, aligned to the
    current key ego and concatenated ((num_adj + 1) x C_bev channels into the BEV encoder).
    num_adj 0 is the single-frame network (no temporal module, today's checkpoint layout).
    Past frames always run without gradient (BEVDet4D's ``with_prev=True``); docs/design.md."""

    num_adj: int = 0  # FlashOCC's len(range(*multi_adj_frame_id_cfg))
    # False (FlashOCC's 4D configs): past cameras are lifted straight into the current key ego;
    # True: each past frame is lifted into its own key ego and its BEV map warped (shift_feature).
    # The sequential (cached) mode always warps, as BEVDet's benchmark_sequential does.
    align_after_view_transformation: bool = False
    pre_process: PreProcessConfig = field(default_factory=PreProcessConfig)
    # BEVStereo4D: the camera-aware depth net also gets a stereo cost volume between this frame's
    # and the previous frame's stride-4 backbone features (backbone.out_indices starts with 0;
    # one extra past frame feeds the oldest frame's cost volume). docs/design.md, "Stereo depth".
    stereo: bool = False
    stereo_bias: float = 5.0  # cost added where the previous frame has no feature (FlashOCC's depthnet bias)


@dataclass
class ModelConfig:
    grid: GridConfig = field(default_factory=GridConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    injector: InjectorConfig = field(default_factory=InjectorConfig)
    view_transformer: ViewTransformerConfig = field(default_factory=ViewTransformerConfig)
    bev_encoder: BEVEncoderConfig = field(default_factory=BEVEncoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)


@dataclass
class DataConfig:
    dataroot: str = "data/nuscenes"
    version: str = "auto"  # nuScenes table folder; auto: the dataroot's only one (data.infos.table_version)
    occ_root: Optional[str] = None  # folder holding gts/<scene>/<token>/labels.npz; default dataroot/gts
    seg_label_root: Optional[str] = None  # default dataroot/seg_2d_labels
    info_file_train: Optional[str] = None  # FlashOCC / BEVDet info pkl or project cache
    info_file_val: Optional[str] = None
    train_split: str = "train"  # nuScenes split name or "all"
    val_split: str = "val"
    # The ego frame the network works in (cam2ego, its output): "first_camera" = the ego pose at
    # the timestamp of the first camera of model.image.cameras (CAM_FRONT_LEFT), as FlashOCC's
    # prepare_inputs builds it and as published FlashOCC weights expect; "lidar" = the ego pose
    # at the LIDAR_TOP timestamp (the frame of the Occ3D ground truth). docs/design.md.
    key_ego: str = "first_camera"
    load_depth: bool = False  # LIDAR_TOP depth target
    load_seg_labels: bool = True
    num_workers: int = 4
    # training: probability that a sample runs with one random camera masked out (its features
    # not pooled, batch["cam_mask"]), so that a model degrades gracefully when a camera stops;
    # 0.0: no mask, today's path bitwise (docs/training.md). Needs two or more cameras.
    camera_dropout: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.camera_dropout) <= 1.0:
            raise ConfigError(f"data.camera_dropout: {self.camera_dropout}; expected a probability from 0 to 1")


@dataclass
class TrainConfig:
    lr: float = 1e-4
    weight_decay: float = 1e-2
    grad_clip: float = 5.0
    warmup_iters: int = 200
    warmup_ratio: float = 0.001
    lr_steps: tuple[int, ...] = (24,)  # epochs at which lr is multiplied by 0.1 (lr_policy step)
    lr_policy: str = "step"  # step: x0.1 at lr_steps; cosine: after warm-up, cosine to lr * min_lr_ratio at the run's end
    min_lr_ratio: float = 0.01  # cosine floor
    epochs: int = 24
    max_iters: int = 0  # > 0 stops after this many iterations (smoke runs, ablations)
    batch_size: int = 4  # per process
    ema: bool = True
    ema_decay: float = 0.9990
    amp: bool = True  # CUDA: float16 autocast; CPU: bfloat16 autocast only where the CPU has AMX / avx512_bf16
    channels_last: bool = False  # NHWC memory format for the convolutions
    seed: int = 0
    log_interval: int = 10
    checkpoint_interval: int = 1  # epochs
    load_from: Optional[str] = None


@dataclass
class Config:
    name: str = "priorocc-r50"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict:
        return _to_plain(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        return _from_plain(cls, _drop_retired(d), "")

    def to_diff_dict(self) -> dict:
        """Only what differs from the defaults (what a YAML config file holds)."""
        return _diff(self.to_dict(), Config(name=self.name).to_dict(), keep=("name",))

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        if path is not None:
            atomic_write_bytes(path, text.encode())
        return text

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path}: expected a mapping at top level")
        try:
            return cls.from_dict(raw)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def with_overrides(self, options: list[str]) -> "Config":
        """Apply ``key.sub=value`` overrides (values parsed as YAML)."""
        d = self.to_dict()
        for opt in options:
            if "=" not in opt:
                raise ConfigError(f"override {opt!r}: expected key=value")
            key, value = opt.split("=", 1)
            node = d
            parts = key.split(".")
            for p in parts[:-1]:
                if not isinstance(node, dict) or p not in node:
                    raise ConfigError(f"override {opt!r}: unknown key {key!r}")
                node = node[p]
            if not isinstance(node, dict) or parts[-1] not in node:
                raise ConfigError(f"override {opt!r}: unknown key {key!r}")
            try:
                node[parts[-1]] = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise ConfigError(f"override {opt!r}: the value is not plain YAML "
                                  f"({' '.join(str(e).split())})") from None
        return Config.from_dict(d)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    cfg = Config.from_yaml(path)
    return cfg.with_overrides(overrides) if overrides else cfg


# --------------------------------------------------------------------------- plumbing
# Keys that existed once and mean nothing now: dropped when read, so old checkpoints still load.
RETIRED_KEYS = (("model", "image", "src_size"),)  # the raw image size: read from each image instead


def _drop_retired(d: Any) -> Any:
    if not isinstance(d, dict):
        return d
    d = dict(d)
    for path in RETIRED_KEYS:
        node, parents = d, []
        for k in path[:-1]:
            if not isinstance(node, dict) or not isinstance(node.get(k), dict):
                break
            parents.append((node, k))
            node[k] = dict(node[k])
            node = node[k]
        else:
            node.pop(path[-1], None)
    return d


def _diff(value: dict, default: dict, keep=()) -> dict:
    out = {}
    for k, v in value.items():
        if isinstance(v, dict) and isinstance(default.get(k), dict):
            sub = _diff(v, default[k])
            if sub:
                out[k] = sub
        elif k in keep or v != default.get(k):
            out[k] = v
    return out


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_to_plain(v) for v in obj]
    return obj


def _from_plain(tp: Any, value: Any, path: str) -> Any:
    where = path or "<root>"
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"key {where}: expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - names)
        if unknown:
            k = f"{path}.{unknown[0]}" if path else unknown[0]
            raise ConfigError(f"unknown config key {k!r} (known keys here: {sorted(names)})")
        kwargs = {k: _from_plain(hints[k], v, f"{path}.{k}" if path else k) for k, v in value.items()}
        return tp(**kwargs)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _from_plain(inner[0], value, path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"key {where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_plain(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"key {where}: expected {len(args)} values, got {len(value)}")
        return tuple(_from_plain(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"key {where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"key {where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"key {where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"key {where}: expected a string, got {value!r}")
        return value
    return value
