"""The Launcher interface as commands/start.py sees it: parallel slots and dry-run descriptions, for every launcher."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestling.commands.start import runs_per_task
from nestling.core.options.config import parse_config
from nestling.launch.base import Launcher
from nestling.launch.local import LocalLauncher
from nestling.launch.slurm.launcher import SlurmArrayLauncher
from nestling.launch.slurm.resources import SlurmResources
from nestling.launch.submitit_local import SubmititLocalLauncher
from nestling.plan.model import WorkUnit

RES = SlurmResources(partition=None, time_min=60, cpus_per_task=2, mem_gb=8, gpus_per_task=0, account=None,
                     qos=None, constraint=None, array_parallelism=5, setup=[], extra={})  # fmt: skip
UNITS = [WorkUnit(0, ["/r/a", "/r/b"]), WorkUnit(1, ["/r/c"])]


def launchers(tmp: Path) -> dict[str, Launcher]:
    return {
        "local": LocalLauncher([["0"], ["1"], ["2"]]),
        "submitit-local": SubmititLocalLauncher(RES),
        "slurm": SlurmArrayLauncher(RES, dry_run_folder=tmp / "dry", array_limit=1),
    }


@pytest.mark.parametrize(("name", "slots", "per_task"), [("local", 3, 34), ("submitit-local", 5, 20), ("slurm", 5, 20)])
def test_parallel_slots_size_the_units(tmp_path: Path, name: str, slots: int, per_task: int) -> None:
    launcher = launchers(tmp_path)[name]
    assert launcher.parallel_slots == slots
    # 100 one-second runs: packing is capped so that every slot stays busy, ceil(100 / slots) runs per task
    config = parse_config(["--expected_run_s", "1", "--array_parallelism", "5"])
    assert runs_per_task(config, 100, launcher) == per_task


def test_describe_says_what_would_run_and_starts_nothing(tmp_path: Path) -> None:
    found = launchers(tmp_path)
    assert found["local"].describe(tmp_path, UNITS, "cv x") == (
        "dry run: cv x: 3 runs in 2 work units on the local launcher"
    )
    assert found["submitit-local"].describe(tmp_path, UNITS, "cv x") == (
        "dry run: cv x: 3 runs in 2 work units on the submitit-local launcher"
    )
    text = found["slurm"].describe(tmp_path, UNITS, "cv x")
    scripts = sorted(p.name for p in (tmp_path / "dry").glob("*.sbatch"))
    assert scripts == ["dry-run-array-0.sbatch", "dry-run-array-1.sbatch"]  # MaxArraySize 1: one array per unit
    assert text.count("# ---- ") == 2
    assert text.splitlines()[-1].startswith("dry run: cv x: 3 runs in 2 array tasks, 2 array(s) of at most 1 ")
    assert not (tmp_path / "_submitit").exists()
