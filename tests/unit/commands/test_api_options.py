"""The Python API's plumbing (issue 14 §5, issue 20 §2): keyword arguments -> the Config the command line parses
from the same options, tasks -> importable specs, a light `import nestling`, UsageError (not SystemExit) for bad
input with the command line's line. Training through it is in tests/e2e/test_python_api.py.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import nestling
from nestling.commands import api, cli, retrain, start
from nestling.core.errors import UsageError
from nestling.core.options.config import config_from_keywords, parse_config
from nestling.tasks.sleep import SleepTask


class ConfiguredTask(SleepTask):
    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale


CONFIGURED = ConfiguredTask(scale=3.0)  # a module-level instance: workers import it by this name


def test_keywords_give_the_config_the_command_line_parses_from_the_same_options(tmp_path: Path) -> None:
    keywords = {
        "task": "sleep",
        "n_folds": 3,
        "fold_seed": -1,
        "test_fraction": 0.25,
        "quiet": True,
        "steal": False,
        "devices": [0, 2],
        "seeds": (7, 8),
        "hp": {"lr": 0.001, "name": "x y", "flag": True},
        "slurm_setup": ["module load cuda", "echo hi"],
        "container_bind": "/data:/data:ro",
        "artifact_dir": tmp_path / "art",  # a Path, as a notebook passes it
        "fold_method": "stratified",
        "name": None,  # None: keep the default
    }
    argv = ["--task", "sleep", "--n_folds", "3", "--fold_seed=-1", "--test_fraction", "0.25", "--quiet",
            "--steal=false", "--devices", "0", "2", "--seeds", "7", "8", "--hp", "lr=0.001", 'name="x y"',
            "flag=true", "--slurm_setup", "module load cuda", "echo hi", "--container_bind", "/data:/data:ro",
            "--artifact_dir", str(tmp_path / "art"), "--fold_method", "stratified"]  # fmt: skip
    config = config_from_keywords(keywords)
    assert config == parse_config(argv)
    assert config.data.task == "sleep" and config.data.n_folds == 3 and config.data.fold_seed == -1
    assert config.logging.quiet is True and config.launch.steal is False and config.logging.name is None
    assert config.device.devices == ["0", "2"] and config.cv.seeds == [7, 8]
    assert config.hparams == {"lr": 0.001, "name": "x y", "flag": True}
    assert config.launch.slurm_setup == ["module load cuda", "echo hi"]
    assert config.container.container_bind == ["/data:/data:ro"]
    assert config.logging.artifact_dir == str(tmp_path / "art")


def test_a_keyword_overrides_the_config_file_even_at_its_default_as_a_flag_does(tmp_path: Path) -> None:
    file = tmp_path / "opts.toml"
    file.write_text('n_folds = 3\nmax_epochs = 7\ncontainer_env = ["A=1"]\n[hparams]\nlr = 0.5\nwidth = 4\n')
    config = config_from_keywords({"config": file, "n_folds": 5, "container_env": "B=2", "hp": {"lr": 0.1}})
    cli = parse_config(["--config", str(file), "--n_folds", "5", "--container_env", "B=2", "--hp", "lr=0.1"])
    assert config == cli
    assert config.data.n_folds == 5  # the built-in default, given: it wins over the file's 3
    assert config.training.max_epochs == 7  # not given: the file's
    assert config.container.container_env == ["A=1", "B=2"]  # repeatable options add to the file's, as flags do
    assert config.hparams == {"lr": 0.1, "width": 4} and config.config_file == str(file)


@pytest.mark.parametrize(
    ("keywords", "argv"),
    [
        ({"fold_method": "bogus"}, ["--fold_method", "bogus"]),
        ({"n_folds": "three"}, ["--n_folds", "three"]),
        ({"seeds": [1, "x"]}, ["--seeds", "1", "x"]),
        ({"test_fraction": "a fifth"}, ["--test_fraction", "a fifth"]),
        ({"hp": ["lr"]}, ["--hp", "lr"]),
        ({"launcher": "kubernetes"}, ["--launcher", "kubernetes"]),
    ],
)
def test_bad_keywords_raise_the_line_the_command_line_prints(keywords: dict[str, object], argv: list[str]) -> None:
    """A bad value: the same line (an unknown name is said as a keyword, `n_fold`, below)."""
    with pytest.raises(UsageError) as from_python:
        config_from_keywords({"task": "sleep", **keywords})
    with pytest.raises(UsageError) as from_argv:
        parse_config(["--task", "sleep", *argv])
    assert str(from_python.value) == str(from_argv.value)


def test_the_command_line_and_python_call_the_same_function_with_the_same_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither goes through the other (issue 20 §2): argv and keywords become the same typed call."""
    calls: list[tuple[object, ...]] = []

    def start_plan(kind: str, config: object, explicit: object = frozenset(), then: object = None) -> start.Executed:
        calls.append((kind, config, frozenset(explicit), then))  # type: ignore[arg-type]
        return start.Executed(0, kind, "t", tmp_path)

    def retrain_tune(tune_dir: Path, given: object, explicit: object, choice: object = None) -> start.Executed:
        calls.append((Path(tune_dir), given, frozenset(explicit), choice))  # type: ignore[arg-type]
        return start.Executed(0, "retrain", "t-final", tmp_path)

    # the command line's lazy handle copies the module's names when first used: patch it first, so that the copy
    # (and what monkeypatch restores) is the real function, then the module
    monkeypatch.setattr(cli.start, "start_plan", start_plan)
    monkeypatch.setattr(start, "start_plan", start_plan)
    monkeypatch.setattr(retrain, "retrain_tune", retrain_tune)
    assert cli.main(["tune", "--task", "sleep", "--n_folds", "5", "--hp", "lr=0.1", "--devices", "0", "1",
                     "--resume", "t", "--quiet"]) == 0  # fmt: skip
    nestling.tune("sleep", n_folds=5, hp={"lr": 0.1}, devices=[0, 1], resume="t", quiet=True)
    assert calls[0] == calls[1] and calls[0][0] == "tune"
    assert calls[0][2] == {"task", "n_folds", "hp", "devices", "resume", "quiet"}  # n_folds given at its default

    assert cli.main(["retrain", str(tmp_path), "--n_seeds", "2", "--retrain_epochs", "4", "--launcher", "slurm"]) == 0
    nestling.retrain(tmp_path, n_seeds=2, retrain_epochs=4, launcher="slurm")
    assert calls[2] == calls[3] and calls[2][2] == {"n_seeds", "launcher"}
    assert calls[2][3] == retrain.RetrainChoice(epochs="4")


