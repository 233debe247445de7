"""Issue 27 item 5: the replay on bags that do not fit.

Mutations tried (each made a test here fail; restored):
- plan_inputs' tie broken towards CompressedImage again -> the raw-only bag is planned as
  CompressedImage (test_raw_only_bag_is_planned_as_image).
- the ``sets_out == 0`` check in main removed -> exit 0 with nothing written
  (test_no_output_exits_1_with_one_summary_line).
- the parser built without its epilog (no mapping example) -> test_help_shows_a_mapping_example.
- BagPacer counting from each message instead of the first (``self._start = (t_ns, clock())``
  every call) -> test_foxglove_rate_plays_bag_time_scaled; its rate check reduced to ``rate < 0``
  -> NaN and inf accepted, test_bad_foxglove_rate_exits_2_before_any_output.
"""
from pathlib import Path

import pytest

from priorocc_ros.replay import BagPacer, ReplayInputError, build_parser, check_inputs, main, plan_inputs
from tests.ros_helpers import make_tiny_checkpoint, write_camera_bag

CAMS = ["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"]


def test_raw_only_bag_is_planned_as_image():
    """A bag with only sensor_msgs/Image under other names: neither topic pattern matches (0:0);
    the types present decide (Image), and the error then names the topic parameters, not the
    transport (whose hint, compressed:=false, failed again before)."""
    topics = {f"/{c}/image_raw": ("sensor_msgs/msg/Image", 3) for c in CAMS}
    topics |= {f"/{c}/camera_info": ("sensor_msgs/msg/CameraInfo", 3) for c in CAMS}
    plan, compressed = plan_inputs(topics, {})
    assert compressed is False and all(ci.image_type == "sensor_msgs/msg/Image" for ci in plan)
    with pytest.raises(ReplayInputError, match="image_topic") as e:
        check_inputs("BAG", topics, plan, False, False)
    assert "compressed:=" not in str(e.value)
    plan, _ = plan_inputs(topics, {"image_topic": "/{camera}/image_raw"})
    check_inputs("BAG", topics, plan, False, False)  # fits
    # compressed-only bag under other names: CompressedImage, as before
    ctopics = {f"/{c}/jpeg": ("sensor_msgs/msg/CompressedImage", 3) for c in CAMS}
    assert plan_inputs(ctopics, {})[1] is True


def test_no_output_exits_1_with_one_summary_line(tmp_path, capsys):
    """Every set fails (CameraInfo says 2x the image size): exit 1 and one stderr line naming the
    errors per kind and the last one (before: exit 0, the reason only with --verbose)."""
    def double_info(k, cam, img, info):
        info.width, info.height = info.width * 2, info.height * 2
        return img, info

    bag = tmp_path / "in"
    write_camera_bag(bag, 2, mutate=double_info)
    ckpt = make_tiny_checkpoint(tmp_path / "tiny")
    rc = main([str(bag), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 1, err
    assert len(err) == 1 and err[0].startswith("priorocc_replay: no set produced output"), err
    assert "2 complete" in err[0] and "last error:" in err[0] and "CameraInfo" in err[0], err


def test_help_shows_a_mapping_example():
    text = build_parser().format_help()
    assert "camera_names:=[" in text and "image_topic:=" in text and "-r /CAM_FRONT" in text


class _FakeClock:
    """perf_counter and sleep of a replay whose model takes ``work`` s per message."""

    def __init__(self):
        self.now, self.slept = 100.0, []

    def clock(self):
        return self.now

    def sleep(self, s):
        self.slept.append(round(s, 9))
        self.now += s


def test_foxglove_rate_plays_bag_time_scaled():
    """--foxglove-rate 2: bag times 0, 0.5, 1.0, 3.0 s are due at 0, 0.25, 0.5, 1.5 s of wall
    from the first message; time the model already spent is not slept again; rate 0 never sleeps."""
    fc = _FakeClock()
    pacer = BagPacer(2.0, clock=fc.clock, sleep=fc.sleep)
    t0 = 7_000_000_000  # bag time of the first message (ns)
    pacer.wait_for(t0)
    fc.now += 0.1  # the model's work on message 1
    pacer.wait_for(t0 + 500_000_000)  # due at +0.25: sleeps 0.15
    fc.now += 0.4  # a slow message: now +0.65, past the next one's +0.5
    pacer.wait_for(t0 + 1_000_000_000)  # late: no sleep
    pacer.wait_for(t0 + 3_000_000_000)  # due at +1.5: sleeps 0.85
    assert fc.slept == [0.15, 0.85]
    assert fc.now == pytest.approx(100.0 + 1.5)
    fast = _FakeClock()
    p0 = BagPacer(0.0, clock=fast.clock, sleep=fast.sleep)
    for k in range(3):
        p0.wait_for(k * 10**9)
    assert fast.slept == []


@pytest.mark.parametrize("rate", ["-1", "nan", "inf"])
def test_bad_foxglove_rate_exits_2_before_any_output(tmp_path, capsys, rate):
    """A bad --foxglove-rate: exit 2, one line naming the option and what it expects, no output
    bag left behind (checked before the writer and the model)."""
    demo = Path(__file__).resolve().parents[1] / "bags" / "demo"
    out = tmp_path / "out"
    rc = main([str(demo), "--checkpoint", str(tmp_path / "no-model"), "--out", str(out), "--foxglove", "0",
               "--foxglove-rate", rate])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(err) == 1 and "--foxglove-rate" in err[0] and "positive, finite speed factor" in err[0], err
    assert not out.exists() and list(tmp_path.iterdir()) == []
