"""Issue 15 #2: --runs_per_gpu K packs K runs on one GPU (local slots, SLURM array tasks), each capped at 1/K."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from nestling.commands.cli import main
from nestling.core.containers.runtimes import Wrapped
from nestling.core.host.devices import MEMORY_FRACTION_ENV
from nestling.core.options.config import parse_config
from nestling.execute import array_task
from nestling.execute.training import _MemoryCap, cap_device_memory
from nestling.launch.factory import local_slots, make_launcher
from nestling.launch.local import LocalLauncher
from nestling.launch.slurm.launcher import SlurmArrayLauncher
from nestling.launch.slurm.resources import SlurmResources
from nestling.plan.model import WorkUnit


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--runs_per_gpu", "0"], "--runs_per_gpu 0 must be at least 1"),
        (["--accelerator", "gpu", "--devices", "1"], "--runs_per_gpu 2 packs parallel runs of one GPU each"),
        (["--accelerator", "gpu", "--strategy", "ddp", "--devices", "2"], "--strategy 'ddp' gives each run"),
        (["--accelerator", "gpu", "--strategy", "cv-parallel", "--gpus_per_task", "2"], "--gpus_per_task 2"),
        (["--accelerator", "cpu", "--strategy", "cv-parallel"], "--runs_per_gpu 2 is for GPUs"),
    ],
)
def test_refused_with_multi_device_runs_ddp_and_cpus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["cv", "--task", "sleep", "--artifact_dir", str(tmp_path), "--runs_per_gpu", "2", *extra]
    if "--runs_per_gpu" in extra:
        argv = ["cv", "--task", "sleep", "--artifact_dir", str(tmp_path), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert list(tmp_path.iterdir()) == []


def _gpu_config(*extra: str) -> Any:
    return parse_config(["--accelerator", "gpu", "--strategy", "cv-parallel", *extra])


def test_local_pool_has_k_workers_per_gpu_with_the_same_visible_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    config = _gpu_config("--runs_per_gpu", "2")
    slots = local_slots(config, "auto")
    assert slots == [["3"], ["5"], ["3"], ["5"]]  # interleaved: 2 units still use both GPUs
    launcher = make_launcher(config, "cv", "x", "auto")
    assert isinstance(launcher, LocalLauncher) and launcher.slots == slots and launcher.parallel_slots == 4
    envs = [launcher._env(slot, len(slots)) for slot in launcher.slots]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["3", "5", "3", "5"]
    assert [e[MEMORY_FRACTION_ENV] for e in envs] == ["0.5"] * 4
    # ids given on the command line, K = 4
    slots4 = local_slots(_gpu_config("--runs_per_gpu", "4", "--devices", "0", "1"), [0, 1])
    assert slots4 == [["0"], ["1"]] * 4


def test_k_1_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    config = _gpu_config()
    launcher = make_launcher(config, "cv", "x", "auto")
    assert isinstance(launcher, LocalLauncher) and launcher.slots == [["3"], ["5"]]
    assert MEMORY_FRACTION_ENV not in launcher._env(["3"], 2)
    assert MEMORY_FRACTION_ENV not in LocalLauncher([None])._env(None, 1)


class FakeCuda:
    def __init__(self, available: bool = True, count: int = 2) -> None:
        self.available, self.count = available, count
        self.calls: list[tuple[float, int]] = []

    def is_available(self) -> bool:
        return self.available

    def device_count(self) -> int:
        return self.count

    def set_per_process_memory_fraction(self, fraction: float, device: int) -> None:
        self.calls.append((fraction, device))


def test_each_worker_caps_itself_at_one_kth_of_every_visible_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_MemoryCap, "done", False)
    assert cap_device_memory({}, FakeCuda()) is None  # not packed: no cap
    assert cap_device_memory({MEMORY_FRACTION_ENV: "0.25"}, FakeCuda(available=False)) is None  # no CUDA
    cuda = FakeCuda()
    assert cap_device_memory({MEMORY_FRACTION_ENV: "0.25"}, cuda) == 0.25
    assert cuda.calls == [(0.25, 0), (0.25, 1)]
    again = FakeCuda()
    assert cap_device_memory({MEMORY_FRACTION_ENV: "0.25"}, again) is None and again.calls == []  # once


def test_slurm_units_json_carries_k(tmp_path: Path) -> None:
    res = SlurmResources(partition=None, time_min=60, cpus_per_task=2, mem_gb=8, gpus_per_task=1, account=None,
                         qos=None, constraint=None, array_parallelism=5, setup=[], extra={})  # fmt: skip
    units = [WorkUnit(0, ["/r/a"]), WorkUnit(1, ["/r/b"])]
    SlurmArrayLauncher(res, dry_run_folder=tmp_path / "k3", array_limit=10, runs_per_gpu=3).describe(
        tmp_path, units, "cv x"
    )
    SlurmArrayLauncher(res, dry_run_folder=tmp_path / "k1", array_limit=10).describe(tmp_path, units, "cv x")
    k3 = json.loads(next((tmp_path / "k3").rglob("units.json")).read_text())
    k1 = json.loads(next((tmp_path / "k1").rglob("units.json")).read_text())
    assert k3["runs_per_gpu"] == 3 and "runs_per_gpu" not in k1


def test_run_source_hands_out_single_runs_own_then_stolen() -> None:
    stolen = [["/s/1", "/s/2"], None]
    source = array_task.RunSource([["/o/1", "/o/2"], ["/p/1"]], lambda: stolen.pop(0))
    got = []
    while (runs := source()) is not None:
        got.append(runs)
    assert got == [["/o/1"], ["/o/2"], ["/p/1"], ["/s/1"], ["/s/2"]]
    assert array_task.RunSource([["/o/1"]], None)() == ["/o/1"]


FAKE_WORKER = textwrap.dedent("""
    import json, os, sys, time
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        unit = json.loads(line)
        for d in unit["run_dirs"]:
            time.sleep(0.2)  # a run takes time: the other workers get their share
            if "big" in d and os.environ["NESTLING_MEMORY_FRACTION"] != "1":  # out of memory at 1/K of the GPU
                print(json.dumps({"run_dir": d, "status": "failed", "failure_class": "oom_shared"}), flush=True)
                continue
            with open(d, "w") as f:
                f.write(os.environ["NESTLING_MEMORY_FRACTION"] + " " + str(os.getpid()))
            print(json.dumps({"run_dir": d, "status": "success"}), flush=True)
        print(json.dumps({"unit_done": unit["index"]}), flush=True)
