"""The commands of README.md and docs/*.md, run as documented at small sizes (issue 31).

Every command line in the docs' shell code blocks that starts with one of the project's tools
(``python``, ``.venv/bin/python``, ``make``, ``torchrun``, ``training/dist_train.sh`` or a console
script of setup.py) is in ``DOCS`` below: either run here, or skipped with the reason (ROS 2 or
a DDS domain, a download, a GPU, hours of CPU). ``test_every_documented_command_is_listed`` fails
on a documented command that is not listed and on a listed one that is no longer documented, so
a doc that changes a command fails until the change is run here. Commands of ROS 2 itself
(``ros2``, ``colcon``, ``rosdep``, ``rviz2``), ``pip`` and ``export`` lines are not considered.

A run is the documented command with its placeholders replaced (``subs``: whole documented
words or parts of them -> paths of this test), its ``[--optional]`` groups dropped unless named in
``keep``, and ``extra`` arguments appended for small sizes (``--cfg-options`` values are merged
after the documented ones). Runs are in-process calls of the tool's ``main`` (no interpreter
start, no torch import per command) with the repository as the working directory; every output
goes under the test's temporary folder. The expensive setup is shared: the synthetic world is
the documented ``make_synthetic.py`` run, the checkpoint the documented tiny training run
(session fixtures ``docs_world`` and ``docs_run``).

Mutations: renaming ``--sources`` in generate_2d_seg_labels.py fails the label commands; editing
a documented command in docs/data.md (e.g. ``--scenes 2`` -> ``--n-scenes 2``) fails the listing
test; a tool returning 1 fails its run.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOC_FILES = ("README.md", "docs/data.md", "docs/dds.md", "docs/design.md", "docs/ros.md", "docs/speed.md",
             "docs/training.md")
TOOL_WORDS = ("python", ".venv/bin/python", "make", "torchrun", "training/dist_train.sh")
DDS = "needs a DDS domain of its own"


@dataclass(frozen=True)
class Doc:
    file: str
    command: str  # as documented (continuation lines joined; compared word by word)
    skip: str = ""  # why it does not run here
    subs: dict = field(default_factory=dict)  # documented text -> "{world}", "{run}", "{ckpt}", "{tmp}/..."
    keep: tuple = ()  # [optional] groups (their text without brackets) run here
    extra: tuple = ()  # appended for small sizes

    @property
    def id(self) -> str:
        return f"{self.file}:{' '.join(words(self.command)[:3])}"


TINY_RUN = ("--cfg-options", "data.dataroot={world}", "model.injector.enabled=false", "data.num_workers=0")
DOCS = [
    # ------------------------------------------------------------------ README.md
    Doc("README.md", "make demo", subs={"demo_out": "{tmp}/demo_out"},
        extra=("--keyframes", "1", "--width", "176", "--height", "99", "--backend", "torch", "--precision", "fp32")),
    Doc("README.md", "make test", skip="the test suite itself"),
    Doc("README.md", "make foxglove-screenshot",
        skip="installs Chromium (apt) and Foxglove Studio (npm, 230 MB); regenerates docs/img/foxglove_demo.png"),
    Doc("README.md", ".venv/bin/python training/integration_test.py --config training/configs/priorocc-r50.yaml",
        skip="the full-size R50 network takes minutes on a CPU; the script runs below on a checkpoint and "
             "tests/test_core_model.py builds these configs"),
    Doc("README.md", ".venv/bin/python training/integration_test.py --config training/configs/flashocc-r50.yaml",
        skip="as the priorocc-r50 line"),
    Doc("README.md", ".venv/bin/python training/integration_test.py --config training/configs/flashocc-r50-4d-stereo.yaml",
        skip="as the priorocc-r50 line (a full-size M2 took 10 min here); tests/test_stereo_model.py runs the script "
             "on the tiny M2-class network"),
    Doc("README.md", ".venv/bin/priorocc_import flashocc-r50-M0.pth --config training/configs/flashocc-r50-m0.yaml "
        "--out ckpts/flashocc-m0", skip="FlashOCC's published weights are a download (tests/test_core_importer.py "
                                        "imports checkpoints of their layout)"),
    Doc("README.md", ".venv/bin/python training/integration_test.py --checkpoint ckpts/flashocc-m0",
        subs={"ckpts/flashocc-m0": "{ckpt}"}),
    Doc("README.md", "nuscenes_to_bag --dataroot /data/nuscenes --version v1.0-mini --out bags/scene-0061 "
        "--scenes scene-0061", subs={"/data/nuscenes": "{world}", "bags/scene-0061": "{tmp}/bag",
                                     "scene-0061": "{scene}"}),
    Doc("README.md", "priorocc_replay bags/demo --checkpoint models/demo --out /tmp/out --backend openvino",
        subs={"/tmp/out": "{tmp}/out"}),
    Doc("README.md", "priorocc_replay bags/demo --checkpoint models/demo --out /tmp/out --foxglove 8765 --foxglove-wait 1",
        skip="waits for a Foxglove viewer: tests/test_foxglove_live.py runs it with a third-party client"),
    Doc("docs/ros.md", "priorocc_replay bags/demo --checkpoint models/demo --out /tmp/out --foxglove 8765 "
        "--foxglove-wait 1 --foxglove-linger 30",
        skip="waits for a Foxglove viewer: tests/test_foxglove_live.py runs it with a third-party client"),
    Doc("docs/ros.md", "occupancy_node --transport dds -p checkpoint:=models/demo --foxglove 8765",
        skip=f"a node that runs until stopped, and {DDS}: tests/test_foxglove_sink.py serves its outputs"),
    Doc("docs/ros.md", "priorocc_replay bags/demo --checkpoint MY_TEMPORAL_CKPT --out /tmp/out -p motion_frame:=map",
        skip="needs a temporal checkpoint (none is shipped): tests/test_ros_temporal.py replays a moving-ego bag "
             "through one"),
    Doc("README.md", "occupancy_node --transport dds -p checkpoint:=models/demo",
        skip=f"a node that runs until stopped, and {DDS}: tests/test_dds_e2e.py runs it"),
    Doc("README.md", "priorocc_play bags/demo --clock & priorocc_record --out /tmp/rec --all",
        skip=f"{DDS}: tests/test_dds_tools.py::test_readme_player_then_recorder_records_every_message runs it"),
    # ------------------------------------------------------------------ docs/data.md
    Doc("docs/data.md", "python training/make_synthetic.py --out data/synthetic --scenes 2 --keyframes 10 --seed 0 "
        "[--width 1600 --height 900] [--version v1.0-mini] [--lidar-azimuth 1084] "
        "[--ego-speed M_PER_S] [--turn-rate DEG_PER_S] [--no-moving-objects] [--rig-preset nuscenes|robot4|front1]",
        skip="runs as the session fixture docs_world (the moving-ego options: tests/test_data_temporal.py)"),
    Doc("docs/data.md", "python training/generate_2d_seg_labels.py --dataroot DIR --sources projection "
        "[--out DIR/seg_2d_labels]", subs={"DIR/seg_2d_labels": "{tmp}/labels", "DIR": "{world}"},
        keep=("--out DIR/seg_2d_labels",), extra=("--no-progress",)),
    Doc("docs/data.md", "python training/generate_2d_seg_labels.py --dataroot DIR --sources projection,segformer "
        "--model SEGFORMER_DIR [--device cuda] [--batch-size 8] [--out DIR/seg_2d_labels]",
        skip="a SegFormer model is a download (tests/test_data_labels.py runs this with a tiny local one)"),
    Doc("docs/data.md", "torchrun --nproc_per_node=8 training/generate_2d_seg_labels.py ... --device cuda",
        skip="8 GPUs"),
    # ------------------------------------------------------------------ docs/dds.md
    Doc("docs/dds.md", "occupancy_node --transport dds -p checkpoint:=checkpoints/priorocc-r50 -p device:=cuda",
        skip=f"CUDA, a node that runs until stopped, and {DDS}"),
    Doc("docs/dds.md", "priorocc_play bags/scene-0061 --clock", skip=f"{DDS}: tests/test_dds_tools.py"),
    Doc("docs/dds.md", "priorocc_record --out runs/out1 /priorocc/voxels /priorocc/bev /diagnostics",
        skip=f"{DDS}: tests/test_dds_tools.py"),
    Doc("docs/dds.md", "priorocc_topics", skip=f"{DDS}: tests/test_dds_tools.py"),
    # ------------------------------------------------------------------ docs/ros.md
    Doc("docs/ros.md", "occupancy_node --transport dds -p checkpoint:=/models/priorocc-r50 -p device:=cpu",
        skip=f"a node that runs until stopped, and {DDS}: tests/test_dds_e2e.py"),
    Doc("docs/ros.md", "priorocc_replay my_bag --list", subs={"my_bag": "bags/demo"}),
    Doc("docs/ros.md", "priorocc_replay my_bag --list -p image_topic:=/cameras/{camera}/image_raw "
        "-p camera_info_topic:=/cameras/{camera}/camera_info "
        "-p camera_names:=[cam_front_left,cam_front,cam_front_right,cam_back_left,cam_back,cam_back_right]",
        subs={"my_bag": "bags/demo"}),
    Doc("docs/ros.md", "priorocc_replay my_bag --checkpoint CKPT --out /tmp/out -p image_topic:=... "
        "-p camera_info_topic:=... -p camera_names:=[...]", skip="the mapping of step 2, elided (...)"),
    Doc("docs/ros.md", "priorocc_replay bags/demo --checkpoint CKPT --out /tmp/out [--copy-inputs] "
        "[-p slop:=0.05] [-r FROM:=TO] [--json summary.json]",
        subs={"CKPT": "{ckpt}", "/tmp/out": "{tmp}/replay", "summary.json": "{tmp}/summary.json"},
        keep=("--copy-inputs", "-p slop:=0.05", "--json summary.json"), extra=("--backend", "torch")),
    # ------------------------------------------------------------------ docs/speed.md
    Doc("docs/speed.md", "priorocc_quantize model_dir --world CALIB_WORLD [--world ...] --val-world HELD_WORLD "
        "[--real ../shared/data/nuscenes-real] [--frames 25] [-o model_dir/openvino/int8.xml]",
        skip="needs a second (held) world beside the calibration one: tests/test_quantize.py runs this CLI "
             "with --world and --val-world"),
    Doc("docs/speed.md", "priorocc_export model_dir [-o model.onnx] [--logits] [--no-verify]",
        subs={"model_dir": "{ckpt}", "model.onnx": "{tmp}/model.onnx"}, keep=("-o model.onnx", "--logits")),
    Doc("docs/speed.md", ".venv/bin/python benchmarks/run.py --out benchmarks/results.json",
        skip="the full benchmark: an hour of CPU"),
    Doc("docs/speed.md", ".venv/bin/python benchmarks/run.py --quick --out /tmp/quick.json",
        skip="2 minutes, over this test's budget; tests/test_cli_errors.py checks its settings and note"),
    # ------------------------------------------------------------------ docs/training.md
    Doc("docs/training.md", "python training/train.py training/configs/priorocc-r50.yaml --work-dir "
        "work_dirs/priorocc-r50", skip="R50 training: the tiny line below runs the same code"),
    Doc("docs/training.md", "training/dist_train.sh training/configs/priorocc-r50.yaml 8 --work-dir "
        "work_dirs/priorocc-r50", skip="8 processes; tests/test_train.py runs dist_train.sh with 2"),
    Doc("docs/training.md", "python training/train.py training/configs/priorocc-r50.yaml --load-from "
        "ckpts/bevdet-r50-cbgs.pth", skip="BEVDet's weights are a download"),
    Doc("docs/training.md", "python training/train.py training/configs/priorocc-r50.yaml --work-dir "
        "work_dirs/priorocc-r50 --resume auto", subs={"training/configs/priorocc-r50.yaml": "training/configs/tiny.yaml",
                                                      "work_dirs/priorocc-r50": "{run}"},
        extra=("--no-progress",) + TINY_RUN + ("train.max_iters=3",)),
    Doc("docs/training.md", "python training/train.py CONFIG --work-dir DIR --resume DIR/checkpoints/iter_0012000",
        subs={"CONFIG": "training/configs/tiny.yaml", "DIR/checkpoints/iter_0012000": "{run}/checkpoints/iter_0000002",
              "DIR": "{run}"}, extra=("--no-progress",) + TINY_RUN + ("train.max_iters=3",)),
    Doc("docs/training.md", "python training/train.py training/configs/tiny.yaml --cfg-options train.max_iters=50 "
        "model.injector.enabled=false", skip="runs as the session fixture docs_run"),
    Doc("docs/training.md", "python training/evaluate.py CONFIG CHECKPOINT_DIR [--split val] [--also-no-mask] "
        "[--out results.json]", subs={"CONFIG": "{run}/config.yaml", "CHECKPOINT_DIR": "{ckpt}",
                                     "results.json": "{tmp}/results.json"},
        keep=("--split val", "--also-no-mask", "--out results.json"), extra=("--device", "cpu")),
    Doc("docs/training.md", "python training/evaluate.py CONFIG CHECKPOINT_DIR --save-pred preds/",
        subs={"CONFIG": "{run}/config.yaml", "CHECKPOINT_DIR": "{ckpt}", "preds/": "{tmp}/preds"},
        extra=("--device", "cpu", "--no-rayiou", "--out", "{tmp}/eval.json")),
    Doc("docs/training.md", "python training/evaluate.py CONFIG --pred-dir preds/ [--gt-root data/nuscenes/gts]",
        subs={"CONFIG": "{run}/config.yaml", "preds/": "{tmp}/preds", "data/nuscenes/gts": "{world}/gts"},
        keep=("--gt-root data/nuscenes/gts",), extra=("--no-rayiou",)),
    Doc("docs/training.md", "python training/ablation.py --out work_dirs/ablation --seeds 0 1 --iters 300",
        skip="hours of CPU (RESULTS.md); tests/test_ablation_report.py checks its report"),
    Doc("docs/training.md", "python training/ablation.py --out work_dirs/abl16 --config "
        "training/configs/demo-small.yaml --seeds 0 1 2 --iters 500 --scenes 20 --keyframes 6 --val-scenes 2 "
        "--world-seed 2026 --world-args \"--width 352 --height 198 --version v1.0-mini --lidar-azimuth 360\" "
        "--cfg-options data.version=v1.0-mini --noisy-rate 0.3 --jobs 2 --results-md RESULTS.md",
        skip="hours of CPU (RESULTS.md)"),
    Doc("docs/training.md", "python training/ablation.py --study temporal --out work_dirs/abl25 --config "
        "training/configs/demo-small.yaml --seeds 0 1 2 --iters 500 --scenes 20 --keyframes 6 --val-scenes 2 "
        "--world-seed 2026 --world-args \"--width 352 --height 198 --version v1.0-mini --lidar-azimuth 360\" "
        "--cfg-options data.version=v1.0-mini --jobs 2 --results-md RESULTS.md",
        skip="hours of CPU (RESULTS.md); tests/test_ablation_report.py checks the temporal study's report"),
    Doc("docs/training.md", "python training/ablation.py --study dropout --out work_dirs/abl30 --config "
        "training/configs/demo-small.yaml --seeds 0 1 2 --iters 250 --scenes 8 --keyframes 6 --val-scenes 2 "
        "--world-seed 2030 --world-args \"--width 352 --height 198 --version v1.0-mini --lidar-azimuth 360\" "
        "--cfg-options data.version=v1.0-mini --no-rayiou --jobs 2 --results-md RESULTS.md",
        skip="an hour of CPU (RESULTS.md); tests/test_ablation_report.py checks the dropout study's report"),
    Doc("docs/training.md", "python training/demo_report.py --run WORK_DIR --val-world VAL_WORLD --demo-world "
        "demo_out/world --baseline models/demo --results-md RESULTS.md --train-command \"...\"",
        skip="reports on a finished demo-model training run (hours)"),
    Doc("docs/training.md", "priorocc_config_from_flashocc projects/configs/flashocc/flashocc-r50.py --out "
        "training/configs/my-flashocc-r50.yaml",
        subs={"projects/configs/flashocc/flashocc-r50.py": "tests/fixtures/flashocc/flashocc-r50.py",
              "training/configs/my-flashocc-r50.yaml": "{tmp}/my-flashocc-r50.yaml"}),
    Doc("docs/training.md", "python -c \"from priorocc_core.data import load_info_file as f; "
        "print(len(f('data/nuscenes/bevdetv2-nuscenes_infos_train.pkl')), 'samples')\"",
        subs={"data/nuscenes/bevdetv2-nuscenes_infos_train.pkl": "{infos}"}),
    Doc("docs/training.md", "priorocc_import flashocc-r50-256x704.pth --config training/configs/my-flashocc-r50.yaml "
        "--out ckpts/my-flashocc-r50", skip="FlashOCC's weights are a download"),
    Doc("docs/training.md", "python training/generate_2d_seg_labels.py --dataroot data/nuscenes --sources projection",
        subs={"data/nuscenes": "{world}"}, extra=("--no-progress",)),
]
FIXTURE_COMMANDS = {  # the two commands the session fixtures run, with their small-size arguments
    "world": Doc("docs/data.md", next(d.command for d in DOCS if "make_synthetic.py" in d.command),
                 subs={"data/synthetic": "{world}"},
                 extra=("--scenes", "1", "--keyframes", "2", "--width", "176", "--height", "99", "--lidar-azimuth", "90")),
    "run": Doc("docs/training.md", next(d.command for d in DOCS if "train.max_iters=50" in d.command),
               extra=("--work-dir", "{run}", "--no-progress", "--cfg-options", "data.dataroot={world}",
                      "train.max_iters=2", "data.num_workers=0")),
}


# ----------------------------------------------------------------------------- reading the docs
def words(command: str) -> list[str]:
    return shlex.split(command, comments=True)


def documented_commands() -> list[tuple[str, str]]:
    """(file, command) of every tool command in the docs' shell blocks, continuation lines joined."""
    consoles = set(entry_points())
    out = []
    for f in DOC_FILES:
        lang, block, inside = "", [], False
        for line in (ROOT / f).read_text().splitlines():
            m = re.match(r"^\s*```(\w*)", line)
            if m:
                if inside and lang in ("", "bash", "sh", "console"):
                    out.extend((f, c) for c in _commands(block, consoles))
                inside, lang, block = not inside, m.group(1), []
            elif inside:
                block.append(line)
    return out


