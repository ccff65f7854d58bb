"""`nestling status DIR`: count and list the runs of a tune, cv or run dir by state (`--watch` refreshes)."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from nestling.core.errors import strict_parser
from nestling.core.tree import failfast, fault_ledger, naming
from nestling.core.tree import supervisor_pid as supervision
from nestling.core.tree.run_state import RunState
from nestling.launch.base import plural
from nestling.plan.model import Plan
from nestling.plan.store import find_plan_root, load_plan
from nestling.read.console_table import Column, print_table
from nestling.read.provenance_lines import code_line, code_record
from nestling.read.run_states import RunStatus, count, run_states

# runs that wait (in the queue, or held back by fail-fast) are counted, not listed, unless --all: a sweep of
# thousands would otherwise print thousands of identical lines
SUMMARISED = frozenset({RunState.PENDING, RunState.NOT_STARTED})
MAX_LISTED = 200
MAX_ERROR = 160


@dataclass(frozen=True)
class Status:
    """The runs of a plan by state, read from the tree and the queue, and its detached supervisor if one runs."""

    plan: Plan
    runs: list[RunStatus]
    supervisor: supervision.Supervisor | None
    broken_nodes: tuple[fault_ledger.BrokenNode, ...] = ()  # kept off by every later unit of the plan

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
        "--all", action="store_true", help="list every run, not only those running, failed, lost or interrupted"
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
    return Status(
        plan, run_states(plan), supervision.live_supervisor(plan.root), tuple(fault_ledger.broken_nodes(plan.root))
    )


def print_status(status: Status, *, show_all: bool = False, as_json: bool = False) -> None:
    """The counts, the unfinished and failed runs (every run with `show_all`) and the supervisor, or all as JSON."""
    plan, states, counts, supervisor = status.plan, status.runs, status.counts, status.supervisor
    if as_json:
        detached = None if supervisor is None else {"pid": supervisor.pid, "hostname": supervisor.hostname}
        nodes = [n.__dict__ for n in status.broken_nodes]
        print(json.dumps({"counts": counts, "runs": [s.__dict__ for s in states], "supervisor": detached,
                          "excluded_nodes": nodes, "code": code_record(plan)}))  # fmt: skip
        return
    from rich.console import Console

    console = Console()
    console.print(
        f"{plan.kind} {plan.name}: {plural(len(states), 'run')}  "
        + "  ".join(f"{k}={v}" for k, v in counts.items() if v or k == RunState.SUCCESS),
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip  (states no run is in are left out; --json has them all)
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
    stop = failfast.stopped(plan.root)
    if stop is not None:
        console.print(f"nestling: {stop.message(plan.name)}", soft_wrap=True)
    for node in status.broken_nodes:
        console.print(
            f"excluded node {node.node}: {node.error[:120]} (run {node.run_name}, {node.at}); later units of this "
            f"plan stay off it; to allow it again: rm {naming.FaultPaths(plan.root).node(node.node)}",
            soft_wrap=True,
        )
    listed = states if show_all else [
        s for s in states if s.state not in SUMMARISED and (not s.state.is_settled() or s.unstable_reason)
    ]
    if listed:
        shown = listed[:MAX_LISTED]
        notes = [_note(s) for s in shown]
        columns = [
            Column("run_name", [s.run_name for s in shown], keep=100),
            Column("run_id", [s.run_id for s in shown], keep=30),
            Column("state", [str(s.state) for s in shown], keep=90),
            Column("job", [s.job or "" for s in shown], keep=40),
            Column("error", [note[:MAX_ERROR] for note in notes], keep=80, wraps=True),
        ]
        print_table(console, "", columns, f"every field: nestling status {plan.root} --json")
        if len(listed) > MAX_LISTED:
            console.print(f"... and {len(listed) - MAX_LISTED} more (nestling status {plan.root} --json lists all)",
                          markup=False, highlight=False, soft_wrap=True)  # fmt: skip
    if not show_all:
        waiting = Counter(s.state for s in states if s.state in SUMMARISED)
        if waiting:
            what = ", ".join(f"{n} {state}" for state, n in waiting.items())
            console.print(f"{what}: not listed; nestling status {plan.root} --all lists every run", markup=False,
                          highlight=False, soft_wrap=True)  # fmt: skip


def _note(status: RunStatus) -> str:
    """A run's error (with its failure class, e.g. [oom]), why it is unstable, or the rung it waits at."""
    if status.state is RunState.PAUSED:
        return f"paused at a rung after epoch {status.epochs_trained}"
    note = status.error or (f"unstable: {status.unstable_reason}" if status.unstable_reason else "")
    return f"[{status.failure_class}] {note}" if status.failure_class and status.error else note