""")


def test_packed_runner_shares_the_runs_among_k_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    runner = array_task.PackedRunner(None, 4)
    original = runner.command

    def command(alone: bool = False) -> Wrapped:
        return Wrapped([sys.executable, str(script)], original(alone).env)

    monkeypatch.setattr(runner, "command", command)
    runs = [str(tmp_path / f"run{i}") for i in range(12)]
    statuses = runner.run_all(array_task.RunSource([runs[:5], runs[5:]], None))
    runner.close()
    assert statuses == ["success"] * 12
    written = [Path(r).read_text().split() for r in runs]
    assert {fraction for fraction, _ in written} == {"0.25"}
    assert len(runner.children) == 4 and all(c.returncode == 0 for c in runner.children)
    assert len({pid for _, pid in written}) >= 2  # the runs were shared, not run by one worker


def test_a_run_out_of_memory_on_the_shared_gpu_runs_again_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    runner = array_task.PackedRunner(None, 2)
    original = runner.command
    monkeypatch.setattr(runner, "command", lambda alone=False: Wrapped([sys.executable, str(script)], original(alone).env))
    runs = [str(tmp_path / name) for name in ("a", "big1", "b", "big2", "c")]
    statuses = runner.run_all(array_task.RunSource([runs], None))
    runner.close()
    assert sorted(statuses) == ["success"] * 5  # the last state of each run: the failure alone is not counted
    assert [Path(r).read_text().split()[0] for r in runs] == ["0.5", "1", "0.5", "1", "0.5"]
    assert len(runner.children) == 3  # 2 shared workers, then 1 alone on the GPU
