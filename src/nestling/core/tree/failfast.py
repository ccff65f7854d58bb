"""Fail fast on a systematic error: stop handing out runs once N runs failed alike and none succeeded.

A cv whose task does not log the scoring metric fails every run with the same error; on a cluster that would be
10,000 failures. The rule: once ``limit`` runs of a plan have failed with the same error (type and message) and no
run of the plan has succeeded, every worker stops starting runs of that plan. Runs never started have no result;
``status`` shows them as ``not started`` and ``--resume`` runs them (resume clears the ledger: the user fixed it).

The ledger lives in the tree, like everything else (``{plan root}/_failfast/``), so local workers, submitit jobs and
SLURM array tasks on any node share it without a server:

  limit                 N, written at launch (``--fail_fast``; 0 = off)
  success               exists once any run succeeded: the error is not systematic, never stop
  errors/<sig>/<run_id> one empty file per failed run, <sig> a hash of the error text
  stopped.json          written once the rule fired: the error and the count (first writer wins); also written at
                        once, with `failure_class` "storage", when a run met a full file system (`halt`): retrying
                        cannot help there, so no worker starts another run

Reading it costs one directory listing per run start, nothing per training step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from nestling.core.tree import naming
from nestling.core.tree.atomic import write_json
from nestling.core.tree.run_state import RunState


@dataclass(frozen=True)
class Stop:
    """Why a plan stopped: the error that repeated and how many runs it failed."""

    error: str
    count: int
    failure_class: str | None = None  # "storage": a full file system stopped the plan, not a repeated error

    @property
    def storage(self) -> bool:
        return self.failure_class == "storage"

    def message(self, name: str, error_shown: bool = False) -> str:
        """`error_shown`: the summary above already printed the error, so the line does not repeat it."""
        error = "the error above" if error_shown else self.error
        if self.storage:
            return (
                f"stopped: the file system is full ({self.error}); free space or raise the quota, then "
                f"`--resume {name}` (runs not started then run)"
            )
        return (
            f"stopped after {self.count} identical failures: {error}; fix it and `--resume {name}` "
            "(runs not started then run)"
        )


def plan_root(run_dir: Path) -> Path | None:
    """The plan root above a run dir (where its ledger lives), None for a run dir outside any plan; a few stats."""
    for candidate in (run_dir, *run_dir.parents):
        if (candidate / naming.PLAN).is_file():
            return candidate
    return None


def _signature(error: str) -> str:
    return hashlib.sha1(error.encode()).hexdigest()[:16]


def arm(root: Path, limit: int) -> None:
    """At launch: a fresh ledger with this limit (a resume starts again from zero)."""
    paths = naming.FailFastPaths(root)
    clear(root)
    paths.dir.mkdir(parents=True, exist_ok=True)
    write_json(paths.limit, int(limit))


def clear(root: Path) -> None:
    import shutil

    shutil.rmtree(naming.FailFastPaths(root).dir, ignore_errors=True)


def limit(root: Path) -> int:
    """The armed limit; 0 (off) for a plan launched without a ledger."""
    try:
        return int(json.loads(naming.FailFastPaths(root).limit.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return 0


def record(root: Path, run_id: str, status: RunState, error: str | None) -> Stop | None:
    """After a run ended: note it; returns the Stop when this failure made the rule fire."""
    paths = naming.FailFastPaths(root)
    n = limit(root)
    if n <= 0:
        return None
    if status == RunState.SUCCESS:
        with contextlib.suppress(OSError):
            paths.success.touch()
        return None
    if status != RunState.FAILED or paths.success.exists():
        return None
    text = (error or "unknown error").strip()
    sig = paths.errors / _signature(text)
    sig.mkdir(parents=True, exist_ok=True)
    (sig / run_id).touch()
    with contextlib.suppress(FileExistsError), open(sig / "error.txt", "x") as f:
        f.write(text)  # the first failure of a kind keeps the text
    count = len(os.listdir(sig)) - 1
    if count < n or paths.success.exists():
        return None
    stop = Stop(error=text, count=count)
    if not paths.stopped.exists():
        write_json(paths.stopped, {"error": stop.error, "count": stop.count})
    return stopped(root)


def halt(root: Path, error: str, failure_class: str) -> None:
    """Stop the plan now, whatever the limit (a full file system: no retry can help). Best effort: on a full file
    system this small file may not fit either; every worker then meets the error itself and stops the same way."""
    paths = naming.FailFastPaths(root)
    if paths.stopped.exists():
        return
    with contextlib.suppress(OSError):
        paths.dir.mkdir(parents=True, exist_ok=True)
        write_json(paths.stopped, {"error": error, "count": 1, "failure_class": failure_class})


def stopped(root: Path) -> Stop | None:
    """The Stop if the rule fired for this plan (checked before every run start)."""
    try:
        data = json.loads(naming.FailFastPaths(root).stopped.read_text())
        cls = data.get("failure_class")
        return Stop(error=str(data["error"]), count=int(data["count"]), failure_class=str(cls) if cls else None)
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
