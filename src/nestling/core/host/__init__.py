"""What this process runs on: devices, the SLURM job it is in, SLURM's answers, W&B's reachability."""
