"""What the shipped demo model (models/demo) must reach on the `make demo` world (seed 4242):
floors just under the figures measured when the model was shipped. Whoever ships a new demo
model measures it (python training/demo.py --out /tmp/d; see metrics.json) and updates these.

Measured 2026-11-30 for the demo-small model (2200 iterations, training/configs/demo-small.yaml,
RESULTS.md), `make demo` with backend auto (OpenVINO fp32 on this avx2 CPU): mIoU 29.48
(mask_camera); bus 37.9, car 14.9, manmade 12.6, vegetation 3.3, driveable_surface 72.3,
other_flat 49.9, sidewalk 71.5, terrain 91.3, free 88.9. The model shipped before (no object
class) had mIoU 14.98 and fails these floors.
"""
MIOU_FLOOR = 27.5  # mask_camera mIoU over classes 0-16
CLASS_FLOORS = {  # per-class IoU (mask_camera) of the classes the model learns
    "bus": 33.0,
    "car": 12.0,
    "manmade": 10.0,
    "vegetation": 2.0,
    "driveable_surface": 68.0,
    "other_flat": 44.0,
    "sidewalk": 66.0,
    "terrain": 88.0,
    "free": 86.0,
}
