"""The bowl task (tasks/bowl.py), counting its epochs from the task's side: at the end of every epoch it trained,
each rank appends `RANK EPOCH PID` to `task_epochs.log` in the run dir. Tests of pruning between epochs read it to
check that no epoch was trained twice across pauses, promotions, kills, requeues and resumes, and that every DDP
rank stopped at the same epoch. Lightning calls the module's hook after the callbacks' (the checkpoint of that
epoch is written first), so an epoch that is logged is never trained again. Not used by nestling itself.

    --task nestling.testing.counting_task:CountingBowlTask
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.tasks.bowl import BowlTask

if TYPE_CHECKING:
    import lightning

EPOCH_LOG = "task_epochs.log"


def counted_epochs(run_dir: Path) -> dict[int, list[int]]:
    """rank -> the epochs it trained, in order (one entry per time an epoch was trained)."""
    out: dict[int, list[int]] = {}
    try:
        lines = (Path(run_dir) / EPOCH_LOG).read_text().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        rank, epoch, _pid = line.split()
        out.setdefault(int(rank), []).append(int(epoch))
    return out


class CountingBowlTask(BowlTask):
    def build_model(self, hparams: dict[str, Any]) -> lightning.LightningModule:
        module = super().build_model(hparams)

        def on_train_epoch_end(self: Any) -> None:
            trainer = self.trainer
            with open(Path(trainer.default_root_dir) / EPOCH_LOG, "a") as f:
                f.write(f"{trainer.global_rank} {trainer.current_epoch} {os.getpid()}\n")

        module.on_train_epoch_end = types.MethodType(on_train_epoch_end, module)  # type: ignore[method-assign]
        return module
