"""plan/settings.py: the typed view of a plan's options that its readers use, with Config's defaults for the keys
an older plan.json lacks, and no simple-parsing on the way (status and collect start fast)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import bench_tune

from nestling.core.errors import UsageError
from nestling.core.options.config import Config, parse_config
from nestling.plan.settings import PlanSettings


def test_the_defaults_are_configs() -> None:
    assert PlanSettings.from_options(Config().to_dict()) == PlanSettings()
    assert PlanSettings.from_options({}) == PlanSettings()


def test_settings_read_every_option_their_readers_use() -> None:
    options = parse_config([
        "--task", "sleep", "--n_folds", "3", "--fold_method", "shuffle", "--max_epochs", "4", "--scoring_metric",
        "val/loss:lower", "val/acc", "--multi_score_strategy", "min", "--sampler", "tpe", "--pruner", "median",
        "--select", "lcb", "--tune_seed", "7", "--hpconfig", "space.toml", "--wandb_project", "p",
        "--reduction_factor", "2", "--min_epochs", "3",
    ]).to_dict()  # fmt: skip
    settings = PlanSettings.from_options(options)
    assert settings == PlanSettings(
        task="sleep", n_folds=3, fold_method="shuffle", max_epochs=4, scoring_metric=("val/loss:lower", "val/acc"),
        multi_score_strategy="min", sampler="tpe", pruner="median", select="lcb", tune_seed=7, hpconfig="space.toml",
        config_file=None, wandb_project="p", reduction_factor=2, min_epochs=3,
    )  # fmt: skip
    assert [(m.name, m.higher_is_better) for m in settings.scoring()] == [("val/loss", False), ("val/acc", True)]


def test_an_older_plan_without_the_newer_options_reads_their_defaults() -> None:
    options = {"data": {"task": "sleep"}, "cv": {"scoring_metric": "val/score", "multi_score_strategy": "min"},
               "tune": {"n_trials": 4}}  # fmt: skip  (no select, sampler, pruner: written before they existed)
    settings = PlanSettings.from_options(options)
    assert (settings.select, settings.sampler, settings.pruner, settings.tune_seed) == ("score", "random", "none", 0)
    assert settings.scoring_metric == ("val/score",) and settings.multi_score_strategy == "min"
    with pytest.raises(UsageError, match="no scoring metric"):
        PlanSettings.from_options({}).scoring()  # a plan that cannot score says so, as when it was made


@pytest.mark.parametrize("command", ["status", "collect"])
def test_status_and_collect_import_neither_simple_parsing_nor_torch(tmp_path: Path, command: str) -> None:
    tune = bench_tune(tmp_path, 20)
    code = (
        "import sys\n"
        "from nestling.cli import main\n"
        f"rc = main([{command!r}, {str(tune)!r}, '--quiet'] if {command!r} == 'collect' else [{command!r}, "
        f"{str(tune)!r}])\n"
        "print('RESULT', rc, sorted(m for m in ('simple_parsing', 'torch', 'lightning') if m in sys.modules), "
        "file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "RESULT 0 []", proc.stderr
