"""The Python API's plumbing (issue 14 §5): keyword arguments -> the CLI's argv, tasks -> importable specs, a light
`import nestling`, UsageError (not SystemExit) for bad input. Training through it is in tests/e2e/test_python_api.py.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import nestling
from nestling.commands import api
from nestling.core.errors import UsageError
from nestling.core.options.config import parse_config
from nestling.tasks.sleep import SleepTask


class ConfiguredTask(SleepTask):
    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale


CONFIGURED = ConfiguredTask(scale=3.0)  # a module-level instance: workers import it by this name


def test_keywords_become_the_options_the_command_line_parses() -> None:
    argv = api.to_argv(
        {
            "task": "sleep",
            "n_folds": 3,
            "fold_seed": -1,
            "quiet": True,
            "steal": False,
            "devices": [0, 2],
            "hp": {"lr": 0.001, "name": "x y", "flag": True},
            "slurm_setup": ["module load cuda", "echo hi"],
            "container_bind": "/data:/data:ro",
            "name": None,  # None: keep the default
        }
    )
    config = parse_config(argv)
    assert config.data.task == "sleep" and config.data.n_folds == 3 and config.data.fold_seed == -1
    assert config.logging.quiet is True and config.launch.steal is False and config.logging.name is None
    assert config.device.devices == ["0", "2"]
    assert config.hparams == {"lr": 0.001, "name": "x y", "flag": True}
    assert config.launch.slurm_setup == ["module load cuda", "echo hi"]
    assert config.container.container_bind == ["/data:/data:ro"]


def test_bad_input_raises_the_command_lines_usage_error_not_systemexit(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^unknown option 'n_fold': did you mean 'n_folds'\?$"):
        nestling.cv(task="sleep", n_fold=2)
    with pytest.raises(UsageError) as bad_choice:
        nestling.cv(task="sleep", fold_method="bogus", artifact_dir=str(tmp_path))
    cli = subprocess.run(
        [sys.executable, "-m", "nestling.cli", "cv", "--task", "sleep", "--fold_method", "bogus",
         "--artifact_dir", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert cli.returncode == 2
    assert cli.stderr.strip() == f"nestling: error: {bad_choice.value}"  # the same one line
    assert nestling.UsageError is UsageError
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_task_object_reaches_workers_only_by_an_importable_name() -> None:
    assert api.task_spec(SleepTask) == "nestling.tasks.sleep:SleepTask"
    assert api.task_spec(SleepTask()) == "nestling.tasks.sleep:SleepTask"  # a default instance: its class
    assert api.task_spec(CONFIGURED) == f"{__name__}:CONFIGURED"
    assert api.task_spec(ConfiguredTask()) == f"{__name__}:ConfiguredTask"
    with pytest.raises(UsageError, match=r"ConfiguredTask\(\.\.\.\) holds state a worker process cannot receive"):
        api.task_spec(ConfiguredTask(scale=2.0))

    class LocalTask(SleepTask):
        pass

    with pytest.raises(UsageError, match="which the worker processes cannot import"):
        api.task_spec(LocalTask())
    with pytest.raises(UsageError, match="task given twice"):
        nestling.cv(SleepTask, task="sleep")


def test_import_nestling_stays_light() -> None:
    code = "import sys, nestling; print(sorted(m for m in ('torch', 'polars', 'lightning', 'simple_parsing', " \
        "'nestling.commands.api', 'nestling.commands.start') if m in sys.modules))"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.replace("'", '"')) == []
    assert callable(nestling.tune) and nestling.Result is api.Result
    assert nestling.report is api.report and nestling.run is api.run and nestling.retrain is api.retrain
    with pytest.raises(ModuleNotFoundError):  # the API's names are no modules
        importlib.import_module("nestling.report")


def test_old_module_paths_import_their_new_homes() -> None:
    """0.1's flat paths (user scripts, jobs pickled by an older version) import the module at its new home."""
    from nestling.core.containers import spec
    from nestling.core.options import config

    with pytest.warns(DeprecationWarning, match="nestling.config moved to nestling.core.options.config"):
        old = importlib.import_module("nestling.config")
    assert old is config and old.Config is config.Config
    with pytest.warns(DeprecationWarning):
        assert importlib.import_module("nestling.container").ContainerSpec is spec.ContainerSpec
    with pytest.raises(AttributeError):
        nestling.no_such_thing  # noqa: B018


def test_commands_this_version_lacks_raise_usage_error(tmp_path: Path) -> None:
    from nestling.commands import cli

    for command, call in (("report", nestling.report), ("retrain", nestling.retrain)):
        if command in cli.COMMANDS:
            continue  # the e2e test drives it
        with pytest.raises(UsageError, match=f"needs the `nestling {command}` command"):
            call(tmp_path)
