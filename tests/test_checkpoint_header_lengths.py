"""Checkpoints whose safetensors header length starts with any byte load and resume.

A safetensors file starts with its header length (u64, little endian); the header holds the
config, so the dataroot's length moves that first byte. The loader once "recognised" pickles
by a first byte 0x80 or ``PK`` and refused 8 of 64 valid checkpoints (and ``--resume auto`` on a
run's own checkpoint). Mutation check: restoring that one-byte sniff in checkpoint.py fails
``test_save_reload_every_dataroot_length`` (L103 refused as "pickle-based") and the resume test.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from priorocc_core.atomic import temp_dir_for, temp_path_for
from priorocc_core.checkpoint import (CheckpointError, check_state_dict, load_checkpoint, pickle_kind,
                                      read_checkpoint, read_config, safetensors_header, save_checkpoint)
from priorocc_core.model import build_model

REPO = Path(__file__).resolve().parents[1]
RESUME_META = {"epoch": 0, "iter_in_epoch": 1}  # what train.py stores with a checkpoint after 1 iteration
# 0-200 as the issue asks, extended to 263: safetensors pads its header to 8 bytes, so 264
# lengths sweep all 32 values of the header length's first byte whatever the rest of the header
# weighs (with 0-200 only, a config that grew by a few fields no longer reached 0x80 or 'P')
LENGTHS = range(0, 264)


def _first_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(2)


@pytest.fixture(scope="module")
def small_model(tiny_cfg):
    torch.manual_seed(0)
    return build_model(tiny_cfg.model)


def test_save_reload_every_dataroot_length(tmp_path, tiny_cfg, small_model):
    """Every length 0-263 saved (float16 storage, as models/demo) and reopened by the loader (its
    format check and header); every 40th also read in full, checked against the model and rebuilt."""
    firsts = set()
    want = {k: v.half() if v.is_floating_point() else v for k, v in small_model.state_dict().items()}
    for n in LENGTHS:
        cfg = tiny_cfg.with_overrides([f"data.dataroot='{'d' * n}'"])
        path = save_checkpoint(tmp_path / f"L{n}.safetensors", small_model, cfg, step=n, state_dict=want)
        firsts.add(_first_bytes(path)[0])
        assert safetensors_header(path) is not None and pickle_kind(path) is None
        assert read_config(path).data.dataroot == "d" * n
        if n % 40 == 0:
            tensors, got_cfg, info = read_checkpoint(path)
            assert got_cfg.data.dataroot == "d" * n and info["step"] == n
            check_state_dict(small_model, tensors, str(path))
            assert all(torch.equal(tensors[k], want[k]) for k in want)
            assert load_checkpoint(path)[1] == got_cfg
        path.unlink()
    # the lengths really swept the first byte across the values that used to be refused
    assert 0x80 in firsts and ord("P") in firsts, sorted(firsts)
    assert len(firsts) == 32  # header lengths are padded to 8 bytes: 264 lengths give all 32 values


def test_pickles_are_recognised_for_what_they_are(tmp_path, small_model):
    zipped, legacy = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    torch.save(small_model.state_dict(), zipped)
    torch.save(small_model.state_dict(), legacy, _use_new_zipfile_serialization=False)
    assert pickle_kind(zipped) == "torch.save zip" and pickle_kind(legacy) == "pickle"
    for p in (zipped, legacy):
        assert safetensors_header(p) is None
        with pytest.raises(CheckpointError, match="pickle-based"):
            read_checkpoint(p)
    # a file that starts with 0x80 but is no pickle is "corrupt", not "pickle"
    odd = tmp_path / "c.safetensors"
    odd.write_bytes(b"\x80\x07" + bytes(64))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_checkpoint(odd)


def _resume_lengths(make_cfg, small_model, tmp_path) -> tuple[list[int], dict[int, int]]:
    """The first length whose header starts with 0x80, the first with ``P`` (the bytes the old
    sniff refused), and the shortest and longest."""
    out, starts = [], {}

    def _starts(n, b):
        return starts.get(n) == b

    for n in LENGTHS:
        cfg = make_cfg(n)
        p = save_checkpoint(tmp_path / "probe.safetensors", small_model, cfg, step=1, extra_meta=RESUME_META)
        head = _first_bytes(p)
        if (head[:1] == b"\x80" and not any(_starts(o, 0x80) for o in out)) or \
                (head[:1] == b"P" and not any(_starts(o, 0x50) for o in out)) or n in (0, LENGTHS[-1]):
            out.append(n)
            starts[n] = head[0]
    return out, starts


def test_training_resumes_from_its_own_checkpoint_at_every_header_length(tmp_path, tiny_cfg, small_model):
    """A 1-iteration run writes a training checkpoint; for each length the checkpoint's config
    carries that dataroot and ``--resume`` continues it by one iteration; the restart also removes
    the leftovers of a write killed midway (mutation check: without train.py's remove_stale_temps
    call the leftover assertion fails)."""
    from tests.test_train import make_tiny_dataset
    from train import train

    from priorocc_core.data import OccDataset

    root = tmp_path / "data"
    info = make_tiny_dataset(root, n=1)
    base = tiny_cfg.with_overrides([f"data.dataroot={root}", f"data.info_file_train={info}", "train.max_iters=1",
                                    "train.log_interval=1"])
    ds = OccDataset(base, split="train", train=True)
    wd = tmp_path / "run"
    train(base, wd, progress=False, dataset=ds)
    ck = wd / "checkpoints" / "iter_0000001"
    tensors, _, _ = read_checkpoint(ck)
    def make_cfg(n):
        return base.with_overrides([f"data.dataroot='{'d' * n}'", "train.max_iters=2"])

    lengths, starts_at = _resume_lengths(make_cfg, small_model, tmp_path)
    # 201 lengths move the (8-byte padded) header length over ~26 values of its first byte: which of
    # 0x80 / 'P' they reach depends on the model's tensor names; at least one must be reached
    assert {0x80, ord("P")} & set(starts_at.values()), starts_at
    for n in lengths:
        cfg = make_cfg(n)
        work = tmp_path / f"w{n}"
        shutil.copytree(wd / "checkpoints", work / "checkpoints")
        model = build_model(cfg.model)
        model.load_state_dict(tensors)
        save_checkpoint(work / "checkpoints" / "iter_0000001", model, cfg, step=1, extra_meta=RESUME_META)
        assert _first_bytes(work / "checkpoints" / "iter_0000001" / "model.safetensors")[0] == starts_at[n]
        # what a run killed while writing leaves: a half-written checkpoint folder and temp files
        stale = [temp_dir_for(work / "checkpoints" / "iter_0000002"), Path(temp_path_for(work / "checkpoints" / "latest")),
                 Path(temp_path_for(work / "losses.jsonl"))]
        (stale[0] / "model.safetensors").write_bytes(b"half")
        s = train(cfg, work, resume="auto", progress=False, dataset=ds)
        assert s["steps"] == 2, n
        assert not any(p.exists() for p in stale), "interrupted-write leftovers survived the restart"
        assert "left by an interrupted write" in (work / "train.log").read_text()
        assert read_checkpoint(work / "final")[1].data.dataroot == "d" * n
        shutil.rmtree(work)
