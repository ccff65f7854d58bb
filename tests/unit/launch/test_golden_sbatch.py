"""Golden sbatch scripts: what `--launcher slurm --dry_run` writes and prints, compared byte for byte.

Three plans: a cv-parallel cv split over two arrays (--max_array_size 4), a multi-node DDP run (one plain job, two
nodes x two tasks) and a containerised cv-parallel array (podman, a fake image reference: the dry run never pulls
or inspects it). Paths that differ between machines are normalised before the comparison: the temporary working
dir -> <TMP>, the Python executable -> <PYTHON>, the repository -> <REPO>. No cluster is needed: --max_array_size
is given, and sinfo/scontrol are hidden so the host's SLURM (if any) cannot change the output.

When a change to the scripts is intended, regenerate the files under tests/golden/sbatch/ and review the diff:

    NESTLING_REGEN_GOLDEN=1 pytest tests/unit/launch/test_golden_sbatch.py
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from nestling.commands.cli import main
from nestling.core.containers import oci, runtimes
from nestling.core.containers import spec as container

REPO = Path(__file__).resolve().parents[3]
GOLDEN = REPO / "tests" / "golden" / "sbatch"
REGEN = os.environ.get("NESTLING_REGEN_GOLDEN") == "1"

COMMON = ["--task", "sleep", "--artifact_dir", "art", "--name", "gold", "--launcher", "slurm", "--dry_run"]
CASES = {
    "cv-parallel-array": [
        "cv", *COMMON, "--n_folds", "3", "--n_seeds", "2", "--strategy", "cv-parallel", "--accelerator", "gpu",
        "--max_array_size", "4", "--partition", "gpu", "--array_parallelism", "3", "--time_min", "30",
    ],
    "multi-node-run": [
        "run", *COMMON, "--accelerator", "gpu", "--strategy", "ddp", "--devices", "2", "--num_nodes", "2",
        "--max_array_size", "4", "--account", "proj", "--slurm_extra", "reservation=week",
    ],
    "container-array": [
        "cv", *COMMON, "--n_folds", "3", "--n_seeds", "1", "--strategy", "cv-parallel", "--accelerator", "gpu",
        "--max_array_size", "8", "--container_image", "localhost/nestling-fake:latest", "--container_runtime",
        "podman", "--container_env", "WANDB_MODE=offline",
    ],
}  # fmt: skip


@pytest.fixture(autouse=True)
def _host_independent(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SLURM controller, the container runtime 'installed', root, no CDI spec: the host cannot leak in."""
    monkeypatch.setattr(container, "resolve_runtime", lambda image, runtime, which=None: runtime)
    monkeypatch.setattr(runtimes, "host_user", lambda: (0, 0))
    monkeypatch.setattr(oci, "nvidia_cdi_present", lambda: False)
    real = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda n, *a, **k: None if n in ("sinfo", "scontrol", "squeue") else real(n, *a, **k)
    )


def normalise(text: str, tmp: Path) -> str:
    for path, token in ((sys.executable, "<PYTHON>"), (str(tmp), "<TMP>"), (str(REPO), "<REPO>")):
        text = text.replace(path, token)
    return text


def dry_run(case: str, tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """The normalised files of one dry run: every sbatch script it wrote, and what it printed (stdout.txt)."""
    monkeypatch.chdir(tmp)
    assert main(CASES[case]) == 0
    files = {"stdout.txt": capsys.readouterr().out}
    for script in sorted((tmp / "art" / "_dry_run" / "gold").glob("*.sbatch")):
        files[script.name] = script.read_text()
    return {name: normalise(text, tmp) for name, text in files.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sbatch_scripts_match_golden(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp = tmp_path.resolve()
    got = dry_run(case, tmp, monkeypatch, capsys)
    folder = GOLDEN / case
    if REGEN:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name, text in got.items():
            (folder / name).write_text(text)
    expected = {p.name: p.read_text() for p in sorted(folder.iterdir())} if folder.is_dir() else {}
    assert sorted(got) == sorted(expected), f"regenerate with NESTLING_REGEN_GOLDEN=1 (see {__name__})"
    for name in expected:
        assert got[name] == expected[name], f"{case}/{name} differs from the golden file"
    assert all(str(tmp) not in text and sys.executable not in text for text in got.values())


def test_golden_cases_cover_arrays_nodes_and_images() -> None:
    """The goldens hold what they claim: two arrays, a two-node job, a worker in an image."""
    array0 = (GOLDEN / "cv-parallel-array" / "dry-run-array-0.sbatch").read_text()
    array1 = (GOLDEN / "cv-parallel-array" / "dry-run-array-1.sbatch").read_text()
    assert "#SBATCH --array=0-3%3" in array0 and "#SBATCH --array=0-1%2" in array1
    assert array1.endswith("-m nestling.array_task <TMP>/art/_dry_run/gold/units.json 4\n")
    multi = (GOLDEN / "multi-node-run" / "dry-run-array-0.sbatch").read_text()
    assert "#SBATCH --nodes=2\n" in multi and "#SBATCH --ntasks-per-node=2\n" in multi
    assert "#SBATCH --array" not in multi and "#SBATCH --reservation=week\n" in multi
    image = (GOLDEN / "container-array" / "stdout.txt").read_text()
    assert "podman run" in image and "localhost/nestling-fake:latest python -m nestling.worker --serve" in image
