"""The house rule, checked from the source: a module's room is its folder, imports follow the data flow, no cycles.

The rooms, in data-flow order, are the folders of `src/nestling` (docs/architecture.md names each one):
core -> plan -> launch -> execute (and tasks, the built-in tasks) -> read -> commands. A module may import modules
of its own room or an earlier one, never a later one, and a few pairs are banned outright although their rooms
would allow them. Every import counts: those at the top, those inside functions, and the lazy handles declared
with `core.lazy.lazy_module("nestling....")`; only imports under `if TYPE_CHECKING:` do not (an annotation is no
dependency). The top level holds the entry points only (`python -m` names, the console script, the task
interface users import); nothing inside the package imports them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
PACKAGE = SRC / "nestling"
ROOMS = ("core", "plan", "launch", "execute", "read", "commands")  # data-flow order, as docs/architecture.md
SAME_RANK = {"tasks": "execute", "testing": "commands"}  # built-in tasks run in workers; testing helpers read all
ENTRY_POINTS = {"__init__", "__main__", "cli", "worker", "array_task", "supervisor", "task"}
BANNED = {  # pairs the rooms would allow, kept apart on purpose
    ("nestling.read.run_states", "nestling.launch"): "status reads the tree and the queue; it never needs a launcher",
    ("nestling.commands.resume", "nestling.commands.start"): "resume hands data back; start launches it",
}
FACADE = {  # edges exempt from the ranks and the cycle check, each for a reason
    ("nestling", "nestling.commands.api"): "`import nestling` gives the Python API on first use (PEP 562 "
    "__getattr__ in __init__.py); the package itself imports nothing at import time, so core modules stay light",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room(module: str) -> str | None:
    """The room of a module: its first folder under nestling; None for the package and its entry points."""
    parts = module.split(".")
    if len(parts) < 3 and not (PACKAGE / parts[-1]).is_dir():
        return None
    return SAME_RANK.get(parts[1], parts[1])


def rank(module: str) -> int:
    r = room(module)
    return len(ROOMS) if r is None else ROOMS.index(r)


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


def _resolve(dotted: str) -> str:
    """`nestling.core.tree.naming.RunPaths` -> the module part, `nestling.core.tree.naming`."""
    parts = dotted.split(".")
    while parts:
        base = SRC / Path(*parts)
        if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
            return ".".join(parts)
        parts.pop()
    return dotted


def _imports(path: Path, module: str) -> set[str]:
    """The nestling modules `module` imports (`from nestling.core.tree import naming` names that module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(_resolve(a.name) for a in node.names if a.name.split(".")[0] == "nestling")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "nestling":
                continue
            found.update(_resolve(f"{target}.{alias.name}") for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr) == "lazy_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and str(node.args[0].value).startswith("nestling")
        ):
            found.add(_resolve(str(node.args[0].value)))
    found.discard(module)
    return found


def _graph() -> dict[str, set[str]]:
    graph = {_module_name(p): _imports(p, _module_name(p)) for p in sorted(PACKAGE.rglob("*.py"))}
    for src, dst in FACADE:
        graph.get(src, set()).discard(dst)
    return graph


def test_the_top_level_holds_entry_points_and_rooms_only() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules <= ENTRY_POINTS, f"move these into the folder of their room: {sorted(modules - ENTRY_POINTS)}"
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == {*ROOMS, *SAME_RANK}, f"folders that are no room: {sorted(folders - {*ROOMS, *SAME_RANK})}"
    for name in ENTRY_POINTS - {"__init__"}:
        code = [ln for ln in (PACKAGE / f"{name}.py").read_text().splitlines() if ln.strip()]
        assert len(code) <= 12, f"nestling/{name}.py is an entry point: a few lines that call into its room"


def test_architecture_md_names_every_folder() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    folders = sorted(
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*") if p.is_dir() and (p / "__init__.py").is_file()
    )
    missing = [f for f in folders if not re.search(rf"`{re.escape(f)}/`", text)]
    assert not missing, f"docs/architecture.md does not name these folders (as `name/`): {missing}"


def test_nothing_inside_imports_an_entry_point() -> None:
    entries = {f"nestling.{name}" for name in ENTRY_POINTS - {"__init__"}}
    wrong = [f"{src} imports {dst}" for src, dsts in _graph().items() if room(src) for dst in dsts if dst in entries]
    assert not wrong, "import the room's module, not the entry point:\n" + "\n".join(wrong)


def test_no_import_goes_against_the_data_flow() -> None:
    wrong = [
        f"{src} ({room(src)}) imports {dst} ({room(dst)})"
        for src, targets in _graph().items()
        for dst in sorted(targets)
        if room(src) and room(dst) and rank(dst) > rank(src)
    ]
    assert not wrong, "imports against the data flow:\n" + "\n".join(wrong)


@pytest.mark.parametrize(("src", "dst"), sorted(BANNED))
def test_banned_edges(src: str, dst: str) -> None:
    hits = sorted(t for t in _graph().get(src, set()) if t == dst or t.startswith(dst + "."))
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
    assert len(graph) >= 40
    assert "nestling.core.tree.naming" in graph["nestling.plan.build"]
    assert "nestling.core.errors" in graph["nestling.core.tree.naming"]
    assert room("nestling.read.report.compose") == "read" and room("nestling.worker") is None
    assert rank("nestling.tasks.sleep") == rank("nestling.execute.worker") < rank("nestling.read.collect")


# basenames two modules may share because they are one thing at two places: an entry point and what it runs, and
# the `nestling collect` command and the collector it calls
SHARED_BASENAMES = {
    "cli": {"nestling.cli", "nestling.commands.cli"},
    "worker": {"nestling.worker", "nestling.execute.worker"},
    "array_task": {"nestling.array_task", "nestling.execute.array_task"},
    "supervisor": {"nestling.supervisor", "nestling.commands.supervisor"},
    "task": {"nestling.task", "nestling.core.ml.task"},
    "collect": {"nestling.commands.collect", "nestling.read.collect"},
}


def test_no_two_modules_share_a_basename_for_different_things() -> None:
    """A newcomer who meets `provenance.py` in three folders cannot tell them apart from a traceback (issue 20 §1)."""
    by_name: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name != "__init__.py":
            by_name.setdefault(path.stem, set()).add(_module_name(path))
    shared = {name: modules for name, modules in by_name.items() if len(modules) > 1}
    assert shared == SHARED_BASENAMES
