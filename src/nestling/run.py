"""Execute ONE RunSpec: build the task's model and data, train with Lightning, write run_result.json atomically.

This is the only module (with tasks) that imports torch and lightning, and it does so inside functions so that a
worker pays the import once and then runs many specs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
import traceback
from functools import lru_cache
from pathlib import Path
from typing import Any

from nestling import __version__
from nestling.naming import RunPaths
from nestling.records import FAILED, SUCCESS, RunSpec, empty_result, write_json
from nestling.task import Split, Task, load_task

log = logging.getLogger("nestling.run")


@lru_cache(maxsize=8)
def _task(spec: str) -> Task:
    return load_task(spec)


@lru_cache(maxsize=8)
def _splits(path: str) -> tuple[Split, ...]:
    data = json.loads(Path(path).read_text())
    return tuple(Split(train=s["train"], val=s["val"], test=s["test"]) for s in data)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def in_container() -> bool:
    from nestling.container import in_container as detect

    return detect()


_CURRENT: dict[str, Any] = {}  # the trainer and run paths of the run in progress, for the preemption handler


def global_rank() -> int:
    """This process's rank in a multi-task SLURM job (srun), else 0; only rank 0 writes results and locks."""
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_PROCID"])
    return int(os.environ.get("RANK", "0") or 0)


