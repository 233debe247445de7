"""A camera that stops, on the real ROS 2 (issue 30): ``ros2 launch priorocc occupancy.launch.py``
(rclpy) plays a recording in which CAM_BACK is silent for sets 3-6; a real rclpy subscriber sees
every set published on ~/voxels and the last /diagnostics counts them degraded, the counts adding
up. Skips without ../shared/ros2 (fails under CI), as tests/test_ros2_real.py."""
from __future__ import annotations

from tests.ros_helpers import make_tiny_checkpoint, write_camera_bag
from tests.test_ros2_real import Proc, install, probe, ros_env  # noqa: F401  (install: the colcon fixture)

N_SETS, SILENT = 10, range(3, 7)


def test_real_ros2_camera_stops_sets_degrade(install, tmp_path):
    """Mutation: missing_camera default wait (params.SPECS) -> only the 6 complete sets on
    ~/voxels (the probe times out short of 10, the stamps check fails)."""
    ckpt = make_tiny_checkpoint(tmp_path / "tiny")

    def mutate(k, cam, im, info):
        return (None, None) if cam == "CAM_BACK" and k in SILENT else None

    info = write_camera_bag(tmp_path / "bag", n_sets=N_SETS, mutate=mutate, jitter_ns=10_000_000)
    env = ros_env(tmp_path, install)
    launch = Proc(["ros2", "launch", "priorocc", "occupancy.launch.py", f"checkpoint:={ckpt}", f"bag:={tmp_path / 'bag'}",
                   "player:=priorocc", "rate:=0.5", "queue_size:=10", "backend:=torch", "precision:=fp32"],
                  env, cwd=tmp_path)
    try:
        recs, log = probe(env, tmp_path, "--sub=/priorocc/voxels=sensor_msgs/msg/PointCloud2",
                          "--sub=/diagnostics=diagnostic_msgs/msg/DiagnosticArray",
                          f"--until=/priorocc/voxels={N_SETS}", "--linger=2.5", timeout=150)
    finally:
        launch.stop()
    vox = [r for r in recs if r.get("topic") == "/priorocc/voxels"]
    assert sorted(r["stamp_ns"] for r in vox) == sorted(row[1] for row in info["stamps"]), launch.text[-3000:]
    last = [r for r in recs if r.get("topic") == "/diagnostics"][-1]["values"]
    assert last["degraded_sets"] == str(len(SILENT)) and last["degraded_without_CAM_BACK"] == str(len(SILENT)), last
    assert last["unaccounted"] == "0" and last["incomplete_sets"] == "0", last
    assert "camera CAM_BACK (/CAM_BACK/image_rect_compressed) silent" in launch.text
    assert "camera CAM_BACK (/CAM_BACK/image_rect_compressed) is back" in launch.text
