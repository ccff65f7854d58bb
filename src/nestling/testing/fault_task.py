"""A sleep task that fails the way clusters fail, for the fault-injection tests (issue 23): the exact error a broken
GPU, a stale NFS handle, a shared GPU out of memory or a full disk gives, raised for real inside training.

Hyperparameters (besides the sleep task's):
  fault          "" | "ecc" | "nocuda" | "estale" | "oom" | "enospc" | "user": what to raise
  fault_node     only on this SLURM node (SLURMD_NODENAME); "first": the node of the first run that starts (named in
                 fault_dir/node, so the test need not know where SLURM puts what); "" everywhere
  fault_epoch    raised at the start of this epoch (1: after epoch 0 was trained and checkpointed)
  fault_times    each run fails this many attempts, then trains (0: every attempt fails)
  fault_dir      where the attempts of each run are counted (a shared dir); needed with fault_times
  fault_shared   "oom" only while the run shares its GPU (NESTLING_MEMORY_FRACTION set below 1)

`stage(dest)` writes `dest/data.txt`; with NESTLING_TEST_STAGE_LOG set it also appends "node pid dest" to that file
(tests count the calls per node) after sleeping NESTLING_TEST_STAGE_S, and every datamodule checks that
`split.staged_dir` holds the file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.core.ml.task import Split
from nestling.tasks.sleep import SleepTask, _datamodule, _module
from nestling.tasks.synthetic import resolve_hparams

if TYPE_CHECKING:
    import lightning

FAULT_DEFAULTS: dict[str, Any] = {
    "fault": "", "fault_node": "", "fault_epoch": 1, "fault_times": 1, "fault_dir": "", "fault_shared": False,
}  # fmt: skip
STAGE_LOG_ENV = "NESTLING_TEST_STAGE_LOG"
RUN_KEY = "fault_key"  # the datamodule attribute that names the run (fold and seed) for counting its attempts
STAGED_FILE = "data.txt"


class FaultTask(SleepTask):
    def default_hparams(self) -> dict[str, Any]:
        return {**super().default_hparams(), **FAULT_DEFAULTS}

    def build_model(self, hparams: dict[str, Any]) -> lightning.LightningModule:
        hp = resolve_hparams(self.default_hparams(), hparams, "fault")
        module = _module(hp)
        epoch_start = module.on_train_epoch_start

        def on_train_epoch_start() -> None:
            if module.current_epoch == int(hp["fault_epoch"]) and _due(hp, getattr(getattr(module.trainer, "datamodule", None), RUN_KEY, "")):
                raise_fault(str(hp["fault"]))
            epoch_start()

        module.on_train_epoch_start = on_train_epoch_start  # type: ignore[method-assign]
        return module

    def build_datamodule(self, hparams: dict[str, Any], split: Split) -> lightning.LightningDataModule:
        hp = resolve_hparams(self.default_hparams(), hparams, "fault")
        if os.environ.get(STAGE_LOG_ENV):
            staged = getattr(split, "staged_dir", None)
            if staged is None or not (Path(staged) / STAGED_FILE).is_file():
                raise RuntimeError(f"the staged data is not where the split says: {staged}")
        fail_id = str(hp["fail_if_val_contains"])
        datamodule = _datamodule(split, fail_id if fail_id and fail_id in split.val else "")
        import torch

        # one key per run: its fold (the validation samples) and its seed (nestling seeded everything before this)
        setattr(datamodule, RUN_KEY, hashlib.sha1(f"{sorted(split.val)}|{torch.initial_seed()}".encode()).hexdigest()[:12])
        return datamodule

    def stage(self, dest: Path) -> None:
        """Copy "the data" to the node: one file, and a line in stage_log naming the node."""
        (Path(dest) / STAGED_FILE).write_text("staged\n")
        log = os.environ.get(STAGE_LOG_ENV)
        if log:
            time.sleep(float(os.environ.get("NESTLING_TEST_STAGE_S", "0")))
            with open(log, "a") as f:
                f.write(f"{os.environ.get('SLURMD_NODENAME') or socket.gethostname()} {os.getpid()} {dest}\n")


def _due(hp: dict[str, Any], key: str) -> bool:
    """Whether this attempt of this run fails: on the right node, shared when asked, within fault_times."""
    if not hp["fault"]:
        return False
    node = os.environ.get("SLURMD_NODENAME", "")
    if hp["fault_node"] == "first":
        marker = Path(str(hp["fault_dir"])) / "node"
        marker.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(marker, "x") as f:
                f.write(node)
        except FileExistsError:
            pass
        if marker.read_text() != node:
            return False
    elif hp["fault_node"] and node != hp["fault_node"]:
        return False
    if hp["fault_shared"] and os.environ.get("NESTLING_MEMORY_FRACTION", "1") == "1":
        return False
    times = int(hp["fault_times"])
    if times <= 0 or not hp["fault_dir"]:
        return True
    folder = Path(str(hp["fault_dir"]))
    folder.mkdir(parents=True, exist_ok=True)
    done = len(list(folder.glob(f"{key}.*")))
    if done >= times:
        return False
    (folder / f"{key}.{done + 1}").write_text(f"{os.environ.get('SLURMD_NODENAME', '')} {hp['fault']}\n")
    return True


def raise_fault(kind: str) -> None:
    """The exception a real fault of this kind gives, word for word where it has words."""
    if kind == "ecc":
        raise RuntimeError("CUDA error: uncorrectable ECC error encountered")
    if kind == "nocuda":
        raise RuntimeError("No CUDA GPUs are available: no CUDA-capable device is detected")
    if kind == "estale":
        raise OSError(errno.ESTALE, os.strerror(errno.ESTALE), "/shared/data/sample.npy")
    if kind == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if kind == "oom":
        import torch

        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity; 7.89 GiB already "
            "allocated; 1.5 GiB free; 7.90 GiB allowed; 7.9 GiB reserved in total by PyTorch)"
        )
    raise ValueError(f"injected user error ({kind})")
