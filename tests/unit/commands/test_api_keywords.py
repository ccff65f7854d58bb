"""The Python API's keyword signatures (commands/api_keywords.py) stay equal to the option groups of
core/options/config.py: every option a flag, every flag a keyword, with the flag's default and type (issue 21 #8)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import nestling
from nestling.commands import api, api_keywords, retrain
from nestling.core.options import config
from nestling.core.options.config import GROUPS, parse_config

PATH_OPTIONS = {"artifact_dir", "hpconfig", "submitit_dir", "container_image"}  # a str or an os.PathLike
NOT_RETRAIN = {"detach", "resume", "force"}  # a retrain runs here and resumes itself
THIRD_PARTY = ("polars", "torch", "lightning", "optuna", "simple_parsing", "submitit", "wandb", "rich", "altair",
               "numpy", "pyarrow", "sklearn", "yaml", "coolname", "vl_convert", "torchmetrics")  # fmt: skip


def written_types() -> dict[str, str]:
    """Each option's type as config.py writes it (simple-parsing replaces `Field.type` by the evaluated type)."""
    tree = ast.parse(Path(config.__file__).read_text())
    groups = {cls.__name__ for cls in GROUPS.values()}
    return {
        node.target.id: ast.unparse(node.annotation)
        for cls in tree.body
        if isinstance(cls, ast.ClassDef) and cls.name in groups
        for node in cls.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }


def keyword_type(field: dataclasses.Field[Any], optional: bool = False) -> str:
    """The annotation of an option's keyword: the flag's type, widened where Python has more ways to say it."""
    ftype = written_types()[field.name]
    if field.name == "devices":
        ftype = "Sequence[int | str] | int | str"
    elif field.name == "hp":
        ftype = "Mapping[str, Any] | Sequence[str] | str"
    elif field.name in PATH_OPTIONS:
        ftype = ftype.replace("str", "str | PathLike[str]")
    else:
        ftype = {"list[str]": "Sequence[str] | str", "list[int]": "Sequence[int]"}.get(ftype, ftype)
    return f"{ftype} | None" if optional and not ftype.endswith("| None") else ftype


def keyword_default(field: dataclasses.Field[Any]) -> Any:
    """A list option's default as a tuple: a signature's default must not be a mutable list."""
    if field.default_factory is not dataclasses.MISSING:
        return tuple(field.default_factory())
    return field.default


def expected_plan_keywords() -> list[tuple[str, str, Any]]:
    keywords = [("config", "str | PathLike[str] | None", None)]
    for cls in GROUPS.values():
        keywords += [(f.name, keyword_type(f), keyword_default(f)) for f in dataclasses.fields(cls) if f.name != "task"]
    return keywords


def expected_retrain_keywords() -> list[tuple[str, str, Any]]:
    keywords: list[tuple[str, str, Any]] = [
        ("cv", "str | None", None), ("select", "Select | None", None), ("retrain_epochs", "RetrainEpochs | None", None)
    ]  # fmt: skip
    for group, cls in GROUPS.items():
        for f in dataclasses.fields(cls):
            if f.name == "quiet":
                keywords.append(("quiet", "bool", False))
            elif (group in retrain.OVERRIDE_GROUPS and f.name not in NOT_RETRAIN) or f.name in retrain.OVERRIDE_KEYS:
                keywords.append((f.name, keyword_type(f, optional=True), None))
    return keywords


def declared(function: Any) -> list[tuple[str, str, Any]]:
    params = inspect.signature(function).parameters.values()
    return [(p.name, str(p.annotation), p.default) for p in params if p.kind is p.KEYWORD_ONLY]


def _diff(found: list[tuple[str, str, Any]], wanted: list[tuple[str, str, Any]]) -> str:
    lines = [f"    {name}: {ftype} = {default!r}," for name, ftype, default in wanted]
    return "api_keywords.py should declare, in this order:\n" + "\n".join(lines)


@pytest.mark.parametrize(
    ("function", "expected"),
    [(api_keywords.plan_keywords, expected_plan_keywords), (api_keywords.retrain_keywords, expected_retrain_keywords)],
)
def test_each_option_is_a_keyword_with_its_flags_type_and_default(function: Any, expected: Any) -> None:
    parse_config([])  # as other tests may have done: simple-parsing evaluates the fields' types in place
    wanted = expected()
    assert declared(function) == wanted, _diff(declared(function), wanted)


def test_the_api_functions_show_the_keywords_to_help_and_editors() -> None:
    for name in ("run", "cv", "tune", "doctor"):
        signature = inspect.signature(getattr(nestling, name))
        assert list(signature.parameters)[:3] == ["task", "config", "fold_method"], name
        assert signature.parameters["n_folds"].default == 5 and signature.parameters["n_folds"].annotation == "int"
    assert inspect.signature(nestling.tune).return_annotation == "Result"
    assert inspect.signature(nestling.doctor).return_annotation == "list[Check]"
    retrain_signature = inspect.signature(nestling.retrain)
    assert list(retrain_signature.parameters)[:4] == ["dir", "cv", "select", "retrain_epochs"]
    assert retrain_signature.parameters["n_seeds"].default is None  # the tune's value
    assert "n_trials" not in retrain_signature.parameters
    assert "sample `n_trials` sets" in (nestling.tune.__doc__ or "")  # each keeps its own docstring


def test_mypy_checks_calls_against_the_keywords(tmp_path: Path) -> None:
    """What an editor's type checker sees: names, types and defaults; a misspelt or mistyped keyword is an error."""
    script = tmp_path / "calls.py"
    script.write_text(textwrap.dedent("""
        from pathlib import Path

        import nestling

        nestling.tune("sleep", n_trials=4, hp={"lr": 0.01}, devices=[0, 2], artifact_dir=Path("art"), quiet=True)
        nestling.retrain("art/t", n_seeds=2, retrain_epochs="best").test_score
        nestling.cv("sleep", n_fold=3)
        nestling.cv("sleep", max_epochs="ten")
        nestling.retrain("art/t", retrain_epochs="all")
    """))
    config = tmp_path / "mypy.ini"  # the third-party packages' own types are not what is checked here: skip them (5 s, not 50)
    config.write_text(f"[mypy]\nignore_missing_imports = True\n[mypy-{','.join(f'{p}.*' for p in THIRD_PARTY)}]\nfollow_imports = skip\n")
    src = Path(api.__file__).parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--no-incremental", "--cache-dir",
         str(tmp_path / "cache"), str(script)],
        capture_output=True, text=True, cwd=tmp_path, env={"MYPYPATH": str(src), "PATH": ""},
    )  # fmt: skip
    errors = [line.split(": error: ")[1] for line in done.stdout.splitlines() if ": error: " in line]
    assert len(errors) == 3, done.stdout
    assert errors[0].startswith('Unexpected keyword argument "n_fold" for "cv"; did you mean "n_folds"')
    assert errors[1].startswith('Argument "max_epochs" to "cv" has incompatible type "str"; expected "int"')
    assert errors[2].startswith('Argument "retrain_epochs" to "retrain" has incompatible type')
