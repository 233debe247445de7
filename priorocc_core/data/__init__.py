"""Data: nuScenes / Occ3D / FlashOCC info files -> network samples, the synthetic world, 2D labels.

    from priorocc_core.data import OccDataset, collate
"""
from .dataset import (
    OccDataset,
    augment_label,
    batch_to,
    collate,
    config_num_adj,
    depth_map,
    fit_loader_workers,
    resolve_split,
)
from .infos import (
    link_previous,
    load_flashocc_pkl,
    load_info_file,
    previous_frames,
    records_from_flashocc,
    records_from_nuscenes,
    write_info_cache,
)
from .io import DataError, load_lidar_points, load_occ_gt, load_seg_label, read_image_rgb, seg_label_path

__all__ = [
    "DataError", "OccDataset", "augment_label", "batch_to", "collate", "config_num_adj", "depth_map", "fit_loader_workers",
    "link_previous", "load_flashocc_pkl", "load_info_file", "load_lidar_points", "load_occ_gt", "load_seg_label",
    "previous_frames", "read_image_rgb", "records_from_flashocc", "records_from_nuscenes", "resolve_split",
    "seg_label_path", "write_info_cache",
]
