"""Workers simulated in-process for the bowl task (tasks/bowl.py): the search bench and the search tests drive
hundreds of trials through the real study (draws, pruning) without training, by writing the result a real run of
the task would write. Not used by nestling itself."""

from __future__ import annotations

from pathlib import Path

from nestling.core.options.config import parse_config
from nestling.core.tree import failfast
from nestling.core.tree.atomic import write_json
from nestling.core.tree.naming import RunPaths
from nestling.core.tree.run_result import RunResult
from nestling.core.tree.run_state import RunState
from nestling.execute.search import study
from nestling.plan.preflight import prepare
from nestling.plan.store import load_spec, write_plan
from nestling.tasks.bowl import observed

SPACE_FILE = """
[hyperparameters]
lr = {distribution = "loguniform", low = 1e-5, high = 1.0}
width = {low = 0.0, high = 1.0}
depth = {low = 1, high = 10}
"""  # the bowl task's search space (tasks/bowl.py SPACE) as a --hpconfig file


def plan_bowl_tune(folder: Path, name: str, *flags: str, n_trials: int, n_folds: int) -> Path:
    """A bowl tune in `folder`/art, planned and written as `nestling tune` plans it (one seed per fold; more
    options in `flags`), and a fresh study, as in a new worker process. Returns its root."""
    space = folder / "space.toml"
    space.write_text(SPACE_FILE)
    argv = ["--task", "bowl", "--hpconfig", str(space), "--n_trials", str(n_trials), "--n_folds", str(n_folds),
            "--n_seeds", "1", "--artifact_dir", str(folder / "art"), "--name", name, *flags]  # fmt: skip
    prepared = prepare(parse_config(argv, prog="nestling tune"), "tune")
    write_plan(prepared.plan, prepared.splits)
    study._STUDIES.clear()
    return prepared.plan.root


def simulate(run_dir: Path) -> RunResult:
    """Finish a run without training: write the run_result.json a real run of this task writes (success, its
    `val/score`), for the search bench and tests that simulate many workers in one process. The run's spec is
    loaded as a worker loads it (an adaptive trial's configuration completed from its draw)."""
    spec = load_spec(run_dir)
    result = RunResult.for_spec(
        spec, RunState.SUCCESS, metrics={"val/score": observed(spec.hparams, spec.fold, spec.seed)}, attempt=1
    )
    write_json(RunPaths(Path(spec.run_dir)).result, result.to_json())
    return result


def simulate_unit(run_dirs: list[str]) -> list[RunState]:
    """What a worker does with a unit (worker.run_dirs), with `simulate` for training: each run first asks the
    study (draw the trial's configuration, or skip a pruned trial's run). The statuses, in order."""
    statuses = []
    for d in run_dirs:
        if not study.before_run(Path(d), failfast.plan_root(Path(d))):
            statuses.append(RunState.PRUNED)
            continue
        statuses.append(simulate(Path(d)).status)
    return statuses
