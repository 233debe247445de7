"""Synthetic nuScenes-format world: procedural scenes, ray-cast cameras and lidar, Occ3D
ground truth and exact 2D labels (see writer.generate_world)."""
from .rig import Rig, builtin_rig, load_rig
from .world import Scene, build_scene, build_world
from .writer import SYNTHETIC_VERSION, generate_world

__all__ = ["SYNTHETIC_VERSION", "Rig", "Scene", "build_scene", "build_world", "builtin_rig", "generate_world", "load_rig"]
