"""ros2 launch priorocc occupancy.launch.py checkpoint:=/path/to/ckpt [bag:=/path/to/bag] [rviz:=true]

Starts the PriorOcc occupancy node (package ``priorocc``, executable ``occupancy_node``),
optionally a bag player and rviz2 with the shipped configuration (voxel markers, BEV grid,
the six seg overlays).

- Every scalar node parameter is a launch argument of the same name and default
  (``priorocc_ros.params``, the one definition), e.g. ``slop:=0.05 publish_overlay:=false``.
- ``bag:=DIR`` plays a bag with ``/clock``. The player starts when the node logs that it is
  running (model loaded, subscriptions made), so no set is played into a node that is still
  loading; the project's player also waits until the node's subscriptions are matched.
  ``player:=``: ``ros2bag`` (``ros2 bag play``), ``priorocc`` (the package's own
  ``priorocc_play``, pure DDS, for machines without rosbag2), ``auto`` (default: ``ros2bag``
  when rosbag2 is installed, else ``priorocc``). ``rate``, ``loop``, ``bag_delay`` (0 = none).
- ``use_sim_time``: ``auto`` (default: true with a bag, else false), ``true`` or ``false``;
  given to the node and to rviz2.
- ``namespace:=car1``: the node runs as ``/car1/<node_name>``; its camera inputs
  (``car1/CAM_*/...``, relative names), its outputs (``/car1/<node_name>/...``), the rviz
  configuration and the player's camera topics all move there (``/tf``, ``/tf_static``,
  ``/clock`` stay global, as tf2 and ROS time expect).
- ``log_level``: the node's (``--ros-args --log-level``): debug, info, warn, error, fatal.
- ``rviz:=true`` starts rviz2 with ``rviz_config`` (default: the shipped priorocc.rviz with its
  topics moved to ``/<namespace>/<node_name>/...`` and its frames to ``base_frame``; that
  temporary copy is removed when the launch ends). When rviz2 is not installed the launch logs
  one WARN line and runs without it (everything else as asked; nothing is left running).
- ``node_name`` (outputs go to ``~/...``), ``remap`` (FROM=TO,... for the node).
"""
import os
import tempfile

from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory
import launch.logging
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessIO, OnShutdown
from launch_ros.actions import Node

from priorocc_core.classes import CAMERAS
from priorocc_ros.occupancy_node import READY_LINE
from priorocc_ros.params import from_launch_value, launch_arguments

NODE_PARAMETERS = launch_arguments()
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
LAUNCH_ONLY = [
    ("node_name", "priorocc", "node name; outputs go to /<namespace>/<node_name>/..."),
    ("namespace", "", "namespace of the node, its camera inputs, its outputs, the rviz config and the "
                      "player's camera topics (e.g. car1); empty = the root namespace"),
    ("use_sim_time", "auto", "auto (true when a bag is played), true or false; for the node and rviz2"),
    ("log_level", "info", "the node's log level: " + ", ".join(LOG_LEVELS)),
    ("bag", "", "optional bag to play with /clock"),
    ("player", "auto", "bag player: ros2bag (ros2 bag play), priorocc (priorocc_play, no rosbag2 needed), "
                       "auto (ros2bag if installed, else priorocc)"),
    ("rate", "1.0", "bag playback rate"),
    ("bag_delay", "1.0", "seconds the player waits (after the node runs and, for priorocc, its subscriptions "
                         "are matched) before the first message, so discovery completes both ways; 0 = none"),
    ("loop", "false", "loop the bag"),
    ("rviz", "true", "start rviz2 with the PriorOcc configuration (when rviz2 is not installed: a WARN, and "
                     "the rest runs without it)"),
    ("rviz_config", "", "rviz2 configuration; empty = the shipped priorocc.rviz for namespace, node_name and "
                        "base_frame"),
    ("remap", "", "topic remaps for the node, comma separated FROM=TO pairs, e.g. /CAM_FRONT/camera_info=/front/info"),
]
# the camera topics a bag of this project carries (nuscenes_to_bag, bags/demo): the player moves
# them into the namespace
BAG_CAMERA_TOPICS = [f"/{c}/{t}" for c in CAMERAS for t in ("image_rect_compressed", "image_rect", "camera_info")]


def has_package(name):
    try:
        get_package_prefix(name)
        return True
    except PackageNotFoundError:
        return False


