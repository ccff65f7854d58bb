"""`python -m nestling.worker`: run many specs in one long-lived process, so torch is imported once.

Two modes:
  python -m nestling.worker RUN_DIR...   run these runs in series, then exit (SLURM array tasks, containers)
  python -m nestling.worker --serve [--preload TASK [--describe] [--code DIR]]
                                         read work units as JSON lines on stdin; before each run it trains write a
                                         JSON line {"started": run_dir}, after each run {"run_dir", "status"}, and
                                         after each unit {"unit_done": index} on stdout; {"log": PATH} moves the
                                         worker's output to PATH, then it says {"ready"}.
In --serve mode everything the training prints goes to stderr, so stdout carries only the protocol. With --preload
the worker imports torch, Lightning and the task's module before it says {"ready"}: a pool started while the CLI
plans pays that import at the same time as the CLI, not after it; with --describe it first sends the task's planning
half ({"task": ...}, see task.DescribedTask), so the CLI need not import the task (and torch) at all. --code names
the code snapshot the task is imported from (the plan's, taken before the plan exists).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from nestling.core.containers.spec import in_container
from nestling.core.host import jobenv, worker_limits
from nestling.core.lazy import lazy_module
from nestling.core.tree import failfast
from nestling.core.tree.failure_class import FailureClass
from nestling.core.tree.run_epochs import run_epochs
from nestling.core.tree.run_result import result_state
from nestling.core.tree.run_state import RunState
from nestling.execute import retry
from nestling.execute.run_attempt import Trainer, execute
from nestling.execute.search import rungs, study
from nestling.execute.startup import describe_task, quiet_lightning
from nestling.execute.startup import preload as preload_imports

if TYPE_CHECKING:
    from nestling.execute import checkpoint_keeping, cv_table
else:
    checkpoint_keeping = lazy_module("nestling.execute.checkpoint_keeping")
    cv_table = lazy_module("nestling.execute.cv_table")

# A serial worker exits 0 when any of its runs ended in one of these: nothing of it is left for this process to do.
WORKER_OK = frozenset({RunState.SUCCESS, RunState.SKIPPED, RunState.NOT_STARTED, RunState.PRUNED, RunState.PAUSED})


def run_dirs(
    dirs: list[str], reply: TextIO | None = None, skip_done: bool = True, trainer: Trainer = execute
) -> list[RunState]:
    """Run these runs in series; the state of each: its result's, or SKIPPED (another live attempt holds it),
    NOT_STARTED (fail-fast, a full file system or a broken node held it back), PRUNED (its trial was stopped after an
    earlier fold, see study.py, or at a rung), PAUSED (trained to its trial's rung). A failed attempt is retried by
    its failure class (retry.py); the reply names it. With --pruner asha|hyperband a run trains to its trial's rung,
    and before a new trial and after the unit the worker first trains what was promoted meanwhile (search/rungs.py).
    `trainer`: run_attempt.execute; testing/bowl_workers.py passes one that writes results without training."""
    quiet_lightning()
    states = []
    for d in dirs:
        board = rungs.board_for(failfast.plan_root(Path(d)))
        if board is not None and board.where.get(Path(d).name, (0, 1))[1] == 0:  # the first run of a trial
            states += promotions(board, reply, trainer)
        states.append(_run_one(d, reply, trainer, skip_done))
    for board in rungs.boards():
        states += promotions(board, reply, trainer)
    return states


def _run_one(d: str, reply: TextIO | None, trainer: Trainer, skip_done: bool = True) -> RunState:
    root = failfast.plan_root(Path(d))
    board = rungs.board_for(root)
    # finished work is never done twice (with rungs a success may be a pause: the board says what is left)
    state = result_state(d) if skip_done and board is None else None
    failure = None
    if state is not RunState.SUCCESS:
        segment = None
        # a systematic error or a full file system: start no more; a broken node: the runs go elsewhere
        if (root is not None and failfast.stopped(root) is not None) or retry.held_back(root):
            state = RunState.NOT_STARTED
        elif skip_done and (kept := retry.kept_failure(Path(d), root)) is not None:  # not to be retried here
            state = kept
        elif not study.before_run(Path(d), root):  # draws an adaptive trial's configuration first
            state = RunState.PRUNED
        elif board is not None and (segment := board.segment(d)).until_epoch is None:
            state = segment.state  # --pruner asha|hyperband: pruned, paused at its trial's rung, or final
        else:
            _started(reply, d)
            until = segment.until_epoch if segment is not None else None
            attempted = retry.run_with_retries(Path(d), root, until_epoch=until, trainer=trainer)
            # no result: a live attempt elsewhere holds this run (it writes the result), or no room to write it
            state, failure, result = attempted.state, attempted.failure_class, attempted.result
            retried = failure is not None and failure.is_retryable()  # a retried failure is no systematic error
            if result is not None and root is not None and not retried:
                failfast.record(root, result.run_id, result.status, result.error)
            if result is not None and board is not None:  # a segment ended: write its rung, decide what follows
                for index in board.after_run(d):
                    for run in board.trial_runs[index]:
                        _reply(reply, run, RunState.PRUNED)
            done = run_epochs(result)
            if done.paused:
                state = RunState.PAUSED
            elif result is not None and root is not None and done.final:
                _collect_if_cv_done(root, Path(d), trainer)
    state = state or RunState.SKIPPED
    _reply(reply, d, state, failure)
    return state


def _started(reply: TextIO | None, run_dir: str) -> None:
    """Tell the driver which run this worker trains now: if the worker dies, that run is the one lost (a promoted
    run may belong to another unit)."""
    if reply is not None:
        reply.write(json.dumps({"started": run_dir}) + "\n")
        reply.flush()


def _reply(reply: TextIO | None, run_dir: str, state: RunState, failure: FailureClass | None = None) -> None:
    if reply is not None:
        extra = {"failure_class": failure} if failure else {}
        reply.write(json.dumps({"run_dir": run_dir, "status": state, **extra}) + "\n")
        reply.flush()


def promotions(board: rungs.Board, reply: TextIO | None = None, trainer: Trainer = execute) -> list[RunState]:
    """Train the runs of promoted trials, the highest rung first, until none is left (a free worker's most
    valuable work, ASHA's rule). Each run once per call: one another attempt holds is left to it."""
    states: list[RunState] = []
    tried: set[str] = set()
    board.decide()  # what the tree allows by now (a resume, or a decision a killed worker left undone)
    while failfast.stopped(board.root) is None:
        work = [d for d in board.promoted_runs() if d not in tried]
        if not work:
            return states
        tried.add(work[0])
        states.append(_run_one(work[0], reply, trainer))
    return states


def finish_promotions(reply: TextIO | None = None, trainer: Trainer = execute) -> list[RunState]:
    """When this worker has no work unit left: keep taking promotions while another run of the tune trains (its
    end may promote a paused trial), and return once nothing trains and nothing waits. Without it the last rungs
    of a tune would run one after another on whichever worker happened to end last."""
    states: list[RunState] = []
    for board in rungs.boards():
        while failfast.stopped(board.root) is None:
            done = promotions(board, reply, trainer)
            states += done
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
    return states


def _collect_if_cv_done(root: Path, run_dir: Path, trainer: Trainer) -> None:
    """When this run was its cv's last, write the cv's run_infos.parquet now, so that the collect at the end of a
    large tune has little left to write (issue 15 #5), and rank its trial for --keep_checkpoints. Best effort: the
    final collect writes whatever this did not. Not with a simulated trainer (testing/bowl_workers.py): its bench and
    tests collect once at the end, and fork workers, in which a polars thread pool started before the fork would
    hang."""
    if trainer is execute:
        cv_table.collect_finished_cv(root, run_dir)
        checkpoint_keeping.trial_finished(root, run_dir)  # --keep_checkpoints: a finished trial is ranked now


def serve(preload: str | None = None, describe: bool = False, code: str | None = None) -> None:
    reply = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # training output must not corrupt the protocol
    if preload is not None:
        if describe and preload:  # the CLI plans from this instead of importing the task itself
            reply.write(json.dumps(describe_task(preload, code)) + "\n")
            reply.flush()
        preload_imports(preload or None, code)
    reply.write(json.dumps({"ready": os.getpid()}) + "\n")
    reply.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        unit = json.loads(line)
        if "log" in unit:  # kept warm by one launch, taken by the next (launch/local.py): write to its log now
            _redirect_output(unit["log"])
            reply.write(json.dumps({"ready": os.getpid()}) + "\n")
            reply.flush()
            continue
        run_dirs(unit["run_dirs"], reply=reply)
        reply.write(json.dumps({"unit_done": unit["index"]}) + "\n")
        reply.flush()
    finish_promotions(reply)  # no unit left: the promotions the other workers' runs still make (asha/hyperband)
    reply.close()  # stdin closed: no more work. End without torch's interpreter teardown (seconds under load);
    sys.stdout.flush()  # every result is on disk already (atomic writes)
    sys.stderr.flush()
    if "torch" in sys.modules:
        os._exit(0)


def _redirect_output(path: str) -> None:
    """Send this worker's stdout and stderr (the training's output, never the protocol) to another log file."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    os.dup2(fd, sys.stderr.fileno())
    os.dup2(fd, sys.stdout.fileno())
    os.close(fd)


def _relay_preemption() -> None:
    """On the preemption signal (SLURM's, the one the array task or the local driver forwards): save the run in
    progress, then stop (jobenv.stop_on). In an image SIGTERM (scancel, the kill of a requeue) takes the same
    path: the host task ignores it, and the worker would otherwise die mid-save."""
    signals = [jobenv.PREEMPT_SIGNAL, *([signal.SIGTERM] if in_container() else [])]
    jobenv.stop_on(signals)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nestling.worker", description=__doc__)
    parser.add_argument("run_dirs", nargs="*")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--preload", metavar="TASK", default=None,
                        help="with --serve: import torch, Lightning and this task ('' for none) before 'ready'")
    parser.add_argument("--describe", action="store_true",
                        help="with --preload: first send the task's planning half as one JSON line")
    parser.add_argument("--code", metavar="DIR", default=None,
                        help="with --preload: import the task from this code snapshot (a _code/KEY dir)")
    args = parser.parse_args(argv)
    worker_limits.apply()  # before torch loads: threads sized to this worker's CPUs, the launcher's umask
    _relay_preemption()
    if args.serve:
        # The local driver owns Ctrl-C: the terminal sends SIGINT to the whole process group, and a worker that
        # died of it would lose its run. The driver answers it with the preemption signal (save, then exit).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        serve(args.preload, describe=args.describe, code=args.code)
        return 0
    states = run_dirs(args.run_dirs)
    states += finish_promotions()
    return 0 if any(state in WORKER_OK for state in states) or not states else 1

