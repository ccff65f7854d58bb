"""The SLURM launcher: job arrays from sbatch scripts, resources checked against sinfo, jobs SLURM will never start."""
