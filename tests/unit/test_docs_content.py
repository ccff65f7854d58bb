"""What the docs say matches the code (issue 21 #14): every option has a row in configuration.md naming each of its
choices, every built-in task is named, the ranking snippets rank as the CLI does (a pruned tune's trials, run
through the snippets as written), and no page says a command is missing that exists."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import polars as pl
import pytest

from nestling.core.ml.task import BUILTIN_TASKS
from nestling.core.options.config import GROUPS
from nestling.read import collect as C

DOCS = Path(__file__).resolve().parents[2] / "docs"
CONFIGURATION = (DOCS / "configuration.md").read_text()


def option_row(name: str) -> str:
    rows = [line for line in CONFIGURATION.splitlines() if re.match(rf"\| [^|]*`--{name}`", line)]
    assert rows, f"configuration.md has no row for --{name}"
    return rows[0]


@pytest.mark.parametrize(
    "field", [(group, f) for group, cls in GROUPS.items() for f in dataclasses.fields(cls)], ids=lambda gf: gf[1].name
)
def test_every_option_has_a_row_that_names_its_choices(field: tuple[str, dataclasses.Field[typing.Any]]) -> None:
    group, f = field
    row = option_row(f.name)
    hint = typing.get_type_hints(GROUPS[group])[f.name]
    if typing.get_origin(hint) is typing.Literal:
        for choice in typing.get_args(hint):
            assert f"`{choice}`" in row, (f.name, choice, row)


def test_every_built_in_task_is_named() -> None:
    row = option_row("task")
    for name in BUILTIN_TASKS:
        assert f"`{name}`" in row, name


def test_no_page_says_nestling_retrain_is_missing() -> None:
    for page in DOCS.glob("*.md"):
        assert "no `nestling retrain` command" not in page.read_text(), page.name


def ranking_snippet(page: str, variable: str) -> str:
    """The lines of the page's Python block that read tune_infos.parquet, up to the one that ranks it."""
    block = next(b for b in re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)
                 if "tune_infos.parquet" in b)  # fmt: skip
    lines = block.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith(f"{variable} =") and "sort" in line)
    return "\n".join(line for line in lines[: end + 1] if not line.startswith(("print(", "best =")))


@pytest.mark.parametrize(("page", "variable"), [("quickstart.md", "best_first"), ("after-the-tune.md", "trials")])
def test_the_ranking_snippets_rank_as_the_cli(page: str, variable: str, tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "read"))
    from bowl_trees import bowl_tune

    root = bowl_tune(tmp_path, "first-tune", "--sampler", "tpe", "--pruner", "successive-halving", n_trials=12)
    collected = C.collect(root)
    assert any(cv.state == "pruned" for cv in collected.cvs)
    snippet = ranking_snippet(page, variable).replace("artifacts/first-tune", str(root))
    scope: dict[str, typing.Any] = {"pl": pl}
    exec(snippet, scope)  # noqa: S102 - the page's own code
    shown = scope[variable]["cv_name"].to_list()
    assert shown == [cv.cv_name for cv in C.ranked(collected.cvs, collected.plan.settings.select)]
