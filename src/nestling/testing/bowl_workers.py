"""Workers simulated in-process for the bowl task (tasks/bowl.py): the search bench and the search tests drive
hundreds of trials through the real study (draws, pruning between folds and between epochs) without training, by
writing the result a real run of the task would write. The worker's own loop (execute/worker.py: draws, skips,
rungs, promotions) runs as it is; only the training is replaced. Not used by nestling itself."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from nestling.core.options.config import parse_config
from nestling.core.tree.atomic import write_json
from nestling.core.tree.naming import RunPaths
from nestling.core.tree.run_epochs import StopReason, read_curve, record_epoch, run_epochs
from nestling.core.tree.run_result import RunResult, read_result
from nestling.core.tree.run_spec import RunSpec
from nestling.core.tree.run_state import RunState
from nestling.execute import retry, worker
from nestling.execute.search import rungs, study
from nestling.plan.preflight import prepare
from nestling.plan.store import load_spec, write_plan
from nestling.tasks.bowl import observed, observed_at

# (run dir, epoch) -> how many times a simulated worker trained that epoch: a promotion must never train one twice
EPOCHS_TRAINED: Counter[tuple[str, int]] = Counter()

SPACE_FILE = """
[hyperparameters]
lr = {distribution = "loguniform", low = 1e-5, high = 1.0}
width = {low = 0.0, high = 1.0}
depth = {low = 1, high = 10}
"""  # the bowl task's search space (tasks/bowl.py SPACE) as a --hpconfig file


def plan_bowl_tune(folder: Path, name: str, *flags: str, n_trials: int, n_folds: int) -> Path:
    """A bowl tune in `folder`/art, planned and written as `nestling tune` plans it (one seed per fold; more
    options in `flags`), and a fresh study and rung board, as in a new worker process. Returns its root."""
    space = folder / "space.toml"
    space.write_text(SPACE_FILE)
    argv = ["--task", "bowl", "--hpconfig", str(space), "--n_trials", str(n_trials), "--n_folds", str(n_folds),
            "--n_seeds", "1", "--artifact_dir", str(folder / "art"), "--name", name, *flags]  # fmt: skip
    prepared = prepare(parse_config(argv, prog="nestling tune"), "tune")
    write_plan(prepared.plan, prepared.splits)
    study._STUDIES.clear()
    rungs._BOARDS.clear()
    retry._Process.storage_full = False  # (a test before may have met a full file system in this process)
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


def simulate_training(spec: RunSpec, until_epoch: int | None = None) -> RunResult:
    """What run_attempt.execute does for the bowl task, without Lightning: "train" from where the run's last
    result left it to `until_epoch` (else its last epoch), write its curve and its result (paused at a rung, or
    completed), and count every epoch in EPOCHS_TRAINED."""
    paths = RunPaths(Path(spec.run_dir))
    paths.dir.mkdir(parents=True, exist_ok=True)
    previous = run_epochs(read_result(paths.dir))
    start = previous.epochs_trained if previous.paused else 0
    end = min(spec.max_epochs, until_epoch or spec.max_epochs)
    curve = read_curve(paths.dir)
    for epoch in range(start, end):
        EPOCHS_TRAINED[(str(paths.dir), epoch)] += 1
        value = observed_at(spec.hparams, spec.fold, spec.seed, epoch + 1, spec.max_epochs)
        curve = record_epoch(paths.dir, epoch, {"val/score": value}, curve)
    reason = StopReason.COMPLETED if end >= spec.max_epochs else StopReason.PAUSED
    score = observed_at(spec.hparams, spec.fold, spec.seed, end, spec.max_epochs)
    result = RunResult.for_spec(
        spec, RunState.SUCCESS, metrics={"val/score": score}, attempt=1, epochs_trained=end, stop_reason=reason
    )
    write_json(paths.result, result.to_json())
    return result


def simulate_unit(run_dirs: list[str]) -> list[RunState]:
    """What a worker does with a unit (worker.run_dirs), with `simulate_training` for training: each run first
    asks the study (draw the trial's configuration, or skip a pruned trial's run); with --pruner asha|hyperband
    the worker trains promoted trials first. The statuses, in order."""
    return worker.run_dirs(run_dirs, trainer=simulate_training)


def finish() -> list[RunState]:
    """A simulated worker with no unit left: the promotions still to do (worker.finish_promotions)."""
    return worker.finish_promotions(trainer=simulate_training)
