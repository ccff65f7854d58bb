"""Issue 15 #4: run_result.json and run_infos.parquet record the accelerator, device names, peak memory and the
GPUs a (serial, too) worker was pinned to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from nestling.commands.cli import main
from nestling.core.host.devices import PINNED_GPUS_ENV, serial_slot
from nestling.core.options.config import parse_config
from nestling.execute.training import Placement, _placement, accelerator_name, pinned_devices
from nestling.launch.factory import make_launcher
from nestling.launch.local import LocalLauncher


class CUDAAccelerator:
    pass


class CPUAccelerator:
    pass


class FakeTrainer:
    def __init__(self, accelerator: Any) -> None:
        self.accelerator = accelerator


class FakeCuda:
    def __init__(self) -> None:
        self.reset: list[int] = []

    def device_count(self) -> int:
        return 2

    def get_device_name(self, i: int) -> str:
        return f"NVIDIA H200 #{i}"

    def reset_peak_memory_stats(self, i: int) -> None:
        self.reset.append(i)


def test_accelerator_and_device_names_are_recorded() -> None:
    assert accelerator_name(CUDAAccelerator()) == "cuda" and accelerator_name(CPUAccelerator()) == "cpu"
    assert _placement(FakeTrainer(CPUAccelerator()), environ={}) == (Placement("cpu", ["cpu"]), None)
    cuda = FakeCuda()
    placement, found = _placement(FakeTrainer(CUDAAccelerator()), cuda, environ={})
    assert found is cuda
    assert placement == Placement("cuda", ["NVIDIA H200 #0", "NVIDIA H200 #1"],
                                  visible_devices="0,1")  # fmt: skip  (not pinned: what the process could see)
    assert cuda.reset == [0, 1]  # the peak is this run's
    pinned, _ = _placement(FakeTrainer(CUDAAccelerator()), FakeCuda(), environ={"CUDA_VISIBLE_DEVICES": "4,6"})
    assert pinned.visible_devices is None  # the launcher's pinning is recorded as it is, not replaced


def test_serial_worker_is_pinned_to_the_gpus_its_runs_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6,7")
    assert serial_slot("gpu", 2) == ["4", "6"]
    assert serial_slot("cuda", [0, 2]) == ["4", "7"]
    assert serial_slot("gpu", [5]) is None and serial_slot("gpu", 4) is None  # not visible: the Trainer says so
    assert serial_slot("gpu", "auto") is None and serial_slot("cpu", 2) is None
    ids = make_launcher(parse_config(["--accelerator", "gpu", "--devices", "0", "2"]), "cv", "x", [0, 2])
    assert isinstance(ids, LocalLauncher) and ids.slots == [["4", "7"]]
    env = ids._env(ids.slots[0], 1)
    assert (env["CUDA_VISIBLE_DEVICES"], env[PINNED_GPUS_ENV]) == ("4,7", "0,2")
    count = make_launcher(parse_config(["--accelerator", "gpu", "--devices", "2"]), "cv", "x", 2)
    assert isinstance(count, LocalLauncher) and count.slots == [["4", "6"]] and count.pinned_ids is None
    assert PINNED_GPUS_ENV not in count._env(count.slots[0], 1)


def test_pinned_ids_are_renumbered_in_the_worker() -> None:
    assert pinned_devices([0, 2], {PINNED_GPUS_ENV: "0,2"}) == [0, 1]
    assert pinned_devices([3], {PINNED_GPUS_ENV: "3"}) == [0]
    assert pinned_devices([0, 2], {}) == [0, 2]  # not pinned by nestling
    assert pinned_devices(2, {PINNED_GPUS_ENV: "0,2"}) == 2


def test_a_cpu_run_records_what_ran_where(tmp_path: Path) -> None:
    rc = main(["cv", "--task", "sleep", "--hp", "sleep_s=0.05", "--max_epochs", "1", "--n_folds", "2",
               "--n_seeds", "1", "--accelerator", "cpu", "--artifact_dir", str(tmp_path), "--name", "w", "--quiet"])  # fmt: skip
    assert rc == 0
    root = tmp_path / "_cross_validations" / "w"
    result = json.loads(next(root.glob("*/run_result.json")).read_text())
    assert (result["accelerator"], result["device_names"], result["peak_memory_bytes"]) == ("cpu", ["cpu"], None)
    table = pl.read_parquet(root / "run_infos.parquet")
    assert table["accelerator"].to_list() == ["cpu", "cpu"]
    assert table["device_names"].to_list() == [["cpu"], ["cpu"]]
    assert table.schema["peak_memory_bytes"] == pl.Int64 and table["peak_memory_bytes"].null_count() == 2
