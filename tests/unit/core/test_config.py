"""Config precedence (defaults < file < flags, --hp last), hyperparameter literals, and every bad-input error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nestling.core.errors import UsageError
from nestling.core.host.devices import parse_devices
from nestling.core.options.config import option_names, parse_config

TOML = """\
max_epochs = 7
n_folds = 3
seeds = [1, 2]
devices = [0, 1]
name = "from-file"
quiet = true
scoring_metric = ["val/loss:lower"]

[hparams]
lr = 0.1
batch_size = 8
"""

YAML = """\
max_epochs: 6
fold_method: region
name: from-yaml
hparams:
  lr: 0.2
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults() -> None:
    c = parse_config([])
    assert c.data.task == "synthetic-segmentation"
    assert (c.data.fold_method, c.data.n_folds, c.data.fold_seed) == ("kfold", 5, 42)
    assert (c.data.test_split, c.data.test_fraction, c.data.test_regions) == ("none", 0.2, [])
    assert (c.training.max_epochs, c.training.early_stopping_patience, c.training.hp) == (10, 0, [])
    assert (c.cv.n_seeds, c.cv.seeds) == (3, [])
    assert c.cv.scoring_metric == []  # not given: preflight plans the task's, else scoring.DEFAULT_SCORING
    assert c.cv.multi_score_strategy == "geometric"
    assert (c.tune.hpconfig, c.tune.n_trials, c.tune.sampler, c.tune.tune_seed) == (None, 10, "random", 0)
    assert (c.device.accelerator, c.device.strategy, c.device.devices, c.device.num_nodes) == (
        "auto",
        "auto",
        ["auto"],
        1,
    )
    assert (c.logging.artifact_dir, c.logging.name, c.logging.wandb_project, c.logging.quiet) == (
        "artifacts",
        None,
        None,
        False,
    )
    assert c.launch.launcher == "local"
    assert c.hparams == {}
    assert c.config_file is None


def test_toml_file_overrides_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", TOML)
    c = parse_config(["--config", path])
    assert c.training.max_epochs == 7
    assert c.data.n_folds == 3
    assert c.cv.seeds == [1, 2]
    assert c.device.devices == ["0", "1"]
    assert c.logging.name == "from-file"
    assert c.logging.quiet is True
    assert c.cv.scoring_metric == ["val/loss:lower"]
    assert c.hparams == {"lr": 0.1, "batch_size": 8}
    assert c.data.fold_method == "kfold"  # not in the file: still the default
    assert c.config_file == path


def test_yaml_file_overrides_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", YAML)
    c = parse_config(["--config", path])
    assert (c.training.max_epochs, c.data.fold_method, c.logging.name) == (6, "region", "from-yaml")
    assert c.hparams == {"lr": 0.2}
    assert c.data.n_folds == 5


