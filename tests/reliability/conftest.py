"""Fixtures of the reliability suite, and its figures printed at the end of the session (docs/reliability.md)."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # _reliability, _slurm_faults

from _reliability import FIGURES  # noqa: E402
from _slurm_faults import SlurmFaults  # noqa: E402


@pytest.fixture(scope="session")
def slurm_faults(slurm_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmFaults]:
    faults = SlurmFaults(tmp_path_factory.mktemp("slurm-faults"))
    faults.start()
    try:
        yield faults
    finally:
        faults.stop()


@pytest.fixture(scope="session", autouse=True)
def _slurm_faults_first(request: pytest.FixtureRequest) -> None:
    """Start the SLURM scenarios with the first test of this directory, so they run while the local tests do."""
    if any("slurm_faults" in getattr(item, "fixturenames", ()) for item in request.session.items):
        with contextlib.suppress(pytest.skip.Exception):  # no SLURM here: the cluster tests skip themselves
            request.getfixturevalue("slurm_faults")


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
