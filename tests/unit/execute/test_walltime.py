"""execute/walltime.py: an array task takes over a waiting unit only when its runs fit before the time limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestling.core.tree import array_claims as claims
from nestling.core.tree.atomic import write_json
from nestling.core.tree.naming import ArrayLaunchPaths
from nestling.execute.walltime import Walltime, p90


def launch(tmp_path: Path, durations: list[float], waiting: int = 3) -> tuple[ArrayLaunchPaths, list[list[str]]]:
    """A launch whose first units were claimed and finished with these run durations, and `waiting` units of 2 runs
    that wait in the queue."""
    paths = ArrayLaunchPaths(tmp_path / "launch")
    units = []
    for i, seconds in enumerate(durations):
        run = tmp_path / f"done{i}"
        run.mkdir()
        write_json(run / "run_result.json", {"status": "success", "duration": seconds})
        units.append([str(run)])
        assert claims.claim(paths, i, f"1_{i}")
    units += [[str(tmp_path / f"w{u}a"), str(tmp_path / f"w{u}b")] for u in range(waiting)]
    return paths, units


def test_p90_is_the_nearest_rank() -> None:
    assert p90([]) is None and p90([5.0]) == 5.0
    assert p90([float(i) for i in range(1, 11)]) == 9.0 and p90([1.0, 100.0, 2.0]) == 100.0


def test_a_unit_fits_when_its_runs_end_before_the_signal(tmp_path: Path) -> None:
    paths, units = launch(tmp_path, [10.0, 12.0, 30.0])
    now = [1000.0]
    walltime = Walltime(paths, units, started=1000.0, time_min=3, signal_delay_s=30, expected_run_s=None,
                        clock=lambda: now[0])  # fmt: skip
    # 180 s limit, signalled 30 s early, up to 30 s before that at slurmctld's tick: 120 s to use
    assert walltime.left_s() == 120.0 and walltime.run_estimate() == 30.0  # the p90 of 10, 12, 30
    assert walltime.fits(3) == (True, 60.0)  # 2 runs x 30 s, x 1.1 + 10 s = 76 s <= 120 s
    now[0] += 50.0
    assert walltime.fits(3) == (False, 60.0)  # 76 s > 70 s left


def test_without_finished_runs_the_expected_run_time_counts_and_packed_runs_share(tmp_path: Path) -> None:
    paths, units = launch(tmp_path, [])
    walltime = Walltime(paths, units, started=0.0, time_min=2, signal_delay_s=30, expected_run_s=25.0,
                        parallel=2, clock=lambda: 0.0)  # fmt: skip
    assert walltime.run_estimate() == 25.0 and walltime.fits(0) == (True, 25.0)  # 2 runs side by side on the GPU
    unknown = Walltime(paths, units, started=0.0, time_min=1, signal_delay_s=30, expected_run_s=None,
                       clock=lambda: 0.0)  # fmt: skip
    assert unknown.fits(0) == (True, None)  # nothing to estimate from: take it over, as before


def test_the_stealer_leaves_a_unit_that_does_not_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths, _ = launch(tmp_path, [], waiting=3)
    monkeypatch.setattr(claims, "waiting_units", lambda p: [(2, "1_2"), (1, "1_1"), (0, "1_0")])
    monkeypatch.setattr(claims.shutil, "which", lambda name: None)  # no scancel here
    stealer = claims.Stealer(paths, "1_9", fits=lambda unit: unit != 2)
    assert stealer.next() == 1 and claims.holder(paths, 2) is None  # unit 2 stays for a fresh task
