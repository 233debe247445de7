"""training/evaluate.py: scoring saved predictions against real Occ3D labels, the printed table."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from priorocc_core.config import GridConfig

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TOKEN = "29796060110c4163b07f06eff4af0753"
REAL_LABELS = SHARED / "occ3d-real" / TOKEN / "labels.npz"
sys.path.insert(0, str(REPO / "training"))


def _real():
    if not REAL_LABELS.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"real Occ3D labels missing in CI: {REAL_LABELS}")
        pytest.skip(f"real Occ3D labels not available at {REAL_LABELS} (../shared/data absent)")
    return np.load(REAL_LABELS)


def _gt_root(tmp_path: Path) -> Path:
    root = tmp_path / "gts"
    (root / "scene-0061" / TOKEN).mkdir(parents=True)
    (root / "scene-0061" / TOKEN / "labels.npz").symlink_to(REAL_LABELS)
    return root


def test_pred_dir_identity_and_perturbation_cli(tmp_path):
    d = _real()
    sem = d["semantics"]
    gt_root = _gt_root(tmp_path)
    preds = tmp_path / "preds"
    preds.mkdir()
    np.savez_compressed(preds / f"{TOKEN}.npz", pred=sem)
    out = tmp_path / "eval.json"
    cmd = [sys.executable, str(REPO / "training" / "evaluate.py"), str(REPO / "training" / "configs" / "tiny.yaml"),
           "--pred-dir", str(preds), "--gt-root", str(gt_root), "--out", str(out), "--also-no-mask"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    # the per-class table is printed
    for name in ("driveable_surface", "vegetation", "MEAN"):
        assert name in res.stdout
    r = json.loads(out.read_text())
    assert r["mIoU"] == pytest.approx(100.0) and r["mIoU_no_mask"] == pytest.approx(100.0)
    assert r["RayIoU"] == pytest.approx(100.0)
    assert r["occ_mask_camera"]["per_class"]["bicycle"] is None  # absent class: NaN -> null

    # cars predicted as trucks: 9 of 11 classes right inside the camera mask (hand computation)
    pred = sem.copy()
    pred[sem == 4] = 10
    np.savez_compressed(preds / f"{TOKEN}.npz", pred=pred)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    r = json.loads(out.read_text())
    assert r["mIoU"] == pytest.approx(100 * 9 / 11)
    assert r["occ_mask_camera"]["per_class"]["car"] == 0.0
    assert r["rayiou"]["per_class"]["car"]["@4"] == 0.0
    assert r["RayIoU"] < 100.0


def test_pred_dir_errors_name_the_file(tmp_path):
    _real()
    from evaluate import evaluate_pred_dir

    gt_root = _gt_root(tmp_path)
    preds = tmp_path / "preds"
    preds.mkdir()
    np.savez_compressed(preds / f"{TOKEN}.npz", wrong=np.zeros(3))
    with pytest.raises(SystemExit, match="expected an array 'pred'"):
        evaluate_pred_dir(str(preds), str(gt_root), GridConfig())
    (preds / f"{TOKEN}.npz").unlink()
    np.savez_compressed(preds / "unknowntoken.npz", pred=np.zeros((200, 200, 16), np.uint8))
    with pytest.raises(SystemExit, match="no ground truth for sample unknowntoken"):
        evaluate_pred_dir(str(preds), str(gt_root), GridConfig())
