"""YAML configs hold only what differs from the typed defaults; retired keys still load.

Mutation check: adding a default value (e.g. ``lr: 0.0001`` under train) to any
training/configs/*.yaml fails ``test_yaml_configs_hold_only_differences``.
"""
from __future__ import annotations

import pytest
import yaml

from priorocc_core.config import Config
from tests.conftest import ROOT

CONFIGS = sorted((ROOT / "training" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_yaml_configs_hold_only_differences(path):
    raw = yaml.safe_load(path.read_text())
    assert raw == Config.from_yaml(path).to_diff_dict(), f"{path.name} repeats defaults"


def test_retired_key_is_dropped_so_old_checkpoints_load():
    d = Config().to_dict()
    d["model"]["image"]["src_size"] = [900, 1600]  # what models/demo's stored config still holds
    assert Config.from_dict(d) == Config()
    d["model"]["image"]["no_such_key"] = 1
    with pytest.raises(ValueError, match="no_such_key"):
        Config.from_dict(d)
