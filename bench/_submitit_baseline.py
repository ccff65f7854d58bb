"""The makespan baseline: what a user would write without nestling, plain submitit `map_array`.

`python -m bench._submitit_baseline N SECONDS OUT_DIR SUBMITIT_DIR`: one array of N tasks on the local cluster, each
requesting one (fake) GPU like nestling's tasks; each task is one Python start that imports torch and lightning,
holds its GPU for SECONDS (time.sleep), and writes OUT_DIR/done-<i> at the end. Prints the array job id and exits
(detached, as `nestling cv --launcher slurm` is).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def hold(i: int, seconds: float, out_dir: str) -> int:
    import lightning  # noqa: F401 - the start-up every training task pays
    import torch  # noqa: F401

    time.sleep(seconds)
    Path(out_dir, f"done-{i}").write_text(str(time.time()))
    return i


def main(n: int, seconds: float, out_dir: str, folder: str) -> None:
    import submitit

    from bench._submitit_baseline import (
        hold as task,  # by reference (not __main__), as a user's module would be
    )

    executor = submitit.SlurmExecutor(folder=folder)
    executor.update_parameters(job_name="bench-submitit", time=60, cpus_per_task=1, mem="1024MB", gres="gpu:1",
                               array_parallelism=64)  # fmt: skip
    jobs = executor.map_array(task, list(range(n)), [seconds] * n, [out_dir] * n)
    print(str(jobs[0].job_id).split("_")[0])


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4])
