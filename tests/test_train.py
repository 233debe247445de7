"""training/train.py: exact resume, checkpoints, schedule, torchrun on CPU, evaluation of the result.

The tests build a small dataset in a temp folder (random-textured JPEGs with the nuScenes rig's
calibration, block-structured Occ3D labels and 2D labels) and point the tiny config at it through a
PriorOcc info cache, so they need neither nuScenes nor the (slow) synthetic-world renderer.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "training"))

from priorocc_core.classes import CAMERAS, FREE  # noqa: E402
from priorocc_core.config import load_config  # noqa: E402

TINY = REPO / "training" / "configs" / "tiny.yaml"


def make_tiny_dataset(root: Path, n: int = 4, hw=(90, 160), seed: int = 0) -> Path:
    """n keyframes of one scene under ``root``; returns the info cache (JSON) describing them."""
    from PIL import Image

    from priorocc_core.data.infos import write_info_cache
    from priorocc_core.data.io import seg_label_path, write_occ_gt_atomic
    from priorocc_core.data.synthetic.rig import builtin_rig

    rng = np.random.default_rng(seed)
    rig = builtin_rig()
    records = []
    for k in range(n):
        token = f"tok{k:04d}"
        e2g = np.eye(4)
        e2g[0, 3] = 2.0 * k  # the ego drives 2 m per keyframe
        cams = {}
        for cam in CAMERAS:
            path = root / "samples" / cam / f"{token}_{cam}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            blocks = rng.integers(0, 255, (hw[0] // 10 + 1, hw[1] // 10 + 1, 3), dtype=np.uint8)
            img = np.kron(blocks, np.ones((10, 10, 1), dtype=np.uint8))[: hw[0], : hw[1]]
            Image.fromarray(img).save(path, quality=90)
            lab = np.kron(rng.integers(0, 17, (hw[0] // 10 + 1, hw[1] // 10 + 1)), np.ones((10, 10), dtype=np.int64))
            lab = lab[: hw[0], : hw[1]].astype(np.uint8)
            lab[:10] = 255
            lp = seg_label_path(root / "seg_2d_labels", root, path)
            lp.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(lab).save(lp)
            cams[cam] = {"path": str(path.relative_to(root)), "K": rig.K_at(cam, hw).tolist(),
                         "sensor2ego": rig.cameras[cam].sensor2ego.tolist(), "ego2global": e2g.tolist()}
        sem = np.full((200, 200, 16), FREE, dtype=np.uint8)
        sem[:, :, 0] = 11
        sem[:, 140:, 0:3] = 13
        for _ in range(12):
            x, y = rng.integers(20, 180, 2)
            sem[x:x + 8, y:y + 5, 1:5] = rng.choice([4, 10, 15, 16])
        mask = (rng.random((200, 200, 16)) < 0.5).astype(np.uint8)
        write_occ_gt_atomic(root / "gts" / "scene-t" / token / "labels.npz", sem, mask, mask)
        records.append({"token": token, "scene_name": "scene-t", "timestamp": 1_000_000 + 500_000 * k,
                        "ego2global": e2g.tolist(), "cams": cams,
                        "lidar": {"path": "none.pcd.bin", "lidar2ego": rig.lidar.sensor2ego.tolist()}})
    info = root / "infos.json"
    write_info_cache(records, info)
    return info


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tinydata")
    info = make_tiny_dataset(root, n=3)
    return root, info


def tiny_cfg(root: Path, info: Path, extra=()):
    return load_config(TINY, [f"data.dataroot={root}", f"data.info_file_train={info}", f"data.info_file_val={info}",
                              "train.log_interval=1", *extra])


def _losses(wd: Path) -> list[dict]:
    return [json.loads(line) for line in (wd / "losses.jsonl").read_text().splitlines() if line.strip()]


def test_lr_schedule():
    from train import LRSchedule

    s = LRSchedule(1e-3, warmup_iters=10, warmup_ratio=0.001, step_epochs=[2, 3], iters_per_epoch=100)
    assert s(0) == pytest.approx(1e-6)
    assert s(5) == pytest.approx(1e-3 * (1 - 0.5 * 0.999))
    assert s(10) == pytest.approx(1e-3) and s(199) == pytest.approx(1e-3)
    assert s(200) == pytest.approx(1e-4) and s(300) == pytest.approx(1e-5)


def test_lr_schedule_cosine():
    """Cosine after warm-up (mmcv CosineAnnealing by iteration): lr at warm-up end, min_lr at the last
    iteration, the mean of both half way. Mutation tried: progress measured from 0 instead of the
    warm-up end (s(10) < lr) fails."""
    from train import LRSchedule

    s = LRSchedule(1e-3, 10, 0.01, [1], 100, policy="cosine", total_iters=110, min_lr_ratio=0.02)
    assert s(0) == pytest.approx(1e-5)
    assert s(10) == pytest.approx(1e-3)
    assert s(60) == pytest.approx((1e-3 + 2e-5) / 2)
    assert s(110) == pytest.approx(2e-5) and s(500) == pytest.approx(2e-5)
    assert all(s(i) >= s(i + 1) for i in range(10, 110))
    with pytest.raises(SystemExit, match="lr_policy"):
        LRSchedule(1e-3, 0, 0.1, [1], 10, policy="poly")


def test_cpu_autocast_follows_cpu_flags(monkeypatch):
    """CPU bf16 autocast only with native bf16 (AMX / avx512_bf16 in the flags), fp32 otherwise."""
    import torch

    import train

    assert train.autocast_mode(torch.device("cpu"), False) is None
    monkeypatch.setattr(train, "cpu_bf16_supported", lambda: True)
    assert train.autocast_mode(torch.device("cpu"), True) == torch.bfloat16
    monkeypatch.setattr(train, "cpu_bf16_supported", lambda: False)
    assert train.autocast_mode(torch.device("cpu"), True) is None
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").is_file() else ""
    monkeypatch.undo()
    assert train.cpu_bf16_supported() == (" amx_bf16" in flags or " avx512_bf16" in flags)


def test_sampler_shards_and_seeds():
    from train import SeededSampler

    a = SeededSampler(10, world=2, rank=0, seed=3)
    b = SeededSampler(10, world=2, rank=1, seed=3)
    a.set_epoch(1)
    b.set_epoch(1)
    ia, ib = [i for i, _ in a], [i for i, _ in b]
    assert sorted(ia + ib) == list(range(10))
    a2 = SeededSampler(10, world=2, rank=0, seed=3)
    a2.set_epoch(1, start=2)
    assert list(a2) == list(a)[2:]  # resume skips, same (index, seed) pairs
    a.set_epoch(2)
    assert [i for i, _ in a] != ia  # another epoch, another order


def test_resume_continues_exactly(tiny_data, tmp_path):
    """4 iterations in one run == the same run resumed from its step-2 checkpoint, bitwise: losses and
    final weights (EMA on, crossing an epoch boundary: 3 samples per epoch).

    The guarantee is for one machine at one torch thread count, under any load; this test runs both in
    one process, so that holds. The 1.25e-5 difference seen in a loaded suite (issue 24) was not the
    resume: two uninterrupted runs in one process already differed from step 2 on, in the gradients of
    everything upstream of the BEV pooling, because the backward of ``x[ranks]`` in
    bev_pool_index_add adds with atomics across threads (order set by thread timing, so by load).
    index_select's backward sums in a fixed order. Seen bitwise on an avx512_bf16 EPYC (2 threads,
    loaded): fp32, bf16 autocast (train.amp=true), and avx2 kernels (ATEN_CPU_CAPABILITY=avx2
    ONEDNN_MAX_CPU_ISA=AVX2). Not guaranteed, and not asserted: resuming at another thread count or on
    another ISA -- reductions split differently there (the avx2 and avx512 runs differ from each
    other in the 7th digit of loss_2d_seg).

    Mutation caught: bev_pool_index_add gathering with ``x[ranks]`` again (2 threads, loaded 2-core
    machine: loss_occ differed at step 3 by 8e-8 relative, 11 M final weight values differed)."""
    from train import train

    root, info = tiny_data
    opts = ["train.ema=true", "train.warmup_iters=2", "train.max_iters=4"]
    a = tmp_path / "a"
    train(tiny_cfg(root, info, opts), a, progress=False)
    # the interrupted run: the same config, checkpointing every 2 iterations; its step-2
    # checkpoint is where it "died"; the resumed run continues from it in the same work dir
    b = tmp_path / "b"
    train(tiny_cfg(root, info, opts), b, progress=False, checkpoint_every=2)
    ck = b / "checkpoints" / "iter_0000002"
    assert (ck / "train_state.json").is_file() and (ck / "ema.safetensors").is_file()
    st = json.loads((ck / "train_state.json").read_text())
    assert st["step"] == 2 and st["iter_in_epoch"] == 2 and "rank0" in st["rng"]
    shutil.rmtree(b / "final")
    (b / "losses.jsonl").write_text("".join(l + "\n" for l in (b / "losses.jsonl").read_text().splitlines()[:2]))
    train(tiny_cfg(root, info, opts), b, resume=str(ck), progress=False)

    la, lb = _losses(a), _losses(b)
    assert [r["step"] for r in la] == list(range(1, 5)) and [r["step"] for r in lb] == list(range(1, 5))
    for ra, rb in zip(la, lb):
        for k in ("loss", "loss_occ", "loss_2d_seg", "lr"):
            assert ra[k] == rb[k], (k, ra, rb)
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "final" / "model.safetensors")), load_file(str(b / "final" / "model.safetensors"))
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} of {len(wa)} final tensors differ, first {differ[:3]}"
    # the work dir: resolved config, TensorBoard events, latest pointer, final checkpoint
    assert "max_iters: 4" in (b / "config.yaml").read_text()
    assert list((b / "tb").glob("events.out.tfevents.*"))
    assert (b / "checkpoints" / "latest").read_text() == "iter_0000004"
    assert not list((b / "checkpoints").glob(".*tmp*"))  # no half-written checkpoint left


def test_resume_auto_and_load_from(tiny_data, tmp_path):
    from train import train

    from priorocc_core.checkpoint import load_checkpoint

    root, info = tiny_data
    wd = tmp_path / "w"
    s = train(tiny_cfg(root, info, ["train.max_iters=2"]), wd, progress=False)
    assert s["steps"] == 2
    model, cfg, meta = load_checkpoint(wd / "final")
    assert meta["step"] == 2 and cfg.name == "tiny"
    s = train(tiny_cfg(root, info, ["train.max_iters=3"]), wd, resume="auto", progress=False)
    assert s["steps"] == 3 and len(_losses(wd)) == 3 and json.loads((wd / "checkpoints" / "iter_0000003" /
                                                                    "train_state.json").read_text())["epoch"] == 1
    # --load-from a project checkpoint: initial weights equal the checkpoint's
    wd2 = tmp_path / "w2"
    s = train(tiny_cfg(root, info, ["train.max_iters=1", "train.lr=0.0"]), wd2, load_from=str(wd / "final"),
              progress=False)
    log = (wd2 / "train.log").read_text()
    assert "--load-from" in log and "loaded" in log
    with pytest.raises(SystemExit, match="not a training checkpoint"):
        train(tiny_cfg(root, info, ["train.max_iters=1"]), tmp_path / "w3", resume=str(wd / "final"), progress=False)


def test_torchrun_two_processes_then_evaluate(tiny_data, tmp_path):
    """CPU DDP (gloo) through dist_train.sh, then evaluate.py on its final checkpoint."""
    root, info = tiny_data
    wd = tmp_path / "ddp"
    # PORT 0: a free port (--standalone); TMPDIR: torchrun's log folder (torchelastic_*), never removed by it
    env = dict(os.environ, PYTHON=sys.executable, PORT="0", OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))
    opts = [f"data.dataroot={root}", f"data.info_file_train={info}", f"data.info_file_val={info}",
            "train.max_iters=2", "train.log_interval=1"]
    cmd = ["bash", str(REPO / "training" / "dist_train.sh"), str(TINY), "2", "--work-dir", str(wd), "--no-progress",
           "--device", "cpu", "--cfg-options", *opts]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "2 process(es) on cpu" in res.stdout
    summary = json.loads((wd / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    st = json.loads((wd / "checkpoints" / "iter_0000002" / "train_state.json").read_text())
    assert sorted(st["rng"]) == ["rank0", "rank1"] and st["world_size"] == 2

    out = tmp_path / "eval.json"
    cmd = [sys.executable, str(REPO / "training" / "evaluate.py"), str(TINY), str(wd / "final"), "--out", str(out),
           "--device", "cpu", "--max-samples", "2", "--save-pred", str(tmp_path / "pred"), "--save-logits",
           "--cfg-options", *opts[:3]]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "driveable_surface" in res.stdout and "MEAN" in res.stdout
    r = json.loads(out.read_text())
    occ = r["occ_mask_camera"]["per_class"]
    assert r["samples"] == 2 and occ["driveable_surface"] is not None  # the ground the labels are full of
    assert r["mIoU"] == pytest.approx(np.mean([v for k, v in occ.items() if k != "free" and v is not None]))
    assert "RayIoU" in r and r["rayiou_origins"] == ["scene lidar origins"]
    saved = sorted((tmp_path / "pred").glob("*.npz"))
    assert len(saved) == 2
    with np.load(saved[0]) as z:  # float16 logits beside the labels, for outside comparisons by numbers
        assert z["logits"].dtype == np.float16 and z["logits"].shape == (200, 200, 16, 18)
        assert (z["logits"].astype(np.float32).argmax(-1) == z["pred"]).mean() > 0.99
    seg = r["seg2d"]["per_class"]
    assert r["seg2d"]["images"] == 2
    assert r["mIoU_2d"] == pytest.approx(np.mean([v for v in seg.values() if v is not None]))
