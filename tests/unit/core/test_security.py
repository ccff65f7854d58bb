"""Security rules that need no training: names are validated before they become paths, no shell ever parses a
user value, secrets in the environment never become part of what nestling writes or passes to an image.

End to end (a local and a SLURM cv in a path with spaces, quotes and a newline, a fake WANDB_API_KEY grepped for
in every file of the tree): tests/reliability/test_secrets_and_paths.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import nestling
from nestling.commands.cli import main
from nestling.core.containers.env import plan_env
from nestling.launch.slurm.sbatch import batch_log_params

SRC = Path(nestling.__file__).parent
SLEEP = [
    "--task",
    "sleep",
    "--accelerator",
    "cpu",
    "--n_seeds",
    "1",
    "--max_epochs",
    "1",
    "--launcher",
    "local",
]
SECRETS = {
    "WANDB_API_KEY": "fake-secret-123",
    "MY_TOKEN": "tok-secret-456",
    "AWS_SECRET_ACCESS_KEY": "aws-789",
}


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_shell_anywhere() -> None:
    """`shell=True`, os.system and os.popen would let a path or name be parsed by a shell."""
    offenders = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in _sources()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(", line)
    ]
    assert offenders == []


@pytest.mark.parametrize(
    "name",
    [
        "../escape",
        "a/b",
        "/abs",
        "..",
        "x\ny",
        "x;rm -rf y",
        "$(id)",
        "`id`",
        "a b",
        "_cross_validations",
        "-rf",
    ],
)
@pytest.mark.parametrize("flag", ["--name", "--resume"])
def test_names_are_validated_before_any_path(
    name: str, flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    art = tmp_path / "art"
    assert main(["cv", *SLEEP, flag, name, "--artifact_dir", str(art)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and repr(name) in err[0], err
    assert not art.exists()
    assert not (tmp_path / "escape").exists()


def test_secrets_are_not_passed_into_images() -> None:
    """Only allow-listed variables enter a container; a key the user wants inside is named with --container_env
    KEY, and then goes by name only (the runtime's own environment, never its command line)."""
    env = {**SECRETS, "SLURM_JOB_ID": "7", "WANDB_MODE": "offline"}
    plan = plan_env(env, [])
    assert (plan.literal, plan.by_name) == ({"SLURM_JOB_ID": "7", "WANDB_MODE": "offline"}, {})
    asked = plan_env(env, [("WANDB_API_KEY", None)])
    assert asked.by_name == {"WANDB_API_KEY": "fake-secret-123"} and "WANDB_API_KEY" not in asked.literal


def test_plan_files_hold_no_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """plan.json (and its copy), splits.json and run_specs.jsonl are made from options only, never from the environment."""
    from nestling.core.options.config import parse_config
    from nestling.plan.preflight import prepare
    from nestling.plan.store import write_plan

    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    args = [*SLEEP, "--n_folds", "2", "--artifact_dir", str(tmp_path), "--name", "p", "--wandb_project", "x"]
    prepared = prepare(parse_config(args), "cv")
    write_plan(prepared.plan, prepared.splits)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == ["plan.copy.json", "plan.json", "run_specs.jsonl", "splits.json"]
    for path in files:
        data = path.read_bytes()
        assert not any(v.encode() in data for v in SECRETS.values()), path
        for doc in data.splitlines() if path.suffix == ".jsonl" else [data]:
            json.loads(doc)


def test_sbatch_lines_never_hold_a_line_break(tmp_path: Path) -> None:
    """#SBATCH --output/--error cannot carry a path with a newline: the batch shell's own output goes to
    /dev/null then, and the task's output still reaches the folder through srun's quoted --output."""
    assert batch_log_params(tmp_path / "plain dir 'q'") == {}
    assert batch_log_params(tmp_path / "new\nline") == {"output": "/dev/null", "error": "/dev/null"}


@pytest.mark.parametrize("runtime", ["apptainer", "singularity", "docker", "podman"])
@pytest.mark.parametrize("job_task", [False, True])
def test_no_secret_in_the_container_command(runtime: str, job_task: bool) -> None:
    """The argv that starts a worker in an image (visible in the process list of the node) holds no secret: the
    W&B key stays on the host, so a run inside an image logs offline (auto) and is uploaded by `nestling sync`.
    WANDB_MODE, the user's choice of mode, does pass."""
    from nestling.core.containers.spec import ContainerSpec

    spec = ContainerSpec(image="img.sif" if runtime in ("apptainer", "singularity") else "img:1", runtime=runtime,
                         auto_binds=("/art",), python="python3")  # fmt: skip
    environ = {**SECRETS, "SLURM_JOB_ID": "7", "SLURM_JOB_GPUS": "0", "WANDB_MODE": "offline", "PATH": "/bin"}
    argv = spec.wrap(["/usr/bin/python3", "-m", "nestling.worker", "--serve"], environ=environ, gpus=["0"],
                     job_task=job_task).argv  # fmt: skip
    joined = "\0".join(argv)
    assert not [k for k, v in SECRETS.items() if v in joined or k in joined], argv
    assert "WANDB_MODE=offline" in joined


@pytest.mark.parametrize("container", [False, True])
def test_slurm_dry_run_scripts_hold_no_secret(
    container: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `--launcher slurm` writes (sbatch scripts, units.json) and prints, with secrets in the environment;
    the local and submitit-local launchers end to end: tests/e2e/test_tracking_offline.py."""
    import shutil

    from nestling.core.containers import spec as container_mod

    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(container_mod, "resolve_runtime", lambda image, runtime, which=None: runtime)
    real = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda n, *a, **k: None if n in ("sinfo", "scontrol", "squeue") else real(n, *a, **k)
    )
    monkeypatch.chdir(tmp_path)
    image = ["--container_image", "localhost/img:1", "--container_runtime", "podman"] if container else []
    args = ["cv", "--task", "sleep", "--n_folds", "2", "--n_seeds", "1", "--artifact_dir", "art", "--name", "s",
            "--launcher", "slurm", "--dry_run", "--wandb_project", "p", *image]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    written = [p for p in (tmp_path / "art").rglob("*") if p.is_file()]
    assert any(p.suffix == ".sbatch" for p in written) and "sbatch" in out
    for text in [out, *(p.read_text() for p in written)]:
        assert not [k for k, v in SECRETS.items() if v in text or k in text]


def test_a_secret_passed_by_name_is_named_and_never_valued_in_a_dry_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--container_env WANDB_API_KEY (by name): the dry run's example command names it, units.json names it, the
    value appears nowhere; the value on the command line is refused with one line, exit 2, nothing written."""
    import shutil

    from nestling.core.containers import spec as container_mod

    monkeypatch.setenv("WANDB_API_KEY", SECRETS["WANDB_API_KEY"])
    monkeypatch.setattr(container_mod, "resolve_runtime", lambda image, runtime, which=None: runtime)
    real = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda n, *a, **k: None if n in ("sinfo", "scontrol", "squeue") else real(n, *a, **k)
    )
    monkeypatch.chdir(tmp_path)
    args = ["cv", "--task", "sleep", "--n_folds", "2", "--n_seeds", "1", "--artifact_dir", "art", "--name", "s",
            "--launcher", "slurm", "--dry_run", "--container_image", "localhost/img:1", "--container_runtime",
            "podman", "--container_env"]  # fmt: skip
    assert main([*args, "WANDB_API_KEY"]) == 0
    out = capsys.readouterr().out
    units = (tmp_path / "art" / "_dry_run" / "s" / "units.json").read_text()
    assert " -e WANDB_API_KEY " in out and '"WANDB_API_KEY"' in units
    for text in [out, *(p.read_text() for p in (tmp_path / "art").rglob("*") if p.is_file())]:
        assert SECRETS["WANDB_API_KEY"] not in text
    shutil.rmtree(tmp_path / "art")
    assert main([*args, f"WANDB_API_KEY={SECRETS['WANDB_API_KEY']}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--container_env WANDB_API_KEY" in err[0] and SECRETS["WANDB_API_KEY"] not in err[0]
    assert not (tmp_path / "art").exists()
