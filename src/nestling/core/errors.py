"""The error types the CLI maps to exit codes: bad user input (exit 2), jobs SLURM will never start (exit 1)."""

from __future__ import annotations

import argparse
from typing import NoReturn


class UsageError(Exception):
    """Bad input from the user. The message names the value and the fix, on one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class JobsBlocked(Exception):
    """`--wait` stops: SLURM keeps a job pending for a reason waiting never resolves. One line: reason and fix."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def strict_parser(prog: str, description: str = "") -> argparse.ArgumentParser:
    """An argparse parser whose mistakes become one-line UsageErrors (exit 2) instead of usage dumps."""

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise UsageError(f"{message} (see {prog} --help)")

    return _Parser(prog=prog, description=description, allow_abbrev=False)
