"""Preflight: every bad input is refused before anything exists — exit 2, one stderr line naming the value and
the fix, no directory created, nothing submitted.

Each case runs `nestling.commands.cli.main` in-process (as the console script does) against an artifact dir that must stay
absent, or, for the cases about an existing plan, byte-for-byte unchanged. SLURM options go through the slurm
launcher's checks with --dry_run (which submits nothing even when the input is good); the partition and GRES
cases ask the real local cluster's sinfo and are marked `cluster`.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from nestling.commands.cli import main

SLEEP = ["--task", "sleep", "--accelerator", "cpu", "--n_seeds", "1", "--max_epochs", "1", "--quiet"]
LOCAL = [*SLEEP, "--launcher", "local"]
DRY_SLURM = [*SLEEP, "--launcher", "slurm", "--dry_run"]


@dataclass(frozen=True)
class Bad:
    """argv (ART is replaced by the artifact dir, FILES by the folder of helper files), the value the error must
    name, and a piece of the fix it must give."""

    argv: list[str]
    value: str
    fix: str
    needs_tree: bool = False  # the case is about an existing cv named "there"


def _files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "typo.toml").write_text("max_epoch = 3\n")
    (folder / "type.toml").write_text('max_epochs = "ten"\n')
    (folder / "gauss.toml").write_text(
        '[hyperparameters]\nlr = { distribution = "gaussian", low = 0.1, high = 1.0 }\n'
    )
    (folder / "lowhigh.toml").write_text(
        '[hyperparameters]\nlr = { distribution = "uniform", low = 1.0, high = 0.1 }\n'
    )
    (folder / "unknown.toml").write_text("[hyperparameters]\nmomentum = [0.9, 0.99]\n")
    (folder / "value.toml").write_text("[hyperparameters]\nvalue = [0.4, 0.6]\n")


CASES: dict[str, Bad] = {
    # config keys and types
    "unknown flag": Bad(["cv", *LOCAL, "--max_epoch", "3"], "--max_epoch", "did you mean '--max_epochs'"),
    "unknown config key": Bad(["cv", *LOCAL, "--config", "FILES/typo.toml"], "max_epoch", "did you mean"),
    "config value type": Bad(["cv", *LOCAL, "--config", "FILES/type.toml"], "'ten'", "must be of type int"),
    "flag value type": Bad(["cv", *LOCAL, "--max_epochs", "ten"], "'ten'", "see --help"),
    "zero epochs": Bad(["cv", *LOCAL, "--max_epochs", "0"], "--max_epochs 0", "at least 1"),
    "missing config file": Bad(["cv", *LOCAL, "--config", "FILES/nope.toml"], "nope.toml", "pass the path"),
    "unknown launcher": Bad(["cv", *SLEEP, "--launcher", "pbs"], "'pbs'", "local, submitit-local, slurm"),
    "repeated seed": Bad(["cv", *LOCAL, "--seeds", "1", "1"], "--seeds 1 1", "distinct seeds"),
    "unknown score strategy": Bad(["cv", *LOCAL, "--multi_score_strategy", "median"], "median", "geometric"),
    # task import
    "task module": Bad(["cv", *LOCAL, "--task", "no_such_module:Task"], "no_such_module", "installed"),
    "task attribute": Bad(
        ["cv", *LOCAL, "--task", "nestling.tasks.sleep:Nope"], "Nope", "nestling.tasks.sleep"
    ),
    "task not module:attr": Bad(["cv", *LOCAL, "--task", "sleepy"], "'sleepy'", "e.g. --task"),
    # hyperparameters and their space
    "unknown --hp key": Bad(["cv", *LOCAL, "--hp", "nope=1"], "'nope'", "accepted: fail_if_val_contains, lr"),
    "--hp without =": Bad(["cv", *LOCAL, "--hp", "lr"], "'lr'", "KEY=VALUE"),
    "bad distribution": Bad(["tune", *LOCAL, "--hpconfig", "FILES/gauss.toml"], "gaussian", "uniform"),
    "low >= high": Bad(["tune", *LOCAL, "--hpconfig", "FILES/lowhigh.toml"], "low = 1.0", "swap"),
    "unknown space key": Bad(["tune", *LOCAL, "--hpconfig", "FILES/unknown.toml"], "momentum", "lr"),
    "tune without space": Bad(["tune", *LOCAL], "--hpconfig", "[hyperparameters]"),
    "fixed and sampled": Bad(
        ["tune", *LOCAL, "--hpconfig", "FILES/value.toml", "--hp", "value=0.5"], "'value'", "remove one"
    ),
    "fixed and sampled from the config file": Bad(
        ["tune", *LOCAL, "--config", "FILES/value.toml", "--hp", "value=0.5"],
        "'value'",
        "sampled ([hyperparameters] in --config",
    ),
    "unknown sampler": Bad(
        ["tune", *LOCAL, "--hpconfig", "FILES/value.toml", "--sampler", "bayes"], "bayes", "random"
    ),
    # fold feasibility
    "more folds than regions": Bad(
        ["cv", *LOCAL, "--fold_method", "region", "--n_folds", "5"], "--n_folds 5", "--n_folds 4 or fewer"
    ),
    "stratified fold without both labels": Bad(
        ["cv", *LOCAL, "--fold_method", "region-stratified", "--n_folds", "4"], "4", "fewer"
    ),
    "more folds than a label's samples": Bad(
        ["cv", *LOCAL, "--fold_method", "stratified", "--n_folds", "25"],
        "--n_folds 25",
        "--n_folds 20 or fewer",
    ),
    "unknown fold method": Bad(["cv", *LOCAL, "--fold_method", "bogus"], "'bogus'", "kfold"),
    "region test split without regions": Bad(
        ["cv", *LOCAL, "--test_split", "region"], "--test_split region", "--test_regions"
    ),
    "test fraction": Bad(
        ["cv", *LOCAL, "--test_split", "random", "--test_fraction", "1.5"], "1.5", "--test_fraction 0.2"
    ),
    "fold that does not exist": Bad(["run", *LOCAL, "--n_folds", "3", "--fold", "7"], "--fold 7", "0..2"),
    # devices and strategies
    "unknown accelerator": Bad(
        ["cv", *SLEEP, "--launcher", "local", "--accelerator", "quantum"], "'quantum'", "cpu"
    ),
    "bad devices": Bad(["cv", *LOCAL, "--devices", "x"], "'x'", "auto"),
    "multi-node without slurm": Bad(
        ["run", *LOCAL, "--num_nodes", "2", "--strategy", "ddp", "--devices", "2"],
        "--num_nodes 2",
        "--launcher slurm",
    ),
    "multi-node cv on slurm": Bad(
        ["cv", *DRY_SLURM, "--num_nodes", "2", "--strategy", "ddp", "--devices", "2"],
        "--num_nodes 2",
        "nestling run",
    ),
    "multi-node tune on slurm": Bad(
        ["tune", *DRY_SLURM, "--hpconfig", "FILES/value.toml", "--num_nodes", "2", "--devices", "2"],
        "--num_nodes 2",
        "--num_nodes 1",
    ),
    "device list on several nodes": Bad(
        ["run", *DRY_SLURM, "--num_nodes", "2", "--strategy", "ddp", "--devices", "0", "1"],
        "--devices 0 1",
        "--devices 2",
    ),
    "non-DDP strategy on several nodes": Bad(
        ["run", *DRY_SLURM, "--num_nodes", "2", "--strategy", "single_device", "--devices", "2"],
        "'single_device'",
        "--strategy ddp",
    ),
    "cv-parallel on several nodes": Bad(
        ["cv", *DRY_SLURM, "--strategy", "cv-parallel", "--num_nodes", "2"], "--num_nodes 2", "--num_nodes 1"
    ),
    "tune-parallel for a cv": Bad(
        ["cv", *LOCAL, "--strategy", "tune-parallel"], "tune-parallel", "--strategy cv-parallel"
    ),
    "cv-parallel for one run": Bad(["run", *LOCAL, "--strategy", "cv-parallel"], "cv-parallel", "e.g. ddp"),
    # container image and runtime
    "missing .sif": Bad(["cv", *LOCAL, "--container_image", "FILES/missing.sif"], "missing.sif", "build it"),
    "unknown runtime": Bad(
        ["cv", *LOCAL, "--container_image", "img:1", "--container_runtime", "rkt"],
        "'rkt'",
        "--container_runtime auto",
    ),
    "sif with docker": Bad(
        ["cv", *LOCAL, "--container_image", "FILES/typo.toml.sif", "--container_runtime", "docker"],
        ".sif",
        "apptainer",
    ),
    # time limits and arrays
    "zero time limit": Bad(["cv", *DRY_SLURM, "--time_min", "0"], "--time_min 0", "at least 1"),
    "signal after the limit": Bad(
        ["cv", *DRY_SLURM, "--time_min", "1", "--signal_delay_s", "60"],
        "--signal_delay_s 60",
        "--signal_delay_s 90 with --time_min 60",
    ),
    "zero signal delay": Bad(
        ["cv", *DRY_SLURM, "--signal_delay_s", "0"], "--signal_delay_s 0", "between 0 and"
    ),
    "zero array size": Bad(["cv", *DRY_SLURM, "--max_array_size", "0"], "--max_array_size 0", "at least 1"),
    "zero array parallelism": Bad(
        ["cv", *DRY_SLURM, "--array_parallelism", "0"], "--array_parallelism 0", "at least 1"
    ),
    "zero memory": Bad(["cv", *DRY_SLURM, "--mem_gb", "0"], "--mem_gb 0", "positive"),
    "zero memory on resume": Bad(
        ["cv", *DRY_SLURM, "--resume", "there", "--mem_gb", "0"], "--mem_gb 0", "positive", needs_tree=True
    ),
    "zero cpus": Bad(["cv", *DRY_SLURM, "--cpus_per_task", "0"], "--cpus_per_task 0", "at least 1"),
    "sbatch option without value": Bad(
        ["cv", *DRY_SLURM, "--slurm_extra", "novalue"], "'novalue'", "KEY=VALUE"
    ),
    # names
    "name with a slash": Bad(["cv", *LOCAL, "--name", "a/b"], "'a/b'", "--name my-tune-1"),
    "name with a newline": Bad(["cv", *LOCAL, "--name", "x\ny"], "'x\\ny'", "letters, digits"),
    "reserved name": Bad(["cv", *LOCAL, "--name", "_x"], "'_x'", "--name x"),
    "existing name": Bad(["cv", *LOCAL, "--name", "there"], "'there'", "--resume there", needs_tree=True),
    # resume
    "resume of a missing name": Bad(["cv", *LOCAL, "--resume", "ghost"], "'ghost'", "--artifact_dir"),
    "resume with changed options": Bad(
        ["cv", *LOCAL, "--resume", "there", "--max_epochs", "5"],
        "--max_epochs 1 -> 5",
        "--force",
        needs_tree=True,
    ),
    "resume of a run": Bad(["run", *LOCAL, "--resume", "there"], "--resume", "nestling cv", needs_tree=True),
}


@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact dir holding a cv named "there" (planned, never trained)."""
    from nestling.core.options.config import parse_config
    from nestling.plan.preflight import prepare
    from nestling.plan.store import write_plan

    art = tmp_path_factory.mktemp("existing") / "art"
    prepared = prepare(
        parse_config([*LOCAL, "--n_folds", "2", "--artifact_dir", str(art), "--name", "there"]), "cv"
    )
    write_plan(prepared.plan, prepared.splits)
    return art


