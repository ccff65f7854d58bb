"""Hyperparameter space file -> optuna distributions -> concrete trials for a tune.

The space lives in the ``hyperparameters`` table of a TOML or YAML file. Each key takes one of these forms:

    batch_size = 32                                   constant (always this value)
    optimizer = ["adam", "sgd"]                       choice
    epochs = {low = 5, high = 20}                     integer in [5, 20] (both bounds ints, inclusive)
    dropout = {low = 0.0, high = 0.5}                 float in [0.0, 0.5] (either bound a float)
    lr = {distribution = "loguniform", low = 1e-4, high = 1e-1}
    x = {distribution = "choice", values = [...]}     also "constant" (value), "uniform" (low, high),
                                                      "intuniform" (low, high, optional step)

Sampling is optuna's, not ours: ``random`` asks a RandomSampler, ``grid`` a GridSampler over the cartesian
product of the choice and constant values. Both are seeded, so the same file and seed always give the same
trials, which is what lets a tune be planned again and resumed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from nestling.core.errors import UsageError
from nestling.core.options import config_files as files
from nestling.core.options.choices import Sampler

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

SAMPLERS: tuple[str, ...] = get_args(Sampler)
ADAPTIVE_SAMPLERS = ("tpe",)  # drawn when a worker starts the trial, from every result finished by then (study.py)
DISTRIBUTIONS = ("choice", "constant", "uniform", "loguniform", "intuniform")
SPACE_TABLE = "hyperparameters"

_SCALAR_TYPES = (bool, int, float, str)
_NEEDED_KEYS: dict[str, tuple[str, ...]] = {
    "choice": ("values",),
    "constant": ("value",),
    "uniform": ("low", "high"),
    "loguniform": ("low", "high"),
    "intuniform": ("low", "high"),
}
_OPTIONAL_KEYS: dict[str, tuple[str, ...]] = {"intuniform": ("step",)}
_IMPLICIT_KEYS = ("low", "high")


# ---------------------------------------------------------------------------------------------------------------
# files


def _read_file(path: Path) -> Any:
    """Parse a TOML or YAML file into Python data; every failure becomes a one-line UsageError."""
    suffix = path.suffix.lower()
    if suffix not in files.TOML_SUFFIXES + files.YAML_SUFFIXES:
        raise UsageError(
            f"hyperparameter file {str(path)!r} has an unknown suffix {suffix!r}: use .toml, .yaml or .yml"
        )
    if not path.is_file():
        raise UsageError(f"hyperparameter file {str(path)!r} not found: check the path given to --hpconfig")
    try:
        return files.read(path)
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read hyperparameter file {str(path)!r}: {err}") from err
    except files.MalformedFile as err:
        raise UsageError(f"malformed {err.fmt} in {str(path)!r}: {err}; fix the file") from err


def load_space(path: str | Path) -> dict[str, BaseDistribution]:
    """Read the ``hyperparameters`` table of a TOML/YAML file into optuna distributions."""
    path = Path(path)
    data = _read_file(path)
    source = str(path)
    if not isinstance(data, Mapping) or SPACE_TABLE not in data:
        raise UsageError(
            f"{source}: no [{SPACE_TABLE}] table found: put the space under it, e.g. [{SPACE_TABLE}] lr = [0.1, 0.01]"
        )
    table = data[SPACE_TABLE]
    if not isinstance(table, Mapping):
        raise UsageError(
            f"{source}: '{SPACE_TABLE}' is {table!r}, not a table: give it keys, e.g. [{SPACE_TABLE}] lr = [0.1, 0.01]"
        )
    return parse_space(table, source=source)


# ---------------------------------------------------------------------------------------------------------------
# parsing


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _check_choices(where: str, values: Any) -> list[Any]:
    """Choices must be scalars that optuna and JSON both keep as they are, each listed once."""
    if not isinstance(values, (list, tuple)) or not values:
        raise UsageError(f"{where}: values {values!r} must be a non-empty list, e.g. [0.1, 0.01]")
    seen: set[tuple[type, Any]] = set()
    for value in values:
        if value is not None and not isinstance(value, _SCALAR_TYPES):
            raise UsageError(
                f'{where}: choice {value!r} is not a number, string or bool; encode it as a string, e.g. "64-64"'
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{where}: choice {value!r} is not a finite number; remove it")
        marker = (type(value), value)
        if marker in seen:
            raise UsageError(
                f"{where}: choice {value!r} is listed twice in {list(values)!r}; list each value once"
            )
        seen.add(marker)
    return list(values)


def _bounds(where: str, spec: Mapping[str, Any], *, ints: bool, positive: bool = False) -> tuple[Any, Any]:
    low, high = spec["low"], spec["high"]
    check = _is_int if ints else _is_number
    kind = "integers" if ints else "finite numbers"
    for name, value in (("low", low), ("high", high)):
        if not check(value):
            raise UsageError(f"{where}: {name} = {value!r} is not valid; low and high must be {kind}")
    if low >= high:
        raise UsageError(f"{where}: low = {low!r} must be below high = {high!r}; swap or widen the bounds")
    if positive and low <= 0:
        raise UsageError(
            f'{where}: loguniform needs low > 0, got low = {low!r}; use a positive low or distribution = "uniform"'
        )
    return low, high


def _parse_table_form(where: str, spec: Mapping[str, Any]) -> BaseDistribution:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if "distribution" in spec:
        kind = spec["distribution"]
        if kind not in DISTRIBUTIONS:
            raise UsageError(
                f"{where}: unknown distribution {kind!r}; choose one of {', '.join(DISTRIBUTIONS)}"
            )
        needed = _NEEDED_KEYS[kind]
        allowed = ("distribution", *needed, *_OPTIONAL_KEYS.get(kind, ()))
    else:
        kind = None
        needed = _IMPLICIT_KEYS
        allowed = _IMPLICIT_KEYS
    label = f"distribution {kind!r}" if kind else "a {low, high} range"
    missing = [key for key in needed if key not in spec]
    if missing:
        raise UsageError(
            f"{where}: {label} needs {', '.join(needed)}; missing {', '.join(missing)} in {dict(spec)!r}"
        )
    extra = [str(key) for key in spec if key not in allowed]
    if extra:
        hint = "" if kind else ' (for a log scale or a step, set distribution = "loguniform" or "intuniform")'
        raise UsageError(
            f"{where}: unknown key(s) {', '.join(extra)} for {label}; allowed: {', '.join(allowed)}{hint}"
        )

    if kind == "choice":
        return CategoricalDistribution(_check_choices(where, spec["values"]))
    if kind == "constant":
        return CategoricalDistribution(_check_choices(where, [spec["value"]]))
    if kind == "uniform":
        low, high = _bounds(where, spec, ints=False)
        return FloatDistribution(float(low), float(high))
    if kind == "loguniform":
        low, high = _bounds(where, spec, ints=False, positive=True)
        return FloatDistribution(float(low), float(high), log=True)
    if kind == "intuniform":
        low, high = _bounds(where, spec, ints=True)
        step = spec.get("step", 1)
        if not _is_int(step) or step < 1:
            raise UsageError(f"{where}: step = {step!r} must be a positive integer, e.g. step = 2")
        if (high - low) % step:
            raise UsageError(
                f"{where}: high - low = {high - low} is not a multiple of step = {step}; adjust high or step"
            )
        return IntDistribution(low, high, step=step)
    # implicit {low, high}: ints if both are ints, else floats
    if _is_int(spec["low"]) and _is_int(spec["high"]):
        low, high = _bounds(where, spec, ints=True)
        return IntDistribution(low, high)
    low, high = _bounds(where, spec, ints=False)
    return FloatDistribution(float(low), float(high))


def parse_space(table: Mapping[str, Any], source: str = "hpconfig") -> dict[str, BaseDistribution]:
    """Turn the ``hyperparameters`` table into optuna distributions, refusing anything ambiguous."""
    from optuna.distributions import CategoricalDistribution

    if not isinstance(table, Mapping):
        raise UsageError(
            f"{source}: the hyperparameter space {table!r} is not a table; give key = value pairs"
        )
    if not table:
        raise UsageError(
            f"{source}: the [{SPACE_TABLE}] table is empty; add at least one key, e.g. lr = [0.1, 0.01]"
        )
    space: dict[str, BaseDistribution] = {}
    for key, spec in table.items():
        where = f"{source}: hyperparameter {key!r}"
        if not isinstance(key, str) or not key:
            raise UsageError(f"{source}: hyperparameter name {key!r} must be a non-empty string")
        if isinstance(spec, Mapping):
            space[key] = _parse_table_form(where, spec)
        elif isinstance(spec, (list, tuple)):
            space[key] = CategoricalDistribution(_check_choices(where, spec))
        elif isinstance(spec, _SCALAR_TYPES):
            space[key] = CategoricalDistribution(_check_choices(where, [spec]))
        else:
            raise UsageError(
                f"{where} = {spec!r} is not a value, a list of choices or a {{low, high}} table; "
                "e.g. lr = 0.01, lr = [0.1, 0.01] or lr = {low = 0.001, high = 0.1}"
            )
    return space


def check_space_keys(space: Mapping[str, Any], accepted: Iterable[str]) -> None:
    """Refuse hyperparameters the task does not take, so a typo cannot silently be ignored."""
    accepted = sorted(set(accepted))
    unknown = [key for key in space if key not in accepted]
    if unknown:
        raise UsageError(
            f"unknown hyperparameter(s) {', '.join(map(repr, unknown))}; "
            f"the task accepts: {', '.join(accepted) if accepted else '(none)'}"
        )


# ---------------------------------------------------------------------------------------------------------------
# sampling


def describe_distribution(dist: BaseDistribution) -> str:
    """The space-file name of a distribution, for messages."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return "constant" if len(dist.choices) == 1 else "choice"
    if isinstance(dist, FloatDistribution):
        return "loguniform" if dist.log else "uniform"
    if isinstance(dist, IntDistribution):
        return "intuniform"
    return type(dist).__name__


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so trials serialise to JSON and compare as users expect."""
    if value is None or isinstance(value, _SCALAR_TYPES):
        return value
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _grid(space: Mapping[str, BaseDistribution]) -> dict[str, list[Any]]:
    from optuna.distributions import CategoricalDistribution

    grid: dict[str, list[Any]] = {}
    for key, dist in space.items():
        if not isinstance(dist, CategoricalDistribution):
            raise UsageError(
                f"grid needs only choice/constant: key {key!r} is {describe_distribution(dist)}; use --sampler random"
            )
        grid[key] = list(dist.choices)
    return grid


def sample_trials(
    space: Mapping[str, BaseDistribution], *, sampler: str = "random", n_trials: int = 10, seed: int = 0
) -> list[dict[str, Any]]:
    """Draw hyperparameter sets with an in-memory optuna study; same inputs, same trials.

    With ``grid`` the result holds every combination at most once, in a seed-shuffled order; a larger
    ``n_trials`` is clipped to the grid size.
    """
    import optuna

    if sampler not in SAMPLERS or sampler in ADAPTIVE_SAMPLERS:
        up_front = [s for s in SAMPLERS if s not in ADAPTIVE_SAMPLERS]
        raise UsageError(f"unknown up-front sampler {sampler!r}: choose one of {', '.join(up_front)}")
    if not _is_int(n_trials) or n_trials < 1:
        raise UsageError(f"n_trials = {n_trials!r} must be a positive integer, e.g. --n_trials 10")
    if not _is_int(seed):
        raise UsageError(f"seed = {seed!r} must be an integer, e.g. --tune_seed 0")

    if sampler == "grid":
        grid = _grid(space)
        n_trials = min(n_trials, math.prod(len(values) for values in grid.values()))
        optuna_sampler: optuna.samplers.BaseSampler = optuna.samplers.GridSampler(grid, seed=seed)
    else:
        optuna_sampler = optuna.samplers.RandomSampler(seed=seed)

    # No trial is told: GridSampler gives trial k the k-th point of its seed-shuffled grid while k < grid size
    # (hence the clipping), and telling the last one would call study.stop() outside optimize().
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(sampler=optuna_sampler)
        trials: list[dict[str, Any]] = []
        for _ in range(n_trials):
            trial = study.ask(dict(space))
            trials.append({key: _plain(trial.params[key]) for key in space})
    finally:
        optuna.logging.set_verbosity(verbosity)
    return trials


def to_json(space: Mapping[str, BaseDistribution]) -> dict[str, str]:
    """The space as optuna's distribution JSON, stored in plan.json for workers that draw adaptively."""
    from optuna.distributions import distribution_to_json

    return {key: distribution_to_json(dist) for key, dist in space.items()}


def from_json(data: Mapping[str, str]) -> dict[str, BaseDistribution]:
    from optuna.distributions import json_to_distribution

    return {key: json_to_distribution(text) for key, text in data.items()}
