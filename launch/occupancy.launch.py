"""ros2 launch priorocc occupancy.launch.py checkpoint:=/path/to/ckpt [bag:=/path/to/bag] [rviz:=true]

Starts the PriorOcc occupancy node (package ``priorocc``, executable ``occupancy_node``),
optionally a bag player and rviz2 with the shipped configuration (voxel markers, BEV grid,
the six seg overlays).

- Every scalar node parameter is a launch argument of the same name and default
  (``priorocc_ros.params``, the one definition), e.g. ``slop:=0.05 publish_overlay:=false``.
- ``bag:=DIR`` plays a bag with ``/clock`` and sets ``use_sim_time``. The player starts when
  the node logs that it is running (model loaded, subscriptions made), so no set is played
  into a node that is still loading; the project's player also waits until the node's
  subscriptions are matched. ``player:=``: ``ros2bag`` (``ros2 bag play``), ``priorocc``
  (the package's own ``priorocc_play``, pure DDS, for machines without rosbag2), ``auto``
  (default: ``ros2bag`` when it is installed, else ``priorocc``). ``rate``, ``loop``.
- ``rviz:=true`` starts rviz2 with ``rviz_config`` (default: the shipped priorocc.rviz with
  its topics moved to ``/<node_name>/...`` and its frames to ``base_frame``).
- ``node_name`` (outputs go to ``/<node_name>/...``), ``remap`` (FROM=TO,... for the node).
"""
import os
import tempfile

from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessIO
from launch_ros.actions import Node

from priorocc_ros.occupancy_node import READY_LINE
from priorocc_ros.params import from_launch_value, launch_arguments

NODE_PARAMETERS = launch_arguments()
LAUNCH_ONLY = [
    ("node_name", "priorocc", "node name; outputs go to /<node_name>/..."),
    ("bag", "", "optional bag to play with /clock (sets use_sim_time)"),
    ("player", "auto", "bag player: ros2bag (ros2 bag play), priorocc (priorocc_play, no rosbag2 needed), "
                       "auto (ros2bag if installed, else priorocc)"),
    ("rate", "1.0", "bag playback rate"),
    ("bag_delay", "1.0", "seconds the player waits (after the node runs and, for priorocc, its subscriptions "
                         "are matched) before the first message, so discovery completes both ways"),
    ("loop", "false", "loop the bag"),
    ("rviz", "true", "start rviz2 with the PriorOcc configuration"),
    ("rviz_config", "", "rviz2 configuration; empty = the shipped priorocc.rviz for node_name and base_frame"),
    ("remap", "", "topic remaps for the node, comma separated FROM=TO pairs, e.g. /CAM_FRONT/camera_info=/front/info"),
]


def _has_package(name):
    try:
        get_package_prefix(name)
        return True
    except PackageNotFoundError:
        return False


def player_command(player, bag, rate, loop, delay="0"):
    """The command line of the bag player (``player``: ros2bag, priorocc or auto)."""
    if player == "auto":
        player = "ros2bag" if _has_package("ros2bag") else "priorocc"
    if player == "ros2bag":
        cmd = ["ros2", "bag", "play", bag, "--clock", "--rate", rate, "--delay", delay]
    elif player == "priorocc":
        exe = os.path.join(get_package_prefix("priorocc"), "lib", "priorocc", "priorocc_play")
        cmd = [exe, bag, "--clock", "--rate", rate, "--wait-for-subscribers", "1", "--delay", delay]
    else:
        raise ValueError(f"player:={player!r}: expected ros2bag, priorocc or auto")
    return cmd + (["--loop"] if loop else [])


def rviz_config_for(node_name, base_frame):
    """The shipped rviz configuration with topics under /<node_name>/ and frames = base_frame."""
    src = os.path.join(get_package_share_directory("priorocc"), "rviz", "priorocc.rviz")
    with open(src) as f:
        text = f.read()
    if (node_name, base_frame) == ("priorocc", "base_link"):
        return src
    text = text.replace("/priorocc/", f"/{node_name}/").replace(": base_link", f": {base_frame}")
    fd, path = tempfile.mkstemp(prefix=f"{node_name}_", suffix=".rviz")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def _launch_setup(context, *args, **kwargs):
    def get(name):
        return context.launch_configurations[name]

    bag = get("bag")
    params = {name: from_launch_value(name, get(name)) for name, _, _ in NODE_PARAMETERS}
    params["use_sim_time"] = bool(bag)
    node = Node(
        package="priorocc",
        executable="occupancy_node",
        name=get("node_name"),
        output="screen",
        arguments=["--transport", "ros"],
        parameters=[params],
        remappings=[tuple(p.split("=", 1)) for p in get("remap").split(",") if "=" in p],
    )
    actions = [node]
    if bag:
        player = ExecuteProcess(cmd=player_command(get("player"), bag, get("rate"), get("loop").lower() == "true",
                                                   get("bag_delay")),
                                output="screen", name="bag_player")
        started = []

        def on_output(event):
            if not started and READY_LINE.encode() in event.text:
                started.append(True)
                return [player]
            return None

        actions.append(RegisterEventHandler(OnProcessIO(target_action=node, on_stdout=on_output,
                                                        on_stderr=on_output)))
    if get("rviz").lower() == "true":
        actions.append(Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", get("rviz_config") or rviz_config_for(get("node_name"), params["base_frame"])],
            parameters=[{"use_sim_time": bool(bag)}],
            output="screen",
        ))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=desc)
         for name, default, desc in NODE_PARAMETERS + LAUNCH_ONLY]
        + [OpaqueFunction(function=_launch_setup)]
    )
