"""Each top-level name means one thing (issue 20 §3): a function, class or constant defined at the top of two modules
of the package (leading underscores aside) is one of the listed pairs that mean the same, or is renamed.

Read from the source with `ast`, as tests/unit/test_import_graph.py reads imports.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "nestling"
ENTRY = {"main", "__getattr__", "__dir__", "__all__", "TYPE_CHECKING"}  # each entry point's own, by design
SAME_MEANING = {
    "log": "each module's logger",
    "DESCRIPTION": "a command's --help text (doctor, retrain)",
    "collect": "the Python API's `nestling.collect` calls read.collect.collect, which it names",
    "holders": "unit -> the task that claimed it; read/run_states.py asks array_claims for one launch",
    # run and trial states, the run result and its timestamps: issue 20 §2 makes them one enum / record each
    "FAILED": "a state", "FINAL": "final states", "PRUNED": "a state", "now": "a UTC timestamp",
    "mean_sem": "a cv's mean and sem (one rule in scoring.spread, issue 20 §3)",
}  # fmt: skip


def top_level_names() -> dict[str, list[str]]:
    """name (without leading underscores) -> the modules that define it at the top."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.parse(path.read_text()).body:
            names: list[str] = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            for name in names:
                if name not in ENTRY:
                    found[name.lstrip("_")].append(f"{module}:{node.lineno}")
    return found


def test_a_name_defined_in_two_modules_means_one_thing() -> None:
    twins = {name: where for name, where in top_level_names().items() if len(where) > 1 and name not in SAME_MEANING}
    assert not twins, (
        "top-level names defined in more than one module; rename one (or, when they mean the same, import it from "
        f"one place, or add the name to SAME_MEANING with the reason): {twins}"
    )


def test_the_check_finds_a_twin() -> None:
    """The check can fail: the real tree holds known twins (allowed above) that it does find."""
    found = top_level_names()
    assert len(found["log"]) >= 2 and len(found["holders"]) == 2
