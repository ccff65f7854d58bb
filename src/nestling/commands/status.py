"""`nestling status DIR`: count and list the runs of a tune, cv or run dir by state (`--watch` refreshes)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from nestling.core.errors import strict_parser
from nestling.core.tree import naming
from nestling.core.tree import supervisor_pid as supervision
from nestling.plan.model import Plan
from nestling.plan.store import find_plan_root, load_plan
from nestling.read.run_states import RunState, count, run_states


def status_main(argv: list[str]) -> int:
    parser = strict_parser("nestling status", "Runs of a tune, cv or run dir by state.")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--watch", action="store_true", help="refresh until every run ended")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument(
        "--all", action="store_true", help="list every run, not only unfinished and failed ones"
    )
    parser.add_argument("--json", action="store_true", help="print counts and runs as JSON")
    args = parser.parse_args(argv)
    plan = load_plan(find_plan_root(args.dir))
    while True:
        states = run_states(plan)
        _print(plan, states, args)
        active = any(s.state in ("running", "pending") for s in states)
        if not args.watch or not active:
            return 0
        time.sleep(args.interval)


def _print(plan: Plan, states: list[RunState], args: argparse.Namespace) -> None:
    counts = count(states)
    supervisor = supervision.alive(plan.root)
    if args.json:
        detached = None if supervisor is None else {"pid": supervisor.pid, "hostname": supervisor.hostname}
        print(json.dumps({"counts": counts, "runs": [s.__dict__ for s in states], "supervisor": detached}))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"{plan.kind} {plan.name}: {len(states)} runs  " + "  ".join(f"{k}={v}" for k, v in counts.items())
    )
    unstable = sum(1 for s in states if s.unstable_reason)
    if unstable:
        console.print(f"{unstable} successful run{'' if unstable == 1 else 's'} unstable (not in the cv score)")
    if supervisor is not None:
        console.print(
            f"detached: supervisor {supervisor.describe()} alive; log {naming.SupervisorPaths(plan.root).log}; "
            f"stop it with nestling stop {plan.root}"
        )
    shown = states if args.all else [s for s in states if s.state not in ("success", "pruned") or s.unstable_reason]
    if shown:
        table = Table()
        for col in ("run_name", "run_id", "state", "job", "error"):
            table.add_column(col)
        for s in shown[:200]:
            note = s.error or (f"unstable: {s.unstable_reason}" if s.unstable_reason else "")
            if s.state == "paused":
                note = f"paused at a rung after epoch {s.epochs_trained}"
            table.add_row(s.run_name, s.run_id, s.state, s.job or "", note[:80])
        console.print(table)
