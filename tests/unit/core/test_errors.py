"""Every error nestling expects shares one base class, and one place maps each to the command line's exit code and
line (issue 20 §2): bad input 2, a job that can never start or a refused submission 1, Ctrl-C 130."""

from __future__ import annotations

import pytest

from nestling.commands import cli
from nestling.commands.sync import WandbUnreachable
from nestling.core.errors import (
    EXIT_INTERRUPTED,
    JobsBlocked,
    NestlingError,
    UsageError,
    exit_code,
    stderr_line,
)
from nestling.launch.base import SubmitError


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (UsageError("--n_folds 'x' is\n  not a number"), 2, "nestling: error: --n_folds 'x' is not a number"),
        (JobsBlocked("job 7 pends for ever"), 1, "nestling: job 7 pends for ever"),
        (SubmitError("sbatch refused it"), 1, "nestling: sbatch refused it"),
        (WandbUnreachable("W&B cannot be reached"), 1, "nestling: W&B cannot be reached"),
    ],
)
def test_each_error_has_its_exit_code_and_one_line(
    error: NestlingError, code: int, line: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert isinstance(error, NestlingError) and exit_code(error) == code and stderr_line(error) == line

    def failing(argv: list[str]) -> int:
        raise error

    monkeypatch.setattr(cli, "_dispatch", failing)
    assert cli.main(["status", "anything"]) == code  # the command line maps it in the same place
    assert capsys.readouterr().err == line + "\n"


def test_ctrl_c_and_unexpected_errors(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(KeyboardInterrupt()) == EXIT_INTERRUPTED == 130
    assert exit_code(RuntimeError("a bug")) == 1

    def interrupted(argv: list[str]) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_dispatch", interrupted)
    assert cli.main(["cv"]) == 130
    assert "interrupted; finished runs are kept" in capsys.readouterr().err
