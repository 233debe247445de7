"""Issue 27 item 5: the replay on bags that do not fit.

Mutations tried (each made a test here fail; restored):
- plan_inputs' tie broken towards CompressedImage again -> the raw-only bag is planned as
  CompressedImage (test_raw_only_bag_is_planned_as_image).
- the ``sets_out == 0`` check in main removed -> exit 0 with nothing written
  (test_no_output_exits_1_with_one_summary_line).
- the parser built without its epilog (no mapping example) -> test_help_shows_a_mapping_example.
"""
import pytest

from priorocc_ros.replay import ReplayInputError, build_parser, check_inputs, main, plan_inputs
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
