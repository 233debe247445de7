"""A dead camera is not a dead node (issue 30): one camera stops in the middle of a replay
(loopback node, the tiny model); with missing_camera:=degrade every set is still published,
flagged degraded in /diagnostics, the region only that camera sees unknown in every output
(absent from ~/voxels, -1 in ~/bev), complete sets again when it returns, and the counts add
up; with missing_camera:=wait those groups are incomplete, as before."""
from __future__ import annotations

import numpy as np
import pytest

from priorocc_core.classes import CAMERAS
from priorocc_ros.bagio import read_messages
from priorocc_ros.msgs import stamp_to_ns
from priorocc_ros.outputs import VoxelGrid, camera_visibility, pointcloud2_to_array
from tests.ros_helpers import make_tiny_checkpoint, write_camera_bag

DEAD = "CAM_BACK"
SILENT = range(3, 7)  # sets 3..6 without CAM_BACK (image and camera_info)
N_SETS = 10


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


def _bag(tmp_path):
    def mutate(k, cam, im, info):
        if cam == DEAD and k in SILENT:
            return None, None  # the camera stopped: no image, no camera_info
        return None

    return write_camera_bag(tmp_path / "in", n_sets=N_SETS, mutate=mutate, jitter_ns=10_000_000)


def _by_topic(out):
    by = {}
    for topic, _, t, m in read_messages(out):
        by.setdefault(topic, []).append((t, m))
    return by


def test_camera_stops_mid_replay_sets_degrade_not_vanish(tmp_path, ckpt, capfd):
    """Mutations: make_synchronizer without degrade= -> 4 incomplete sets, 6 out; stages.publish
    without mask_unseen -> the dead camera's region holds free / occupied columns; the set callback
    not counting degraded_sets -> 0; stages.decode without the camera mask (prepare(..., None)) ->
    the black stand-in image feeds the network (the masks the predictor was given are checked)."""
    from priorocc_core.backends import make_predictor
    from priorocc_ros.replay import replay

    info = _bag(tmp_path)
    pred = make_predictor(ckpt)  # torch fp32

    class Spy:
        """The predictor, recording the camera mask the node prepares each set with."""
        masks: list = []

        def __getattr__(self, name):
            return getattr(pred, name)

        def prepare(self, *a, **kw):
            self.masks.append(kw.get("camera_mask"))
            return pred.prepare(*a, **kw)

    spy = Spy()
    summary = replay(tmp_path / "in", tmp_path / "out", predictor=spy, parameters={"checkpoint": str(ckpt)},
                     echo_log=True)
    n = summary.node
    assert n["sets_in"] == N_SETS == n["sets_out"], n
    assert n["degraded_sets"] == len(SILENT) and n[f"degraded_without_{DEAD}"] == len(SILENT)
    assert n["incomplete_sets"] == 0 and n["sets_failed"] == 0 and n["sets_dropped"] == 0
    assert n["unaccounted"] == 0 and n["groups_in"] == N_SETS, n["invariant"]
    assert n["silent_cameras"] == ""  # it came back
    assert f"degraded {len(SILENT)}" in summary.text()
    mask = tuple(c != DEAD for c in CAMERAS)
    assert spy.masks == [mask if k in SILENT else None for k in range(N_SETS)]  # full sets: the unmasked path
    log = capfd.readouterr().out
    assert log.count(f"[WARNING] [priorocc]: camera {DEAD} (/{DEAD}/image_rect_compressed) silent") == 1, log
    assert log.count(f"[INFO] [priorocc]: camera {DEAD} (/{DEAD}/image_rect_compressed) is back") == 1, log

    by = _by_topic(tmp_path / "out")
    ref_stamps = [row[CAMERAS.index("CAM_FRONT")] for row in info["stamps"]]
    assert [t for t, _ in by["/priorocc/voxels"]] == ref_stamps  # every set published, in order
    assert len(by[f"/priorocc/seg_overlay/{DEAD}"]) == N_SETS - len(SILENT)  # no overlay of a camera not there

    # the region only CAM_BACK sees (its last calibration = the rig's)
    grid = VoxelGrid()
    i = CAMERAS.index(DEAD)
    K, c2e = info["K"], info["cam2ego"]
    others = [j for j in range(len(CAMERAS)) if j != i]
    hw = [(90, 160)] * len(CAMERAS)
    lost = camera_visibility(c2e[[i]], K[[i]], hw[:1], grid) & ~camera_visibility(c2e[others], K[others], hw[:5], grid)
    assert lost.sum() > 100
    for k, ((_, bev), (_, vox)) in enumerate(zip(by["/priorocc/bev"], by["/priorocc/voxels"])):
        states = np.asarray(bev.data).reshape(bev.info.height, bev.info.width).T  # [x, y]
        a = pointcloud2_to_array(vox)
        ix = ((a["x"] - grid.origin[0]) / grid.voxel_size).astype(int)
        iy = ((a["y"] - grid.origin[1]) / grid.voxel_size).astype(int)
        in_lost = lost[ix, iy]
        if k in SILENT:
            assert (states[lost] == -1).all(), k  # unknown, not free
            assert not in_lost.any(), k  # no voxel where nothing looked
            assert (states[~lost] != -1).any()
        else:
            assert (states[lost] != -1).all(), k  # full sets: CAM_BACK's region known again

    # the degraded set's occupancy is the predictor's with the camera masked out
    k = SILENT[0]
    imgs = _set_images(tmp_path / "in", info["stamps"][k])
    mask = [c != DEAD for c in CAMERAS]
    imgs[i] = np.zeros((90, 160, 3), np.uint8)
    occ = pred.predict(imgs, K, c2e, camera_mask=mask).occupancy.copy()
    occ[lost] = 255
    vox = by["/priorocc/voxels"][k][1]
    a = pointcloud2_to_array(vox)
    from priorocc_ros.outputs import occupied_mask

    idx = np.argwhere(occupied_mask(occ))
    assert len(a) == len(idx) and np.array_equal(a["label"], occ[idx[:, 0], idx[:, 1], idx[:, 2]])


