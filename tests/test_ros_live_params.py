"""Issue 27 item 2 and issue 31 item 5: the node's parameters over the loopback transport.

Every parameter has a description, a type, a range / choices where one applies, and is either
live (applied at once by ``set_parameters``: the publish_* flags, thresholds, slop, max_wait,
the diagnostics period) or read-only (refused with a reason); a misspelled parameter is an
error naming the closest known one, in the node and in the replay.

Mutations tried (each made a test here fail; restored):
- OutputPublishers.refresh not called on a publish_* change -> bev still published
  (test_publish_bev_false_stops_bev_at_once).
- set_refusal ignoring ``live`` -> checkpoint "accepted" (test_read_only_and_out_of_range_refused).
- sync.set_timing not called for slop -> slop_ns unchanged (test_slop_and_diagnostics_period_apply_live).
- unknown_parameter_errors skipped in OccupancyNodeCore -> 'slpo' accepted
  (test_unknown_parameter_names_the_closest); skipped in both OccupancyNodeCore and replay ->
  exit 0 (test_replay_unknown_parameter_exit_2; the replay checks before opening the output, the
  node again, so either check alone keeps it at exit 2).
"""
import numpy as np
import pytest

from priorocc_core.classes import CAMERAS
from priorocc_ros.calibration import matrix_to_transform_stamped
from priorocc_ros.msgs import new_msg
from priorocc_ros.params import SPECS, check_value, closest, set_refusal, unknown_parameter_errors
from priorocc_ros.transport.base import TF_STATIC_QOS
from priorocc_ros.transport.loopback import LoopbackBus, LoopbackTransport
from tests.ros_helpers import make_tiny_checkpoint, nuscenes_like_rig, write_camera_bag
from tests.test_ros_node_replay import _publish_set


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def predictor(ckpt):
    from priorocc_core.backends import make_predictor

    return make_predictor(ckpt)


def _node(predictor, **params):
    from priorocc_ros.node_core import OccupancyNodeCore

    bus = LoopbackBus()
    node_t = LoopbackTransport("priorocc", bus, parameters=params)
    core = OccupancyNodeCore(node_t, predictor=predictor, parameters={"queue_size": 10})
    pub_t = LoopbackTransport("player", bus)
    K, c2e = nuscenes_like_rig((90, 160))
    pub_t.create_publisher("tf2_msgs/msg/TFMessage", "/tf_static", TF_STATIC_QOS).publish(
        new_msg("tf2_msgs/msg/TFMessage",
                transforms=[matrix_to_transform_stamped(c2e[i], "base_link", c, 0) for i, c in enumerate(CAMERAS)]))
    return bus, node_t, core, pub_t, K


def test_every_parameter_is_described_typed_and_live_or_read_only():
    for name, s in SPECS.items():
        assert s.description, name
        assert check_value(name, s.default) is None, name  # the default is valid
    live = {n for n, s in SPECS.items() if s.live}
    assert {"publish_bev", "publish_voxels", "slop", "max_wait", "overlay_alpha", "diagnostics_period"} <= live
    assert not live & {"checkpoint", "backend", "image_topic", "camera_info_topic", "cameras", "compressed"}
    assert SPECS["slop"].range and SPECS["backend"].choices


def test_publish_bev_false_stops_bev_at_once(predictor):
    bus, node_t, core, pub_t, K = _node(predictor)
    _publish_set(pub_t, 0, K)
    assert core.wait_idle(60)
    assert len(bus.published["/priorocc/bev"]) == 1
    assert node_t.set_parameters({"publish_bev": False}) is None
    assert core.p["publish_bev"] is False and "/priorocc/bev" not in core.published_topics()
    for k in (1, 2):
        _publish_set(pub_t, k, K)
        assert core.wait_idle(60)
    assert len(bus.published["/priorocc/bev"]) == 1  # no further bev
    assert len(bus.published["/priorocc/voxels"]) == 3  # the rest goes on
    assert node_t.set_parameters({"publish_bev": True}) is None
    _publish_set(pub_t, 3, K)
    assert core.wait_idle(60)
    core.close()
    assert len(bus.published["/priorocc/bev"]) == 2
    assert any("publish_bev: True -> False (applied)" in m for m in node_t.logger.messages("info"))
    # issue 27 item 4: /diagnostics belong to no frame (diagnostic_updater's convention);
    # mutation: the base frame in its header -> this fails
    assert bus.published["/diagnostics"][-1].header.frame_id == ""


