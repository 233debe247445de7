"""The network, one module per stage (see priorocc.py for the data flow)."""
from ..config import ModelConfig
from .priorocc import PriorOcc


def build_model(cfg: ModelConfig) -> PriorOcc:
    """Build the network from its typed config (no registry)."""
    return PriorOcc(cfg)


__all__ = ["PriorOcc", "build_model"]
