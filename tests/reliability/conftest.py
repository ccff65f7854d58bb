"""Fixtures of the reliability suite, and its figures printed at the end of the session (docs/reliability.md)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # _reliability, _slurm_faults

from _reliability import FIGURES  # noqa: E402
from _slurm_faults import FAULTS, SlurmFaults  # noqa: E402


@pytest.fixture
def slurm_faults(slurm_work: dict[str, Any]) -> SlurmFaults:
    """The SLURM fault scenarios, started with the rest of the SLURM work (tests/slurm_work.py): a test using
    this fixture is marked @pytest.mark.slurm_work(FAULTS)."""
    faults: SlurmFaults = slurm_work[FAULTS]
    return faults


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: its figures go to the controller, which prints the sum
        workeroutput["reliability_figures"] = FIGURES.to_dict()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    figures = getattr(node, "workeroutput", {}).get("reliability_figures")
    if figures:
        FIGURES.add(figures)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    passed = terminalreporter.stats.get("passed", [])
    bad_inputs = sum(
        1 for r in passed if re.search(r"test_preflight\.py::test_bad_(input|partition_and_gres)\[", r.nodeid)
    )
    if not FIGURES.runs_checked and not bad_inputs:
        return
    write = terminalreporter.write_line
    write("")
    write("reliability figures")
    for kind, n in sorted(FIGURES.faults.items()):
        write(f"  fault injected: {kind}: {n}")
    write(f"  faults injected: {sum(FIGURES.faults.values())}")
    write(f"  runs checked: {FIGURES.runs_checked}")
    write(f"  runs lost: {FIGURES.runs_lost}")
    write(f"  runs trained twice: {FIGURES.runs_trained_twice}")
    write(f"  bad inputs tried (passed): {bad_inputs}")
    if FIGURES.classes:
        hit = sum(h for h, _ in FIGURES.classes.values())
        recovered = sum(r for _, r in FIGURES.classes.values())
        for kind, (h, r) in sorted(FIGURES.classes.items()):
            write(f"  failure class {kind}: {h} runs hit, {r} recovered without a person")
        write(f"  failure classes: {hit} runs hit, {recovered} recovered without a person, "
              f"{FIGURES.runs_lost} lost, {FIGURES.runs_trained_twice} trained twice")
