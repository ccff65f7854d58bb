"""`nestling retrain TUNE_DIR`: train a tune's selected configuration on train + val and score it on the test split.

The retrain is one more plan, written and launched like any other (`artifacts.write_plan`,
`start.launch_and_report`): kind "retrain", rooted at `{tune}/{tune}-final`, one split (every non-test sample
of the tune's splits for training, its test samples for testing), one run per seed. Its runs train for a fixed
number of epochs without validation (`RunSpec.retrain`) and are scored on the test metrics (the tune's scoring
metrics with `val` replaced by `test`); the collector writes run_infos.parquet and final_infos.parquet. Running
the command again (or with --resume) resumes it through `resume.prepare_resume`, like `--resume` of a tune.

Options: the tune's own (its launcher, devices, container), changed by launch, device and container flags given
here; `--n_seeds`/`--seeds` (default the tune's); `--cv NAME` (default the tune's best by `--select`);
`--retrain_epochs best|max|N` (best: the median best epoch of the chosen cv's runs, from their CSV logs).

The retrain trains the code the tune was tuned with: the tune's snapshot, linked into its own `_code` (--force takes
the current code instead). What changed since the tune was planned (code, environment, data) is printed first.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import statistics
import sys
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.commands.code_capture import print_drift, release_code, take_code
from nestling.commands.start import Executed, launch_plan, parallel_strategy, resume_plan, runs_per_task
from nestling.core.errors import UsageError, strict_parser
from nestling.core.host.devices import parse_devices
from nestling.core.lazy import lazy_module
from nestling.core.ml.scoring import parse_scoring_metrics
from nestling.core.ml.task import Split
from nestling.core.options.choices import Select
from nestling.core.options.config import (
    Config,
    Logging,
    config_from_dict,
    explicit_options,
    option_names,
    parse_config,
)
from nestling.core.provenance.drift import drift
from nestling.core.provenance.record import Provenance, TakenCode
from nestling.core.tree import naming
from nestling.core.tree.atomic import read_json
from nestling.core.tree.run_result import result_state
from nestling.core.tree.run_state import RunState
from nestling.launch.base import plural
from nestling.launch.factory import make_launcher
from nestling.launch.local import discard_warm
from nestling.plan.build import plan_retrain
from nestling.plan.model import LaunchRequest
from nestling.plan.preflight import check_job_resources
from nestling.plan.specs import run_specs
from nestling.plan.store import find_plan_root, load_plan, write_plan
from nestling.plan.units import run_dirs_per_cv, work_units

if TYPE_CHECKING:
    from nestling.core.ml.task import Split
    from nestling.plan.model import CvPlan, Plan
    from nestling.read import collect
    from nestling.read.collect import CvSummary
else:
    collect = lazy_module("nestling.read.collect")

DESCRIPTION = (
    "Train a tune's selected configuration on train + val (every non-test sample) with one run per seed and "
    "score it on the test split, as the cv {tune}-final of the tune. Launch, device and container options "
    "(see nestling tune --help) default to the tune's; --n_seeds/--seeds too. Again (or --resume): resumes it."
)
OVERRIDE_GROUPS = ("launch", "device", "container")  # flags of these groups change the tune's values
OVERRIDE_KEYS = ("n_seeds", "seeds", "quiet", "wandb_project", "wandb_entity")
VALIDATION_PREFIXES = ("val", "valid", "validation")


@dataclass(frozen=True)
class RetrainChoice:
    """Which configuration a new retrain trains, and for how long (a retrain that exists is resumed as planned)."""

    cv: str | None = None  # a cv of the tune; default: the best by `select`
    select: Select | None = None  # score | lcb; default: the tune's --select
    epochs: str | None = None  # best | max | N; default: best


def retrain_main(argv: list[str]) -> int:
    """The command line: `nestling retrain TUNE_DIR [options]`, parsed into `retrain_tune`."""
    if not argv or argv[0] in ("-h", "--help"):
        _parser().print_help()
        return 0 if argv else 2
    if argv[0].startswith("-"):
        raise UsageError(f"nestling retrain takes the tune directory first, not {argv[0]!r}: nestling retrain DIR")
    args, rest = _parser().parse_known_args(argv[1:])
    given = parse_config(rest, prog="nestling retrain", description=DESCRIPTION)
    choice = RetrainChoice(args.cv, args.select, args.retrain_epochs)
    return retrain_tune(Path(argv[0]), given, explicit_options(rest), choice).exit_code


def retrain_tune(
    tune_dir: Path, given: Config, explicit: AbstractSet[str], choice: RetrainChoice = RetrainChoice()
) -> Executed:
    """Plan, write and launch the retrain of the tune at `tune_dir`, or resume it when it exists: the command
    line's and the Python API's `retrain`. `given`: the options of this invocation, of which those in `explicit`
    (launch, device and container options, seeds, quiet and W&B) replace the tune's."""
    tune = _tune_plan(Path(tune_dir))
    groups = option_names()
    refused = sorted(k for k in explicit if groups[k] not in OVERRIDE_GROUPS and k not in OVERRIDE_KEYS)
    if refused:
        raise UsageError(
            f"--{refused[0]} is not a retrain option (the tune's value is kept); retrain takes --cv, --select, "
            "--n_seeds/--seeds, --retrain_epochs best|max|N and launch, device and container options"
        )
    final_root = naming.final_dir(tune.root, tune.name)
    if (final_root / naming.PLAN).is_file():
        chosen = [f"--{k}" for k, v in (("select", choice.select), ("retrain_epochs", choice.epochs)) if v is not None]
        if chosen:
            raise UsageError(
                f"{' and '.join(chosen)} choose a new retrain, but {final_root} exists and would be resumed; drop "
                "them to resume it, or move it away to start another"
            )
        return _resume_retrain(tune, final_root, choice.cv, given, explicit)
    return _new_retrain(tune, choice, given, explicit)


