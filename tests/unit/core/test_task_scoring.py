"""A task may declare its scoring metrics; they are planned (and scored) when --scoring_metric is not given."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestling.core.errors import UsageError
from nestling.core.ml.scoring import DEFAULT_SCORING
from nestling.core.options.config import parse_config
from nestling.plan.preflight import prepare
from nestling.plan.specs import run_specs
from nestling.tasks.sleep import SleepTask

FAST = ["--n_folds", "2", "--n_seeds", "1", "--max_epochs", "1", "--accelerator", "cpu", "--quiet"]


class AccTask(SleepTask):
    """Logs only val/acc (see tests/e2e/test_declared_scoring.py for the training half); declares it."""

    def scoring_metrics(self) -> list[str]:
        return ["val/acc"]


class Undeclared(SleepTask):
    scoring_metrics = None  # type: ignore[assignment]  # an attribute works too; None: nestling's defaults


class AttributeTask(SleepTask):
    scoring_metrics = ("val/acc", "val/loss:lower")  # type: ignore[assignment]


class BadTask(SleepTask):
    def scoring_metrics(self) -> list[str]:
        return ["val/acc:sideways"]


def planned(*argv: str, tmp_path: Path) -> tuple[list[str], list[list[str]]]:
    prepared = prepare(parse_config([*FAST, "--artifact_dir", str(tmp_path), *argv]), "cv")
    specs = run_specs(prepared.plan)
    return prepared.plan.options["cv"]["scoring_metric"], [r.scoring_metric for r in specs]


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("AccTask", ["val/acc"]),
        ("AttributeTask", ["val/acc", "val/loss:lower"]),
        ("Undeclared", list(DEFAULT_SCORING)),
    ],
)
def test_the_task_declares_the_scoring_metrics(task: str, expected: list[str], tmp_path: Path) -> None:
    options, per_run = planned("--task", f"{__name__}:{task}", tmp_path=tmp_path)
    assert options == expected
    assert per_run == [expected, expected]


def test_the_flag_and_the_config_file_win_over_the_task(tmp_path: Path) -> None:
    task = ["--task", f"{__name__}:AccTask"]
    assert planned(*task, "--scoring_metric", "val/loss:lower", tmp_path=tmp_path)[0] == ["val/loss:lower"]
    config = tmp_path / "c.toml"
    config.write_text('scoring_metric = ["val/x"]\n')
    assert planned(*task, "--config", str(config), tmp_path=tmp_path)[0] == ["val/x"]


def test_built_in_tasks_declare_what_they_log(tmp_path: Path) -> None:
    for task in ("sleep", "synthetic-segmentation"):
        assert planned("--task", task, tmp_path=tmp_path)[0] == ["val/JaccardIndex", "val/Recall"]


def test_a_bad_declaration_is_a_usage_error_naming_the_task(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--task '.*:BadTask' declares bad scoring_metrics: .*sideways"):
        planned("--task", f"{__name__}:BadTask", tmp_path=tmp_path)

