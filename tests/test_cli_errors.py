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