def then_retrain(kind: str, root: Path, config: Config, ended: bool, code: int) -> int:
    """`nestling tune --retrain`: retrain the best once the tune ended here (a detached SLURM tune submitted a
    retrain job after its collector instead, see launch/slurm/launcher.py)."""
    quiet = config.logging.quiet
    try:
        if kind != "tune" or not config.tune.retrain or code != 0 or not ended:
            return code
        try:
            code = retrain_tune(root, Config(logging=Logging(quiet=quiet)), {"quiet"} if quiet else set()).exit_code
        except UsageError as exc:  # e.g. no trial has a score: the tune itself ended, say why nothing was retrained
            print(f"nestling: not retrained: {exc}", file=sys.stderr)
            return 1
    finally:
        discard_warm()  # the tune's workers, kept for this retrain (launch/local.py)
    if not quiet:
        print(closing_line(root))
    return code


def closing_line(root: Path) -> str:
    """The last word of `tune --retrain` (and of `make demo`): where the report is, and the tested score."""
    import polars as pl

    final = naming.final_dir(root, root.name) / naming.FINAL_INFOS
    score = "not available (see the retrain above)"
    if final.is_file():
        rows = {r["row"]: r["run_score"] for r in pl.read_parquet(final).iter_rows(named=True) if r["row"] != "seed"}
        mean, sem = rows.get("mean"), rows.get("sem")
        if mean is not None and not math.isnan(mean):
            score = f"{mean:.4g}" + (f" ± {sem:.2g} (sem)" if sem is not None and not math.isnan(sem) else "")
    return f"report: {root / naming.REPORT}\nretrained test score: {score} ({final})"


def _parser() -> Any:
    parser = strict_parser("nestling retrain", DESCRIPTION)
    parser.usage = (
        "nestling retrain TUNE_DIR [--cv NAME] [--select score|lcb] [--retrain_epochs best|max|N] [--n_seeds K] "
        "[--resume] [launch, device and container options]"
    )
    parser.add_argument("--cv", default=None, help="the cv of the tune to retrain (default: the best by --select)")
    parser.add_argument(
        "--select", choices=("score", "lcb"), default=None, help="how the best cv is chosen (default: the tune's)"
    )
    parser.add_argument(
        "--retrain_epochs",
        default=None,
        help="best (default: the median best epoch of the cv's runs), max (the tune's --max_epochs) or a number",
    )
    parser.add_argument("--resume", action="store_true", help="continue an existing retrain (the default)")
    return parser


def _tune_plan(path: Path) -> Plan:
    if not path.exists():
        raise UsageError(f"{str(path)!r} does not exist; pass the directory of a tune")
    root = find_plan_root(path)
    plan = load_plan(root)
    if plan.kind == "retrain":  # the retrain's own dir: its tune is the directory above
        plan = load_plan(find_plan_root(root.parent))
    if plan.kind != "tune":
        raise UsageError(f"{str(path)!r} is a {plan.kind}, not a tune; nestling retrain takes a tune directory")
    return plan


