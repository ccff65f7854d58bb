"""`python -m nestling.worker`: run many specs in one long-lived process, so torch is imported once.

Two modes:
  python -m nestling.worker RUN_DIR...   run these runs in series, then exit (SLURM array tasks, containers)
  python -m nestling.worker --serve [--preload TASK [--describe]]
                                         read work units as JSON lines on stdin; before each run it trains write a
                                         JSON line {"started": run_dir}, after each run {"run_dir", "status"}, and
                                         after each unit {"unit_done": index} on stdout.
In --serve mode everything the training prints goes to stderr, so stdout carries only the protocol. With --preload
the worker imports torch, Lightning and the task's module before it says {"ready"}: a pool started while the CLI
plans pays that import at the same time as the CLI, not after it; with --describe it first sends the task's planning
half ({"task": ...}, see task.DescribedTask), so the CLI need not import the task (and torch) at all.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from nestling.core.host import jobenv
from nestling.core.lazy import lazy_module
from nestling.core.tree import failfast
from nestling.core.tree.run_epochs import StopReason, run_epochs
from nestling.core.tree.run_result import read_result
from nestling.core.tree.run_spec import RunSpec
from nestling.execute.run_attempt import execute
from nestling.execute.search import rungs, study, trials
from nestling.execute.startup import describe_task, quiet_lightning
from nestling.execute.startup import preload as preload_imports
from nestling.plan.store import load_spec

if TYPE_CHECKING:
    from nestling.execute import cv_table
else:
    cv_table = lazy_module("nestling.execute.cv_table")

Trainer = Callable[[RunSpec, int | None], dict[str, Any] | None]  # run_attempt.execute: (spec, until_epoch)
SKIPPED = "skipped"  # the reply for a run another live attempt holds (see run.execute)
NOT_STARTED = "not started"  # the reply for a run fail-fast held back (see failfast.py)
PRUNED = trials.PRUNED  # the reply for a run whose trial was stopped after an earlier fold or at a rung
PAUSED = StopReason.PAUSED.value  # the reply for a run paused at a rung, waiting for its trial to be promoted


def run_dirs(
    dirs: list[str], reply: TextIO | None = None, skip_done: bool = True, trainer: Trainer = execute
) -> list[dict[str, Any]]:
    """Run these runs in order. With --pruner asha|hyperband a run trains to its trial's rung, and before a new
    trial and after the unit the worker first trains what was promoted meanwhile (see search/rungs.py).
    `trainer`: run_attempt.execute; testing/bowl_workers.py passes one that writes results without training."""
    quiet_lightning()
    results = []
    for d in dirs:
        board = rungs.board_for(failfast.plan_root(Path(d)))
        if board is not None and board.where.get(Path(d).name, (0, 1))[1] == 0:  # the first run of a trial
            results += promotions(board, reply, trainer)
        results.append(_run_one(d, reply, trainer, skip_done))
    for board in rungs.boards():
        results += promotions(board, reply, trainer)
    return results


def _run_one(d: str, reply: TextIO | None, trainer: Trainer, skip_done: bool = True) -> dict[str, Any]:
    result = read_result(Path(d)) if skip_done else None
    root = failfast.plan_root(Path(d))
    board = rungs.board_for(root)
    if board is not None or result is None or result.get("status") != "success":  # finished work is never redone
        if root is not None and failfast.stopped(root) is not None:  # a systematic error: start no more
            result = {"run_dir": d, "status": NOT_STARTED}
        elif not study.before_run(Path(d), root):  # draws an adaptive trial's configuration first
            result = {"run_dir": d, "status": PRUNED}
        elif board is not None:
            result = _segment(board, root, d, reply, trainer)
        else:
            _started(reply, d)
            result = trainer(load_spec(Path(d)), None)
            if result is not None and root is not None:
                failfast.record(root, str(result.get("run_id")), str(result.get("status")), result.get("error"))
            if result is not None and root is not None and result.get("status") in ("success", "failed"):
                _collect_if_cv_done(root, Path(d), trainer)
    if result is None:  # a live attempt elsewhere holds this run: it writes the result, not us
        result = {"run_dir": d, "status": SKIPPED}
    _reply(reply, d, result)
    return result


def _segment(
    board: rungs.Board, root: Path | None, d: str, reply: TextIO | None, trainer: Trainer
) -> dict[str, Any] | None:
    """--pruner asha|hyperband: train the run to its trial's rung (or nothing, when it has reached it), then let
    the tree decide; runs of trials pruned now are replied as pruned."""
    segment = board.segment(d)
    if segment.until_epoch is None:
        return {**(read_result(Path(d)) or {}), "run_dir": d, "status": segment.why}
    _started(reply, d)
    result = trainer(load_spec(Path(d)), segment.until_epoch)
    if result is None:
        return None
    if root is not None:
        failfast.record(root, str(result.get("run_id")), str(result.get("status")), result.get("error"))
    for index in board.after_run(d):
        for run in board.trial_runs[index]:
            _reply(reply, run, {"status": PRUNED})
    if root is not None and run_epochs(result).final:
        _collect_if_cv_done(root, Path(d), trainer)
    return result


def _started(reply: TextIO | None, run_dir: str) -> None:
    """Tell the driver which run this worker trains now: if the worker dies, that run is the one lost (a promoted
    run may belong to another unit)."""
    if reply is not None:
        reply.write(json.dumps({"started": run_dir}) + "\n")
        reply.flush()


def _reply(reply: TextIO | None, run_dir: str, result: dict[str, Any]) -> None:
    if reply is not None:
        status = PAUSED if run_epochs(result).paused else result.get("status")
        reply.write(json.dumps({"run_dir": run_dir, "status": status}) + "\n")
        reply.flush()


def promotions(board: rungs.Board, reply: TextIO | None = None, trainer: Trainer = execute) -> list[dict[str, Any]]:
    """Train the runs of promoted trials, the highest rung first, until none is left (a free worker's most
    valuable work, ASHA's rule). Each run once per call: one another attempt holds is left to it."""
    results: list[dict[str, Any]] = []
    tried: set[str] = set()
    board.decide()  # what the tree allows by now (a resume, or a decision a killed worker left undone)
    while failfast.stopped(board.root) is None:
        work = [d for d in board.promoted_runs() if d not in tried]
        if not work:
            return results
        tried.add(work[0])
        results.append(_run_one(work[0], reply, trainer))
    return results


def finish_promotions(reply: TextIO | None = None, trainer: Trainer = execute) -> list[dict[str, Any]]:
    """When this worker has no work unit left: keep taking promotions while another run of the tune trains (its
    end may promote a paused trial), and return once nothing trains and nothing waits. Without it the last rungs
    of a tune would run one after another on whichever worker happened to end last."""
    results: list[dict[str, Any]] = []
    for board in rungs.boards():
        while failfast.stopped(board.root) is None:
            done = promotions(board, reply, trainer)
            results += done
            if done:
                continue
            if board.promoted_runs():
                continue
            if not board.training_elsewhere():
                time.sleep(0.2)  # a worker between its run's end and its decision holds no lock for a moment
                if not board.training_elsewhere() and not board.promoted_runs():
                    break
                continue
            time.sleep(rungs.IDLE_POLL_S)
    return results


def _collect_if_cv_done(root: Path, run_dir: Path, trainer: Trainer) -> None:
    """When this run was its cv's last, write the cv's run_infos.parquet now, so that the collect at the end of a
    large tune has little left to write (issue 15 #5). Best effort: the final collect writes whatever this did not.
    Not with a simulated trainer (testing/bowl_workers.py): its bench and tests collect once at the end, and fork
    workers, in which a polars thread pool started before the fork would hang."""
    if trainer is execute:
        cv_table.collect_finished_cv(root, run_dir)


def serve(preload: str | None = None, describe: bool = False) -> None:
    reply = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # training output must not corrupt the protocol
    if preload is not None:
        if describe and preload:  # the CLI plans from this instead of importing the task itself
            reply.write(json.dumps(describe_task(preload)) + "\n")
            reply.flush()
        preload_imports(preload or None)
    reply.write(json.dumps({"ready": os.getpid()}) + "\n")
    reply.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        unit = json.loads(line)
        run_dirs(unit["run_dirs"], reply=reply)
        reply.write(json.dumps({"unit_done": unit["index"]}) + "\n")
        reply.flush()
    finish_promotions(reply)  # no unit left: the promotions the other workers' runs still make (asha/hyperband)
    reply.close()  # stdin closed: no more work. End without torch's interpreter teardown (seconds under load);
    sys.stdout.flush()  # every result is on disk already (atomic writes)
    sys.stderr.flush()
    if "torch" in sys.modules:
        os._exit(0)


def _relay_preemption() -> None:
    """In a container the array task forwards SLURM's signal here: save the run in progress, then stop."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        jobenv.save_in_progress()
        os._exit(jobenv.EXIT_REQUEUED)

    signal.signal(jobenv.PREEMPT_SIGNAL, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nestling.worker", description=__doc__)
    parser.add_argument("run_dirs", nargs="*")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--preload", metavar="TASK", default=None,
                        help="with --serve: import torch, Lightning and this task ('' for none) before 'ready'")
    parser.add_argument("--describe", action="store_true",
                        help="with --preload: first send the task's planning half as one JSON line")
    args = parser.parse_args(argv)
    _relay_preemption()
    if args.serve:
        # The local driver owns Ctrl-C: the terminal sends SIGINT to the whole process group, and a worker that
        # died of it would lose its run. The driver answers it with the preemption signal (save, then exit).
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        serve(args.preload, describe=args.describe)
        return 0
    results = run_dirs(args.run_dirs)
    results += finish_promotions()
    ok = ("success", SKIPPED, NOT_STARTED, PRUNED, PAUSED)
    return 0 if any(r.get("status") in ok for r in results) or not results else 1

