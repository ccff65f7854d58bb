"""Security end to end: an artifact dir with spaces, quotes, $, backquotes and a newline goes intact through a local
cv and a SLURM cv; secrets in the environment never reach a file of the artifact tree."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
from _reliability import SLEEP, check_tree, cli, grep_tree, ok, planned_runs
from _slurm_faults import FAULTS, SECRETS, WEIRD, SlurmFaults

from nestling.plan.store import load_spec


def _check_intact(art: Path, root: Path) -> None:
    assert root.is_dir() and root.parent.parent == art
    for run in planned_runs(root):
        spec = json.loads((run["dir"] / "run_spec.json").read_text())
        assert spec["run_dir"] == run["dir"].relative_to(root).as_posix()  # stored relative to the plan root
        assert load_spec(run["dir"]).run_dir == str(run["dir"])  # and read back as the path, byte for byte
        assert json.loads((run["dir"] / "run_result.json").read_text())["status"] == "success"


def test_local_cv_weird_path_and_no_secret_in_files(tmp_path: Path) -> None:
    art = tmp_path / WEIRD
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **SECRETS}
    ok(cli("cv", *SLEEP, "--launcher", "local", "--n_folds", "2", "--max_epochs", "1", "--hp", "sleep_s=0",
           "--artifact_dir", str(art), "--name", "sec", "--wandb_project", "nestling-secrets", env=env))  # fmt: skip
    root = art / "_cross_validations" / "sec"
    _check_intact(art, root)
    check_tree(root, max_epochs=1, env=env)
    assert list(root.glob("*/wandb/offline-run-*")), "wandb did not run"
    assert grep_tree(art, list(SECRETS.values())) == []


@pytest.mark.cluster
@pytest.mark.slurm_work(FAULTS)
def test_slurm_cv_weird_path_and_no_secret_in_files(slurm_faults: SlurmFaults) -> None:
    """The `driver` scenario (see _slurm_faults): sbatch scripts, submitit logs and pickles, results."""
    s = slurm_faults.driver
    from _reliability import poll

    poll(lambda: s.done(slurm_faults.slurm_env), 240, "the driver scenario to end")
    art = s.art
    assert "\n" in str(art) and "'" in str(art) and '"' in str(art)
    _check_intact(art, s.root)
    launch = s.launch()
    assert launch is not None
    folder = Path(launch["submitit_folder"])
    assert folder.parent == s.root
    launch_dir = Path(launch["launch_dir"])
    scripts = sorted(launch_dir.glob("*.sbatch"))
    assert [p.name for p in scripts] == ["array-0.sbatch", "collect.sbatch"]
    for script in scripts:
        text = script.read_text()
        assert "#SBATCH --output=/dev/null" in text  # no #SBATCH line can hold the newline ...
        assert (
            shlex.quote(f"{folder}/%A_%a_%t_log.out" if "array" in script.name else f"{folder}/%j_%t_log.out")
            in text
        )
    # ... the srun lines hold the paths, quoted
    assert shlex.quote(str(launch_dir / "units.json")) in scripts[0].read_text()
    assert shlex.quote(str(s.root)) in scripts[1].read_text()
    assert list(folder.glob("*_log.out")), "no job log in the submitit folder"
    assert list(s.root.glob("*/wandb/offline-run-*")), "wandb did not run"
    assert grep_tree(art, list(SECRETS.values())) == []
