"""The Launcher interface: how work units of a plan already on disk get executed.

Call order (the CLI does this):
  1. `launch(root, units, progress)` once: starts the work. An attached launcher (local) returns when every unit
     ended; a detached one (SLURM) returns after submission. It returns the launch record, which the CLI stores as
     launch.json in the plan root.
  2. `wait(record, progress)` only for a detached launcher and only with --wait: blocks until the work ended.
Launchers never decide what a run's outcome is: workers write run_result.json, the collector reads it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Protocol

from nestling.plan import WorkUnit


class Progress(Protocol):
    def run_done(self, run_dir: str, status: str) -> None: ...


class Launcher(ABC):
    name: str = "base"
    detached: bool = False

    @abstractmethod
    def launch(self, root: Path, units: list[WorkUnit], progress: Progress) -> dict[str, Any]:
        """Start (attached: and finish) every unit; return the launch record."""

    def wait(self, record: dict[str, Any], progress: Progress) -> None:  # noqa: B027 - attached launchers are done
        """Block until the launched work ended (detached launchers)."""
