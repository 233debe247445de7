# mmengine-style config for PriorOcc-R50 (FlashOCC M1 + SemanticInjector) through the registries.
#   from mmengine.config import Config
#   from mmdet3d.registry import MODELS
#   cfg = Config.fromfile("priorocc_core/mm_plugin/configs/priorocc_r50_mmengine.py")
#   model = MODELS.build(cfg.model)       # custom_imports registers PriorOcc first
# The model keys are the sections of priorocc_core.config.ModelConfig (see docs/design.md).
custom_imports = dict(imports=["priorocc_core.mm_plugin"], allow_failed_imports=False)

point_cloud_range = [-40.0, -40.0, -1.0, 40.0, 40.0, 5.4]
occ_class_names = [
    "others", "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
    "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain", "manmade",
    "vegetation", "free",
]
data_root = "data/nuscenes/"

model = dict(
    type="PriorOcc",
    grid=dict(x=[-40.0, 40.0, 0.4], y=[-40.0, 40.0, 0.4], z=[-1.0, 5.4, 6.4], occ_z=[-1.0, 5.4, 0.4],
              depth=[1.0, 45.0, 0.5]),
    image=dict(input_size=[256, 704]),
    backbone=dict(depth=50, out_indices=[2, 3]),
    neck=dict(in_channels=[1024, 2048], out_channels=256),
    injector=dict(enabled=True, num_classes=17, mid_channels=256, softmax_before_fusion=False, loss_weight=0.3),
    view_transformer=dict(in_channels=256, out_channels=64, downsample=16),
    bev_encoder=dict(num_layer=[2, 2, 2], num_channels=[128, 256, 512], out_channels=256),
    head=dict(out_dim=256, num_classes=18, use_mask=True, class_balance=False),
)

train_pipeline_extra = [
    dict(type="LoadSeg2DLabels", data_root=data_root),  # adds results["gt_seg_2d"] (N, H, W)
]

train_dataset = dict(type="PriorOccDataset", config_file="training/configs/priorocc-r50.yaml", split="train",
                     train=True)
val_dataset = dict(type="PriorOccDataset", config_file="training/configs/priorocc-r50.yaml", split="val",
                   train=False)

optim_wrapper = dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-4, weight_decay=1e-2),
                     clip_grad=dict(max_norm=5, norm_type=2))
load_from = "ckpts/bevdet-r50-cbgs.pth"  # import with priorocc_import before use with mmengine
