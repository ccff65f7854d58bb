"""Workers simulated in-process for the bowl task (tasks/bowl.py): the search bench and the search tests drive
hundreds of trials through the real study (draws, pruning) without training, by writing the result a real run of
the task would write. Not used by nestling itself."""

from __future__ import annotations

from pathlib import Path

from nestling.core.tree import failfast
from nestling.core.tree.atomic import write_json
from nestling.core.tree.naming import RunPaths
from nestling.core.tree.run_result import RunResult
from nestling.core.tree.run_state import RunState
from nestling.execute.search import study
from nestling.plan.store import load_spec
from nestling.tasks.bowl import observed


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
