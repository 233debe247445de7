"""The network, one module per stage (see priorocc.py for the data flow).

Module constructors take explicit arguments and touch no file; weights are loaded by builder
functions (torchvision's ``resnet50(weights=...)`` style): :func:`build_model` here, checkpoints in
:mod:`priorocc_core.checkpoint`.
"""
from ..config import ModelConfig
from .image_encoder import load_resnet_weights
from .priorocc import PriorOcc


def build_model(cfg: ModelConfig) -> PriorOcc:
    """Build the network from its typed config (no registry); ``backbone.pretrained`` (a local
    torchvision ResNet file) is loaded into the backbone."""
    model = PriorOcc(cfg)
    if cfg.backbone.pretrained:
        load_resnet_weights(model.backbone, cfg.backbone.pretrained)
    return model


__all__ = ["PriorOcc", "build_model"]