def _ns(namespace):
    """'car1', '/car1/' -> '/car1'; '' -> ''."""
    ns = namespace.strip().strip("/")
    return f"/{ns}" if ns else ""


def player_command(player, bag, rate, loop, delay="0", namespace=""):
    """The command line of the bag player (``player``: ros2bag, priorocc or auto). ``delay`` 0
    (or less) is left out: ``ros2 bag play --delay`` accepts positive numbers only. The bag's
    camera topics move into ``namespace``."""
    if player == "auto":
        player = "ros2bag" if has_package("ros2bag") else "priorocc"
    ns = _ns(namespace)
    wait = float(delay) > 0
    if player == "ros2bag":
        cmd = ["ros2", "bag", "play", bag, "--clock", "--rate", rate] + (["--delay", delay] if wait else [])
        if ns:
            cmd += ["--remap"] + [f"{t}:={ns}{t}" for t in BAG_CAMERA_TOPICS]
    elif player == "priorocc":
        if ns:
            raise ValueError(f"namespace:={namespace}: player:=priorocc cannot move topics; use player:=ros2bag "
                             f"or a bag recorded under the namespace")
        exe = os.path.join(get_package_prefix("priorocc"), "lib", "priorocc", "priorocc_play")
        cmd = [exe, bag, "--clock", "--rate", rate, "--wait-for-subscribers", "1"] + (["--delay", delay] if wait else [])
    else:
        raise ValueError(f"player:={player!r}: expected ros2bag, priorocc or auto")
    return cmd + (["--loop"] if loop else [])


def rviz_config_for(node_name, base_frame, namespace=""):
    """(path, temporary) of the rviz configuration with topics under /<namespace>/<node_name>/
    and frames = base_frame: the shipped file itself when nothing moves, else a temporary copy
    that the caller removes."""
    src = os.path.join(get_package_share_directory("priorocc"), "rviz", "priorocc.rviz")
    prefix = f"{_ns(namespace)}/{node_name}/"
    if (prefix, base_frame) == ("/priorocc/", "base_link"):
        return src, False
    with open(src) as f:
        text = f.read().replace("/priorocc/", prefix).replace(": base_link", f": {base_frame}")
    fd, path = tempfile.mkstemp(prefix=f"{node_name}_", suffix=".rviz")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path, True


def use_sim_time_value(text, bag):
    t = text.strip().lower()
    if t == "auto":
        return bool(bag)
    if t in ("true", "false"):
        return t == "true"
    raise ValueError(f"launch argument use_sim_time:={text!r}: expected auto, true or false")


def _launch_setup(context, *args, **kwargs):
    def get(name):
        return context.launch_configurations[name]

    bag = get("bag")
    namespace = _ns(get("namespace"))
    if get("log_level") not in LOG_LEVELS:
        raise ValueError(f"launch argument log_level:={get('log_level')!r}: expected one of {', '.join(LOG_LEVELS)}")
    sim = use_sim_time_value(get("use_sim_time"), bag)
    params = {name: from_launch_value(name, get(name)) for name, _, _ in NODE_PARAMETERS}
    params["use_sim_time"] = sim
    node = Node(
        package="priorocc",
        executable="occupancy_node",
        name=get("node_name"),
        namespace=namespace or None,
        output="screen",
        arguments=["--transport", "ros"],
        ros_arguments=["--log-level", get("log_level")],
        parameters=[params],
        remappings=[tuple(p.split("=", 1)) for p in get("remap").split(",") if "=" in p],
    )
    actions = [node]
    if bag:
        player = ExecuteProcess(cmd=player_command(get("player"), bag, get("rate"), get("loop").lower() == "true",
                                                   get("bag_delay"), namespace),
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
        if not has_package("rviz2"):
            launch.logging.get_logger("launch").warning(
                "rviz:=true but package 'rviz2' is not installed: running without rviz2 (install rviz2, "
                "or pass rviz:=false)")
        else:
            config, temporary = (get("rviz_config"), False) if get("rviz_config") else \
                rviz_config_for(get("node_name"), params["base_frame"], namespace)
            if temporary:
                actions.append(RegisterEventHandler(OnShutdown(on_shutdown=lambda *_: _remove(config))))
            actions.append(Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                namespace=namespace or None,
                arguments=["-d", config],
                parameters=[{"use_sim_time": sim}],
                output="screen",
            ))
    return actions


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=desc)
         for name, default, desc in NODE_PARAMETERS + LAUNCH_ONLY]
        + [OpaqueFunction(function=_launch_setup)]
    )