def _merged(base: Config, given: Config, explicit: AbstractSet[str]) -> Config:
    """`base` with the flags given here (launch, device, container, seeds, logging extras) applied."""
    groups = option_names()
    changes: dict[str, dict[str, Any]] = {}
    for key in explicit:
        group = groups[key]
        changes.setdefault(group, {})[key] = getattr(getattr(given, group), key)
    replaced = {g: dataclasses.replace(getattr(base, g), **values) for g, values in changes.items()}
    return dataclasses.replace(base, **replaced)


def as_test_metric(name: str) -> str:
    """The test metric a retrain scores on for the cv scoring metric `name`: val/x -> test/x, val_x -> test_x."""
    metric, colon, direction = name.rpartition(":") if name.endswith((":higher", ":lower")) else (name, "", "")
    for prefix in VALIDATION_PREFIXES:
        for sep in ("/", "_"):
            if metric.startswith(prefix + sep):
                return f"test{sep}{metric[len(prefix) + 1 :]}{colon}{direction}"
    raise UsageError(
        f"scoring metric {metric!r} is not a validation metric (val/NAME or val_NAME), so there is no test metric "
        "to score a retrain on; tune with --scoring_metric val/NAME and log test/NAME in test_step"
    )


def retrain_split(splits: list[Split]) -> Split:
    """Every sample the tune trained or validated on, for training; the test samples for testing."""

    test = list(splits[0].test) if splits else []
    held_out = set(test)
    seen: dict[str, None] = {}
    for split in splits:
        seen.update(dict.fromkeys(s for s in [*split.train, *split.val] if s not in held_out))
    return Split(train=sorted(seen), val=[], test=test)


def best_epoch(run_dir: Path, metric: str, higher: bool) -> int | None:
    """The 0-based epoch of the best value of `metric` in the run's CSV logs (every attempt), the first on ties,
    as ModelCheckpoint keeps it; None without logs of it."""
    best: tuple[float, int] | None = None
    rows: list[tuple[int, float]] = []
    for path in naming.RunPaths(run_dir).csv_logs():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                value, epoch = row.get(metric), row.get("epoch")
                if value and epoch:
                    rows.append((int(float(epoch)), float(value)))
    for epoch, value in sorted(rows):
        if math.isnan(value):
            continue
        if best is None or (value > best[0] if higher else value < best[0]):
            best = (value, epoch)
    return None if best is None else best[1]


@dataclass(frozen=True)
class Epochs:
    count: int
    how: str  # for the message


def retrain_epochs(choice: str, cv: CvPlan, config: Config) -> Epochs:
    """`best`: the median over the cv's runs of (best epoch + 1), rounded up; `max`: the tune's --max_epochs."""

    max_epochs = config.training.max_epochs
    if choice == "max":
        return Epochs(max_epochs, "the tune's --max_epochs")
    if choice != "best":
        try:
            count = int(choice)
        except ValueError:
            count = 0
        if count < 1:
            raise UsageError(f"--retrain_epochs {choice!r} is not best, max or a positive number; e.g. --retrain_epochs best")
        return Epochs(count, "--retrain_epochs")
    first = parse_scoring_metrics(config.cv.scoring_metric)[0]
    found = [
        best_epoch(run.dir, first.name, first.higher_is_better)
        for run in cv.runs
        if result_state(run.dir) is RunState.SUCCESS
    ]
    epochs = [e + 1 for e in found if e is not None]
    if not epochs:
        return Epochs(max_epochs, f"no {first.name} in the runs' logs: the tune's --max_epochs")
    return Epochs(math.ceil(statistics.median(epochs)), f"median best epoch of {len(epochs)} runs by {first.name}")


def _choose(tune: Plan, cv_name: str | None, select: str | None) -> tuple[CvSummary, str]:
    collected = collect.collect(tune.root, write=False)
    if cv_name is not None:
        chosen = [cv for cv in collected.cvs if cv.cv_name == cv_name]
        if not chosen:
            names = ", ".join(str(cv.cv_name) for cv in collected.cvs[:5])
            raise UsageError(f"--cv {cv_name!r} is not a cv of tune {tune.name!r}; e.g. {names}")
        how = "--cv"
        best = chosen[0]
    else:
        how = collect.selected(collected, select)
        best = collect.ranked(collected.cvs, how)[0]
    if best.n_success == 0 or math.isnan(best.score):
        raise UsageError(
            f"cv {best.cv_name!r} of tune {tune.name!r} has no successful run to retrain; resume the tune "
            f"(nestling tune --resume {tune.name}) or pick another with --cv NAME"
        )
    if collected.counts[RunState.MISSING]:
        print(
            f"nestling: tune {tune.name} has {collected.counts[RunState.MISSING]} runs without a result; "
            f"choosing among the finished ones",
            file=sys.stderr,
        )
    return best, how


