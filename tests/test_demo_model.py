"""The shipped demo model on the `make demo` world: metrics above floors, and the cameras matter.

* ``test_make_demo_reaches_the_floors`` runs training/demo.py as `make demo` does (models/demo,
  seed 4242) and checks mIoU and per-class IoU against tests/demo_model_floors.py.
* ``test_blanking_one_camera_changes_only_its_frustum``: a black CAM_FRONT / CAM_BACK image changes
  many voxels, all but a few inside that camera's frustum dilated by 8 m in BEV (the BEV
  encoder's reach).

Mutations checked (each fails this file): the BEV features multiplied by zero in PriorOcc.forward
(floors; no voxel changes when a camera is blanked); the injector's fusion dropped (FusionLayer
returning the features unchanged: floors); x and y swapped in the occupancy head (floors;
changes land outside the frustum); make_predictor forced to torch (the demo's metrics.json
reports the runtime that ran, test_imported_weights_everywhere asserts it).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests import demo_model_floors as floors
from tests.conftest import ROOT

DEMO = ROOT / "models" / "demo"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    import sys

    sys.path.insert(0, str(ROOT / "training"))
    import demo

    out = tmp_path_factory.mktemp("demo")
    assert demo.main(["--checkpoint", str(DEMO), "--out", str(out)]) == 0  # `make demo`'s command
    return out, json.loads((out / "metrics.json").read_text())


def test_make_demo_reaches_the_floors(demo_run):
    from priorocc_core.cli import resolve_choice

    _, m = demo_run
    auto = resolve_choice("auto", "auto", "auto")  # `make demo` runs backend auto: this machine's choice
    assert m["world_seed"] == 4242 and m["keyframes"] == 2
    assert (m["backend"], m["precision"]) == (auto.backend, auto.precision), (m, auto)
    res = m["mask_camera"]
    assert res["mIoU"] >= floors.MIOU_FLOOR, res
    low = {c: res["per_class"][c] for c, f in floors.CLASS_FLOORS.items() if not (res["per_class"][c] or 0) >= f}
    assert not low, f"classes below their floors {floors.CLASS_FLOORS}: {low}"


def _frustum_bev(cam2ego: np.ndarray, K: np.ndarray, hw, grid) -> np.ndarray:
    """(Dx, Dy) bool: BEV columns holding a voxel centre that projects into the image in front."""
    from priorocc_core.geometry import project_points

    (nx, ny, nz) = grid.occ_size
    axes = [np.arange(n) * a[2] + a[0] + a[2] / 2 for n, a in zip((nx, ny, nz), (grid.x, grid.y, grid.occ_z))]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    uv, depth = project_points(pts, cam2ego, K)
    h, w = hw
    inside = (depth > 0.1) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    return inside.reshape(nx, ny, nz).any(2)


@pytest.mark.parametrize("camera", ["CAM_FRONT", "CAM_BACK"])
def test_blanking_one_camera_changes_only_its_frustum(demo_run, camera):
    from priorocc_core.backends import make_predictor
    from priorocc_core.data import OccDataset
    from priorocc_core.data.io import read_image_rgb

    out, _ = demo_run
    pred = make_predictor(DEMO)
    cfg = pred.cfg.with_overrides([f"data.dataroot={out / 'world'}", "data.version=v1.0-mini", "data.val_split=all",
                                   "data.load_seg_labels=false"])
    s = OccDataset(cfg, split="val", train=False)[0]
    images = [np.asarray(read_image_rgb(p)) for p in s["image_paths"]]
    K, cam2ego = s["K"].numpy(), s["cam2ego"].numpy()
    c = list(cfg.model.image.cameras).index(camera)
    full = pred.predict(images, K, cam2ego).occupancy
    blanked = [im if i != c else np.zeros_like(im) for i, im in enumerate(images)]
    changed = full != pred.predict(blanked, K, cam2ego).occupancy
    margin = 20  # cells (8 m)
    frustum = _frustum_bev(cam2ego[c], K[c], images[c].shape[:2], cfg.model.grid)
    near = torch.nn.functional.max_pool2d(torch.from_numpy(frustum)[None, None].float(), 2 * margin + 1, 1,
                                          margin)[0, 0].numpy() > 0
    assert near.mean() < 0.75, "frustum + margin covers nearly everything: the test would prove nothing"
    outside = int((changed & ~near[:, :, None]).sum())
    assert changed.sum() >= 200, f"blanking {camera} changed only {int(changed.sum())} voxels"
    assert outside <= 0.03 * changed.sum(), f"{outside} of {int(changed.sum())} changed voxels lie outside {camera}'s frustum"
