"""`python -m nestling.supervisor ROOT`: the background program of a detached local sweep (see detach.py).

It runs in its own session, started by `detach.detach` after the plan is on disk, and runs the same
`start.launch_and_report` an attached launch runs, so the sweep, launch.json, the tables and the fail-fast ledger
are those of a foreground sweep. SIGINT to its process group (`nestling stop`) is Ctrl-C; SIGTERM is taken the same
way. It removes its pid file and its request when it ends.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from nestling.commands.detach import resume_hint
from nestling.commands.start import launch_and_report
from nestling.core.errors import NestlingError, exit_code, stderr_line
from nestling.core.host.devices import parse_devices
from nestling.core.options.config import config_from_dict
from nestling.core.tree import naming
from nestling.core.tree import supervisor_pid as supervision
from nestling.core.tree.atomic import read_json
from nestling.launch.factory import make_launcher
from nestling.plan.model import LaunchRequest, WorkUnit


def _on_term(signum: int, frame: Any) -> None:
    """SIGTERM (a shutdown, a plain `kill`) stops the sweep as Ctrl-C does: the launcher's graceful path."""
    signal.raise_signal(supervision.STOP_SIGNAL)


def main(argv: list[str] | None = None) -> int:
    """`python -m nestling.supervisor ROOT`: run the detached sweep the foreground described, then end."""

    args = list(sys.argv[1:] if argv is None else argv)
    root = Path(args[0]).resolve()
    paths = naming.SupervisorPaths(root)
    signal.signal(signal.SIGTERM, _on_term)
    code, kind, name = 1, "cv", root.name
    try:
        handed = read_json(paths.request)
        kind, name = handed["kind"], handed["name"]
        config = config_from_dict(handed["config"])
        print(f"supervisor pid {os.getpid()} on {socket.gethostname()}: {kind} {name}", flush=True)
        launcher = make_launcher(config, kind, name, parse_devices(config.device.devices))
        units = [WorkUnit(u["index"], list(u["run_dirs"])) for u in handed["units"]]
        request = LaunchRequest(kind, name, root, units, config, int(handed["total"]), handed["record"])
        code = launch_and_report(request, launcher)
        if handed.get("then"):  # what the command chains after the sweep (commands.Then), by name
            module, _, attr = str(handed["then"]).partition(":")
            code = getattr(importlib.import_module(module), attr)(kind, root, config, True, code)  # it ended
    except NestlingError as exc:
        print(stderr_line(exc), flush=True)
        code = exit_code(exc)
    except KeyboardInterrupt as exc:
        print(f"nestling: stopped; resume with {resume_hint(kind, name, root)}", flush=True)
        code = exit_code(exc)
    finally:
        paths.request.unlink(missing_ok=True)
        supervision.release_supervision(root)
        print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} supervisor ended: exit code {code}", flush=True)
    return code