def _new_retrain(tune: Plan, choice: RetrainChoice, given: Config, explicit: AbstractSet[str]) -> Executed:
    tune_config = config_from_dict(tune.options)
    splits = [Split(s["train"], s["val"], s["test"]) for s in read_json(tune.root / naming.SPLITS)]
    split = retrain_split(splits)
    if not split.test:
        raise UsageError(
            f"tune {tune.name!r} has no test split to score a retrain on; plan the tune with --test_split random "
            "(--test_fraction 0.2) or --test_split region --test_regions R1 R2"
        )
    chosen, how = _choose(tune, choice.cv, choice.select)
    planned = next(cv for cv in tune.cvs if cv.cv_name == chosen.cv_name)
    epochs = retrain_epochs(choice.epochs or "best", planned, tune_config)
    base = _merged(tune_config, given, explicit)
    name = naming.final_name(tune.name)
    config = dataclasses.replace(
        base,
        training=dataclasses.replace(base.training, max_epochs=epochs.count, early_stopping_patience=0),
        cv=dataclasses.replace(base.cv, scoring_metric=[as_test_metric(m) for m in base.cv.scoring_metric]),
        logging=dataclasses.replace(
            base.logging, artifact_dir=str(tune.root.parent), name=name, quiet=given.logging.quiet
        ),
        launch=dataclasses.replace(base.launch, resume=None, force=False, detach=False),  # runs here, never detached
    )
    check_job_resources(config)
    plan = plan_retrain(
        config, tune_root=tune.root, tune_name=tune.name, hparams=chosen.hparams, hp_index=chosen.hp_index
    )
    run_specs(plan)  # refuses a strategy a worker cannot run, before anything is written
    launcher = make_launcher(config, "retrain", name, parse_devices(config.device.devices))
    units = work_units(
        run_dirs_per_cv(plan), parallel_strategy(config), runs_per_task(config, len(plan.runs), launcher)
    )
    forced = base.launch.force  # (the retrain's own launch options drop it: it is no resume)
    code = None if config.launch.dry_run else _retrain_code(tune, config, forced)
    found = drift(tune.provenance, tune.root, config.data.task, forced=forced, runs="the retrain's runs")
    print_drift("retrain", name, found.lines)
    if config.launch.dry_run:
        print(launcher.describe(plan.root, units, f"retrain {name}"))
        return Executed(0, "retrain")
    if found.env is not None:
        data = found.data_digest if tune.provenance is not None and tune.provenance.data_digest is not None else None
        plan = dataclasses.replace(plan, provenance=Provenance(code.ref if code else None, found.env, data))
    try:
        write_plan(plan, [split], code)
    finally:
        release_code(code)
    if not config.logging.quiet:
        print(
            f"retrain {name}: {chosen.cv_name} (by {how}, score {chosen.score:.4g}) hparams {chosen.hparams}; "
            f"{plural(epochs.count, 'epoch')} ({epochs.how}); {plural(len(plan.runs), 'seed')} on "
            f"{plural(len(split.train), 'sample')}, tested on {len(split.test)}"
        )
    return launch_plan(LaunchRequest("retrain", name, plan.root, units, config, len(plan.runs)), launcher, None)


def _retrain_code(tune: Plan, config: Config, forced: bool) -> TakenCode | None:
    """The tune's snapshot (the code that was tuned), or with --force (or a tune planned before snapshots) the
    code as it is now."""
    manifest = tune.provenance.manifest(tune.root) if tune.provenance is not None else None
    if forced or tune.provenance is None:
        return take_code(config)
    return TakenCode(manifest, tune.root) if manifest is not None else None


def _resume_retrain(
    tune: Plan, root: Path, cv_name: str | None, given: Config, explicit: AbstractSet[str]
) -> Executed:
    plan = load_plan(root)
    trained = next((cv.cv_name for cv in tune.cvs if cv.hp_index == plan.cvs[0].hp_index), None)
    if cv_name is not None and cv_name != trained:
        raise UsageError(
            f"{plan.name} retrains {trained!r}, not {cv_name!r}; move {root} away to retrain another configuration"
        )
    saved = config_from_dict(plan.options)
    config = _merged(saved, given, explicit)
    config = dataclasses.replace(
        config,
        logging=dataclasses.replace(config.logging, artifact_dir=str(tune.root.parent), quiet=given.logging.quiet),
        launch=dataclasses.replace(config.launch, resume=plan.name, detach=False),  # runs here, never detached
    )
    return resume_plan("retrain", config, explicit)