def test_bad_input_raises_the_command_lines_usage_error_not_systemexit(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^unknown option 'n_fold': did you mean 'n_folds'\?$"):
        nestling.cv(task="sleep", n_fold=2)  # type: ignore[call-arg]
    with pytest.raises(UsageError) as bad_choice:
        nestling.cv(task="sleep", fold_method="bogus", artifact_dir=str(tmp_path))  # type: ignore[arg-type]
    cli = subprocess.run(
        [sys.executable, "-m", "nestling.cli", "cv", "--task", "sleep", "--fold_method", "bogus",
         "--artifact_dir", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert cli.returncode == 2
    assert cli.stderr.strip() == f"nestling: error: {bad_choice.value}"  # the same one line
    assert nestling.UsageError is UsageError and issubclass(UsageError, nestling.NestlingError)
    with pytest.raises(UsageError, match=r"^unknown option 'n_seed': did you mean 'n_seeds'\?$"):
        nestling.retrain(tmp_path, n_seed=2)  # type: ignore[call-arg]
    with pytest.raises(UsageError, match="does not exist; pass the directory of a tune"):
        nestling.retrain(tmp_path / "nowhere", n_seeds=2)
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
    for name in ("run", "cv", "tune", "retrain", "report", "collect", "status", "sync", "stop", "doctor", "load"):
        assert getattr(nestling, name) is getattr(api, name), name
    with pytest.raises(ModuleNotFoundError):  # the API's names are no modules
        importlib.import_module("nestling.report")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("nestling.collect")


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