def test_read_only_and_out_of_range_refused(predictor):
    bus, node_t, core, pub_t, K = _node(predictor)
    r = node_t.set_parameters({"checkpoint": "x"})
    assert r is not None and "read-only" in r and "restart" in r
    r = node_t.set_parameters({"slop": -1.0})
    assert r is not None and "slop" in r and "from 0.0 to 10.0" in r
    r = node_t.set_parameters({"publish_bev": "no"})
    assert r is not None and "bool" in r
    assert core.p["slop"] == SPECS["slop"].default and core.p["checkpoint"] == ""
    core.close()


def test_slop_and_diagnostics_period_apply_live(predictor):
    bus, node_t, core, pub_t, K = _node(predictor)
    assert node_t.set_parameters({"slop": 0.02, "max_wait": 0.3}) is None
    assert core.sync.slop_ns == 20_000_000 and core.sync.max_wait_ns == 300_000_000
    old = core._diag_timer
    assert node_t.set_parameters({"diagnostics_period": 0.25}) is None
    assert old.cancelled and core._diag_timer.period_s == 0.25
    core.close()


def test_unknown_parameter_names_the_closest(predictor):
    from priorocc_ros.node_core import OccupancyNodeCore, ParameterError

    assert closest("slpo") == "slop" and closest("publish_bve") == "publish_bev"
    assert unknown_parameter_errors(["use_sim_time", "slop"]) == []
    with pytest.raises(ParameterError, match="unknown parameter 'slpo'; did you mean 'slop'"):
        OccupancyNodeCore(LoopbackTransport("priorocc", LoopbackBus(), parameters={"slpo": 0.05}),
                          predictor=predictor)
    with pytest.raises(ParameterError, match="overlay_alpha must be from 0.0 to 1.0"):
        OccupancyNodeCore(LoopbackTransport("priorocc", LoopbackBus(), parameters={"overlay_alpha": 3.0}),
                          predictor=predictor)
    assert set_refusal("slpo", 1.0).startswith("unknown parameter 'slpo'")


def test_replay_unknown_parameter_exit_2(tmp_path, ckpt, capsys):
    from priorocc_ros.replay import main

    bag = tmp_path / "in"
    write_camera_bag(bag, 1)
    rc = main([str(bag), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), "-p", "slpo:=0.05"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "did you mean 'slop'" in err[0], err
    assert not (tmp_path / "out").exists()


def test_dds_transport_unknown_parameter_one_line(ckpt, capsys, monkeypatch):
    """Issue 31 item 5 over Cyclone DDS: `occupancy_node --transport dds -p slpo:=0.05` was accepted
    silently; now one line naming the closest parameter, exit 2. It is the check of
    OccupancyNodeCore mutated in test_unknown_parameter_names_the_closest (here that mutation
    would leave the node spinning, so it was not run on this test)."""
    import os

    from benchmarks.local_dds import loopback_env, unique_domain_id
    from priorocc_ros.occupancy_node import main

    env = loopback_env(domain_id=unique_domain_id(os.getpid() * 17 + 3))
    monkeypatch.setenv("CYCLONEDDS_URI", env["CYCLONEDDS_URI"])
    monkeypatch.setenv("ROS_DOMAIN_ID", env["ROS_DOMAIN_ID"])
    assert main(["--transport", "dds", "-p", f"checkpoint:={ckpt}", "-p", "slpo:=0.05"]) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("occupancy_node:")]
    assert len(err) == 1 and "unknown parameter 'slpo'; did you mean 'slop'?" in err[0], err
