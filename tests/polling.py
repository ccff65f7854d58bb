"""Bounded polling for tests that wait on real processes and a real cluster (no fixed sleeps)."""

from __future__ import annotations

import time
from collections.abc import Callable
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
