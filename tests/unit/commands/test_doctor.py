"""`nestling doctor`: one line per check, the fix under each problem, exit 0 / 1 / 2 (no runtime, no cluster)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from nestling.commands.doctor import doctor_main
from nestling.core.errors import UsageError

SINFO = "debug*|4|16384|gpu:2|2|infinite|idle|node[1-2]\n"  # `sinfo -h -o %P|%c|%m|%G|%D|%l|%t|%N`
SLEEP = ["--task", "sleep", "--accelerator", "cpu", "--n_folds", "2", "--n_seeds", "1"]


def which(*installed: str) -> Callable[[str], str | None]:
    return lambda name: f"/usr/bin/{name}" if name in installed else None


def runner(answers: dict[str, tuple[int, str]]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """A fake subprocess.run: the first word(s) of argv select (returncode, stdout); unknown commands fail."""

    def run(argv: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        for prefix, (rc, out) in answers.items():
            if " ".join(argv).startswith(prefix):
                return subprocess.CompletedProcess(
                    argv, rc, out, "" if rc == 0 else f"{argv[0]}: error: down"
                )
        return subprocess.CompletedProcess(argv, 1, "", f"{argv[0]}: not expected")

    return run


def doctor(argv: list[str], capsys: pytest.CaptureFixture[str], **kw: object) -> tuple[int, str]:
    rc = doctor_main(argv, **kw)  # type: ignore[arg-type]
    return rc, capsys.readouterr().out


def rows(out: str, name: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(name + " ")]


def test_plain_local_config_is_all_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = doctor([*SLEEP, "--artifact_dir", str(tmp_path / "art")], capsys, which=which())
    assert rc == 0, out
    for name in ("task", "task metadata", "cv plan", "artifact dir"):
        assert " ok " in rows(out, name)[0], out
    assert "problem" not in out
    assert "container" not in out and "slurm" not in out  # nothing asked for, nothing probed
    assert "doctor: all 4 checks ok" in out


def test_missing_image_is_a_problem_with_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = runner({"podman --version": (0, "podman version 4.3.1\n"), "podman image exists": (1, "")})
    argv = [*SLEEP, "--artifact_dir", str(tmp_path), "--container_image", "localhost/nope:1",
            "--container_runtime", "podman", "--container_bind", f"{tmp_path}:/in:ro"]  # fmt: skip
    rc, out = doctor(argv, capsys, which=which("podman"), run=run)
    assert rc == 1, out
    assert "podman version 4.3.1" in rows(out, "container runtime")[0]
    assert " problem " in rows(out, "container image")[0]
    assert "fix: podman pull localhost/nope:1, or build it: podman build -f containers/Dockerfile" in out
    assert " ok " in rows(out, "container bind")[0]
    assert str(tmp_path) in rows(out, "auto binds")[0]
    assert "python (the image's python)" in rows(out, "worker python")[0]
    # the worker starts in a dir the image has (podman refuses any other): here the artifact dir
    assert f"{tmp_path} (this dir is not bound into the image)" in rows(out, "worker dir")[0]
    assert "doctor: 1 problem(s): container image" in out


def test_image_present_missing_bind_and_sif(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = runner({"podman --version": (0, "podman version 4.3.1\n"), "podman image exists": (0, "")})
    argv = [*SLEEP, "--artifact_dir", str(tmp_path), "--container_image", "img:1",
            "--container_bind", "/nonexistent/models:/models:ro"]  # fmt: skip
    rc, out = doctor(argv, capsys, which=which("podman"), run=run)
    assert rc == 1
    assert " ok " in rows(out, "container image")[0]
    assert (
        "/nonexistent/models (from /nonexistent/models:/models:ro) does not exist"
        in rows(out, "container bind")[0]
    )

    sif = str(tmp_path / "missing.sif")
    rc, out = doctor(
        [*SLEEP, "--artifact_dir", str(tmp_path), "--container_image", sif], capsys, which=which()
    )
    assert rc == 1
    assert "neither apptainer nor singularity is installed" in rows(out, "container runtime")[0]
    assert "fix: install apptainer" in out


def test_bad_option_values_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = [*SLEEP, "--artifact_dir", str(tmp_path), "--container_image", "img:1"]
    with pytest.raises(UsageError, match=r"--container_runtime 'dockerish' is not one of auto, apptainer"):
        doctor_main([*base, "--container_runtime", "dockerish"], which=which("podman"))  # refused when parsed
    rc, out = doctor([*base, "--container_env", "NOVALUE"], capsys, which=which("podman"))
    assert rc == 2 and "NOVALUE' is passed by name but is not set here" in out
    rc, out = doctor([*SLEEP, "--artifact_dir", str(tmp_path), "--n_folds", "1"], capsys, which=which())
    assert rc == 2 and "bad option" in rows(out, "cv plan")[0]


def test_slurm_not_answering(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*SLEEP, "--artifact_dir", str(tmp_path), "--strategy", "cv-parallel"]
    rc, out = doctor([*argv, "--launcher", "slurm"], capsys, which=which("sinfo"), run=runner({}))
    assert rc == 1
    assert " problem " in rows(out, "sinfo")[0]
    assert not rows(out, "scontrol")  # a dead controller is one line, not three
    assert "SLURM_CONF" in out
    # the controller answers sinfo but scontrol fails: each failing command is its own problem
    run = runner({"sinfo": (0, SINFO), "squeue": (0, "")})
    rc, out = doctor(
        [*argv, "--launcher", "slurm", "--max_array_size", "8"], capsys, which=which("sinfo"), run=run
    )
    assert rc == 1
    assert " ok " in rows(out, "sinfo")[0] and " problem " in rows(out, "scontrol")[0]
    # with the local launcher SLURM is only a note, and one line of it
    rc, out = doctor([*argv, "--launcher", "local"], capsys, which=which("sinfo"), run=runner({}))
    assert rc == 0, out
    assert len(rows(out, "slurm")) == 1 and " note " in rows(out, "slurm")[0]


def test_slurm_answers_array_size_and_gres(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # nestling.core.host.slurm_query calls subprocess/shutil itself when nothing is injected, so fake them globally for this test
    monkeypatch.setattr(shutil, "which", which("sinfo", "squeue", "scontrol"))
    monkeypatch.setattr(subprocess, "run", runner({
        "sinfo": (0, SINFO), "squeue": (0, "12\n13\n"), "scontrol": (0, "MaxArraySize = 4\n"),
    }))  # fmt: skip
    argv = [*SLEEP, "--n_folds", "5", "--artifact_dir", str(tmp_path), "--strategy", "cv-parallel",
            "--launcher", "slurm"]  # fmt: skip
    rc, out = doctor([*argv, "--gpus_per_task", "1"], capsys)
    assert rc == 0, out
    assert "debug* (gpu:2)" in rows(out, "sinfo")[0]
    assert "2 job(s) queued" in rows(out, "squeue")[0]
    assert "4: at most 4 tasks per array; this cv submits 2 array(s) for up to 5 unit(s)" in out
    assert "(default partition), gpu:1 per task" in rows(out, "partition/GRES")[0]
    rc, out = doctor([*argv, "--gpus_per_task", "3"], capsys)
    assert rc == 1
    assert "exceeds the 2 GPUs per node" in rows(out, "partition/GRES")[0]
    rc, out = doctor([*argv, "--partition", "gpu-long"], capsys)
    assert rc == 1 and "'gpu-long' does not exist" in out


def test_doctor_command_imports_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from nestling.cli import main; "
        f"rc = main(['doctor', *{SLEEP!r}, '--artifact_dir', {str(tmp_path)!r}]); "
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH'); sys.exit(rc)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("NO-TORCH")


def test_every_bad_container_option_is_its_own_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """doctor shows the problems `nestling cv` would refuse (container.option_problems), each as a row."""
    # (a bad --container_runtime is refused when the options are parsed: a Literal choice, see test_config)
    argv = [*SLEEP, "--artifact_dir", str(tmp_path), "--container_image", "img:1",
            "--container_env", "NOVALUE", "--container_bind", "rel:dst", "--container_args", "'x"]  # fmt: skip
    rc, out = doctor(argv, capsys, which=which("podman"))
    assert rc == 2
    options = rows(out, "container option")
    assert len(options) == 2 and "'rel:dst'" in options[0] and "'NOVALUE'" in options[1]
    assert "bad option" in rows(out, "container args")[0]
    rc, out = doctor([*SLEEP, "--artifact_dir", str(tmp_path), "--container_bind", str(tmp_path)], capsys)
    assert rc == 2 and "without an image" in rows(out, "container")[0]


def test_the_image_is_run_once_for_its_python_and_nestling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 26 #9, through the apptainer stand-in: which interpreter answers in the image, whether its nestling
    imports and is this version; a URI image is reported as pulled once at launch."""
    from nestling import __version__
    from nestling.testing import fake_apptainer

    fake_apptainer.install(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    sif = fake_apptainer.make_image(tmp_path / "n.sif", {"python3": sys.executable})
    argv = [*SLEEP, "--artifact_dir", str(tmp_path / "art"), "--container_image", str(sif)]
    rc, out = doctor(argv, capsys)
    assert rc == 0, out
    assert "apptainer version 1.3.4" in rows(out, "container runtime")[0]
    assert "python3 (the image's python)" in rows(out, "worker python")[0]
    assert f"{__version__}, the same as here" in rows(out, "image nestling")[0]

    old = tmp_path / "old-python"
    old.write_text("#!/bin/sh\necho '{\"nestling_version\": \"0.0.9\"}'\n")
    old.chmod(0o755)
    fake_apptainer.make_image(sif, {"python": str(old)})
    rc, out = doctor(argv, capsys)
    assert rc == 1 and f"the image has nestling 0.0.9, this host {__version__}" in rows(out, "image nestling")[0]
    assert f"fix: rebuild the image with nestling=={__version__}" in out

    fake_apptainer.make_image(sif, {})
    rc, out = doctor(argv, capsys)
    assert rc == 1 and "neither python nor python3 runs in" in rows(out, "worker python")[0]

    uri = [*argv[:-1], "docker://registry.example.org/me/nestling:0.2"]  # auto: apptainer, installed
    rc, out = doctor(uri, capsys)
    assert "pulled once when a launch starts" in rows(out, "container image")[0]


def test_the_code_a_launch_would_snapshot_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nestling.testing.code_trees import code_tree

    task = "from nestling.tasks.sleep import SleepTask\n\n\nclass Doc(SleepTask):\n    pass\n"
    repo = code_tree(tmp_path / "repo", {"docpkg/__init__.py": "", "docpkg/task.py": task})
    monkeypatch.syspath_prepend(str(repo))
    argv = ["--task", "docpkg.task:Doc", *SLEEP[2:], "--artifact_dir", str(tmp_path / "art")]
    rc, out = doctor(argv, capsys, which=which())
    assert rc == 0, out
    assert f"{repo} (commit " in rows(out, "code snapshot")[0] and "snapshots 2 files" in rows(out, "code snapshot")[0]
    (repo / "docpkg" / "weights.bin").write_bytes(b"\0" * 300_000)
    rc, out = doctor([*argv, "--snapshot_max_mb", "0.1"], capsys, which=which())
    assert rc == 1 and " problem " in rows(out, "code snapshot")[0] and "docpkg/weights.bin (0.3 MB)" in out
    assert not (tmp_path / "art" / "_code").exists()
