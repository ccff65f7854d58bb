"""Issue 21 #2 and #3 through the real CLI and real workers: each worker's thread pools follow its CPU budget (a
variable the user set stays), and every file of the tree (plan, specs, results, parquet, report.html, its PNGs,
Lightning's checkpoints and logs) has the mode the user's umask gives. The SLURM array task:
tests/cluster/test_worker_threads_slurm.py; a worker in an image: tests/integration/test_container_launchers.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from nestling.core.host import worker_limits

pytestmark = pytest.mark.e2e

TESTS = Path(__file__).resolve().parents[1]  # probe_task.py
CV = ["cv", "--task", "probe_task:ProbeTask", "--hp", "sleep_s=0", "--max_epochs", "1", "--n_seeds", "1",
      "--n_folds", "2", "--accelerator", "cpu", "--quiet"]  # fmt: skip


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """The umask the CLI below inherits, as a user's shell would give it."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def run_cli(*args: str, **env_changes: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in worker_limits.THREAD_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH")) if p)
    env.update({k: v for k, v in env_changes.items() if v is not None})
    return subprocess.run([sys.executable, "-m", "nestling.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)  # fmt: skip


def probes(cv: Path) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in sorted(cv.glob("*/probe.json"))]
    assert len(found) == 2, list(cv.iterdir())
    return found


def modes(root: Path) -> dict[str, set[str]]:
    """Every path below root by its mode: {"0o640": {...}, ...} (the probe's own file aside: the test writes it)."""
    out: dict[str, set[str]] = {}
    for path in [root, *root.rglob("*")]:
        if path.name != "probe.json":
            out.setdefault(oct(stat.S_IMODE(path.stat().st_mode)), set()).add(str(path.relative_to(root)))
    return out


def test_local_workers_size_their_threads_and_keep_the_umask(tmp_path: Path) -> None:
    """Two local workers on this machine: each gets half its CPUs; OPENBLAS_NUM_THREADS, set by the user, stays."""
    with umask(0o027):
        done = run_cli(*CV, "--strategy", "cv-parallel", "--devices", "2", "--test_split", "random",
                       "--artifact_dir", str(tmp_path), "--name", "limits", OPENBLAS_NUM_THREADS="7")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    cv = tmp_path / "_cross_validations" / "limits"
    with umask(0o027):
        assert run_cli("report", str(cv)).returncode == 0  # and the PNGs
    share = worker_limits.share(2)
    for seen in probes(cv):
        assert seen["threads"] == share
        assert (seen["OMP_NUM_THREADS"], seen["MKL_NUM_THREADS"]) == (str(share), str(share))
        assert seen["OPENBLAS_NUM_THREADS"] == "7"
        assert seen["umask"] == 0o027
    written = modes(cv)
    for name in ("plan.json", "run_specs.jsonl", "splits.json", "launch.json", "run_infos.parquet", "report.html"):
        assert name in written["0o640"], name
    assert any(p.endswith(".png") for p in written["0o640"]) and any(p.endswith(".ckpt") for p in written["0o640"])
    assert any(p.endswith("run_result.json") for p in written["0o640"])
    # the code snapshot (issue 24) is read-only, readable as the rest of the tree: 0444 / 0555 under the umask
    read_only = written.pop("0o440", set()) | written.pop("0o550", set())
    assert read_only and all(p.startswith("_code/") for p in read_only), sorted(read_only)[:5]
    assert set(written) == {"0o640", "0o750"}, {m: sorted(p)[:5] for m, p in written.items() if m not in ("0o640",)}
    assert all((cv / p).is_dir() for p in written["0o750"])


def test_submitit_local_jobs_get_their_cpus_and_the_user_s_omp_setting(tmp_path: Path) -> None:
    """submitit-local: two jobs at once, each with at most --cpus_per_task CPUs; the user's OMP_NUM_THREADS=3 decides
    torch's threads, the variables the user left unset follow the budget."""
    done = run_cli(*CV, "--launcher", "submitit-local", "--strategy", "cv-parallel", "--cpus_per_task", "1",
                   "--artifact_dir", str(tmp_path), "--name", "sub", OMP_NUM_THREADS="3")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for seen in probes(tmp_path / "_cross_validations" / "sub"):
        assert (seen["threads"], seen["OMP_NUM_THREADS"]) == (3, "3")
        assert (seen["NESTLING_CPUS"], seen["MKL_NUM_THREADS"], seen["OPENBLAS_NUM_THREADS"]) == ("1", "1", "1")
