"""Helpers shared by the suites that drive the real CLI, processes and cluster: CLI calls, bounded polls."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import pytest


def poll(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Call `check` until it returns something truthy; fail with its last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run `nestling ARGS` in a fresh interpreter, as a user would; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", "nestling.cli", *args],
        capture_output=True,
        text=True,
        env=env if env is not None else dict(os.environ),
        timeout=timeout,
        check=False,
    )


class Tables(HTMLParser):
    """table id -> rows of (cell text, {attribute: value}) as the page shows them."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, dict[str, str]]]]] = {}
        self._table: str | None = None
        self._cell: tuple[list[str], dict[str, str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = ([], a)

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append(("".join(self._cell[0]), self._cell[1]))
            self._cell = None
        elif tag == "table":
            self._table = None


def tables(page: str) -> dict[str, list[list[tuple[str, dict[str, str]]]]]:
    parser = Tables()
    parser.feed(page)
    return parser.tables
