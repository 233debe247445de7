"""Data: nuScenes / Occ3D / FlashOCC info files -> network samples, the synthetic world, 2D labels.

    from priorocc_core.data import OccDataset, collate
"""
from .dataset import OccDataset, augment_label, collate, depth_map, fit_loader_workers, resolve_split
from .infos import load_flashocc_pkl, load_info_file, records_from_flashocc, records_from_nuscenes, write_info_cache
from .io import DataError, load_lidar_points, load_occ_gt, load_seg_label, read_image_rgb, seg_label_path

__all__ = [
    "DataError", "OccDataset", "augment_label", "collate", "depth_map", "fit_loader_workers", "load_flashocc_pkl", "load_info_file",
    "load_lidar_points", "load_occ_gt", "load_seg_label", "read_image_rgb", "records_from_flashocc",
    "records_from_nuscenes", "resolve_split", "seg_label_path", "write_info_cache",
]
