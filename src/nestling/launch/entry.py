"""Functions that submitit pickles into jobs: run a work unit, or collect a plan. Kept tiny and importable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_unit(run_dirs: list[str], container: dict[str, Any] | None = None) -> dict[str, int]:
    """Run the unit's runs in series in this process (torch imported once), or in one container process."""
    if container is not None:
        from nestling.container import ContainerOptions, wrap_command

        gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g] or None
        opts = ContainerOptions(**container["options"])
        env = {k: v for k, v in os.environ.items() if k.startswith("SLURM") or k.startswith("WANDB_MODE")}
        env.update(container.get("env", {}))
        cmd = wrap_command(
            [container.get("python", sys.executable), "-m", "nestling.worker", *run_dirs],
            opts,
            runtime=container["runtime"],
            gpus=gpus,
            auto_binds=[Path(p) for p in container["auto_binds"]],
            env=env,
        )
        rc = subprocess.run(cmd, check=False).returncode
        return {"returncode": rc}
    from nestling.worker import run_dirs as run_all

    results = run_all(run_dirs)
    return {"success": sum(r.get("status") == "success" for r in results), "runs": len(results)}


def collect_plan(root: str) -> dict[str, int]:
    from nestling.collect import collect

    return collect(Path(root)).counts
