"""What the shipped demo model (models/demo) must reach on the `make demo` world (seed 4242):
floors just under the figures measured when the model was shipped. Whoever ships a new demo
model measures it (python training/demo.py --out /tmp/d; see metrics.json) and updates these.

Measured 2026-11-30 for the ablation-small demo model, key ego first_camera, torch fp32 CPU:
mIoU 14.98 (mask_camera); driveable_surface 63.6, terrain 86.0, sidewalk 12.3, free 98.0.
"""
MIOU_FLOOR = 13.5  # mask_camera mIoU over classes 0-16
CLASS_FLOORS = {  # per-class IoU (mask_camera) of the classes the model learns
    "driveable_surface": 58.0,
    "terrain": 80.0,
    "sidewalk": 9.0,
    "free": 96.0,
}
