"""--keep_checkpoints K and `nestling prune-checkpoints` (issue 23 §3) on a tune whose runs finish as a worker
finishes them (results and checkpoint files written, nothing trained): the K best finished trials keep their
checkpoints, the others lose them as soon as they rank below K, and nothing a resume, a promotion or a live run
needs is touched."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from nestling.commands.prune_checkpoints import prune_tune_checkpoints as prune_checkpoints
from nestling.core.errors import UsageError
from nestling.core.options.config import parse_config
from nestling.core.tree import fault_ledger, naming
from nestling.core.tree.atomic import write_json
from nestling.core.tree.run_result import RunResult
from nestling.core.tree.run_state import RunState
from nestling.execute import checkpoint_keeping as keeping
from nestling.plan.preflight import prepare
from nestling.plan.store import load_spec, write_plan
from nestling.read.collect import collect


def tune(tmp_path: Path, values: list[float], keep: str = "all") -> Any:
    """A grid tune of the sleep task over `value` (its score), 2 folds x 1 seed each."""
    space = tmp_path / "space.toml"
    space.write_text(f"[hyperparameters]\nvalue = {{distribution = \"choice\", values = {values}}}\n")
    args = ["--task", "sleep", "--n_folds", "2", "--n_seeds", "1", "--hpconfig", str(space), "--sampler", "grid",
            "--n_trials", str(len(values)), "--artifact_dir", str(tmp_path / "art"), "--name", "t",
            "--keep_checkpoints", keep]  # fmt: skip
    prepared = prepare(parse_config(args), "tune")
    write_plan(prepared.plan, prepared.splits)
    return prepared.plan


def finish(plan: Any, index: int, status: RunState = RunState.SUCCESS, **extra: Any) -> None:
    """Trial `index`'s runs end as a worker ends them: checkpoints, then the result, then the worker's hook."""
    for run in plan.cvs[index].runs:
        spec = load_spec(run.dir)
        ckpt = run.dir / "checkpoints"
        ckpt.mkdir(exist_ok=True)
        (ckpt / "last.ckpt").write_bytes(b"w" * 20_000)
        (ckpt / "best.ckpt").write_bytes(b"w" * 20_000)
        value = float(spec.hparams["value"])
        ok = status is RunState.SUCCESS
        result = RunResult.for_spec(spec, status, metrics={"val/JaccardIndex": value, "val/Recall": value} if ok else {},
                                    checkpoint=str(ckpt / "best.ckpt") if ok else None, attempt=1,
                                    error=None if ok else "ValueError: x")  # fmt: skip
        write_json(run.dir / naming.RUN_RESULT, {**result.to_json(), **extra})
        keeping.trial_finished(plan.root, run.dir)


def has_checkpoints(plan: Any, index: int) -> list[bool]:
    return [(r.dir / "checkpoints" / "last.ckpt").exists() for r in plan.cvs[index].runs]


def test_only_the_k_best_finished_trials_keep_their_checkpoints(tmp_path: Path) -> None:
    plan = tune(tmp_path, [0.2, 0.9, 0.5, 0.7], keep="2")  # grid order: cv0..cv3 hold these values
    values = [float(cv.hparams["value"]) for cv in plan.cvs]
    order = sorted(range(4), key=lambda i: -values[i])  # best first
    worst, best = order[-1], order[0]
    finish(plan, worst)
    finish(plan, order[2])
    assert has_checkpoints(plan, worst) == has_checkpoints(plan, order[2]) == [True, True]  # only 2 finished
    finish(plan, best)  # a third finished trial: the worst of the three ranks outside the 2 best
    assert has_checkpoints(plan, worst) == [False, False] and has_checkpoints(plan, best) == [True, True]
    finish(plan, order[1])
    assert [all(has_checkpoints(plan, i)) for i in range(4)] == [i in order[:2] for i in range(4)]
    assert keeping.removed_trials(plan.root) == set(order[2:])
    assert sorted(os.listdir(plan.root / "_checkpoints" / "ranked")) == sorted(f"{i}.json" for i in order[:2])
    table = collect(plan.root).cvs
    for i, cv in enumerate(table):
        column = cv.table.get_column("checkpoint").to_list()
        assert (column == ["removed", "removed"]) == (i in order[2:]), (i, column)
    tune_runs = pl.read_parquet(plan.root / naming.RUN_INFOS)
    assert tune_runs.filter(pl.col("checkpoint") == "removed").height == 4


def test_what_a_resume_a_promotion_or_a_live_run_needs_is_never_removed(tmp_path: Path) -> None:
    plan = tune(tmp_path, [0.9, 0.2, 0.5], keep="none")
    finish(plan, 0, RunState.FAILED)  # a failed trial: its runs' checkpoints are where a resume continues
    assert has_checkpoints(plan, 0) == [True, True]
    finish(plan, 1, stop_reason="paused")  # paused at a rung: not finished, a promotion continues from it
    assert has_checkpoints(plan, 1) == [True, True] and not keeping.finished(plan.root, plan, 1)
    first = plan.cvs[2].runs[0].dir
    finish(plan, 2)
    assert has_checkpoints(plan, 2) == [False, False]  # K = 0: a finished successful trial keeps nothing
    removed = json.loads((plan.root / "_checkpoints" / "removed" / "2.json").read_text())
    assert removed["runs"] == 2 and removed["bytes"] >= 80_000
    assert not (first / "checkpoints").exists()


def test_an_unfinished_trial_keeps_its_checkpoints(tmp_path: Path) -> None:
    plan = tune(tmp_path, [0.2, 0.9], keep="0")
    run = plan.cvs[0].runs[0]
    spec = load_spec(run.dir)
    result = RunResult.for_spec(spec, RunState.SUCCESS, metrics={"val/JaccardIndex": 0.2, "val/Recall": 0.2})
    write_json(run.dir / naming.RUN_RESULT, result.to_json())
    (run.dir / "checkpoints").mkdir()
    (run.dir / "checkpoints" / "last.ckpt").write_bytes(b"x")
    keeping.trial_finished(plan.root, run.dir)  # its second run has not finished
    assert (run.dir / "checkpoints" / "last.ckpt").exists() and keeping.removed_trials(plan.root) == set()


def test_prune_checkpoints_after_the_fact_says_what_it_freed(tmp_path: Path) -> None:
    plan = tune(tmp_path, [0.2, 0.9, 0.5])  # --keep_checkpoints all: nothing removed during the tune
    for i in range(3):
        finish(plan, i)
    assert all(all(has_checkpoints(plan, i)) for i in range(3))
    would = prune_checkpoints(plan.root, 1, dry_run=True)
    assert (len(would.removed), would.kept) == (2, ["t-cv1"]) and would.freed_bytes >= 4 * 40_000
    assert "would remove the checkpoints of 2 trial(s) (4 runs)" in would.line("t")
    assert all(all(has_checkpoints(plan, i)) for i in range(3))  # a dry run removes nothing
    done = prune_checkpoints(plan.root, "1")
    assert done.freed_bytes == would.freed_bytes and done.kept == ["t-cv1"]
    assert "removed the checkpoints of 2 trial(s) (4 runs), freed" in done.line("t")
    assert [all(has_checkpoints(plan, i)) for i in range(3)] == [False, True, False]
    again = prune_checkpoints(plan.root, 1)
    assert again.removed == [] and again.kept == ["t-cv1"]
    with pytest.raises(UsageError, match="keeps every checkpoint"):
        prune_checkpoints(plan.root, "all")


def test_a_launch_may_ask_for_another_limit_than_the_plan(tmp_path: Path) -> None:
    plan = tune(tmp_path, [0.2, 0.9])  # planned with every checkpoint kept
    assert keeping.keep_limit(plan) is None
    fault_ledger.open_launch(plan.root, 2, keep_checkpoints="1")  # e.g. a resume with --keep_checkpoints 1
    assert keeping.keep_limit(plan) == 1
    finish(plan, 0)
    finish(plan, 1)
    best = max(range(2), key=lambda i: float(plan.cvs[i].hparams["value"]))
    assert [all(has_checkpoints(plan, i)) for i in range(2)] == [i == best for i in range(2)]
