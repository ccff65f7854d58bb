"""Executing: what runs inside a worker process or a SLURM array task."""
