"""Issue 15's thirteen failures, each reproduced (fails on the code before the fix, passes
after), plus the bad-input list of its Build section. Node tests run OccupancyNodeCore over
the loopback transport with the micro model; every node test checks the invariant
``groups_in = out + dropped + failed + incomplete (+ in_progress)``.

Mutations tried (the test named fails): `check_image_size` without the declared-size check
(bomb test: decode is called); `transform_msg_to_matrix` without the finite/norm checks (NaN
TF test: the set is published); `_may_complete` always True (test_ros_sync_runner); node
`close` without `flush` (incomplete-at-shutdown test); salvage without the partial-chunk branch
(cut MCAP test: 0 messages); `clean_partials` a no-op (partial test); `is_bag_folder` always
True (overwrite test); diagnostics level from cumulative counters (WARN test stays WARN).
"""
from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.foreign_recordings import (LOWER, MODEL_CAMERAS, T0, Style, camera_info, micro_checkpoint, raw_image, tf_chain,
                               write_foreign_bag)

NS_PARAMS = {"image_topic": "/cameras/{camera}/image_raw", "camera_info_topic": "/cameras/{camera}/camera_info",
             "camera_names": list(LOWER)}


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return micro_checkpoint(tmp_path_factory.mktemp("ckpt") / "micro")


@pytest.fixture(scope="module")
def predictor(micro):
    from priorocc_core.backends import make_predictor

    return make_predictor(micro)


def _invariant(st):
    assert st["unaccounted"] == 0 and st["groups_in"] == (st["sets_out"] + st["sets_dropped"] + st["sets_failed"]
                                                          + st["incomplete_sets"] + st["in_progress"]), st["invariant"]


class Rig:
    """A loopback node (micro model, raw images on the default topics) and a player."""

    def __init__(self, predictor, params=None, compressed=False, queued=False, tf=None):
        from priorocc_ros.node_core import OccupancyNodeCore
        from priorocc_ros.transport.base import TF_STATIC_QOS
        from priorocc_ros.transport.loopback import LoopbackBus, LoopbackTransport

        self.bus = LoopbackBus(queued=queued)
        p = {"compressed": compressed, "queue_size": 50, "publish_markers": False, "publish_overlay": False}
        p.update(params or {})
        self.node_t = LoopbackTransport("priorocc", self.bus, parameters=p)
        self.core = OccupancyNodeCore(self.node_t, predictor=predictor)
        self.player = LoopbackTransport("player", self.bus)
        self._pubs = {}
        self.pub("/tf_static", "tf2_msgs/msg/TFMessage", TF_STATIC_QOS).publish(
            tf if tf is not None else tf_chain(T0, names=MODEL_CAMERAS))
        self.rng = np.random.default_rng(0)
        self.image_topic = "/{}/image_rect_compressed" if compressed else "/{}/image_rect"

    def pub(self, topic, ty, qos=None):
        from priorocc_ros.transport.base import SENSOR_DATA_QOS

        if (topic, ty) not in self._pubs:
            self._pubs[topic, ty] = self.player.create_publisher(ty, topic, qos or SENSOR_DATA_QOS)
        return self._pubs[topic, ty]

    def image(self, cam, t, hw=(90, 160)):
        rgb = (self.rng.random((*hw, 3)) * 255).astype(np.uint8)
        return raw_image(t, f"{cam}_optical_frame", rgb, "rgb8")

    def send(self, cam, t, img=None, info=None, order=("info", "image")):
        img = img if img is not None else self.image(cam, t)
        info = info if info is not None else camera_info(t, f"{cam}_optical_frame", 160, 90)
        for what in order:
            if what == "info":
                self.pub(f"/{cam}/camera_info", "sensor_msgs/msg/CameraInfo").publish(info)
            else:
                self.pub(self.image_topic.format(cam), type(img).__msgtype__).publish(img)

    def send_set(self, k, skip=(), period=100_000_000, t0=T0, **kw):
        for i, cam in enumerate(MODEL_CAMERAS):
            if cam not in skip:
                self.send(cam, t0 + k * period + i * 1_000_000, **kw)

    def stats(self):
        return self.core.stats()

    def diag(self):
        from priorocc_ros.outputs import diagnostics_values

        self.core.publish_diagnostics()
        d = self.bus.published["/diagnostics"][-1]
        return d.status[0].level, d.status[0].message, diagnostics_values(d)