def test_flags_override_file(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", TOML)
    c = parse_config(
        ["--config", path, "--max_epochs", "2", "--seeds", "5", "--name", "from-cli", "--devices", "3"]
    )
    assert c.training.max_epochs == 2
    assert c.cv.seeds == [5]
    assert c.logging.name == "from-cli"
    assert c.device.devices == ["3"]
    assert c.data.n_folds == 3  # only in the file


def test_flags_override_file_whatever_their_position(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", TOML)
    c = parse_config(["--max_epochs", "4", "--config", path])
    assert c.training.max_epochs == 4


def test_hp_repeatable_and_overrides_file_hparams(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", TOML)
    c = parse_config(["--config", path, "--hp", "lr=0.5", "--hp", "name=abc", "--hp", "depth=3"])
    assert c.hparams == {"lr": 0.5, "batch_size": 8, "name": "abc", "depth": 3}
    assert type(c.hparams["lr"]) is float
    assert type(c.hparams["name"]) is str
    assert type(c.hparams["depth"]) is int
    assert c.training.hp == ["lr=0.5", "name=abc", "depth=3"]


def test_hp_several_values_after_one_flag() -> None:
    c = parse_config(["--hp", "a=1", "b=true", "c=[1, 2]"])
    assert c.hparams == {"a": 1, "b": True, "c": [1, 2]}


def test_hp_last_wins() -> None:
    assert parse_config(["--hp", "lr=0.1", "--hp", "lr=0.2"]).hparams == {"lr": 0.2}


def test_hp_without_equals_is_usage_error() -> None:
    with pytest.raises(UsageError, match=r"--hp 'lr' is not KEY=VALUE"):
        parse_config(["--hp", "lr"])


def test_unknown_file_key_suggests_closest(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", "max_epoch = 3\n")
    with pytest.raises(UsageError) as err:
        parse_config(["--config", path])
    assert str(err.value) == f"unknown key 'max_epoch' in {path}: did you mean 'max_epochs'?"


def test_unknown_yaml_key_suggests_closest(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "n_fold: 3\n")
    with pytest.raises(UsageError, match=r"unknown key 'n_fold' .*did you mean 'n_folds'\?"):
        parse_config(["--config", path])


def test_unknown_flag_suggests_closest() -> None:
    with pytest.raises(UsageError) as err:
        parse_config(["--max_epocs", "3"])
    assert str(err.value) == "unknown option '--max_epocs': did you mean '--max_epochs'?"


def test_flag_prefix_is_not_an_abbreviation() -> None:
    # argparse's allow_abbrev would silently read --max_epoch as --max_epochs
    with pytest.raises(UsageError, match=r"unknown option '--max_epoch': did you mean '--max_epochs'\?"):
        parse_config(["--max_epoch", "3"])


def test_wrong_type_in_file(tmp_path: Path) -> None:
    parse_config([])  # simple-parsing resolves the field annotations in place; the check must survive that
    path = write(tmp_path, "c.toml", 'max_epochs = "x"\n')
    with pytest.raises(UsageError) as err:
        parse_config(["--config", path])
    assert str(err.value) == f"max_epochs = 'x' in {path} must be of type int; e.g. max_epochs = 3"


def test_wrong_type_in_file_float_for_int(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", "n_folds = 2.5\n")
    with pytest.raises(UsageError, match=r"n_folds = 2.5 .* must be of type int"):
        parse_config(["--config", path])


def test_wrong_type_in_file_list_for_str(tmp_path: Path) -> None:
    parse_config([])
    path = write(tmp_path, "c.toml", "name = [1]\n")
    with pytest.raises(UsageError, match=r"name = \[1\] .* must be of type str"):
        parse_config(["--config", path])


def test_wrong_type_on_command_line() -> None:
    with pytest.raises(UsageError, match=r"--max_epochs: invalid int value: 'x'"):
        parse_config(["--max_epochs", "x"])


def test_malformed_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", "max_epochs = = 3\n")
    with pytest.raises(UsageError) as err:
        parse_config(["--config", path])
    assert str(err.value).startswith(f"--config '{path}' is not valid toml: ")


def test_malformed_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "max_epochs: [1\n")
    with pytest.raises(UsageError, match=r"is not valid yaml"):
        parse_config(["--config", path])


def test_missing_config_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    with pytest.raises(UsageError, match=r"'.*nope.toml' does not exist"):
        parse_config(["--config", path])


def test_hparams_must_be_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", "hparams = 3\n")
    with pytest.raises(UsageError, match=r"\[hparams\] .* must be a table"):
        parse_config(["--config", path])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], "auto"),
        (["auto"], "auto"),
        (["2"], 2),
        (["1"], 1),
        (["0", "2", "5"], [0, 2, 5]),
        (["3,"], [3]),
        (["0,"], [0]),
        (["0,2"], [0, 2]),
        (["0,", "2"], [0, 2]),
    ],
)
def test_parse_devices(values: list[str], expected: object) -> None:
    assert parse_devices(values) == expected


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["x"], r"--devices 'x' is not valid"),
        (["2.5"], r"--devices '2.5' is not valid"),
        (["auto", "1"], r"--devices 'auto 1' is not valid"),
        (["-1"], r"--devices '-1': ids must be distinct and >= 0"),
        (["1", "1"], r"--devices '1 1': ids must be distinct"),
        (["0"], r"--devices 0 is a count of zero devices"),
    ],
)
def test_parse_devices_bad(values: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_devices(values)


def test_devices_flag_reaches_parse_devices() -> None:
    c = parse_config(["--devices", "0", "2", "5"])
    assert parse_devices(c.device.devices) == [0, 2, 5]


@pytest.mark.parametrize("kind", ["run", "cv", "tune"])
def test_every_option_has_its_help_text(kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    """simple-parsing takes an option's help from its comment; a comment ruff wrapped away leaves a placeholder."""
    from nestling.commands.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([kind, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--steal" in out and "__TEMP__" not in out


CHOICES = {
    "fold_method": "{kfold,stratified,shuffle,region,region-stratified,none}",
    "test_split": "{none,random,region}",
    "multi_score_strategy": "{geometric,harmonic,arithmetic,min}",
    "sampler": "{random,grid,tpe}",
    "pruner": "{none,median,successive-halving,wilcoxon,asha,hyperband}",
    "accelerator": "{auto,cpu,gpu,cuda,mps,tpu}",
    "launcher": "{local,submitit-local,slurm}",
    "container_runtime": "{auto,apptainer,singularity,docker,podman}",
}


def test_help_lists_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    from nestling.commands.cli import main

    with pytest.raises(SystemExit):
        main(["cv", "--help"])
    out = capsys.readouterr().out
    for flag, choices in CHOICES.items():
        assert f"--{flag} {choices}" in out
    config_help = out[out.index("--config FILE  ") : out.index("Data [")]
    assert "[hparams]" in config_help and "[hyperparameters]" in config_help  # a tune's space may live there


@pytest.mark.parametrize("flag", list(CHOICES))
def test_a_value_outside_the_choices_is_refused_on_the_command_line_and_in_the_file(
    flag: str, tmp_path: Path
) -> None:
    choices = CHOICES[flag].strip("{}").split(",")
    allowed = ", ".join(choices)
    with pytest.raises(UsageError) as err:
        parse_config([f"--{flag}", "bogus"])
    assert str(err.value) == f"--{flag} 'bogus' is not one of {allowed}; e.g. --{flag} {choices[0]}"
    path = write(tmp_path, "c.toml", f'{flag} = "bogus"\n')
    with pytest.raises(UsageError) as err:
        parse_config(["--config", path])
    assert str(err.value) == f'{flag} = \'bogus\' in {path} is not one of {allowed}; e.g. {flag} = "{choices[0]}"'
    last = choices[-1]  # not the default: both sources must reach the option
    ok = write(tmp_path, "ok.toml", f'{flag} = "{last}"\n')
    from_flag = parse_config([f"--{flag}", last]).to_dict()
    assert parse_config(["--config", ok]).to_dict() == {**from_flag, "config_file": ok}
    assert from_flag[option_names()[flag]][flag] == last


def test_choices_match_the_modules_that_act_on_them() -> None:
    """folds and container keep their own tuples (they are called directly too); they must not drift."""
    import typing

    from nestling.core.containers import options as container_options
    from nestling.core.ml import folds
    from nestling.core.options import config

    assert typing.get_args(config.FoldMethod) == folds.FOLD_METHODS
    assert typing.get_args(config.TestSplit) == folds.TEST_SPLITS
    runtimes = ("auto", *container_options.SIF_RUNTIMES, *container_options.OCI_RUNTIMES)
    assert sorted(typing.get_args(config.RuntimeName)) == sorted(runtimes)


def test_config_file_and_space_read_yaml_floats_alike(tmp_path: Path) -> None:
    """One reader (nestling.core.options.config_files): `1e-3` is a float in a config file's [hparams] as in a space file."""
    from nestling.core.ml.space import load_space

    path = write(tmp_path, "c.yaml", "hparams:\n  lr: 1e-3\nhyperparameters:\n  lr: [1e-3, 1e-2]\n")
    assert parse_config(["--config", path]).hparams == {"lr": 0.001}
    assert load_space(path)["lr"].choices == (0.001, 0.01)  # type: ignore[attr-defined]


def test_unreadable_config_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xff\xfe max_epochs = 3\n")
    with pytest.raises(UsageError, match=r"^--config '.*c.toml' cannot be read: 'utf-8' codec"):
        parse_config(["--config", str(path)])


def test_help_names_what_each_flag_takes(capsys: pytest.CaptureFixture[str]) -> None:
    """--help shows N, X, FILE, KEY=VALUE, true|false after a flag, never simple-parsing's dests or types (issue 21
    #12: `DATA.N_FOLDS`, `[[str]]`)."""
    with pytest.raises(SystemExit):
        parse_config(["--help"], prog="nestling tune")
    text = capsys.readouterr().out
    assert not re.search(r"[A-Z]+\.[A-Z_]+|\[\[\w+\]\]|\[list|\[bool\]", text), text
    for shown in ("--n_folds N", "--test_fraction X", "--hp KEY=VALUE", "--hpconfig [FILE]", "--retrain [true|false]",
                  "--config FILE", "--task NAME|MODULE:ATTR", "--time_min MINUTES", "--seeds [SEED ...]"):  # fmt: skip
        assert shown in text, shown
