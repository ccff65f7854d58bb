"""The house rule, checked from the source: imports follow the data flow and never form a cycle.

config -> plan -> launch -> worker/run -> collect/status -> commands. Each module of ``src/nestling`` belongs to one
room (ROOMS); a module may import modules of its own room or an earlier one, never a later one, and a few pairs are
banned outright although their rooms would allow them. Every import counts, including the lazy ones inside
functions (they are real dependencies, only paid later), except those under `if TYPE_CHECKING:`. A new module must be given a room here (the test says so),
which is the moment to ask where it belongs; docs/architecture.md describes the rooms.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

ROOMS: dict[str, tuple[str, ...]] = {
    # 0: foundation, read by everyone: formats, names, options, the protocols every room shares
    "foundation": (
        "nestling",
        "nestling.errors",
        "nestling.naming",
        "nestling.records",
        "nestling.config",
        "nestling.files",
        "nestling.jobenv",
        "nestling.attempt",
        "nestling.slurm_query",
        "nestling.claims",
        "nestling.failfast",
        "nestling.tracking",
        "nestling.supervision",
        "nestling.container",
        "nestling.devices",
        "nestling.task",
        "nestling.scoring",
        "nestling.folds",
        "nestling.space",
    ),
    # 1: planning: options + task metadata -> a plan on disk (pure, no processes)
    "planning": ("nestling.plan", "nestling.artifacts", "nestling.preflight"),
    # 2: launching: work units -> processes, arrays, jobs (never imports what it starts: it names it)
    "launching": (
        "nestling.launch",
        "nestling.launch.base",
        "nestling.launch.local",
        "nestling.launch.slurm",
        "nestling.launch.submitit_local",
        "nestling.launch.factory",
        "nestling.launch.entry",
    ),
    # 3: executing: what runs inside a worker process or an array task
    "executing": (
        "nestling.worker",
        "nestling.run",
        "nestling.array_task",
        "nestling.lightning_compat",
        "nestling.cvtable",
        "nestling.tasks",
        "nestling.tasks.synthetic",
        "nestling.tasks._synthetic_torch",
        "nestling.tasks.sleep",
        "nestling.tasks.bowl",
        "nestling.study",
    ),
    # 4: reading: the tree -> tables, states, summaries
    "reading": (
        "nestling.collect", "nestling.status", "nestling.report", "nestling.progress", "nestling.figures",
        "nestling.html_report",
    ),
    # 5: commands: what a user calls
    "commands": (
        "nestling.resume", "nestling.retrain", "nestling.commands", "nestling.doctor", "nestling.sync", "nestling.cli",
        "nestling.detach", "nestling.supervisor", "nestling.api",
    ),
}
BANNED = {  # pairs the rooms would allow, kept apart on purpose
    ("nestling.status", "nestling.launch"): "status reads the tree and the queue; it never needs a launcher",
    ("nestling.resume", "nestling.commands"): "resume hands data back; commands launches it",
}
FACADE = {  # edges exempt from the ranks and the cycle check, each for a reason
    ("nestling", "nestling.api"): "`import nestling` gives the Python API on first use (PEP 562 __getattr__ in "
    "__init__.py); the package itself imports nothing at import time, so foundation modules stay light",
}
RANK = {module: rank for rank, modules in enumerate(ROOMS.values()) for module in modules}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:`: an import for annotations is no dependency."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
                continue
            todo.append(child)
    return out


def _imports(path: Path, module: str) -> set[str]:
    """The nestling modules `module` imports (`from nestling import naming` names the module nestling.naming)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "nestling")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "nestling":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if (SRC / Path(*sub.split("."))).with_suffix(".py").exists()
                          or (SRC / Path(*sub.split(".")) / "__init__.py").exists() else target)  # fmt: skip
    found.discard(module)
    return found


def _graph() -> dict[str, set[str]]:
    graph = {_module_name(p): _imports(p, _module_name(p)) for p in sorted((SRC / "nestling").rglob("*.py"))}
    for src, dst in FACADE:
        graph.get(src, set()).discard(dst)
    return graph


def _room(module: str) -> str:
    return next(name for name, modules in ROOMS.items() if module in modules)


def test_every_module_has_a_room() -> None:
    unplaced = sorted(set(_graph()) - set(RANK))
    assert not unplaced, f"give these modules a room in ROOMS (and docs/architecture.md): {unplaced}"


def test_no_import_goes_against_the_data_flow() -> None:
    graph = _graph()
    wrong = [
        f"{src} ({_room(src)}) imports {dst} ({_room(dst)})"
        for src, targets in graph.items()
        for dst in sorted(targets)
        if src in RANK and dst in RANK and RANK[dst] > RANK[src]
    ]
    assert not wrong, "imports against the data flow:\n" + "\n".join(wrong)


@pytest.mark.parametrize(("src", "dst"), sorted(BANNED))
def test_banned_edges(src: str, dst: str) -> None:
    graph = _graph()
    hits = sorted(t for t in graph.get(src, set()) if t == dst or t.startswith(dst + "."))
    assert not hits, f"{src} imports {hits}: {BANNED[(src, dst)]}"


def test_no_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_graph_is_read() -> None:
    """Guard against a parser that finds nothing (then every rule above would pass vacuously)."""
    graph = _graph()
    assert len(graph) >= 30
    assert "nestling.naming" in graph["nestling.plan"]
    assert "nestling.errors" in graph["nestling.naming"]
