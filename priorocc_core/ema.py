"""Exponential moving average (EMA) of a model's weights.

    ema = ModelEMA(model, decay=0.999)
    ... optimizer.step(); ema.update(model)
    ema.state_dict()      -> {name: tensor}   (the averaged weights, same keys as the model)
    ema.meta()            -> {"decay": ..., "updates": ...}   (JSON-able; saved beside the tensors)
    ema.load(tensors, meta)

Floating-point parameters and buffers are averaged:
    shadow = d * shadow + (1 - d) * weight,   d = min(decay, (1 + updates) / (10 + updates))
(the ramp keeps early averages from being dominated by the random initialisation). Integer
buffers (BatchNorm's num_batches_tracked) are copied. The EMA lives on the model's device and
is stored with the training checkpoint, so a resumed run continues it exactly.
"""
from __future__ import annotations

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.999, ramp: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.ramp = bool(ramp)
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}

    def current_decay(self) -> float:
        if not self.ramp:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        self.updates += 1
        for k, v in unwrap(model).state_dict().items():
            s = self.shadow[k]
            if s.dtype.is_floating_point:
                s.mul_(d).add_(v.detach().to(s.dtype), alpha=1.0 - d)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def meta(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "ramp": self.ramp}

    def load(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        missing = sorted(set(self.shadow) - set(tensors))
        unexpected = sorted(set(tensors) - set(self.shadow))
        if missing or unexpected:
            raise ValueError(f"EMA state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for k, v in tensors.items():
            if v.shape != self.shadow[k].shape:
                raise ValueError(f"EMA state: {k} has shape {tuple(v.shape)}, model {tuple(self.shadow[k].shape)}")
            self.shadow[k].copy_(v.to(self.shadow[k].device))
        self.decay = float(meta.get("decay", self.decay))
        self.updates = int(meta.get("updates", 0))
        self.ramp = bool(meta.get("ramp", self.ramp))

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (e.g. for evaluation or export)."""
        unwrap(model).load_state_dict(self.shadow, strict=True)
