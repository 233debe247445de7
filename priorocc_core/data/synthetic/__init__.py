"""Synthetic nuScenes-format world: procedural scenes, ray-cast cameras and lidar, Occ3D
ground truth and exact 2D labels (see writer.generate_world)."""
from .rig import RIG_PRESETS, Rig, builtin_rig, load_rig, rig_preset
from .world import Scene, build_scene, build_world
from .writer import SYNTHETIC_VERSION, generate_world

__all__ = ["RIG_PRESETS", "SYNTHETIC_VERSION", "Rig", "Scene", "build_scene", "build_world", "builtin_rig",
           "generate_world", "load_rig", "rig_preset"]
