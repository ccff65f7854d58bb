"""`--detach` and `nestling stop`: a local sweep that outlives the terminal it was started from (the foreground
side; the background program is supervisor.py).

The foreground does everything that can fail on bad input (parse, plan, write the tree, make the launcher), so a
mistake is still one line and exit 2; then it claims the plan's supervisor pid file, writes what the supervisor
needs (`_supervisor.json`: the work units, the options, the launch.json fields) and starts
`python -m nestling.supervisor ROOT` in its own session (no controlling terminal: closing the terminal or killing
the shell sends it nothing), logging to `_supervisor.log`, and returns. The supervisor runs the same
`start.launch_and_report` an attached launch runs, so the sweep, launch.json, the tables and the fail-fast
ledger are those of a foreground sweep.

`nestling stop DIR` sends the supervisor's process group what Ctrl-C sends a foreground sweep (SIGINT; SIGTERM to
the supervisor is taken the same way): the local launcher hands out no more work and the runs in progress save
their resume point; `nestling cv|tune --resume NAME` continues.
"""

from __future__ import annotations

import enum
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from nestling.core.errors import UsageError, strict_parser
from nestling.core.tree import naming
from nestling.core.tree import supervisor_pid as supervision
from nestling.core.tree.atomic import write_json
from nestling.launch.base import plural
from nestling.plan.model import LaunchRequest
from nestling.plan.store import find_plan_root, load_plan

STOP_WAIT_S = 120.0  # how long `nestling stop` waits for the runs in progress to save


def detach(request: LaunchRequest, then: Callable[..., int] | None = None) -> int:
    """Start the supervisor of a plan already on disk and return at once (exit code of the foreground). `then`
    (commands.Then, e.g. `tune --retrain`) runs in the supervisor after the sweep: it travels by its importable
    name, as workers do."""
    kind, name, root, units, config, total = (
        request.kind, request.name, request.root, request.units, request.config, request.total
    )
    paths = naming.SupervisorPaths(root)
    if not supervision.claim_supervision(root):
        raise UsageError(_busy(kind, name, root))
    try:
        write_json(
            paths.request,
            {
                "kind": kind,
                "name": name,
                "total": total,
                "units": [{"index": u.index, "run_dirs": u.run_dirs} for u in units],
                "config": config.to_dict(),
                "record": {**request.record, "detached": True},
                "then": f"{then.__module__}:{then.__qualname__}" if then is not None else None,
            },
        )
        env = {"COLUMNS": "160", **os.environ, "PYTHONUNBUFFERED": "1"}  # COLUMNS: tables in the log, not a tty
        with open(paths.log, "a") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {kind} {name}: {total} runs, detached\n")
            log.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "nestling.supervisor", str(root)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own session and process group: no SIGHUP, no terminal Ctrl-C
                close_fds=True,
            )
        supervision.hand_over(root, proc.pid)
        proc.returncode = 0  # never waited for here: it outlives this process (and no ResourceWarning says so)
    except BaseException:
        supervision.release_supervision(root)
        raise
    if not config.logging.quiet:
        print(f"{kind} {name}: {plural(total, 'run')} in {plural(len(units), 'work unit')} -> {root}")
    # The outcome of a detached launch, printed even with --quiet: where it runs and how to follow and stop it.
    print(f"detached: supervisor pid {proc.pid}; log {paths.log}")
    print(f"follow:   nestling status {root} --watch")
    print(f"stop:     nestling stop {root}   (runs in progress save; then {resume_hint(kind, name, root)})")
    return 0


def resume_hint(kind: str, name: str, root: Path) -> str:
    if kind == "run":
        return "run it again"
    return f"nestling {kind} --resume {name} --artifact_dir {naming.artifact_dir_of(root, kind)}"


def _busy(kind: str, name: str, root: Path) -> str:
    sup = supervision.live_supervisor(root)
    who = sup.describe() if sup is not None else "another process"
    return (
        f"{kind} {name!r} is already run by a detached supervisor ({who}); follow it with nestling status {root}, "
        f"or stop it with nestling stop {root} before launching it again"
    )


class Stopped(enum.Enum):
    """How `nestling stop` ended."""

    NOTHING = "nothing"  # no detached supervisor ran the plan: the sweep ended, or was never detached
    STOPPED = "stopped"  # the supervisor ended after its runs in progress saved
    STILL_STOPPING = "still stopping"  # it had not ended when the timeout passed


def stop_main(argv: list[str], description: str) -> int:
    """`nestling stop DIR`: stop a detached sweep gracefully and wait until its runs in progress saved."""

    parser = strict_parser("nestling stop", description)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--timeout", type=float, default=STOP_WAIT_S, help="seconds to wait for it to end")
    args = parser.parse_args(argv)
    return 1 if stop_sweep(args.dir, timeout=args.timeout) is Stopped.STILL_STOPPING else 0


def stop_sweep(dir: Path, *, timeout: float = STOP_WAIT_S) -> Stopped:
    """Send the detached supervisor of the plan holding `dir` what Ctrl-C sends a foreground sweep, and wait up to
    `timeout` seconds for its runs in progress to save. Stopping what does not run is no error (as a service)."""
    root = find_plan_root(Path(dir))
    plan = load_plan(root)
    sup = supervision.live_supervisor(root)
    if sup is None:  # idempotent, like stopping a stopped service: the sweep ended or was never detached
        print(f"nothing to stop: no detached supervisor runs {plan.kind} {plan.name!r}; see nestling status {root}")
        return Stopped.NOTHING
    if not sup.here:
        raise UsageError(
            f"the supervisor of {plan.name!r} runs on {sup.hostname}, not {socket.gethostname()}; "
            f"run nestling stop {root} there"
        )
    supervision.signal_stop(sup)
    print(f"stopping {plan.kind} {plan.name} (supervisor pid {sup.pid}); runs in progress save their resume point")
    deadline = time.monotonic() + timeout
    while supervision.is_alive(sup):
        if time.monotonic() > deadline:
            print(
                f"nestling: the supervisor is still stopping after {timeout:.0f} s; see "
                f"{naming.SupervisorPaths(root).log}",
                file=sys.stderr,
            )
            return Stopped.STILL_STOPPING
        time.sleep(0.2)
    print(f"stopped; continue with: {resume_hint(plan.kind, plan.name, root)}")
    return Stopped.STOPPED
