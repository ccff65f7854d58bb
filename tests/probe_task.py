"""A sleep task that writes what its worker process sees into probe.json in its run dir: torch's intra-op threads,
the thread variables, the CPU budget and the umask (issue 21 #2, #3). Workers import it by PYTHONPATH (this dir)."""

from __future__ import annotations

import json
import os
from typing import Any

from nestling.tasks.sleep import SleepTask

VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NESTLING_CPUS", "SLURM_CPUS_PER_TASK")


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class ProbeTask(SleepTask):
    def build_model(self, hparams: dict[str, Any]) -> Any:
        model = super().build_model(hparams)

        def on_fit_start() -> None:
            import torch

            seen = {"threads": torch.get_num_threads(), "umask": umask(), "pid": os.getpid()}
            seen.update({key: os.environ.get(key) for key in VARIABLES})
            with open(os.path.join(model.trainer.default_root_dir, "probe.json"), "w") as f:
                json.dump(seen, f)

        model.on_fit_start = on_fit_start
        return model
