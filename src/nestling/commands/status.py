"""`nestling status DIR`: count and list the runs of a tune, cv or run dir by state (`--watch` refreshes)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from nestling.core.errors import strict_parser
from nestling.core.tree import naming
from nestling.core.tree import supervisor_pid as supervision
from nestling.plan.model import Plan
from nestling.plan.store import find_plan_root, load_plan
from nestling.read.provenance import code_line, code_record
from nestling.read.run_states import RunStatus, count, run_states


@dataclass(frozen=True)
class Status:
    """The runs of a plan by state, read from the tree and the queue, and its detached supervisor if one runs."""

    plan: Plan
    runs: list[RunStatus]
    supervisor: supervision.Supervisor | None

    @property
    def counts(self) -> dict[str, int]:
        return count(self.runs)

    def __repr__(self) -> str:  # a notebook shows this, not the whole plan
        counts = " ".join(f"{k}={v}" for k, v in self.counts.items() if v)
        return f"Status({self.plan.kind} {self.plan.name}: {len(self.runs)} runs {counts})"

    @property
    def active(self) -> bool:
        """Whether a run is still running or waiting to (`--watch` refreshes until none is)."""
        return any(s.state.is_active() for s in self.runs)


def status_main(argv: list[str], description: str) -> int:
    parser = strict_parser("nestling status", description)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--watch", action="store_true", help="refresh until every run ended")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument(
        "--all", action="store_true", help="list every run, not only unfinished and failed ones"
    )
    parser.add_argument("--json", action="store_true", help="print counts and runs as JSON")
    args = parser.parse_args(argv)
    while True:
        status = read_status(args.dir)
        print_status(status, show_all=args.all, as_json=args.json)
        if not args.watch or not status.active:
            return 0
        time.sleep(args.interval)


def read_status(dir: Path) -> Status:
    """The state of every run of the plan holding `dir` (any dir inside a tune finds the tune)."""
    plan = load_plan(find_plan_root(Path(dir)))
    return Status(plan, run_states(plan), supervision.live_supervisor(plan.root))


def print_status(status: Status, *, show_all: bool = False, as_json: bool = False) -> None:
    """The counts, the unfinished and failed runs (every run with `show_all`) and the supervisor, or all as JSON."""
    plan, states, counts, supervisor = status.plan, status.runs, status.counts, status.supervisor
    if as_json:
        detached = None if supervisor is None else {"pid": supervisor.pid, "hostname": supervisor.hostname}
        print(json.dumps({"counts": counts, "runs": [s.__dict__ for s in states], "supervisor": detached,
                          "code": code_record(plan)}))  # fmt: skip
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"{plan.kind} {plan.name}: {len(states)} runs  " + "  ".join(f"{k}={v}" for k, v in counts.items())
    )
    code = code_line(plan)
    if code:
        console.print(code, markup=False, highlight=False, soft_wrap=True)
    unstable = sum(1 for s in states if s.unstable_reason)
    if unstable:
        console.print(f"{unstable} successful run{'' if unstable == 1 else 's'} unstable (not in the cv score)")
    if supervisor is not None:
        console.print(
            f"detached: supervisor {supervisor.describe()} alive; log {naming.SupervisorPaths(plan.root).log}; "
            f"stop it with nestling stop {plan.root}"
        )
    shown = states if show_all else [s for s in states if not s.state.is_settled() or s.unstable_reason]
    if shown:
        table = Table()
        for col in ("run_name", "run_id", "state", "job", "error"):
            table.add_column(col)
        for s in shown[:200]:
            note = s.error or (f"unstable: {s.unstable_reason}" if s.unstable_reason else "")
            table.add_row(s.run_name, s.run_id, s.state, s.job or "", note[:80])
        console.print(table)
