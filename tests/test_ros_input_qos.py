"""Issue 15: the node subscribes its inputs reliable when every publisher offers reliable
(``input_reliability:=auto``), as ``ros2 bag record`` adapts its QoS to the publishers.

Loopback: the switch, the way back, the fixed settings, sets flowing across a switch without
loss or duplicates. Real Cyclone DDS (``DdsTransport``): the node's new reader is reliable as the
publisher sees it (its matched subscription's QoS) and a set published after the switch comes out.
Mutations tried (the test named fails): ``adapt_input_reliability`` returning at once (the
switch tests); the reliable resubscription made with SENSOR_DATA_QOS (the DDS test: no reliable
reader matched); the new subscription's first message not checked against what the old one
delivered (the loopback test: duplicate images counted); replaced subscriptions never destroyed
(the DDS test: two readers stay matched).
"""
from __future__ import annotations

import itertools
import os
import threading
import time

import pytest

from priorocc_ros.transport.base import RELIABLE_QOS, SENSOR_DATA_QOS, TF_STATIC_QOS
from tests.foreign_recordings import MODEL_CAMERAS, T0, camera_info, raw_image, tf_chain
from tests.test_ros_issue15 import Rig, _invariant, micro, predictor  # noqa: F401 - fixtures

_COUNTER = itertools.count(1)


class _ReliableRig(Rig):
    """Rig whose player publishes images and camera_info with ``qos``."""

    def __init__(self, predictor, qos, **kw):
        self.qos = qos
        super().__init__(predictor, **kw)

    def pub(self, topic, ty, qos=None):
        return super().pub(topic, ty, qos or self.qos)


def test_auto_switches_to_reliable_and_back(predictor):
    rig = _ReliableRig(predictor, RELIABLE_QOS)
    rig.send_set(0)  # best effort subscriptions receive from reliable publishers too
    rig.core.adapt_input_reliability(wait=True)  # what every /diagnostics period does (switching on a helper thread)
    level, msg, values = rig.diag()
    assert values["inputs_reliable"] == "12/12" and values["input_qos_switches"] == "12"
    switched = [m for m in rig.node_t.logger.messages("info") if "subscribed reliable" in m]
    assert len(switched) == 12 and "/CAM_FRONT/image_rect offer reliable" in " ".join(switched)
    for k in range(1, 4):
        rig.send_set(k)
    assert rig.core.wait_idle(30)
    st = rig.stats()
    assert st["sets_out"] == 4 and st["duplicate_messages"] == 0 and st["images_received"] == 24
    # a best-effort publisher joins one topic: a reliable reader would not match it -> back
    rig.player.create_publisher("sensor_msgs/msg/Image", "/CAM_FRONT/image_rect", SENSOR_DATA_QOS)
    rig.core.adapt_input_reliability(wait=True)
    _, _, values = rig.diag()
    assert values["inputs_reliable"] == "11/12" and values["input_qos_switches"] == "13"
    rig.send_set(4)
    rig.core.close()
    st = rig.stats()
    assert st["sets_out"] == 5
    _invariant(st)


@pytest.mark.parametrize("setting,expect", [("best_effort", "0/12"), ("reliable", "12/12")])
def test_fixed_reliability_is_kept(predictor, setting, expect):
    qos = SENSOR_DATA_QOS if setting == "reliable" else RELIABLE_QOS  # publishers offering the other
    rig = _ReliableRig(predictor, qos, params={"input_reliability": setting})
    rig.send_set(0)
    rig.core.adapt_input_reliability(wait=True)
    _, _, values = rig.diag()
    assert values["inputs_reliable"] == expect and values["input_qos_switches"] == "0"
    rig.core.close()


def test_bad_setting_names_the_parameter(predictor):
    from priorocc_ros.node_core import ParameterError

    with pytest.raises(ParameterError, match="input_reliability"):
        Rig(predictor, params={"input_reliability": "sometimes"})


def test_real_dds_reader_becomes_reliable_and_sets_flow(monkeypatch, predictor):
    from benchmarks.local_dds import loopback_env, unique_domain_id

    env = loopback_env(domain_id=unique_domain_id(os.getpid() * 13 + next(_COUNTER)))
    monkeypatch.setenv("CYCLONEDDS_URI", env["CYCLONEDDS_URI"])
    monkeypatch.setenv("ROS_DOMAIN_ID", env["ROS_DOMAIN_ID"])
    from cyclonedds.core import Policy

    from priorocc_ros.node_core import OccupancyNodeCore
    from priorocc_ros.transport.dds_transport import DdsTransport

    node_t = DdsTransport("priorocc", parameters={"compressed": False, "publish_markers": False, "queue_size": 10,
                                                   "publish_overlay": False, "diagnostics_period": 0.2})
    player = DdsTransport("player")
    try:
        core = OccupancyNodeCore(node_t, predictor=predictor)
        threading.Thread(target=node_t.spin, daemon=True).start()
        threading.Thread(target=player.spin, daemon=True).start()
        pubs = {}
        for cam in MODEL_CAMERAS:
            pubs[cam, "image"] = player.create_publisher("sensor_msgs/msg/Image", f"/{cam}/image_rect", RELIABLE_QOS)
            pubs[cam, "info"] = player.create_publisher("sensor_msgs/msg/CameraInfo", f"/{cam}/camera_info",
                                                        RELIABLE_QOS)
        tf = player.create_publisher("tf2_msgs/msg/TFMessage", "/tf_static", TF_STATIC_QOS)
        tf.publish(tf_chain(T0, names=MODEL_CAMERAS))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and core.stats()["inputs_reliable"] != "12/12":
            time.sleep(0.05)
        assert core.stats()["inputs_reliable"] == "12/12"
        # what the publisher sees: a reliable reader of the node matched (the best-effort one stays
        # until the reliable one has delivered: no gap while it is matched)
        w = pubs["CAM_FRONT", "image"].writer._writer

        def matched():
            return [w.get_matched_subscription_data(h).qos[Policy.Reliability] for h in w.get_matched_subscriptions()]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(isinstance(r, Policy.Reliability.Reliable) for r in matched()):
            time.sleep(0.05)
        assert any(isinstance(r, Policy.Reliability.Reliable) for r in matched()), matched()
        import numpy as np

        rng = np.random.default_rng(0)
        for k in range(2):
            for i, cam in enumerate(MODEL_CAMERAS):
                t = T0 + k * 100_000_000 + i * 1_000_000
                pubs[cam, "info"].publish(camera_info(t, f"{cam}_optical_frame", 160, 90))
                pubs[cam, "image"].publish(raw_image(t, f"{cam}_optical_frame",
                                                     (rng.random((90, 160, 3)) * 255).astype(np.uint8), "rgb8"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and core.stats()["sets_out"] < 2:
            time.sleep(0.05)
        # then the replaced best-effort reader is deleted: only the reliable one is left
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(matched()) != 1:
            time.sleep(0.05)
        rels = matched()
        assert len(rels) == 1 and isinstance(rels[0], Policy.Reliability.Reliable), rels
        core.close()
        st = core.stats()
        assert st["sets_out"] == 2 and st["images_received"] == 12 and st["duplicate_messages"] == 0, st["invariant"]
        _invariant(st)
    finally:
        node_t.shutdown()
        player.shutdown()
