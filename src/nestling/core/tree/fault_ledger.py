"""The fault ledger of a plan (`{plan root}/_faults/`): how many retries each run had in this launch, and which nodes
were found broken. Shared by every worker on every node through the tree, like the fail-fast ledger.

  policy.json            written at each launch (and resume): --max_retries, --stage_dir, --keep_checkpoints and
                         the launch's id
  retries/<run_id>/<n>   one small file per retry of the run in this launch, holding its failure class
  nodes/<node>.json      a node a run found broken: the error, the run, when. Kept across the plan's launches, so a
                         resume submits with --exclude too; `nestling status` lists them. Delete the file to let
                         the plan use the node again.

Retries are counted per launch (a resume starts from zero: somebody looked at it); broken nodes are not (a node with
ECC errors stays broken until an administrator fixes it).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from nestling.core.tree.atomic import write_json
from nestling.core.tree.clock import utc_now
from nestling.core.tree.failure_class import FailureClass
from nestling.core.tree.naming import FaultPaths

DEFAULT_MAX_RETRIES = 2  # Launch.max_retries' default, for a worker started on a plan no launch armed


@dataclass(frozen=True)
class Policy:
    """What this launch asks of its workers: the retry budget, its id, and where a task's data is staged."""

    max_retries: int = DEFAULT_MAX_RETRIES
    launch_id: str = "none"
    stage_dir: str | None = None
    keep_checkpoints: str | None = None  # None: no launch said (the plan's own value counts)


@dataclass(frozen=True)
class BrokenNode:
    """A node a run found broken, and how."""

    node: str
    error: str
    run_name: str
    at: str


def open_launch(
    root: Path, max_retries: int, stage_dir: str | None = None, keep_checkpoints: str | None = None
) -> Policy:
    """At each launch: its retry budget, id, stage dir and checkpoint policy (a resume may change them); retries of
    earlier launches are forgotten, broken nodes kept."""
    paths = FaultPaths(root)
    shutil.rmtree(paths.retries, ignore_errors=True)
    paths.dir.mkdir(parents=True, exist_ok=True)
    policy = Policy(max(0, int(max_retries)), secrets.token_hex(4), stage_dir, keep_checkpoints)
    write_json(paths.policy, {"max_retries": policy.max_retries, "launch_id": policy.launch_id,
                              "stage_dir": stage_dir, "keep_checkpoints": keep_checkpoints})  # fmt: skip
    return policy


def policy(root: Path) -> Policy:
    """The armed policy; the defaults for a plan no launch armed (a worker started by hand)."""
    try:
        data = json.loads(FaultPaths(root).policy.read_text())
        stage, keep = data.get("stage_dir"), data.get("keep_checkpoints")
        return Policy(int(data["max_retries"]), str(data["launch_id"]), str(stage) if stage else None,
                      str(keep) if keep is not None else None)  # fmt: skip
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return Policy()


def retries(root: Path, run_id: str) -> int:
    """Retries the run had in this launch."""
    try:
        return len(os.listdir(FaultPaths(root).run_retries(run_id)))
    except FileNotFoundError:
        return 0


def record_retry(root: Path, run_id: str, failure: FailureClass) -> int:
    """Count one more retry of the run (before it starts); the count now. Each retry is its own file, created
    exclusively, so two workers that retry the same run at once both count."""
    folder = FaultPaths(root).run_retries(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(os.listdir(folder))
    while True:
        n += 1
        try:
            with open(folder / str(n), "x") as f:
                f.write(failure.value)
            return n
        except FileExistsError:
            continue


def may_retry(root: Path, run_id: str) -> bool:
    return retries(root, run_id) < policy(root).max_retries


def mark_broken(root: Path, node: str, error: str, run_name: str) -> None:
    """Record `node` as broken (the first record of a node stays: it names the fault that found it)."""
    paths = FaultPaths(root)
    if paths.node(node).exists():
        return
    paths.nodes.mkdir(parents=True, exist_ok=True)
    write_json(paths.node(node), {"node": node, "error": error, "run_name": run_name, "at": utc_now()})


def broken_nodes(root: Path) -> list[BrokenNode]:
    """Every node the plan found broken, by name."""
    paths = FaultPaths(root)
    try:
        names = sorted(os.listdir(paths.nodes))
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            data = json.loads((paths.nodes / name).read_text())
            out.append(BrokenNode(str(data["node"]), str(data["error"]), str(data["run_name"]), str(data["at"])))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            out.append(BrokenNode(name.removesuffix(".json"), "(record unreadable)", "", ""))
    return out


def is_broken(root: Path, node: str | None) -> bool:
    return node is not None and FaultPaths(root).node(node).exists()
