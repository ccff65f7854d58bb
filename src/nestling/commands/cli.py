"""`nestling run | cv | tune | collect | status | sync | report | retrain | prune-checkpoints | replay | stop | doctor`: the command line. No
torch import happens here.

Each command parses its argv and calls the function the Python API (commands/api.py) calls too. Bad input -> one
line on stderr and exit 2, before anything is created (core/errors.py maps every error to its exit code). Exit 0
when the tree completed (failed runs are reported, not fatal), 1 when every run failed or on an internal error."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nestling import __version__
from nestling.core.errors import NestlingError, UsageError, exit_code, stderr_line
from nestling.core.host import storage
from nestling.core.lazy import lazy_module
from nestling.core.tree.failure_class import is_storage_error

if TYPE_CHECKING:
    from nestling.commands import (
        collect,
        detach,
        doctor,
        prune_checkpoints,
        replay,
        report,
        retrain,
        start,
        status,
        sync,
    )
    from nestling.core.options import config as options
else:
    collect = lazy_module("nestling.commands.collect")
    detach = lazy_module("nestling.commands.detach")
    doctor = lazy_module("nestling.commands.doctor")
    prune_checkpoints = lazy_module("nestling.commands.prune_checkpoints")
    replay = lazy_module("nestling.commands.replay")
    report = lazy_module("nestling.commands.report")
    retrain = lazy_module("nestling.commands.retrain")
    start = lazy_module("nestling.commands.start")
    status = lazy_module("nestling.commands.status")
    sync = lazy_module("nestling.commands.sync")
    options = lazy_module("nestling.core.options.config")  # simple-parsing: imported where options are parsed

PLAN_COMMANDS = ("run", "cv", "tune")
COMMANDS = {
    "run": "train one run (fold --fold of --fold_method, first seed)",
    "cv": "cross-validate one hyperparameter set: n_folds x seeds runs, scored into run_infos.parquet",
    "tune": "sample hyperparameter sets (--hpconfig, or the --config file's [hyperparameters]) and cross-validate each",
    "collect": "rebuild run_infos.parquet / tune_infos.parquet of a tune, cv or run dir from its run results",
    "status": "count and list the runs of a tune, cv or run dir by state",
    "sync": "upload the offline W&B runs of a tune, cv or run dir (wandb sync); skips those already uploaded",
    "report": "write DIR/report.html (self-contained, opens offline) and a PNG per figure for a tune, cv or run dir",
    "retrain": "train a tune's best configuration on train + val and test it: the cv {tune}-final of the tune",
    "prune-checkpoints": "remove the checkpoints of a tune's finished trials outside the K best (--keep K)",
    "replay": "re-decide a finished tune under another --pruner, without training: runs saved, winner, replay-P.parquet",
    "stop": "stop a detached local sweep (--detach) gracefully: runs in progress save; --resume continues",
    "doctor": "check that this machine can run a command line (task, container image, binds, SLURM); says what to fix",
}


def main(argv: list[str] | None = None) -> int:
    program = argv is None  # the console script / python -m: this process ends with the command
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        rc = _dispatch(argv)
    except NestlingError as exc:  # bad input (2), a job that can never start (1): the job stays for the user
        print(stderr_line(exc), file=sys.stderr)
        rc = exit_code(exc)
    except KeyboardInterrupt as exc:
        print("nestling: interrupted; finished runs are kept, resume with --resume", file=sys.stderr)
        rc = exit_code(exc)
    except OSError as exc:  # a full file system wherever it met us: one line, not a traceback
        if not is_storage_error(exc):
            raise
        where = storage.room(Path(exc.filename)) if isinstance(exc.filename, str) else None
        print(f"nestling: {exc.strerror or exc}{f' ({where.describe()})' if where else ''}; free space or raise "
              "the quota, then run the command again (--resume NAME continues a cv or tune)", file=sys.stderr)  # fmt: skip
        rc = 1
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
    """argv -> the command's function (the one the Python API calls too) -> its exit code."""
    if not argv or argv[0] in ("-h", "--help"):
        _print_help()
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"nestling {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command in PLAN_COMMANDS:
        config = options.parse_config(rest, prog=f"nestling {command}", description=start.DESCRIPTIONS[command])
        return start.start_plan(command, config, options.given_options(rest), retrain.then_retrain).exit_code
    if command == "retrain":
        return retrain.retrain_main(rest)
    if command == "collect":
        return collect.collect_main(rest, COMMANDS["collect"])
    if command == "report":
        return report.report_main(rest, COMMANDS["report"])
    if command == "status":
        return status.status_main(rest, COMMANDS["status"])
    if command == "sync":
        return sync.sync_main(rest, COMMANDS["sync"])
    if command == "prune-checkpoints":
        return prune_checkpoints.prune_checkpoints_main(rest, COMMANDS["prune-checkpoints"])
    if command == "replay":
        return replay.replay_main(rest, COMMANDS["replay"])
    if command == "stop":
        return detach.stop_main(rest, COMMANDS["stop"])
    if command == "doctor":
        return doctor.doctor_main(rest)
    raise UsageError(f"unknown command {command!r}: use one of {', '.join(COMMANDS)} (see nestling --help)")


def _print_help() -> None:
    print(f"usage: nestling {{{','.join(COMMANDS)}}} [options]\n")
    print("How a model is born: tune -> cross-validation -> training run.\n")
    for name, text in COMMANDS.items():
        print(f"  {name:<8} {text}")
    print("\nnestling COMMAND --help lists the options of a command.")
