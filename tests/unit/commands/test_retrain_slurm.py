"""`nestling tune --retrain` on SLURM (issue 14 §2): a job that runs `nestling retrain ROOT` afterok the collector.
sbatch is replaced by a recorder; the scripts are the real ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestling.core.host.devices import parse_devices
from nestling.core.options.config import parse_config
from nestling.launch.factory import slurm_resources
from nestling.launch.slurm import launcher as slurm
from nestling.plan.model import WorkUnit
from nestling.read.progress import RunProgress


@pytest.mark.parametrize("retrain", [True, False])
def test_retrain_job_runs_after_the_collector_succeeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, retrain: bool
) -> None:
    submitted: list[Path] = []

    def fake_sbatch(script: Path) -> str:
        submitted.append(script)
        return str(100 + len(submitted))

    monkeypatch.setattr(slurm, "sbatch", fake_sbatch)
    config = parse_config(["--launcher", "slurm", "--accelerator", "cpu"])
    resources = slurm_resources(config, "tune", "t", parse_devices(["auto"]))
    launcher = slurm.SlurmArrayLauncher(
        resources, dry_run_folder=tmp_path / "dry", array_limit=10, retrain_after=retrain
    )
    root = tmp_path / "t"
    root.mkdir()
    with RunProgress(1, "t", quiet=True) as progress:
        record = launcher.launch(root, [WorkUnit(0, [str(root / "r")])], progress)
    names = [p.name for p in submitted]
    assert names == ["array-0.sbatch", "collect.sbatch", *(["retrain.sbatch"] if retrain else [])]
    assert record.collector_job_id == "102"
    if not retrain:
        assert "retrain_job_id" not in record.extra
        return
    assert record.extra["retrain_job_id"] == "103"
    script = submitted[2].read_text()
    assert "#SBATCH --dependency=afterok:102" in script
    assert f"-m nestling.cli retrain {root.resolve()}" in script
    assert "#SBATCH --job-name=nestling-t-retrain" in script