def _set_images(bag, stamps):
    """The decoded images of one set of the bag (None for a camera absent from it)."""
    from priorocc_ros.image_codec import decode_any

    want = dict(zip(CAMERAS, stamps))
    out = [None] * len(CAMERAS)
    for topic, _, t, m in read_messages(bag):
        cam = topic.split("/")[1]
        if topic.endswith("image_rect_compressed") and want.get(cam) == stamp_to_ns(m.header.stamp):
            out[CAMERAS.index(cam)] = decode_any(m, source=cam)
    return out


def test_missing_camera_wait_keeps_incomplete_groups(tmp_path, ckpt):
    """missing_camera:=wait: the groups without CAM_BACK are incomplete (not published), counted.
    Mutation: make_synchronizer passing degrade=True always -> degraded 4, incomplete 0."""
    from priorocc_ros.replay import replay

    _bag(tmp_path)
    summary = replay(tmp_path / "in", tmp_path / "out", parameters={"checkpoint": str(ckpt), "missing_camera": "wait"})
    n = summary.node
    assert n["sets_out"] == N_SETS - len(SILENT) and n["incomplete_sets"] == len(SILENT)
    assert n["degraded_sets"] == 0 and n["unaccounted"] == 0 and n["groups_in"] == N_SETS


def test_live_node_camera_silent_warns_then_ok_when_back(tmp_path):
    """A live loopback node (the micro model): CAM_BACK silent for sets 2-7 -> those sets are
    published degraded as their groups expire, /diagnostics WARN naming the camera while they
    come, OK again once complete sets are back; the counts add up.
    Mutations: diagnostics not naming silent cameras (silent_cameras always "") -> the WARN
    message check fails; the set callback not resetting ``silent`` when the camera returns ->
    silent_cameras stays CAM_BACK."""
    from priorocc_core.backends import make_predictor
    from tests.foreign_recordings import micro_checkpoint
    from tests.test_ros_issue15 import Rig, _invariant

    rig = Rig(make_predictor(micro_checkpoint(tmp_path / "micro")))
    for k in range(2):
        rig.send_set(k)
    assert rig.core.wait_idle(30)
    level, msg, _ = rig.diag()
    assert level == 0, msg
    for k in range(2, 8):
        rig.send_set(k, skip=(DEAD,))
    assert rig.core.wait_idle(30)
    level, msg, values = rig.diag()
    assert level == 1 and msg.startswith(f"camera(s) silent: {DEAD} (sets degraded)"), msg
    assert values["silent_cameras"] == DEAD and int(values["degraded_sets"]) >= 1, values
    assert values["incomplete_sets"] == "0"
    for k in range(8, 10):  # back: the pending groups expire degraded, then complete sets
        rig.send_set(k)
    assert rig.core.wait_idle(30)
    rig.diag()
    rig.send_set(10)
    assert rig.core.wait_idle(30)
    level, msg, values = rig.diag()
    assert level == 0 and values["silent_cameras"] == "", (msg, values)
    rig.core.close()
    st = rig.stats()
    assert st["sets_out"] == 11 and st["degraded_sets"] == 6 and st[f"degraded_without_{DEAD}"] == 6
    assert st["incomplete_sets"] == 0 and st["groups_in"] == 11
    _invariant(st)
    warns = [w for w in rig.node_t.logger.messages("warning") if f"camera {DEAD}" in w and "silent" in w]
    assert len(warns) == 1, warns


