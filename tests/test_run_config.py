"""config.yaml reads back into the CLI's settings dataclasses: the same settings, this version's defaults for what a
run predates, the settings it no longer knows listed, and a clear error for a value of the wrong kind."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from sparsesplat.recon.pipeline import ReconstructConfig
from sparsesplat.recon.run_config import RunConfigError, config_dict, dump, read_run_config, with_settings
from sparsesplat.recon.strategies import DefaultStrategy


def _changed() -> ReconstructConfig:
    cfg = ReconstructConfig(data=Path("photos"), out=Path("runs/x"), protocol="llff3", primitive="triangle",
                            prior=("depth", "repair"), export=("spz",), nproc=2)
    cfg.train.iters, cfg.train.fields, cfg.train.random_background = 1234, 2, "off"
    cfg.train.default = DefaultStrategy(grow_grad2d=0.0005, refine_stop_iter=777)
    cfg.train.triangle.strategy.cap_max = 4321
    cfg.priors.repair.steps = 9
    return cfg


def test_a_written_config_reads_back_as_the_same_settings(tmp_path):
    cfg = _changed()
    (tmp_path / "config.yaml").write_text(dump(cfg))
    back = read_run_config(tmp_path)
    assert back == dataclasses.replace(cfg, out=tmp_path) and back.unknown_settings == []  # out: where it is now
    assert isinstance(back.data, Path) and back.prior == ("depth", "repair") and back.train.fields == 2
    assert back.train.default.grow_grad2d == 0.0005 and back.train.triangle.strategy.cap_max == 4321


def test_settings_a_run_predates_take_todays_defaults_and_removed_ones_are_listed(tmp_path):
    data = config_dict(_changed())
    del data["train"]["views_per_step"], data["nproc"]  # written before these existed
    data["train"]["gone_option"] = 3  # an option this version no longer has
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    back = read_run_config(tmp_path)
    assert back.train.views_per_step == 1 and back.nproc == 1 and back.train.iters == 1234
    assert back.unknown_settings == ["train.gone_option"]


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["train"].update(random_background="sometimes"), "train.random_background"),
    (lambda d: d.update(train=[1, 2]), "train"),
    (lambda d: d.pop("data"), "required setting"),
])
def test_a_value_of_the_wrong_kind_names_the_setting(tmp_path, edit, match):
    data = config_dict(_changed())
    edit(data)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(RunConfigError, match=match):
        read_run_config(tmp_path)


def test_an_unreadable_file_says_which(tmp_path):
    (tmp_path / "config.yaml").write_text("train: [unclosed")
    with pytest.raises(RunConfigError, match="config.yaml could not be read"):
        read_run_config(tmp_path)


def test_settings_changed_by_dotted_name_take_their_fields_types():
    cfg = _changed()
    new = with_settings(cfg, {"train.binocular_resolution": 1, "train.default.prune_weight": 0.05, "protocol": "dtu3"})
    assert new.train.binocular_resolution == 1.0 and isinstance(new.train.binocular_resolution, float)
    assert new.train.default.prune_weight == 0.05 and new.protocol == "dtu3"
    assert new.train.iters == 1234 and cfg.train.default.prune_weight != 0.05  # the rest kept, the original untouched
    for bad in ("train.no_such_option", "train.default", "nothing.here"):
        with pytest.raises(RunConfigError, match=bad):
            with_settings(cfg, {bad: 1})
    with pytest.raises(RunConfigError, match="train.random_background"):
        with_settings(cfg, {"train.random_background": "sometimes"})
