"""ros2 launch priorocc occupancy.launch.py checkpoint:=/path/to/ckpt [bag:=/path/to/bag] [rviz:=true]

Starts the PriorOcc occupancy node (package ``priorocc``, executable ``occupancy_node``),
optionally plays a bag with ``ros2 bag play --clock`` (and then sets ``use_sim_time``), and
rviz2 with the shipped configuration (voxel markers, BEV grid, the six seg overlays).

Arguments: checkpoint, device (cpu), compressed (true), image_topic (pattern with {camera};
empty = /{camera}/image_rect_compressed), camera_info_topic, slop (0.06 s), base_frame
(base_link), calibration_file, publish_overlay, bag, rate (1.0), loop (false), rviz (true),
rviz_config, node_name (priorocc), remap (FROM=TO,...).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGS = [
    ("checkpoint", "", "checkpoint directory (model.safetensors + config.yaml)"),
    ("device", "cpu", "torch device: cpu, cuda, cuda:0"),
    ("backend", "torch", "inference backend: torch, onnxruntime, openvino"),
    ("precision", "fp32", "fp32, bf16, fp16 (GPU)"),
    ("compressed", "true", "subscribe to sensor_msgs/CompressedImage (true) or sensor_msgs/Image (false)"),
    ("image_topic", "", "image topic pattern with {camera}; empty = /{camera}/image_rect_compressed"),
    ("camera_info_topic", "/{camera}/camera_info", "camera_info topic pattern with {camera}"),
    ("slop", "0.06", "approximate-time slop in seconds"),
    ("base_frame", "base_link", "TF frame of the outputs and of the camera extrinsics"),
    ("calibration_file", "", "YAML calibration used when TF has no camera transform"),
    ("publish_overlay", "true", "publish ~/seg_overlay/<CAM> images"),
    ("node_name", "priorocc", "node name; outputs go to /<node_name>/..."),
    ("bag", "", "optional bag to play with 'ros2 bag play --clock' (sets use_sim_time)"),
    ("rate", "1.0", "bag playback rate"),
    ("loop", "false", "loop the bag"),
    ("rviz", "true", "start rviz2 with the PriorOcc configuration"),
    ("rviz_config", "", "rviz2 configuration; empty = the shipped priorocc.rviz"),
    ("remap", "", "topic remaps for the node, comma separated FROM=TO pairs, e.g. /CAM_FRONT/camera_info=/front/info"),
]


def _launch_setup(context, *args, **kwargs):
    def get(name):
        return LaunchConfiguration(name).perform(context)

    bag = get("bag")
    use_sim_time = bool(bag)
    params = {
        "checkpoint": get("checkpoint"),
        "device": get("device"),
        "backend": get("backend"),
        "precision": get("precision"),
        "compressed": get("compressed").lower() == "true",
        "image_topic": get("image_topic"),
        "camera_info_topic": get("camera_info_topic"),
        "slop": float(get("slop")),
        "base_frame": get("base_frame"),
        "calibration_file": get("calibration_file"),
        "publish_overlay": get("publish_overlay").lower() == "true",
        "use_sim_time": use_sim_time,
    }
    actions = [
        Node(
            package="priorocc",
            executable="occupancy_node",
            name=get("node_name"),
            output="screen",
            arguments=["--transport", "ros"],
            parameters=[params],
            remappings=[tuple(p.split("=", 1)) for p in get("remap").split(",") if "=" in p],
        )
    ]
    if bag:
        cmd = ["ros2", "bag", "play", bag, "--clock", "--rate", get("rate")]
        if get("loop").lower() == "true":
            cmd.append("--loop")
        actions.append(ExecuteProcess(cmd=cmd, output="screen"))
    rviz_config = get("rviz_config") or PathJoinSubstitution([FindPackageShare("priorocc"), "rviz", "priorocc.rviz"])
    actions.append(
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", rviz_config],
            parameters=[{"use_sim_time": use_sim_time}],
            condition=IfCondition(LaunchConfiguration("rviz")),
            output="screen",
        )
    )
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=desc) for name, default, desc in ARGS]
        + [OpaqueFunction(function=_launch_setup)]
    )
