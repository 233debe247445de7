"""Expected errors of the command-line tools are one line naming the input, exit code 2, no
traceback; ``--debug`` shows the traceback. Mutation check: removing cli.run's PriorOccError
handler (or the YAML error wrapping in Config.with_overrides) fails these tests."""
from __future__ import annotations

import sys

import pytest

from priorocc_core.config import ConfigError
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "training"))
TINY = str(ROOT / "training" / "configs" / "tiny.yaml")


def _one_line(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture(scope="module")
def one_sample(tmp_path_factory):
    from tests.test_train import make_tiny_dataset

    root = tmp_path_factory.mktemp("one")
    return root, make_tiny_dataset(root, n=1)


def test_train_load_from_a_bad_pth(tmp_path, capsys, one_sample):
    import train

    root, info = one_sample
    bad = tmp_path / "x.pth"
    bad.write_bytes(b"not a checkpoint at all")
    argv = [TINY, "--work-dir", str(tmp_path / "w"), "--load-from", str(bad), "--no-progress", "--device", "cpu",
            "--cfg-options", f"data.dataroot={root}", f"data.info_file_train={info}", "train.max_iters=1"]
    assert train.main(argv) == 2
    _one_line(capsys, "train.py: error:", str(bad), "not a readable PyTorch checkpoint")


def test_yaml_tag_in_cfg_options_is_a_config_error(tmp_path, capsys):
    import train

    opt = 'train.lr=!!python/object/apply:os.system ["echo pwned"]'
    assert train.main([TINY, "--work-dir", str(tmp_path / "w"), "--cfg-options", opt]) == 2
    _one_line(capsys, "train.py: error:", "train.lr", "not plain YAML")
    with pytest.raises(ConfigError):  # --debug: the traceback, i.e. the exception itself
        train.main([TINY, "--work-dir", str(tmp_path / "w"), "--cfg-options", opt, "--debug"])


def test_evaluate_missing_checkpoint(tmp_path, capsys):
    import evaluate

    assert evaluate.main([TINY, str(tmp_path / "nope"), "--device", "cpu"]) == 2
    _one_line(capsys, "evaluate.py: error:", str(tmp_path / "nope"), "no checkpoint there")
    assert evaluate.main([TINY, str(tmp_path / "nope"), "--backend", "tensorrt"]) == 2
    _one_line(capsys, "--backend 'tensorrt'", "onnxruntime")


# ----------------------------------------------------------------------------- issue 31
def _tools() -> dict[str, str]:
    """Every console script of setup.py and every training/*.py with a main: name -> module."""
    import re

    eps = dict(re.findall(r'"(\w+) = ([\w.]+):main"', (ROOT / "setup.py").read_text()))
    for f in sorted((ROOT / "training").glob("*.py")):
        if "def main(" in f.read_text():
            eps[f.name] = f"training.{f.stem}"
    return eps


@pytest.mark.parametrize("name", sorted(_tools()))
def test_every_tool_lists_debug_in_help(name, capsys):
    """Issue 31: every tool's --help lists the --debug its errors point to (before: train.py and
    most others did not). Mutation: cli.add_debug_arg removed from a tool's parser fails its case."""
    import importlib

    main = importlib.import_module(_tools()[name]).main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "--debug" in capsys.readouterr().out


@pytest.fixture(scope="module")
def empty_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("empty")


CASES = [  # tool module, argv ({tmp}: the test's folder), what the one line says (issue 31 items 3, 6, 9, 10)
    ("training.integration_test", ["--checkpoint", "{tmp}/wrong/path"], ["{tmp}/wrong/path", "no checkpoint there"]),
    ("training.train", [TINY, "--work-dir", "{tmp}/w", "--resume", "{tmp}/absent"],
     ["--resume {tmp}/absent: no such folder", "--resume auto"]),
    ("training.train", [TINY, "--work-dir", "{tmp}/w", "--resume", "auto"], ["--resume auto: no", "nothing to resume"]),
    ("training.train", [TINY, "--work-dir", "{tmp}/w", "--cfg-options", "data.dataroot={tmp}/nuscenes"],
     ["data.dataroot {tmp}/nuscenes: no such folder"]),
    ("training.evaluate", [TINY, "--pred-dir", "{tmp}", "--gt-root", "{tmp}/gts"], ["--gt-root {tmp}/gts: no"]),
    ("training.demo", ["--checkpoint", "{tmp}/wrong", "--out", "{tmp}/w"], ["{tmp}/wrong: no checkpoint there"]),
    ("training.generate_2d_seg_labels", ["--dataroot", "{tmp}/no/such", "--sources", "projection"],
     ["--dataroot {tmp}/no/such: no such folder"]),
    ("training.make_synthetic", ["--out", "{tmp}/w", "--rig", "{tmp}/no-rig"], ["{tmp}/no-rig"]),
    ("priorocc_core.quantize", ["{tmp}/no-ckpt", "--world", "{tmp}"], ["{tmp}/no-ckpt"]),
    ("priorocc_ros.nuscenes_to_bag", ["--dataroot", "{tmp}", "--out", "{tmp}/w"],
     ["--dataroot {tmp}: no nuScenes table folder"]),
    ("priorocc_ros.replay", ["{tmp}", "--checkpoint", "models/demo", "--out", "{tmp}/w"],
     ["bag {tmp}: no metadata.yaml (the folder is empty)"]),
    ("priorocc_ros.tools.play", ["{tmp}/absent"], ["bag {tmp}/absent does not exist (no such file or folder)"]),
]


@pytest.mark.parametrize("module,argv,says", CASES, ids=[f"{c[0].split('.')[-1]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_exit_2(module, argv, says, tmp_path, capsys, monkeypatch):
    """Issue 31: a bad input of any tool is one line ``tool: error: ...`` naming it, exit 2, and
    nothing written (train.py: no work dir; demo.py: no scene). Before: tracebacks (integration_test,
    generate_2d_seg_labels), exit 1 without the prefix (train.py's --resume / --load-from,
    evaluate.py's --gt-root), the version blamed for a missing dataroot and its config.yaml left
    behind, "Expected metadata file 'EMPTYDIR'" for an empty folder. Mutations: cli.run without its
    SystemExit branch (train, evaluate cases fail), train._main without its pre-flight (work dir
    written), demo.py reading the checkpoint after generating the scene (out dir written)."""
    import importlib

    monkeypatch.chdir(ROOT)
    tmp = str(tmp_path)
    rc = importlib.import_module(module).main([a.replace("{tmp}", tmp) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ": error: " in ln]
    assert "Traceback" not in err and len(lines) == 1, err
    for s in says:
        assert s.replace("{tmp}", tmp) in lines[0], lines[0]
    assert not (tmp_path / "w").exists()


def test_debug_shows_the_traceback(capsys):
    """--debug turns the one line back into the exception (mutation: cli.run ignoring --debug)."""
    import training.generate_2d_seg_labels as gen
    from priorocc_core.data import DataError

    with pytest.raises(DataError, match="no such folder"):
        gen.main(["--dataroot", "/no/such", "--sources", "projection", "--debug"])


def test_benchmark_quick_settings_and_note():
    """Issue 31 item 8: ``benchmarks/run.py --quick`` warms up as docs/speed.md says (3 calls; it
    did 1) and carries the note that its figures are not comparable (printed at its start and
    end, written to the JSON). Mutations: quick warm-up 1; the note dropped."""
    import re

    from benchmarks.run import WARMUP, run_settings

    documented = int(re.search(r"after warm-up calls \((\d+) per backend", (ROOT / "docs" / "speed.md").read_text())[1])
    quick, full = run_settings(True), run_settings(False)
    assert quick["warmup"] == full["warmup"] == WARMUP == documented
    assert "NOT comparable" in quick["note"] and full["note"] is None
    assert quick["repeats"] == 1 and full["repeats"] == 5 and run_settings(True, repeats=3)["repeats"] == 3


def test_train_load_from_missing_file(tmp_path, capsys, one_sample):
    """Issue 31 item 6: ``--load-from`` naming no file is ``train.py: error: ...``, exit 2 (before:
    its SystemExit printed without the prefix, exit 1; mutation: cli.run without its SystemExit branch)."""
    import train

    root, info = one_sample
    argv = [TINY, "--work-dir", str(tmp_path / "w"), "--load-from", str(tmp_path / "nope.pth"), "--no-progress",
            "--device", "cpu", "--cfg-options", f"data.dataroot={root}", f"data.info_file_train={info}"]
    assert train.main(argv) == 2
    _one_line(capsys, "train.py: error: --load-from", "nope.pth: no such file or directory")