def _commands(lines: list[str], consoles: set[str]) -> list[str]:
    joined, cur = [], ""
    for ln in lines:
        if ln.rstrip().endswith("\\"):
            cur += ln.rstrip()[:-1] + " "
            continue
        joined.append(cur + ln)
        cur = ""
    cmds = []
    for ln in joined:
        first = ln.split()[0] if ln.split() else ""
        name = first.removeprefix(".venv/bin/")
        if first in TOOL_WORDS or name in consoles:
            cmds.append(" ".join(words(ln)))
    return cmds


def entry_points() -> dict[str, str]:
    """console script -> "module:function", from setup.py."""
    text = (ROOT / "setup.py").read_text()
    return dict(re.findall(r'"(\w+) = ([\w.]+:\w+)"', text))


def test_every_documented_command_is_listed():
    documented = {(f, c) for f, c in documented_commands()}
    listed = {(d.file, " ".join(words(d.command))) for d in DOCS}
    assert len(documented) >= 40, sorted(documented)
    assert documented - listed == set(), "documented but not in tests/test_docs_commands.py DOCS"
    assert listed - documented == set(), "in DOCS but no longer documented"


# ----------------------------------------------------------------------------- running them
def argv_of(doc: Doc, paths: dict[str, str]) -> list[str]:
    """The documented command as it runs here: optional groups, placeholders, small sizes."""
    text = re.sub(r"\[(-[^\]]*)\]", lambda m: m.group(1) if m.group(1) in doc.keep else "", doc.command)
    if text.startswith("make "):  # the target's recipe (one line) with the Makefile's python
        target, rest = text.split()[1], text.split(None, 2)[2:]
        recipe = re.search(rf"^{target}:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
        text = " ".join([recipe.replace("$(PY)", "python")] + rest)
    subs = {k: v.format(**paths) for k, v in doc.subs.items()}
    pattern = re.compile("|".join(re.escape(k) for k in sorted(subs, key=len, reverse=True))) if subs else None
    argv = [pattern.sub(lambda m: subs[m.group(0)], w) if pattern else w for w in words(text)]
    extra = [e.format(**paths) for e in doc.extra]
    if "--cfg-options" in extra and "--cfg-options" in argv:  # one list: the documented values, then ours
        i = argv.index("--cfg-options") + 1
        while i < len(argv) and not argv[i].startswith("--"):
            i += 1
        k = extra.index("--cfg-options")
        argv[i:i] = extra[k + 1:]
        extra = extra[:k]
    return argv + extra


def run(doc: Doc, paths: dict[str, str]) -> tuple[int, str]:
    """Call the tool's main in-process (cwd: the repository) -> (exit code, stdout)."""
    argv = argv_of(doc, paths)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if argv[0] in ("python", ".venv/bin/python") and argv[1] == "-c":
            exec(compile(argv[2], "<docs>", "exec"), {"__name__": "__docs__"})
            return 0, out.getvalue()
        if argv[0] in ("python", ".venv/bin/python"):
            if str(ROOT / "training") not in sys.path:
                sys.path.insert(0, str(ROOT / "training"))
            main, args = importlib.import_module(argv[1][:-3].replace("/", ".")).main, argv[2:]
        else:
            module, func = entry_points()[argv[0].removeprefix(".venv/bin/")].split(":")
            main, args = getattr(importlib.import_module(module), func), argv[1:]
        try:
            rc = main(args)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
    return rc or 0, out.getvalue()


@pytest.fixture(scope="session")
def docs_paths(tmp_path_factory):
    """The documented make_synthetic.py and tiny train.py runs (small), shared by every run here."""
    base = tmp_path_factory.mktemp("docs")
    paths = {"world": str(base / "world"), "run": str(base / "run"), "tmp": str(base / "tmp")}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        for name in ("world", "run"):
            rc, _ = run(FIXTURE_COMMANDS[name], paths)
            assert rc == 0, FIXTURE_COMMANDS[name].command
    paths["ckpt"] = str(Path(paths["run"]) / "final")
    paths["scene"] = json.loads((Path(paths["world"]) / "v1.0-mini" / "scene.json").read_text())[0]["name"]
    from priorocc_core.data import records_from_nuscenes, write_info_cache
    from priorocc_core.data.infos import open_nuscenes

    paths["infos"] = str(base / "infos.json")
    write_info_cache(records_from_nuscenes(open_nuscenes(paths["world"])[0]), paths["infos"])
    return paths


@pytest.mark.parametrize("doc", [d for d in DOCS if not d.skip], ids=lambda d: d.id)
def test_documented_command_runs(doc, docs_paths, tmp_path, monkeypatch):
    paths = dict(docs_paths, tmp=str(tmp_path))
    monkeypatch.chdir(ROOT)
    if "--pred-dir" in doc.command:  # reads what the --save-pred line writes
        rc, _ = run(next(d for d in DOCS if "--save-pred" in d.command), paths)
        assert rc == 0
    if "iter_0012000" in doc.command or "--resume auto" in doc.command:  # resume a run of its own
        import shutil

        paths["run"] = str(tmp_path / "run")
        shutil.copytree(docs_paths["run"], paths["run"])
    rc, out = run(doc, paths)
    assert rc == 0, (argv_of(doc, paths), out[-2000:])
    if "--json summary.json" in doc.command:
        assert json.loads((tmp_path / "summary.json").read_text())["backend"]["backend"] == "torch"
    if "load_info_file" in doc.command:
        assert out.strip() == "2 samples", out


def test_fixture_commands_are_the_documented_ones():
    """The session fixtures run documented commands (DOCS entries skipped as 'session fixture')."""
    for d in FIXTURE_COMMANDS.values():
        assert any(x.command == d.command and "session fixture" in x.skip for x in DOCS), d.command
