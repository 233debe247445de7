"""Occ3D-nuScenes classes, colours and the camera order (see docs/design.md)."""
from __future__ import annotations

import numpy as np

CAMERAS = (
    "CAM_FRONT_LEFT",
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_LEFT",
    "CAM_BACK",
    "CAM_BACK_RIGHT",
)

OCC_CLASSES = (
    "others",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction_vehicle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "trailer",
    "truck",
    "driveable_surface",
    "other_flat",
    "sidewalk",
    "terrain",
    "manmade",
    "vegetation",
    "free",
)
NUM_OCC_CLASSES = len(OCC_CLASSES)  # 18, index 17 = free
FREE = 17
NUM_SEG_CLASSES = 17  # 2D prior classes: Occ3D 0-16 (no "free" in an image)
IGNORE = 255

# RGB colours per class (the palette Occ3D visualisations commonly use).
OCC_COLORS = np.array(
    [
        [0, 0, 0],  # others
        [255, 120, 50],  # barrier
        [255, 192, 203],  # bicycle
        [255, 255, 0],  # bus
        [0, 150, 245],  # car
        [0, 255, 255],  # construction_vehicle
        [200, 180, 0],  # motorcycle
        [255, 0, 0],  # pedestrian
        [255, 240, 150],  # traffic_cone
        [135, 60, 0],  # trailer
        [160, 32, 240],  # truck
        [255, 0, 255],  # driveable_surface
        [139, 137, 137],  # other_flat
        [75, 0, 75],  # sidewalk
        [150, 240, 80],  # terrain
        [230, 230, 250],  # manmade
        [0, 175, 0],  # vegetation
        [255, 255, 255],  # free
    ],
    dtype=np.uint8,
)

# Cityscapes (19 train ids, SegFormer's label order) -> Occ3D class, 255 = no counterpart.
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_TO_OCC = np.array(
    [
        11,  # road -> driveable_surface
        13,  # sidewalk
        15,  # building -> manmade
        15,  # wall -> manmade
        1,  # fence -> barrier
        15,  # pole -> manmade
        8,  # traffic light -> traffic_cone (PriorOcc's map)
        8,  # traffic sign -> traffic_cone (PriorOcc's map)
        16,  # vegetation
        14,  # terrain
        255,  # sky -> ignore
        7,  # person -> pedestrian
        7,  # rider -> pedestrian
        4,  # car
        10,  # truck
        3,  # bus
        9,  # train -> trailer
        6,  # motorcycle
        2,  # bicycle
    ],
    dtype=np.uint8,
)


def cityscapes_to_occ_lut() -> np.ndarray:
    """(256,) uint8 lookup table: Cityscapes train id -> Occ3D class (255 elsewhere)."""
    lut = np.full(256, IGNORE, dtype=np.uint8)
    lut[: len(CITYSCAPES_TO_OCC)] = CITYSCAPES_TO_OCC
    return lut