def next_attempt(paths: RunPaths) -> int:
    """Count starts of this run: a requeued or resumed run keeps its run_id and gets the next attempt number."""
    try:
        previous = int(paths.attempts.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        previous = 0
    return previous + 1


def execute(spec: RunSpec) -> dict[str, Any]:
    """Train one run; never raises for a failure of the run itself (it is recorded as status "failed")."""
    paths = RunPaths(Path(spec.run_dir))
    paths.dir.mkdir(parents=True, exist_ok=True)
    writer = global_rank() == 0
    attempt = next_attempt(paths)
    result = empty_result(spec)
    started = time.time()
    result.update(
        started_at=_now(),
        host=os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
        pid=os.getpid(),
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        slurm_job_id=os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID"),
        slurm_array_task_id=os.environ.get("SLURM_ARRAY_TASK_ID"),
        in_container=in_container(),
        nestling_version=__version__,
        world_size=int(os.environ.get("SLURM_NTASKS", "1") or 1) if writer else None,
        attempt=attempt,
    )
    log.warning(
        "run %s attempt %d: rank %d of %s on %s", spec.run_name, attempt, global_rank(),
        os.environ.get("SLURM_NTASKS", "1"), result["host"],
    )
    if writer:
        write_json(paths.attempts, attempt)
        _take_lock(paths, result["host"], attempt)
    try:
        metrics, checkpoint, world_size = _train(spec, paths, attempt)
        result.update(status=SUCCESS, metrics=metrics, checkpoint=checkpoint, world_size=world_size)
        log.warning("run %s rank %d metrics %s", spec.run_name, global_rank(), json.dumps(metrics, sort_keys=True))
    except Exception as exc:  # a failed run is data, not a crash of the cv
        result.update(status=FAILED, error=f"{type(exc).__name__}: {exc}".strip()[:2000])
        if writer:
            (paths.dir / "error.txt").write_text(traceback.format_exc())
        log.warning("run %s failed: %s", spec.run_name, result["error"])
    finally:
        _CURRENT.clear()
    result.update(duration=round(time.time() - started, 3), finished_at=_now())
    if writer:
        write_json(paths.result, result)
        paths.lock.unlink(missing_ok=True)
    return result


def _take_lock(paths: RunPaths, host: str, attempt: int) -> None:
    """The attempt marker: `nestling status` shows the run as running while this process lives."""
    write_json(
        paths.lock,
        {"pid": os.getpid(), "host": host, "hostname": socket.gethostname(), "attempt": attempt, "started": _now()},
    )


def resume_checkpoint(paths: RunPaths) -> Path | None:
    """The newest checkpoint a previous attempt left (saved on preemption, or at an epoch end)."""
    candidates = [p for p in (paths.interrupted_checkpoint, paths.last_checkpoint) if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def save_interrupt_checkpoint() -> Path | None:
    """Called on the preemption / time-limit signal: save the run in progress so its next attempt resumes here."""
    trainer, paths = _CURRENT.get("trainer"), _CURRENT.get("paths")
    if trainer is None or paths is None or global_rank() != 0:
        return None
    import torch

    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    tmp = paths.interrupted_checkpoint.with_suffix(".tmp")
    torch.save(trainer._checkpoint_connector.dump_checkpoint(), tmp)
    os.replace(tmp, paths.interrupted_checkpoint)
    log.warning("saved %s on preemption", paths.interrupted_checkpoint)
    return paths.interrupted_checkpoint


def _cluster_plugins() -> list[Any]:
    """Submitit owns SLURM signals and requeue, so Lightning's SLURM environment must not requeue as well.

    A multi-task job (srun, multi-node DDP) uses SLURMEnvironment(auto_requeue=False) to wire ranks; a one-task
    array job uses the plain LightningEnvironment so that a unit with several GPUs can still use ddp_fork.
    """
    if "SLURM_JOB_ID" not in os.environ:
        return []
    from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return [SLURMEnvironment(auto_requeue=False)]
    return [LightningEnvironment()]


def _train(spec: RunSpec, paths: RunPaths, attempt: int) -> tuple[dict[str, float], str | None, int]:
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from nestling.scoring import parse_scoring_metrics

    task = _task(spec.task)
    split = _splits(spec.splits_file)[spec.fold]
    L.seed_everything(spec.seed, workers=True, verbose=False)
    first = parse_scoring_metrics(spec.scoring_metric)[0]
    checkpoint = ModelCheckpoint(
        dirpath=paths.checkpoints, filename="best", monitor=first.name, mode=first.mode, save_last=True
    )
    callbacks: list[Any] = [checkpoint]
    if spec.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(monitor=first.name, mode=first.mode, patience=spec.early_stopping_patience))
    loggers: list[Any] = [CSVLogger(save_dir=str(paths.dir), name="logs", version=f"attempt-{attempt}")]
    wandb_logger = _wandb_logger(spec) if spec.wandb_project else None
    if wandb_logger is not None:
        loggers.append(wandb_logger)
    trainer = L.Trainer(
        max_epochs=spec.max_epochs,
        accelerator=spec.accelerator,
        strategy=spec.strategy,
        devices=spec.devices,
        num_nodes=spec.num_nodes,
        callbacks=callbacks,
        logger=loggers,
        plugins=_cluster_plugins() or None,
        default_root_dir=str(paths.dir),
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    resume_from = resume_checkpoint(paths)
    _CURRENT.update(trainer=trainer, paths=paths)
    try:
        model = task.build_model(dict(spec.hparams))
        datamodule = task.build_datamodule(dict(spec.hparams), split)
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
        metrics = _floats(trainer.callback_metrics)
        if split.test and type(model).test_step is not L.LightningModule.test_step:
            ckpt = "best" if checkpoint.best_model_path else None
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
            metrics.update({k: v for k, v in _floats(trainer.callback_metrics).items() if k.startswith("test")})
    finally:
        if wandb_logger is not None:
            import wandb

            wandb.finish()
    best = checkpoint.best_model_path or checkpoint.last_model_path or None
    return metrics, best, trainer.world_size


def _floats(metrics: Any) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        out[key] = float(value.item() if hasattr(value, "item") else value)
    return out


def _wandb_logger(spec: RunSpec) -> Any:
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(
        project=spec.wandb_project,
        entity=spec.wandb_entity,
        id=spec.run_id,
        name=spec.run_name,
        group=spec.tune_name,
        job_type=spec.cv_name,
        save_dir=spec.run_dir,
        resume="allow",
        config=spec.hparams,
    )


def quiet_lightning() -> None:
    """Lightning's info lines (GPU available, tips) would drown the progress of hundreds of runs."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    os.environ.setdefault("WANDB_SILENT", "true")
