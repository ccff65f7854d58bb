"""Space files -> optuna distributions -> trials: each form, each error, determinism."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from nestling.core.errors import UsageError
from nestling.core.ml.space import check_space_keys, load_space, parse_space, sample_trials


def test_forms() -> None:
    space = parse_space(
        {
            "batch_size": 32,
            "name": "unet",
            "flag": True,
            "optimizer": ["adam", "sgd"],
            "epochs": {"low": 5, "high": 20},
            "dropout": {"low": 0, "high": 0.5},
            "lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-1},
            "wd": {"distribution": "uniform", "low": 0, "high": 1},
            "depth": {"distribution": "intuniform", "low": 2, "high": 8, "step": 2},
            "act": {"distribution": "choice", "values": ["relu", "gelu"]},
            "seed_offset": {"distribution": "constant", "value": 7},
        }
    )
    assert space["batch_size"] == CategoricalDistribution([32])
    assert space["name"] == CategoricalDistribution(["unet"])
    assert space["flag"] == CategoricalDistribution([True])
    assert space["optimizer"] == CategoricalDistribution(["adam", "sgd"])
    assert space["epochs"] == IntDistribution(5, 20)
    assert space["dropout"] == FloatDistribution(0.0, 0.5)
    assert space["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert space["wd"] == FloatDistribution(0.0, 1.0)
    assert space["depth"] == IntDistribution(2, 8, step=2)
    assert space["act"] == CategoricalDistribution(["relu", "gelu"])
    assert space["seed_offset"] == CategoricalDistribution([7])


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({}, "empty"),
        ({"lr": []}, "'lr'"),
        ({"lr": [1, 1]}, "twice"),
        ({"lr": [[1, 2]]}, "string"),
        ({"lr": None}, "'lr'"),
        ({"lr": {"low": 1.0, "high": 1.0}}, "below high"),
        ({"lr": {"low": 2, "high": 1}}, "below high"),
        ({"lr": {"low": 0.1}}, "missing high"),
        ({"lr": {"low": "a", "high": 1.0}}, "'a'"),
        ({"lr": {"low": 0.1, "high": 1.0, "hihg": 2}}, "hihg"),
        ({"lr": {"distribution": "normal", "low": 0.0, "high": 1.0}}, "loguniform"),
        ({"lr": {"distribution": "loguniform", "low": 0.0, "high": 1.0}}, "low > 0"),
        ({"lr": {"distribution": "loguniform", "low": -1.0, "high": 1.0}}, "low > 0"),
        ({"lr": {"distribution": "choice"}}, "missing values"),
        ({"lr": {"distribution": "choice", "values": []}}, "non-empty"),
        ({"lr": {"distribution": "constant"}}, "missing value"),
        ({"lr": {"distribution": "uniform", "low": 0.0}}, "missing high"),
        ({"n": {"distribution": "intuniform", "low": 0.5, "high": 3}}, "integers"),
        ({"n": {"distribution": "intuniform", "low": 0, "high": 3, "step": 2}}, "multiple"),
        ({"n": {"distribution": "intuniform", "low": 0, "high": 4, "step": 0}}, "step"),
    ],
)
def test_parse_errors(table: dict[str, Any], needle: str) -> None:
    with pytest.raises(UsageError, match=needle) as err:
        parse_space(table, source="hp.toml")
    assert "\n" not in str(err.value)
    assert "hp.toml" in str(err.value)


def test_check_space_keys() -> None:
    check_space_keys({"lr": 1}, ["lr", "epochs"])
    with pytest.raises(UsageError, match=r"'lrr'.*accepts: epochs, lr"):
        check_space_keys({"lrr": 1, "epochs": 2}, ["lr", "epochs"])


SPACE = {"lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-1}, "epochs": {"low": 1, "high": 3}}


def test_random_is_deterministic_and_seeded() -> None:
    space = parse_space({**SPACE, "opt": ["adam", "sgd"], "bs": 16})
    first = sample_trials(space, n_trials=5, seed=3)
    assert first == sample_trials(space, n_trials=5, seed=3)
    assert first != sample_trials(space, n_trials=5, seed=4)
    assert len(first) == 5
    for trial in first:
        assert set(trial) == {"lr", "epochs", "opt", "bs"}
        assert type(trial["epochs"]) is int
        assert type(trial["lr"]) is float and 1e-4 <= trial["lr"] <= 1e-1
        assert trial["opt"] in ("adam", "sgd")
        assert trial["bs"] == 16 and type(trial["bs"]) is int


def test_int_bounds_inclusive() -> None:
    trials = sample_trials(parse_space({"n": {"low": 1, "high": 3}}), n_trials=200, seed=0)
    values = {t["n"] for t in trials}
    assert values == {1, 2, 3}
    stepped = sample_trials(
        parse_space({"n": {"distribution": "intuniform", "low": 2, "high": 8, "step": 3}}), n_trials=100
    )
    assert {t["n"] for t in stepped} == {2, 5, 8}


def test_grid_covers_each_combination_once() -> None:
    space = parse_space({"opt": ["adam", "sgd", "rmsprop"], "bs": [16, 32], "act": "relu"})
    trials = sample_trials(space, sampler="grid", n_trials=100, seed=1)
    assert len(trials) == 6
    combos = {(t["opt"], t["bs"], t["act"]) for t in trials}
    assert combos == set(itertools.product(["adam", "sgd", "rmsprop"], [16, 32], ["relu"]))
    assert trials == sample_trials(space, sampler="grid", n_trials=100, seed=1)
    assert trials != sample_trials(space, sampler="grid", n_trials=100, seed=2)  # shuffled order differs
    partial = sample_trials(space, sampler="grid", n_trials=4, seed=1)
    assert partial == trials[:4]


def test_grid_refuses_continuous() -> None:
    space = parse_space({"opt": ["adam"], "lr": {"low": 0.1, "high": 1.0}})
    with pytest.raises(UsageError, match="key 'lr' is uniform; use --sampler random"):
        sample_trials(space, sampler="grid")


@pytest.mark.parametrize("kwargs", [{"sampler": "tpe"}, {"n_trials": 0}, {"n_trials": 1.5}, {"seed": "x"}])
def test_sample_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        sample_trials(parse_space({"a": [1, 2]}), **kwargs)


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "hp.toml"
    path.write_text(
        'title = "x"\n[hyperparameters]\nbs = 32\nopt = ["adam", "sgd"]\n'
        'lr = { distribution = "loguniform", low = 1e-4, high = 1e-1 }\n'
        "[hyperparameters.epochs]\nlow = 1\nhigh = 5\n"
    )
    space = load_space(path)
    assert space == {
        "bs": CategoricalDistribution([32]),
        "opt": CategoricalDistribution(["adam", "sgd"]),
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "epochs": IntDistribution(1, 5),
    }


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"hp{suffix}"
    path.write_text(
        "hyperparameters:\n"
        "  bs: 32\n"
        "  lr: {distribution: loguniform, low: 1e-4, high: 1e-1}\n"  # PyYAML alone reads 1e-4 as a string
        "  wd: [1e-3, 1.0e-4]\n"
        "  epochs: {low: 1, high: 5}\n"
    )
    space = load_space(str(path))
    assert space == {
        "bs": CategoricalDistribution([32]),
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "wd": CategoricalDistribution([1e-3, 1e-4]),
        "epochs": IntDistribution(1, 5),
    }


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("hp.toml", "[hyperparameters\nlr = 1", "malformed TOML"),
        ("hp.yaml", "hyperparameters: [1, 2\n", "malformed YAML"),
        ("hp.toml", "[other]\nlr = 1\n", "no \\[hyperparameters\\] table"),
        ("hp.yaml", "- 1\n- 2\n", "no \\[hyperparameters\\] table"),
        ("hp.yaml", "hyperparameters: 3\n", "not a table"),
        ("hp.json", "{}", "unknown suffix"),
    ],
)
def test_file_errors(tmp_path: Path, name: str, text: str, needle: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UsageError, match=needle) as err:
        load_space(path)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_space(tmp_path / "nope.toml")
