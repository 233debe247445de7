"""The dataset's batches train the core network: loss decreases on a fixed batch."""
from __future__ import annotations

from pathlib import Path

import torch

from tests.test_data_synthetic import tiny_world

ROOT = Path(__file__).resolve().parents[1]


def test_batches_train_the_network():
    from priorocc_core.config import Config
    from priorocc_core.data import OccDataset, collate
    from priorocc_core.model import build_model

    cfg = Config.from_yaml(ROOT / "training" / "configs" / "tiny.yaml")
    cfg.data.dataroot, cfg.data.version = str(tiny_world()), "v1.0-mini"
    ds = OccDataset(cfg, "train", train=True)
    torch.manual_seed(0)
    batch = collate([ds[0], ds[1]])
    assert batch["imgs"].shape[:2] == (2, 6) and "seg_labels" in batch
    model = build_model(cfg.model)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(4):
        out = model.losses(model(batch), batch)
        loss = sum(v for k, v in out.items() if k.startswith("loss"))
        assert "loss_occ" in out and "loss_2d_seg" in out
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
