"""Checkpoints: safetensors + config, atomic, no pickle, clear errors."""
from __future__ import annotations

import pytest
import torch

from priorocc_core.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from priorocc_core.model import PriorOcc, build_model


def test_round_trip_rebuilds_from_checkpoint_alone(tmp_path, tiny_cfg, tiny_checkpoint):
    model, cfg, info = load_checkpoint(tiny_checkpoint)
    assert cfg == tiny_cfg and info["step"] == 1 and info["classes"][17] == "free"
    again = load_checkpoint(tiny_checkpoint)[0]
    assert isinstance(again, PriorOcc)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    single = tmp_path / "one.safetensors"
    save_checkpoint(single, model, cfg, step=5)
    assert read_checkpoint(single)[2]["step"] == 5


def test_pickle_payload_is_refused(tmp_path, tiny_cfg):
    model = build_model(tiny_cfg.model)
    d = tmp_path / "ck"
    d.mkdir()
    torch.save(model.state_dict(), d / "model.safetensors")  # a pickle under the right name
    with pytest.raises(CheckpointError, match="pickle-based"):
        load_checkpoint(d)


def test_corrupt_and_truncated(tmp_path, tiny_checkpoint):
    data = (tiny_checkpoint / "model.safetensors").read_bytes()
    for name, blob in (("trunc", data[: len(data) // 2]), ("garbage", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")):
        d = tmp_path / name
        d.mkdir()
        (d / "model.safetensors").write_bytes(blob)
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            load_checkpoint(d)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing")


def test_config_that_does_not_match_weights_names_tensors(tmp_path, tiny_cfg):
    model = build_model(tiny_cfg.model)
    wrong = tiny_cfg.with_overrides(["model.injector.enabled=false", "model.head.out_dim=24"])
    save_checkpoint(tmp_path / "bad", model, wrong)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "bad")
    msg = str(e.value)
    assert "occ_head.final_conv.weight" in msg and "unexpected" in msg and "injector.seg_head" in msg


def test_write_is_atomic(tmp_path, tiny_cfg, monkeypatch):
    model = build_model(tiny_cfg.model)
    save_checkpoint(tmp_path / "ck", model, tiny_cfg, step=1)
    import priorocc_core.checkpoint as ck

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "ck", model, tiny_cfg, step=2)
    assert read_checkpoint(tmp_path / "ck")[2]["step"] == 1  # the old checkpoint is intact
    assert [p.name for p in (tmp_path / "ck").iterdir() if p.name.endswith(".tmp")] == []


def test_half_precision_storage_loads_back(tmp_path, tiny_cfg):
    model = build_model(tiny_cfg.model)
    save_checkpoint(tmp_path / "half", model, tiny_cfg, dtype=torch.float16)
    full = (tmp_path / "full")
    save_checkpoint(full, model, tiny_cfg)
    size_half = (tmp_path / "half" / "model.safetensors").stat().st_size
    assert size_half < 0.6 * (full / "model.safetensors").stat().st_size
    loaded, _, _ = load_checkpoint(tmp_path / "half")
    w0, w1 = model.state_dict()["neck.fpn_convs.0.weight"], loaded.state_dict()["neck.fpn_convs.0.weight"]
    assert w1.dtype == torch.float32 and torch.allclose(w0, w1, atol=1e-3)


def test_atomic_folders_get_a_plain_mkdir_mode(tmp_path):
    """Issue 31 item 10: a folder written atomically (training checkpoints/iter_*) gets the mode
    a plain mkdir gives, like final/ (before: mkdtemp's 0700; mutation: temp_dir_for without its
    chmod)."""
    from priorocc_core.atomic import replace_dir, temp_dir_for

    (tmp_path / "plain").mkdir()
    tmp = temp_dir_for(tmp_path / "iter_0000001")
    replace_dir(tmp, tmp_path / "iter_0000001")
    assert (tmp_path / "iter_0000001").stat().st_mode == (tmp_path / "plain").stat().st_mode
