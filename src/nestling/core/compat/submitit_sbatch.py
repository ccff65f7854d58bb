"""The one place that calls submitit's private sbatch template."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


def submitit_sbatch_text(**kwargs: Any) -> str:
    """The one place that calls submitit's private sbatch template (`submitit.slurm.slurm._make_sbatch_string`).

    Checked against submitit 1.5.4 (its keyword parameters: command, folder, job_name, partition, time, nodes,
    ntasks_per_node, cpus_per_task, gres, mem, signal_delay_s, map_count, array_parallelism, wckey, setup,
    additional_parameters, ...). tests/unit/launch/test_golden_sbatch.py pins its output byte for byte, so a submitit
    upgrade that changes it fails there first.
    """
    from submitit.slurm.slurm import _make_sbatch_string

    text: str = _make_sbatch_string(**kwargs)
    return text