# --------------------------------------------------------------------------- 2: transport / pattern
def test_2_wrong_transport_in_the_replay_names_the_parameter(tmp_path, micro, capsys):
    """Was a TypeError from the loopback bus at publish time, naming no parameter."""
    from priorocc_ros.replay import main

    write_foreign_bag(tmp_path / "raw", Style("raw"))
    args = [a for k, v in NS_PARAMS.items() for a in ("-p", f"{k}:={v if not isinstance(v, list) else '[' + ','.join(v) + ']'}")]
    assert main([str(tmp_path / "raw"), "--out", str(tmp_path / "o"), "--checkpoint", str(micro),
                 "-p", "compressed:=true"] + args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "set -p compressed:=false" in err and "sensor_msgs/msg/Image" in err
    # a malformed pattern: one line naming the parameter (was ValueError: Single '}' traceback)
    assert main([str(tmp_path / "raw"), "--out", str(tmp_path / "o"), "--checkpoint", str(micro),
                 "-p", "image_topic:=/cameras/{camera/image_raw"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "parameter image_topic='/cameras/{camera/image_raw'" in err


def test_2_node_receiving_another_image_type_says_so_repeatedly(predictor):
    """The node subscribed CompressedImage; the camera publishes Image: every diagnostics period a
    log line and an ERROR /diagnostics naming `compressed` (was: 'waiting for complete image sets')."""
    rig = Rig(predictor, compressed=True)
    rig.send_set(0)
    rig.core.publish_diagnostics()
    level, msg, values = rig.diag()
    errors = [m for m in rig.node_t.logger.messages("error") if "set parameter compressed:=false" in m]
    assert len(errors) == 2 and "/CAM_FRONT_LEFT/image_rect_compressed is published as sensor_msgs/msg/Image" in errors[0]
    assert level == 2 and "compressed:=false" in msg and "CAM_BACK" in values["input_type_problems"]
    rig.core.close()


# --------------------------------------------------------------------------- 3, 4: nothing lost uncounted
class _Slow:
    """The micro predictor, slowed down: a 'model' that takes ``delay`` s per set."""

    def __init__(self, predictor, delay):
        self.p, self.delay = predictor, delay
        self.cameras, self.cfg = predictor.cameras, predictor.cfg

    def predict(self, *a, **kw):
        time.sleep(self.delay)
        return self.p.predict(*a, **kw)


def test_3_shutdown_waits_for_the_model_or_counts_what_it_abandons(predictor):
    """Was a fixed 10 s join: a set still running was lost without a count (3 in, 2 out, 0 dropped)."""
    rig = Rig(_Slow(predictor, 1.5))
    rig.send_set(0)
    rig.send_set(1)
    time.sleep(0.2)  # set 0 running, set 1 queued
    rig.core.close(drain=False, timeout=0.2)
    st = rig.stats()
    assert st["sets_in"] == 2 and st["sets_dropped"] == 2 and st["sets_out"] == 0 and rig.core.runner.stats.abandoned == 1
    _invariant(st)
    time.sleep(1.6)  # the abandoned set finishes: not counted twice, not published
    assert rig.stats()["sets_out"] == 0 and "/priorocc/voxels" not in rig.bus.published
    # waiting however slow: close() without a timeout processes everything queued
    rig2 = Rig(_Slow(predictor, 0.4), params={"missing_camera": "wait"})  # set 3 incomplete, not degraded
    for k in range(3):
        rig2.send_set(k)
    rig2.send_set(3, skip=("CAM_BACK",))
    rig2.core.close(drain=True)
    st = rig2.stats()
    assert st["sets_out"] == 3 and st["sets_dropped"] == 0
    _invariant(st)


def test_4_incomplete_groups_at_shutdown_are_counted(predictor):
    """Was: the node never flushed its synchroniser, the last group vanished uncounted. With
    missing_camera:=degrade (the default) that group is a degraded set, published and counted."""
    rig_d = Rig(predictor)
    rig_d.send_set(0)
    rig_d.send_set(1, skip=("CAM_FRONT",))
    rig_d.core.close()
    st = rig_d.stats()
    assert st["sets_out"] == 2 and st["degraded_sets"] == 1 and st["incomplete_sets"] == 0 and st["groups_in"] == 2
    _invariant(st)
    rig = Rig(predictor, params={"missing_camera": "wait"})
    rig.send_set(0)
    rig.send_set(1, skip=("CAM_FRONT",))
    rig.core.close()
    st = rig.stats()
    assert st["sets_out"] == 1 and st["incomplete_sets"] == 1 and st["groups_in"] == 2
    _invariant(st)
    assert any("incomplete image set" in w and "CAM_FRONT (/CAM_FRONT/image_rect)" in w
               for w in rig.node_t.logger.messages("warning"))


# --------------------------------------------------------------------------- 6: CameraInfo as ROS defines it
def test_6_camera_info_binning_roi_and_size():
    """K as image_geometry's PinholeCameraModel adjusts it: principal point minus the ROI offset,
    then divided by the binning; the expected size is roi // binning."""
    from priorocc_ros.calibration import CalibrationError, camera_info_geometry
    from tests.foreign_recordings import TS

    info = camera_info(0, "f", 1600, 900, binning=2)
    info.roi = TS.types["sensor_msgs/msg/RegionOfInterest"](x_offset=100, y_offset=50, height=600, width=1200,
                                                           do_rectify=False)
    K, hw = camera_info_geometry(info)
    f = 0.8 * 1600
    np.testing.assert_allclose(K, [[f / 2, 0, (800 - 100) / 2], [0, f / 2, (450 - 50) / 2], [0, 0, 1]])
    assert hw == (300, 600)
    K0, hw0 = camera_info_geometry(camera_info(0, "f", 1600, 900))
    assert hw0 == (900, 1600) and K0[0, 2] == 800
    info.roi.x_offset = 500  # 500 + 1200 > 1600
    with pytest.raises(CalibrationError, match="roi 1200x600"):
        camera_info_geometry(info)


def test_6_size_mismatch_is_an_error_naming_both_sizes(predictor):
    """800x450 images with a 1600x900 CameraInfo and no binning: was projected 400-800 px off
    silently; now the set fails with both sizes named."""
    rig = Rig(predictor)
    for i, cam in enumerate(MODEL_CAMERAS):
        t = T0 + i * 1_000_000
        rig.send(cam, t, img=rig.image(cam, t, (45, 80)))
    rig.core.close()
    st = rig.stats()
    assert st["sets_failed"] == 1 and st["sets_out"] == 0
    assert "image is 80x45 but its CameraInfo (width, height, binning, roi) describes 160x90" in st["last_error"]
    _invariant(st)


# --------------------------------------------------------------------------- 8: time jumps back
def test_8_a_bag_played_in_a_loop_keeps_producing_outputs(predictor):
    """Was: everything at or before the last set was 'late' forever (18 loops -> 6 outputs)."""
    rig = Rig(predictor, {"max_wait": 0.2})
    for loop in range(2):
        for k in range(3):
            rig.send_set(k, period=500_000_000)
    rig.core.close()
    st = rig.stats()
    assert st["sets_out"] == 6 and st["late_messages"] == 0 and st["time_resets"] == 1
    _invariant(st)
    assert any("time jumped back" in w for w in rig.node_t.logger.messages("warning"))


# --------------------------------------------------------------------------- 9: bad TF
def _tf(child, xyz, qxyzw):
    from tests.foreign_recordings import TS, _tf as mk

    return TS.types["tf2_msgs/msg/TFMessage"](transforms=[mk("CAM_FRONT_link", child, xyz, qxyzw, T0)])


@pytest.mark.parametrize("xyz,q,why", [
    ((float("nan"), 0, 0), (-0.5, 0.5, -0.5, 0.5), "non-finite"),
    ((0, 0, 0), (float("inf"), 0.5, -0.5, 0.5), "non-finite"),
    ((0, 0, 0), (0, 0, 0, 0), "norm 0"),
    ((0, 0, 0), (-1.0, 1.0, -1.0, 1.0), "norm 2"),
])
def test_9_nan_or_non_unit_tf_is_rejected_naming_camera_and_tf(predictor, xyz, q, why):
    """Was: NaN accepted, the camera silently left the prediction; a zero quaternion a
    'LinAlgError: Singular matrix' naming nothing."""
    # the optical frame of CAM_FRONT gets a bad transform (the only one for that frame)
    good = tf_chain(T0, names=MODEL_CAMERAS)
    good.transforms = [t for t in good.transforms if t.child_frame_id != "CAM_FRONT_optical_frame"]
    rig = Rig(predictor, tf=good)
    rig.pub("/tf", "tf2_msgs/msg/TFMessage").publish(_tf("CAM_FRONT_optical_frame", xyz, q))
    rig.send_set(0)
    rig.core.close()
    st = rig.stats()
    assert st["tf_rejected"] == 1 and st["sets_failed"] == 1 and st["sets_out"] == 0
    w = [m for m in rig.node_t.logger.messages("warning") if "rejected TF" in m]
    assert len(w) == 1 and "'CAM_FRONT_link' <- 'CAM_FRONT_optical_frame'" in w[0] and why in w[0]
    assert st["last_error"].startswith("CAM_FRONT: no extrinsics")
    _invariant(st)


def test_9_slightly_denormalised_quaternion_is_accepted_as_tf2_does():
    from priorocc_ros.calibration import TfBuffer

    b = TfBuffer()
    assert b.set_tf_message(_tf("x", (0, 0, 0), (-0.5, 0.5, -0.5, 0.5 * 1.004)), True) == []
    R = b.lookup("CAM_FRONT_link", "x")[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)


# --------------------------------------------------------------------------- 10: decompression bomb
def _bomb(fmt):
    import cv2

    ok, data = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", np.zeros((8, 8, 3), np.uint8))
    b = bytearray(data.tobytes())
    if fmt == "png":
        b[16:24] = (16000).to_bytes(4, "big") + (16000).to_bytes(4, "big")  # IHDR (crc now wrong)
    else:
        i = b.index(b"\xff\xc0")
        b[i + 5:i + 9] = (16000).to_bytes(2, "big") * 2  # SOF0 height, width
    return bytes(b)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_10_decompression_bomb_refused_before_decoding(predictor, fmt, monkeypatch):
    """Was: max_image_pixels checked on the compressed bytes; a 631-byte JPEG declaring
    16000x16000 took RSS from 0.9 to 2.6 GB and was published."""
    import cv2

    from priorocc_ros.image_codec import declared_size
    from tests.foreign_recordings import TS, _header

    data = _bomb(fmt)
    assert len(data) < 1000 and declared_size(np.frombuffer(data, np.uint8)) == (16000, 16000)
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("the bomb was decoded"))
    rig = Rig(predictor, compressed=True)
    for i, cam in enumerate(MODEL_CAMERAS):
        t = T0 + i * 1_000_000
        img = TS.types["sensor_msgs/msg/CompressedImage"](header=_header(t, f"{cam}_optical_frame"), format=fmt,
                                                          data=np.frombuffer(data, np.uint8))
        rig.pub(f"/{cam}/image_rect_compressed", "sensor_msgs/msg/CompressedImage").publish(img)
    rig.core.close()
    st = rig.stats()
    assert st["images_rejected"] == 6 and st["errors_size"] == 6 and st["sets_out"] == 0
    assert "declares 16000x16000 pixels" in st["last_error"] and "max_image_pixels" in st["last_error"]


# --------------------------------------------------------------------------- 11: cut bags
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_11_cut_bag_is_salvaged_message_by_message_and_exit_is_non_zero(tmp_path, micro, storage, capsys):
    """Was: a cut MCAP lost its whole chunk (0 of 73 messages), the replay exited 0 with an empty
    output bag; a cut sqlite3 bag did not open."""
    from priorocc_ros.bagio import iter_raw
    from priorocc_ros.replay import main

    info = write_foreign_bag(tmp_path / "b", Style("cut", storage=storage, n_sets=6))
    f = next(p for p in (tmp_path / "b").iterdir() if p.suffix in (".mcap", ".db3"))
    data = f.read_bytes()
    got = []
    for frac in (0.3, 0.6, 0.9):
        f.write_bytes(data[: int(len(data) * frac)])
        errs = []
        got.append(sum(1 for _ in iter_raw(tmp_path / "b", errs)))
        assert errs
    assert 0 < got[0] < got[1] < got[2] < info["messages"], got
    args = [a for k, v in NS_PARAMS.items() for a in ("-p", f"{k}:={v if not isinstance(v, list) else '[' + ','.join(v) + ']'}")]
    assert main([str(tmp_path / "b"), "--out", str(tmp_path / "o"), "--checkpoint", str(micro)] + args) == 1
    cap = capsys.readouterr()
    assert f"messages read {got[2]} of {info['messages']}" in cap.out
    assert "output incomplete" in cap.err and "Traceback" not in cap.err
    from tests.foreign_recordings import counts_by_topic

    assert counts_by_topic(tmp_path / "o")["/priorocc/voxels"] >= 4  # the sets before the cut


# --------------------------------------------------------------------------- 12: leftovers, --overwrite
def test_12_partial_leftovers_cleaned_and_overwrite_replaces_only_a_bag(tmp_path):
    from priorocc_ros.bagio import AtomicBagWriter

    out = tmp_path / "out"
    dead = tmp_path / f".out.{2 ** 22 + 12345}.abcd.partial"  # a pid that does not run
    old_style = tmp_path / ".out.zz9x.partial"  # left by the converter before pids were in the name
    alive = tmp_path / f".out.{os.getppid()}.efgh.partial"  # a writer that still runs
    for d in (dead, old_style, alive):
        (d / "out").mkdir(parents=True)
    with AtomicBagWriter(out) as w:
        w.write("/x", "std_msgs/msg/String", 1, __import__("priorocc_ros.msgs", fromlist=["new_msg"]).new_msg(
            "std_msgs/msg/String", data="a"))
    assert not dead.exists() and not old_style.exists() and alive.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")) == [alive.name]
    # --overwrite replaces a bag ...
    with AtomicBagWriter(out, overwrite=True):
        pass
    assert (out / "metadata.yaml").exists()
    # ... and refuses a folder that is not one, leaving it as it was
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="replaces only a bag"):
        with AtomicBagWriter(home, overwrite=True):
            pass
    assert (home / "thesis.tex").read_text() == "precious"


# --------------------------------------------------------------------------- 13: diagnostics, logs, CLIs
def test_13_diagnostics_warn_while_dropping_and_count_every_input_problem(predictor):
    rig = Rig(predictor)
    rig.send_set(0)
    assert rig.core.wait_idle(30)
    level, msg, _ = rig.diag()
    assert level == 0 and msg.startswith("ok")
    # a corrupt image, an invalid CameraInfo (twice: logged once, counted twice), a duplicate
    bad = rig.image("CAM_BACK", T0 + 100_000_000)
    bad.data = bad.data[:100]
    rig.send("CAM_BACK", T0 + 100_000_000 + 4_000_000, img=bad)
    rig.send("CAM_BACK", T0 + 100_000_000 + 4_000_000, img=bad)  # duplicate stamp
    rig.send_set(1, skip=("CAM_BACK",))
    zero = camera_info(T0, "CAM_FRONT_optical_frame", 160, 90)
    zero.k = np.zeros(9)
    for _ in range(2):
        rig.pub("/CAM_FRONT/camera_info", "sensor_msgs/msg/CameraInfo").publish(zero)
    rig.node_t.stats = Counter(decode_errors=3, callback_errors=1)  # what the DDS transport counts
    assert rig.core.wait_idle(30)
    level, msg, values = rig.diag()
    assert level == 1 and msg.startswith("dropping inputs")
    assert values["camera_info_invalid"] == "2" and values["errors_camera_info"] == "1"
    assert values["duplicate_messages"] == "1" and values["transport_decode_errors"] == "3"
    assert values["transport_callback_errors"] == "1" and values["errors_decode"] == "1"
    assert any("duplicate image" in w and "CAM_BACK (/CAM_BACK/image_rect)" in w
               for w in rig.node_t.logger.messages("warning"))
    # nothing new dropped: back to OK
    rig.send_set(2)
    assert rig.core.wait_idle(30)
    level, msg, _ = rig.diag()
    assert level == 0, msg
    rig.core.close()
    _invariant(rig.stats())


def test_13_late_images_are_logged():
    from priorocc_ros.sync import ApproximateTimeSynchronizer

    seen = []
    s = ApproximateTimeSynchronizer(("a", "b"), 10, on_reject=lambda *a: seen.append(a))
    s.add("a", 100, 1)
    s.add("b", 100, 1)
    s.add("a", 50, 2)
    assert seen == [("late", "a", 50)]


def test_13_node_cli_prints_one_line_for_a_bad_parameter(tmp_path, micro, capsys, monkeypatch):
    from benchmarks.local_dds import loopback_env, unique_domain_id
    from priorocc_ros.occupancy_node import main

    env = loopback_env(domain_id=unique_domain_id(os.getpid() * 13 + 5))
    monkeypatch.setenv("CYCLONEDDS_URI", env["CYCLONEDDS_URI"])
    monkeypatch.setenv("ROS_DOMAIN_ID", env["ROS_DOMAIN_ID"])
    assert main(["--transport", "dds", "-p", f"checkpoint:={micro}", "-p", "image_topic:=/{camera}}/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    mine = [ln for ln in err if ln.startswith("occupancy_node:")]
    assert len(mine) == 1 and mine[0].startswith("occupancy_node: error: parameter image_topic='/{camera}}/x'")
    assert "Traceback" not in "\n".join(err)
    assert main(["--transport", "dds", "-r", "no-separator"]) == 2
    assert "remap rule 'no-separator'" in capsys.readouterr().err


# --------------------------------------------------------------------------- bad input (Build list)
def test_zero_length_and_zero_size_images_and_bad_K_are_clear_errors():
    """Zero-length JPEG, a 0x0 raw image, a JPEG whose header declares 0x0, NaN / negative /
    zero K: each one error naming the input and what was expected."""
    import cv2

    from priorocc_ros.calibration import CalibrationError, camera_info_geometry
    from priorocc_ros.image_codec import ImageDecodeError, decode_any
    from tests.foreign_recordings import TS, _header

    empty = TS.types["sensor_msgs/msg/CompressedImage"](header=_header(0, "f"), format="jpeg", data=np.zeros(0, np.uint8))
    with pytest.raises(ImageDecodeError, match="CAM_X: CompressedImage has no data"):
        decode_any(empty, "CAM_X")
    zero = raw_image(0, "f", np.zeros((1, 1, 3), np.uint8), "rgb8")
    zero.width, zero.height, zero.step, zero.data = 0, 0, 0, np.zeros(0, np.uint8)
    with pytest.raises(ImageDecodeError, match="CAM_X: Image has size 0x0; expected positive width and height"):
        decode_any(zero, "CAM_X")
    ok, data = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    b = bytearray(data.tobytes())
    i = b.index(b"\xff\xc0")
    b[i + 5:i + 9] = bytes(4)  # SOF declares 0 x 0
    j0 = TS.types["sensor_msgs/msg/CompressedImage"](header=_header(0, "f"), format="jpeg",
                                                     data=np.frombuffer(bytes(b), np.uint8))
    with pytest.raises(ImageDecodeError, match="CAM_X: JPEG data could not be decoded"):
        decode_any(j0, "CAM_X")
    for k, why in [(np.nan, "non-finite"), (-100.0, "not a valid camera matrix"), (0.0, "not a valid camera matrix")]:
        info = camera_info(0, "f", 160, 90)
        info.k = info.k.copy()
        info.k[0] = k
        with pytest.raises(CalibrationError, match=f"CAM_X camera_info: CameraInfo.k .*{why}|{why}"):
            camera_info_geometry(info, "CAM_X camera_info")


# --------------------------------------------------------------------------- flood
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


FLOOD_S = float(os.environ.get("PRIOROCC_FLOOD_S", "60"))


def test_flood_faster_than_inference_keeps_rss_bounded_and_counts_every_set(predictor):
    """Complete sets published as fast as the player can for FLOOD_S seconds (60 by default, the
    issue's figure), far faster than inference: the node keeps only the newest waiting set
    (queue_size 1), so RSS stays bounded (no growth beyond 150 MB after a warm-up of a tenth of
    the run), /diagnostics goes WARN while sets are dropped, every set is counted (the
    invariant) and later sets still come out.

    Mutation: an unbounded runner queue (queue_size 10**9) keeps every set: the backlog does not
    drain within a minute and the test fails (checked with a 10 s flood)."""
    rig = Rig(predictor, params={"queue_size": 1})
    t_end = time.monotonic() + FLOOD_S
    t_warm = time.monotonic() + FLOOD_S / 10
    base, peak, k, level_seen = None, 0.0, 0, set()
    while time.monotonic() < t_end:
        rig.send_set(k)
        k += 1
        now = time.monotonic()
        if now >= t_warm:
            rss = _rss_mb()
            base = rss if base is None else base
            peak = max(peak, rss)
        if k % 50 == 0:
            level_seen.add(rig.diag()[0])
            # the loopback bus and logger keep every message and line for assertions: a test
            # harness's memory, not the node's, so it is let go here
            for msgs in rig.bus.published.values():
                del msgs[:-1]
            del rig.node_t.logger.records[:-10]
    assert rig.core.wait_idle(60)
    st = rig.stats()
    rig.core.close()
    st = rig.stats()
    _invariant(st)
    assert st["sets_in"] == k and st["sets_failed"] == 0, st
    assert st["sets_dropped"] > k // 2 and st["sets_out"] >= 2, st  # the flood outran inference
    assert 1 in level_seen, f"/diagnostics never went WARN while dropping: levels {level_seen}"
    assert peak - base < 150, f"RSS grew from {base:.0f} MB to {peak:.0f} MB during the flood ({k} sets)"