def _tree(art: Path) -> dict[str, tuple[int, bytes]]:
    out = {}
    for dirpath, dirs, files in os.walk(art):
        for name in [*dirs, *files]:
            path = Path(dirpath) / name
            out[str(path.relative_to(art))] = (
                path.stat().st_mtime_ns,
                b"" if path.is_dir() else path.read_bytes(),
            )
    return out


def _argv(case: Bad, art: Path, files: Path) -> list[str]:
    return [a.replace("FILES", str(files)) for a in case.argv] + ["--artifact_dir", str(art)]


def _queued_as(name: str) -> list[str]:
    """Names of the jobs in the queue that a plan named `name` would submit (other tests' work runs meanwhile)."""
    out = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True, timeout=20, check=True).stdout
    return [job for job in out.split() if job == f"nestling-{name}" or job.startswith(f"nestling-{name}-")]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, tmp_path: Path, existing: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[name]
    files = tmp_path / "files"
    _files(files)
    art = existing if case.needs_tree else tmp_path / "art"
    before = _tree(art) if case.needs_tree else None
    assert main(_argv(case, art, files)) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    line = lines[0]
    assert line.startswith("nestling: error: "), line
    assert case.value in line, f"the error does not name {case.value!r}: {line}"
    assert case.fix in line, f"the error does not give the fix {case.fix!r}: {line}"
    if case.needs_tree:
        assert _tree(art) == before  # the existing plan is untouched
    else:
        assert not art.exists() or not any(art.iterdir()), list(art.rglob("*"))


def test_cases_are_distinct_and_enough() -> None:
    assert len(CASES) >= 25
    assert len({tuple(c.argv) for c in CASES.values()}) == len(CASES)


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("flags", "value", "fix"),
    [
        (["--partition", "nope"], "'nope'", "partitions: debug"),
        (["--accelerator", "gpu", "--gpus_per_task", "9"], "--gpus_per_task 9", "ask for fewer GPUs"),
    ],
)
def test_bad_partition_and_gres(
    slurm_cluster: str,
    tmp_path: Path,
    flags: list[str],
    value: str,
    fix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Partition and GRES are checked against the cluster's sinfo; nothing is submitted, nothing created."""
    art = tmp_path / "art"
    assert main(["cv", *SLEEP, "--launcher", "slurm", *flags, "--artifact_dir", str(art), "--name", "refused"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and value in lines[0] and fix in lines[0], lines
    assert not art.exists()
    assert _queued_as("refused") == []
