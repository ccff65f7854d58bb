"""Stage a task's data once per node (issue 23 §4): the optional `Task.stage(dest)` hook.

Site guides tell users to copy training data to node-local disk (many small files load Lustre's metadata servers;
anything over 100 MB is worth it); Nextflow's `scratch` copies per task, not per node. Before the first run on a
node in a launch, one worker on the node calls `task.stage(dest)` with a node-local directory, and the others on the
node wait until it is done; every run then finds the directory as `split.staged_dir` in `build_datamodule`.

  dest   {--stage_dir, else $TMPDIR, else /tmp}/nestling-stage/{plan}-{plan hash}-{launch id}/{node}/data
  claim  ../.claim, created exclusively (O_EXCL): its creator stages; the directory is node-local, so only the
         workers of one node contend, and the holder's pid is checked on this node: a dead stager's claim is taken
         over (its partial data removed first)
  done   ../.staged, written when stage() returned: its seconds. A stage() that raises fails the run that called it
         and frees the claim, so the next run on the node tries again (fail-fast stops a systematic error).

Each run's result records `stage_s`: the seconds it spent staging or waiting for its node's stager (0 when its node
was staged before it, None without a stage hook); the report's timeline draws it before the run. A launch stages
afresh (a resume may run elsewhere, with new data); the stage dirs of the plan's earlier launches on the node are
removed when the new one is staged. A job-private $TMPDIR (SLURM's job_container/tmpfs) stages once per job instead:
use --stage_dir with a node-local path that outlives jobs to stage once per node.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestling.core.host.jobenv import JobEnvironment
from nestling.core.tree import fault_ledger
from nestling.core.tree.attempt_lock import pid_alive
from nestling.core.tree.run_spec import RunSpec

log = logging.getLogger("nestling.run")

STAGE_ROOT = "nestling-stage"
POLL_S = 0.5


@dataclass(frozen=True)
class Staged:
    """What staging cost this run, and where the data is (None when the run's stage failed: `error` says why)."""

    seconds: float
    dir: Path | None
    error: BaseException | None = None


class _Cache:
    done: dict[str, Path] = {}  # stage dir of each (plan, launch, node) this process saw staged
    last: Staged | None = None  # the run in progress's staging, for training.py


def stage_base(configured: str | None, environ: dict[str, str] | None = None) -> Path:
    """--stage_dir, else $TMPDIR, else /tmp: a node-local directory."""
    env = os.environ if environ is None else environ
    return Path(configured or env.get("TMPDIR") or "/tmp")


def node_dir(root: Path, base: Path, launch_id: str, node: str) -> Path:
    """This launch's stage dir for `node` (the task's data goes into its `data/`)."""
    digest = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:8]
    return base / STAGE_ROOT / f"{Path(root).name}-{digest}-{launch_id}" / node


def stage_for_run(spec: RunSpec, load_task: Callable[[str, str | None], Any], root: Path | None) -> Staged | None:
    """Before a run's clock starts: make sure its node holds the task's staged data. None when the task has no stage
    hook (or cannot be loaded: the run then fails on that). Never raises: a failed stage is returned, and raised
    inside the run by `split_for` (the run fails). `load_task(task, code)` imports it from the plan's code snapshot,
    as training does: the first import of the task's package in a worker decides which code it runs."""
    _Cache.last = None
    try:
        hook: Callable[[Path], object] | None = getattr(load_task(spec.task, spec.code), "stage", None)
    except Exception:  # noqa: BLE001 - training loads it again and records why it cannot
        return None
    if not callable(hook) or root is None:
        return None
    started = time.monotonic()
    try:
        launch = fault_ledger.policy(root)
        node = JobEnvironment.from_environ().node or socket.gethostname()
        here = node_dir(root, stage_base(launch.stage_dir), launch.launch_id, node)
        if str(here) in _Cache.done:
            staged = Staged(0.0, here / "data")
        else:
            _stage_once(here, hook, root)
            _Cache.done[str(here)] = here
            staged = Staged(round(time.monotonic() - started, 3), here / "data")
    except Exception as exc:  # noqa: BLE001 - the run fails with it (split_for), the worker goes on
        staged = Staged(round(time.monotonic() - started, 3), None, exc)
    _Cache.last = staged
    return staged


def split_for(split: Any) -> Any:
    """The split the run's datamodule is built with: `staged_dir` set to the staged data. Raises the stage's error
    (the run fails with it) when staging failed."""
    staged = _Cache.last
    if staged is None:
        return split
    if staged.error is not None:
        raise RuntimeError(f"staging the task's data failed: {staged.error}") from staged.error
    import dataclasses

    return dataclasses.replace(split, staged_dir=staged.dir)


def _stage_once(here: Path, hook: Callable[[Path], object], root: Path) -> None:
    """Stage into `here/data` unless done; exactly one process per node does it, the others wait."""
    done, claim, data = here / ".staged", here / ".claim", here / "data"
    here.mkdir(parents=True, exist_ok=True)
    while not done.exists():
        if _claim_stager(claim):
            try:
                _forget_earlier_launches(here)
                shutil.rmtree(data, ignore_errors=True)  # a dead stager's partial copy
                data.mkdir()
                t0 = time.monotonic()
                log.warning("staging the task's data to %s", data)
                hook(data)
                payload = {"seconds": round(time.monotonic() - t0, 3), "pid": os.getpid(), "plan": str(root)}
                tmp = here / f".staged.{os.getpid()}.tmp"
                tmp.write_text(json.dumps(payload))
                os.replace(tmp, done)
                return
            except BaseException:
                claim.unlink(missing_ok=True)  # the next run on the node tries again
                raise
        if _holder_dead(claim):
            log.warning("the stager of %s is gone; taking over", here)
            claim.unlink(missing_ok=True)
            continue
        time.sleep(POLL_S)


def _claim_stager(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
    return True


def _holder_dead(path: Path) -> bool:
    """The claim's process is gone (it is on this node: the directory is node-local)."""
    try:
        holder = json.loads(path.read_text())
        return not pid_alive(int(holder["pid"]))
    except FileNotFoundError:
        return False
    except (ValueError, KeyError, TypeError):  # being written this instant
        return False


def _forget_earlier_launches(here: Path) -> None:
    """The stage dirs of this plan's earlier launches on this node: not needed any more."""
    launch_dir = here.parent
    prefix = launch_dir.name.rsplit("-", 1)[0] + "-"
    for other in launch_dir.parent.glob(f"{prefix}*"):
        if other != launch_dir:
            shutil.rmtree(other / here.name, ignore_errors=True)