def test_calibration_change_mid_run_is_counted_and_used(tmp_path, ckpt, capfd):
    """CAM_FRONT's CameraInfo focal length changes from set 4 on: counted once
    (calibration_changes_CAM_FRONT 1), one line, every set published, the new K used from set 4.
    Mutation: fill() not comparing K (only the image size) -> 0 changes counted."""
    from priorocc_core.backends import make_predictor
    from priorocc_ros.replay import replay

    def mutate(k, cam, im, info):
        if cam == "CAM_FRONT" and k >= 4:
            kk = np.array(info.k, dtype=np.float64)
            kk[0] *= 1.1  # fx
            info.k = kk
        return im, info

    write_camera_bag(tmp_path / "in", n_sets=7, mutate=mutate, jitter_ns=10_000_000)
    pred = make_predictor(ckpt)
    seen = []

    class Spy:
        def __getattr__(self, name):
            return getattr(pred, name)

        def prepare(self, imgs, K, *a, **kw):
            seen.append(float(K[CAMERAS.index("CAM_FRONT")][0, 0]))
            return pred.prepare(imgs, K, *a, **kw)

    summary = replay(tmp_path / "in", tmp_path / "out", predictor=Spy(), parameters={"checkpoint": str(ckpt)},
                     echo_log=True)
    n = summary.node
    assert n["sets_out"] == 7 and n["sets_failed"] == 0 and n["unaccounted"] == 0, n
    assert n["calibration_changes"] == 1 and n["calibration_changes_CAM_FRONT"] == 1, n
    assert seen[4] == pytest.approx(seen[0] * 1.1) and seen[3] == seen[0] and seen[6] == seen[4]
    log = capfd.readouterr().out
    assert log.count("CAM_FRONT: calibration changed at") == 1, log


def test_synchroniser_degrade_with_camera_info_streams():
    """ApproximateTimeSynchronizer(degrade=True) with info streams: a group missing C goes out as
    a degraded set (C's item None, no wait for C's info) once C sent a newer image or after
    max_wait, counted in sets and degraded, never incomplete; an image of C older than it is late.
    Mutations: _release waiting for the missing camera's info -> the degraded sets wait for the
    flush; _emit_degraded not setting _last_set_max -> C's image of group 4 is not late (a one-camera set)."""
    from priorocc_ros.sync import ApproximateTimeSynchronizer

    MS = 1_000_000
    sets = []
    s = ApproximateTimeSynchronizer(("A", "B", "C"), 10 * MS, max_wait_ns=100 * MS, info_streams=("A", "B", "C"),
                                    on_set=sets.append, degrade=True)

    def send(k, cams):
        t = 1000 * MS + k * 50 * MS
        for cam in cams:
            s.add_info(cam, t, f"info-{cam}{k}")
            s.add(cam, t, f"{cam}{k}")

    for k in range(4):
        send(k, ("A", "B") + (("C",) if k != 1 else ()))
    s.add("C", 1000 * MS + 50 * MS + 1, "C1-late")  # older than the sets that went out
    assert [x.items for x in sets] == [("A0", "B0", "C0"), ("A1", "B1", None), ("A2", "B2", "C2"), ("A3", "B3", "C3")]
    assert sets[1].missing == ("C",) and sets[1].present == (True, True, False) and sets[0].missing == ()
    assert sets[1].infos == ("info-A1", "info-B1", None)
    assert s.stats.late == 1
    for k in range(4, 8):  # C silent: group 4 leaves once it is over max_wait (100 ms) behind the newest
        send(k, ("A", "B"))
    assert [x.items for x in sets[4:]] == [("A4", "B4", None)], [x.items for x in sets]
    s.add("C", 1000 * MS + 4 * 50 * MS, "C4-late")  # C's image of the degraded group 4: too late
    assert s.stats.late == 2
    s.flush()
    st = s.stats
    assert st.sets == 8 and st.degraded == 5 and st.degraded_missing == {"C": 5} and st.incomplete == 0
