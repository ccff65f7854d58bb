"""sbatch scripts (submitit's template, through core/compat/submitit_sbatch.py) and their submission."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.core.compat.submitit_sbatch import submitit_sbatch_text
from nestling.launch.base import SubmitError

if TYPE_CHECKING:
    pass


def batch_log_params(folder: Path) -> dict[str, str]:
    """`#SBATCH --output/--error` for a submitit folder whose path holds a line break, which no #SBATCH line can.

    The batch shell's own output then goes to /dev/null; everything the task prints still reaches the folder,
    through srun's --output/--error in the script's body, where the path is shell-quoted and may hold anything.
    """
    if "\n" in str(folder) or "\r" in str(folder):
        return {"output": "/dev/null", "error": "/dev/null"}
    return {}


def render_script(folder: Path, python_args: list[str], params: dict[str, Any]) -> str:
    """An sbatch script from submitit's template: `srun python -u ARGS`, logs in `folder` (see batch_log_params)."""
    params = {
        **params,
        "additional_parameters": {**batch_log_params(folder), **params["additional_parameters"]},
    }
    command = shlex.join([sys.executable, "-u", *python_args])
    return submitit_sbatch_text(command=command, folder=folder, wckey="nestling", **params)


def sbatch(script: Path) -> str:
    """Submit one script; its job id. SubmitError with sbatch's own words when it refuses."""
    try:
        done = subprocess.run(
            ["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SubmitError(f"sbatch {script.name}: {exc}") from None
    job_id = done.stdout.strip().split(";")[0]
    if done.returncode != 0 or not job_id.isdigit():
        words = " ".join((done.stderr or done.stdout).split())[:500]
        raise SubmitError(f"sbatch {script.name} failed: {words or f'exit code {done.returncode}'}")
    return job_id
