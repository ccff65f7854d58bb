"""`python -m nestling.worker`: run many specs in one long-lived process, so torch is imported once.

Two modes:
  python -m nestling.worker RUN_DIR...   run these runs in series, then exit (SLURM array tasks, containers)
  python -m nestling.worker --serve [--preload TASK [--describe]]
                                         read work units as JSON lines on stdin; after each run write a JSON line
                                         {"run_dir", "status"} and after each unit {"unit_done": index} on stdout;
                                         {"log": PATH} moves the worker's output to PATH, then it says {"ready"}.
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
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from nestling.core.host import jobenv, worker_limits
from nestling.core.lazy import lazy_module
from nestling.core.tree import failfast
from nestling.core.tree.run_result import read_result
from nestling.execute.run_attempt import execute
from nestling.execute.search import study, trials
from nestling.execute.startup import describe_task, quiet_lightning
from nestling.execute.startup import preload as preload_imports
from nestling.plan.store import load_spec

if TYPE_CHECKING:
    from nestling.execute import cv_table
else:
    cv_table = lazy_module("nestling.execute.cv_table")

SKIPPED = "skipped"  # the reply for a run another live attempt holds (see run.execute)
NOT_STARTED = "not started"  # the reply for a run fail-fast held back (see failfast.py)
PRUNED = trials.PRUNED  # the reply for a run whose trial was stopped after an earlier fold (see study.py)


def run_dirs(dirs: list[str], reply: TextIO | None = None, skip_done: bool = True) -> list[dict[str, Any]]:
    quiet_lightning()
    results = []
    for d in dirs:
        result = read_result(Path(d)) if skip_done else None
        if result is None or result.get("status") != "success":  # finished work is never done twice
            root = failfast.plan_root(Path(d))
            if root is not None and failfast.stopped(root) is not None:  # a systematic error: start no more
                result = {"run_dir": d, "status": NOT_STARTED}
            elif not study.before_run(Path(d), root):  # draws an adaptive trial's configuration first
                result = {"run_dir": d, "status": PRUNED}
            else:
                result = execute(load_spec(Path(d)))
                if result is not None and root is not None:
                    failfast.record(root, str(result.get("run_id")), str(result.get("status")), result.get("error"))
                if result is not None and root is not None and result.get("status") in ("success", "failed"):
                    _collect_if_cv_done(root, Path(d))
        if result is None:  # a live attempt elsewhere holds this run: it writes the result, not us
            result = {"run_dir": d, "status": SKIPPED}
        results.append(result)
        if reply is not None:
            reply.write(json.dumps({"run_dir": d, "status": result.get("status")}) + "\n")
            reply.flush()
    return results


def _collect_if_cv_done(root: Path, run_dir: Path) -> None:
    """When this run was its cv's last, write the cv's run_infos.parquet now, so that the collect at the end of a
    large tune has little left to write (issue 15 #5). Best effort: the final collect writes whatever this did not."""

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
        if "log" in unit:  # kept warm by one launch, taken by the next (launch/local.py): write to its log now
            _redirect_output(unit["log"])
            reply.write(json.dumps({"ready": os.getpid()}) + "\n")
            reply.flush()
            continue
        run_dirs(unit["run_dirs"], reply=reply)
        reply.write(json.dumps({"unit_done": unit["index"]}) + "\n")
        reply.flush()
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
    worker_limits.apply()  # before torch loads: threads sized to this worker's CPUs, the launcher's umask
    _relay_preemption()
    if args.serve:
        # The local driver owns Ctrl-C: the terminal sends SIGINT to the whole process group, and a worker that
        # died of it would lose its run. The driver answers it with the preemption signal (save, then exit).
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        serve(args.preload, describe=args.describe)
        return 0
    results = run_dirs(args.run_dirs)
    return 0 if any(r.get("status") in ("success", SKIPPED, NOT_STARTED, PRUNED) for r in results) or not results else 1

