"""`nestling run | cv | tune | collect | status | sync | report | retrain | stop | doctor`: the command line. No
torch import happens here.

Bad input -> one line on stderr and exit 2, before anything is created. Exit 0 when the tree completed (failed
runs are reported, not fatal), 1 when every run failed or on an internal error."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from nestling import __version__
from nestling.core.errors import JobsBlocked, UsageError
from nestling.core.lazy import lazy_module

if TYPE_CHECKING:
    from nestling.commands import collect, detach, doctor, report, retrain, start, status, sync
else:
    collect = lazy_module("nestling.commands.collect")
    detach = lazy_module("nestling.commands.detach")
    doctor = lazy_module("nestling.commands.doctor")
    report = lazy_module("nestling.commands.report")
    retrain = lazy_module("nestling.commands.retrain")
    start = lazy_module("nestling.commands.start")
    status = lazy_module("nestling.commands.status")
    sync = lazy_module("nestling.commands.sync")

COMMANDS = {
    "run": "train one run (fold --fold of --fold_method, first seed)",
    "cv": "cross-validate one hyperparameter set: n_folds x seeds runs, scored into run_infos.parquet",
    "tune": "sample hyperparameter sets (--hpconfig, or the --config file's [hyperparameters]) and cross-validate each",
    "collect": "rebuild run_infos.parquet / tune_infos.parquet of a tune, cv or run dir from its run results",
    "status": "count and list the runs of a tune, cv or run dir by state",
    "sync": "upload the offline W&B runs of a tune, cv or run dir (wandb sync); skips those already uploaded",
    "report": "write DIR/report.html (self-contained, opens offline) and a PNG per figure for a tune, cv or run dir",
    "retrain": "train a tune's best configuration on train + val and test it: the cv {tune}-final of the tune",
    "stop": "stop a detached local sweep (--detach) gracefully: runs in progress save; --resume continues",
    "doctor": "check that this machine can run a command line (task, container image, binds, SLURM); says what to fix",
}


def main(argv: list[str] | None = None) -> int:
    program = argv is None  # the console script / python -m: this process ends with the command
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        rc = _dispatch(argv)
    except UsageError as exc:
        print(f"nestling: error: {exc}", file=sys.stderr)
        rc = 2
    except JobsBlocked as exc:  # --wait on a job that can never start: the job stays for the user to fix/cancel
        print(f"nestling: {exc}", file=sys.stderr)
        rc = 1
    except KeyboardInterrupt:
        print("nestling: interrupted; finished runs are kept, resume with --resume", file=sys.stderr)
        rc = 130
    if program:
        exit_now(rc)
    return rc


def exit_now(rc: int) -> None:
    """End the command's process without the interpreter's teardown of what it imported: seconds for torch (a task
    module with torch at the top, issue 15 #1), 0.4-0.6 s for polars, scikit-learn, optuna and altair after a
    plan on a loaded machine (issue 21). Everything nestling writes is already on disk (atomic writes); the exit
    handlers run and the standard streams are flushed first."""
    import atexit
    import contextlib
    import os

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(rc)


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        _print_help()
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"nestling {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command in ("run", "cv", "tune"):
        return start.execute_plan(command, rest, then=retrain.then_retrain)
    if command == "retrain":
        return retrain.retrain_main(rest)
    if command == "collect":
        return collect.collect_main(rest, COMMANDS["collect"])
    if command == "report":
        return report.report_main(rest)
    if command == "status":
        return status.status_main(rest)
    if command == "sync":
        return sync.sync_main(rest, COMMANDS["sync"])
    if command == "stop":
        return detach.stop_main(rest)
    if command == "doctor":
        return doctor.doctor_main(rest)
    raise UsageError(f"unknown command {command!r}: use one of {', '.join(COMMANDS)} (see nestling --help)")


def _print_help() -> None:
    print(f"usage: nestling {{{','.join(COMMANDS)}}} [options]\n")
    print("How a model is born: tune -> cross-validation -> training run.\n")
    for name, text in COMMANDS.items():
        print(f"  {name:<8} {text}")
    print("\nnestling COMMAND --help lists the options of a command.")
