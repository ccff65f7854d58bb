"""Execute ONE RunSpec: build the task's model and data, train with Lightning, write run_result.json atomically.

This is the only module (with tasks) that imports torch and lightning, and it does so inside functions so that a
worker pays the import once and then runs many specs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import time
import traceback
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from nestling import __version__
from nestling.core.compat import lightning_internals as lightning_compat
from nestling.core.host import jobenv
from nestling.core.host.devices import MEMORY_FRACTION_ENV, PINNED_GPUS_ENV
from nestling.core.host.jobenv import JobEnvironment
from nestling.core.ml.task import Split, Task, load_task
from nestling.core.tree import attempt_lock
from nestling.core.tree.atomic import write_json
from nestling.core.tree.naming import RunPaths
from nestling.core.tree.run_result import FAILED, SUCCESS, empty_result, read_result
from nestling.core.tree.run_spec import RunSpec

log = logging.getLogger("nestling.run")


@lru_cache(maxsize=8)
def _task(spec: str) -> Task:
    return load_task(spec)


@lru_cache(maxsize=8)
def _splits(path: str) -> tuple[Split, ...]:
    data = json.loads(Path(path).read_text())
    return tuple(Split(train=s["train"], val=s["val"], test=s["test"]) for s in data)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def in_container() -> bool:
    from nestling.core.containers.spec import in_container as detect

    return detect()


def next_attempt(paths: RunPaths) -> int:
    """Count starts of this run: a requeued or resumed run keeps its run_id and gets the next attempt number."""
    try:
        previous = int(paths.attempts.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        previous = 0
    return previous + 1


def execute(spec: RunSpec) -> dict[str, Any] | None:
    """Train one run; never raises for a failure of the run itself (it is recorded as status "failed").

    Returns None, touching nothing, when a live attempt holds the run's lock: a run dir is never shared by two
    live attempts. A lock whose holder is gone (killed worker, lost node, earlier incarnation of this SLURM job)
    is taken over.
    """
    paths = RunPaths(Path(spec.run_dir))
    paths.dir.mkdir(parents=True, exist_ok=True)
    job = JobEnvironment.from_environ()
    writer = job.global_rank == 0  # only rank 0 writes results and locks
    host = job.node or socket.gethostname()
    # One-task processes (local workers, array tasks) take the lock exclusively; in a multi-task job (srun, DDP)
    # every rank must make the same choice, so rank 0 just marks the run and SLURM keeps the job unique.
    exclusive = writer and not job.multi_task
    if exclusive and not attempt_lock.acquire(paths, host):
        log.warning(
            "run %s: a live attempt holds %s; not starting it a second time", spec.run_name, paths.lock
        )
        return None
    heartbeat = attempt_lock.Heartbeat(paths.lock) if writer else None
    try:
        previous = read_result(paths.dir) if exclusive else None
        if (
            previous is not None and previous.get("status") == SUCCESS
        ):  # finished while we waited for the lock
            return previous
        attempt = next_attempt(paths)
        result = empty_result(spec)
        startup = _worker_startup()  # before the clock starts: a run's duration is its own time
        started = time.time()
        result.update(
            started_at=_now(),
            host=host,
            pid=os.getpid(),
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),  # see _record_devices when unset
            slurm_job_id=job.array_job_id or job.job_id,
            slurm_array_task_id=job.array_task_id,
            in_container=in_container(),
            nestling_version=__version__,
            world_size=job.ntasks if writer else None,
            attempt=attempt,
            worker_startup_s=startup,
        )
        log.warning(
            "run %s attempt %d: rank %d of %d on %s", spec.run_name, attempt, job.global_rank, job.ntasks,
            result["host"],
        )  # fmt: skip
        if writer:
            _archive_error(paths, attempt - 1)
            write_json(paths.attempts, attempt)
            if not exclusive:
                attempt_lock.mark(paths, host)
        if heartbeat is not None:
            heartbeat.start()
        tracked: dict[str, Any] = {}  # wandb_mode / wandb_reason, filled before training starts
        try:
            metrics, checkpoint, world_size = _train(spec, paths, attempt, tracked, result)
            result.update(status=SUCCESS, metrics=metrics, checkpoint=checkpoint, world_size=world_size)
            log.warning(
                "run %s rank %d metrics %s", spec.run_name, job.global_rank, json.dumps(metrics, sort_keys=True)
            )
        except Exception as exc:  # a failed run is data, not a crash of the cv
            result.update(status=FAILED, error=f"{type(exc).__name__}: {exc}".strip()[:2000])
            if writer:
                paths.error.write_text(traceback.format_exc())
            log.warning("run %s failed: %s", spec.run_name, result["error"])
        result.update(tracked, duration=round(time.time() - started, 3), finished_at=_now())
        if writer:
            write_json(paths.result, result)
        return result
    finally:  # also on preemption (SystemExit from the signal handler): this attempt is over
        if heartbeat is not None:
            heartbeat.stop()
        if writer:
            attempt_lock.release(paths)


class _Startup:
    """The first run of a process pays the torch + Lightning import (seconds); later runs of a warm worker do not.

    Timed apart from the run and recorded once, as the first result's worker_startup_s, so that durations of
    identical runs compare. A worker that preloaded (see `preload`) reports the time its preload took."""

    paid = False
    preloaded_s: float | None = None
    described_s = 0.0


def preload(task_spec: str | None = None) -> float:
    """Pay the one-time imports now (torch, Lightning, the task's module), before the first run arrives.

    A local worker pool is started while the CLI still loads the task and plans (issue 15 #1), so this import
    overlaps the CLI's own instead of following it. Errors are left to the run that needs the import: it records
    them as its error."""
    clock = time.perf_counter()
    with contextlib.suppress(ImportError):
        import lightning.pytorch  # noqa: F401  (imports torch)
    if task_spec:
        with contextlib.suppress(Exception):
            _task(task_spec)
    _Startup.preloaded_s = round(time.perf_counter() - clock + _Startup.described_s, 3)
    return _Startup.preloaded_s


def describe_task(task_spec: str) -> dict[str, Any]:
    """Load the task (its module may import torch: this is the one import) and describe its planning half for the
    CLI: {"task": payload} or {"task_error": why} (the CLI then loads the task itself, and reports as before)."""
    from nestling.core.ml.task import describe

    clock = time.perf_counter()
    try:
        reply: dict[str, Any] = {"task": describe(_task(task_spec))}
    except Exception as exc:  # noqa: BLE001 - the CLI reproduces the error with its own load
        reply = {"task_error": f"{type(exc).__name__}: {exc}"}
    _Startup.described_s = round(time.perf_counter() - clock, 3)
    return reply


def _worker_startup() -> float | None:
    """Seconds the one-time imports took, on this process's first run; None on every later run."""
    if _Startup.paid:
        return None
    _Startup.paid = True
    clock = time.perf_counter()
    with contextlib.suppress(ImportError):  # reported by the run itself, as its error, when _train imports it
        import lightning.pytorch  # noqa: F401  (imports torch)
    now = round(time.perf_counter() - clock, 3)
    return now if _Startup.preloaded_s is None else round(_Startup.preloaded_s + now, 3)


class _MemoryCap:
    done = False


def cap_device_memory(environ: Mapping[str, str] | None = None, cuda: Any = None) -> float | None:
    """With --runs_per_gpu K the launcher sets NESTLING_MEMORY_FRACTION=1/K: cap this process at that share of each
    visible GPU's memory, so one of K packed runs cannot starve the others (it fails alone with an out-of-memory
    error). Once per process; returns the fraction applied, None when there is none or no CUDA."""
    value = (os.environ if environ is None else environ).get(MEMORY_FRACTION_ENV)
    if not value or _MemoryCap.done:
        return None
    if cuda is None:
        import torch

        cuda = torch.cuda
    if not cuda.is_available():
        return None
    fraction = float(value)
    for index in range(cuda.device_count()):
        cuda.set_per_process_memory_fraction(fraction, index)
    _MemoryCap.done = True
    return fraction


def _archive_error(paths: RunPaths, previous_attempt: int) -> None:
    """A new attempt starts: the traceback of the previous (failed) one moves aside, so that error.txt never
    stands beside a result it does not belong to."""
    if previous_attempt >= 1 and paths.error.is_file():
        os.replace(paths.error, paths.archived_error(previous_attempt))


def resume_checkpoint(paths: RunPaths) -> Path | None:
    """The newest checkpoint a previous attempt left (saved on preemption, or at an epoch end)."""
    candidates = [p for p in (paths.interrupted_checkpoint, paths.last_checkpoint) if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def save_interrupt_checkpoint(trainer: Any, paths: RunPaths) -> Path | None:
    """Called on the preemption / time-limit signal: leave a state the next attempt resumes from exactly.

    Lightning continues a checkpoint taken mid-epoch exactly only when every training dataloader is resumable
    (state_dict / load_state_dict) and the epoch's batches are under way; then the state now is saved as
    interrupted.ckpt. Otherwise nothing is saved, on purpose: with a plain DataLoader Lightning would replay the
    epoch's first batches and skip its last ones, and at an epoch's start (on_train_epoch_start) it would skip the
    whole epoch. The next attempt then resumes from last.ckpt, the end of the last completed epoch, and redoes
    only the interrupted epoch's partial work: no completed epoch is trained twice, none is skipped.
    """
    if JobEnvironment.from_environ().global_rank != 0:
        return None
    if not _resumable_mid_epoch(trainer):
        log.warning(
            "signal in epoch %d: the next attempt resumes from %s (end of the last completed epoch)",
            trainer.current_epoch, paths.last_checkpoint if paths.last_checkpoint.is_file() else "the start",
        )  # fmt: skip
        return None
    import torch

    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    tmp = paths.interrupted_checkpoint.with_suffix(".tmp")
    torch.save(lightning_compat.dump_checkpoint(trainer), tmp)
    os.replace(tmp, paths.interrupted_checkpoint)
    log.warning("saved %s on preemption", paths.interrupted_checkpoint)
    return paths.interrupted_checkpoint


def _resumable_mid_epoch(trainer: Any) -> bool:
    """Inside an epoch's batch loop (past on_train_epoch_start), with resumable training dataloaders only."""
    loaders = lightning_compat.train_dataloaders(trainer)
    if not loaders or not lightning_compat.in_epoch_batches(trainer):
        return False
    return all(hasattr(dl, "state_dict") and hasattr(dl, "load_state_dict") for dl in loaders)


def _cluster_plugins() -> list[Any]:
    """nestling's task program (array_task.py) owns SLURM signals and requeue, so Lightning must not requeue too.

    A multi-task job (srun, multi-node DDP) uses SLURMEnvironment(auto_requeue=False) to wire ranks; a one-task
    array job uses the plain LightningEnvironment so that a unit with several GPUs can still use ddp_fork.
    """
    job = JobEnvironment.from_environ()
    if job.job_id is None:
        return []
    from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

    if job.multi_task:
        return [SLURMEnvironment(auto_requeue=False)]
    return [LightningEnvironment()]


def _train(
    spec: RunSpec, paths: RunPaths, attempt: int, tracked: dict[str, Any], record: dict[str, Any] | None = None
) -> tuple[dict[str, float], str | None, int]:
    """Fit (and test); `record` (the result being built) gets what ran where, also when the run fails."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from nestling.core.ml.scoring import parse_scoring_metrics

    task = _task(spec.task)
    split = _splits(spec.splits_file)[spec.fold]
    cap_device_memory()
    L.seed_everything(spec.seed, workers=True, verbose=False)
    scoring = parse_scoring_metrics(spec.scoring_metric)
    first = scoring[0]
    checkpoint = ModelCheckpoint(
        dirpath=paths.checkpoints, filename="best", monitor=first.name, mode=first.mode
    )
    # The resume point, written at the end of EVERY epoch. Not save_last=True: Lightning (2.5+) then writes
    # last.ckpt only when the monitored metric improved, and a run whose metric plateaued would resume from an
    # old epoch after a preemption and train the epochs since then twice.
    last = ModelCheckpoint(dirpath=paths.checkpoints, filename="last", enable_version_counter=False)
    # A retrain (nestling retrain) has no validation samples: nothing to monitor, the final weights are tested.
    callbacks: list[Any] = [last] if spec.retrain else [checkpoint, last]
    if spec.early_stopping_patience > 0 and not spec.retrain:
        callbacks.append(
            EarlyStopping(monitor=first.name, mode=first.mode, patience=spec.early_stopping_patience)
        )
    loggers: list[Any] = [CSVLogger(save_dir=str(paths.dir), name="logs", version=f"attempt-{attempt}")]
    wandb_logger = _wandb_logger(spec, tracked) if spec.wandb_project else None
    if wandb_logger is not None:
        loggers.append(wandb_logger)
    trainer = L.Trainer(
        max_epochs=spec.max_epochs,
        accelerator=spec.accelerator,
        strategy=spec.strategy,
        devices=pinned_devices(spec.devices),
        num_nodes=spec.num_nodes,
        callbacks=callbacks,
        logger=loggers,
        plugins=_cluster_plugins() or None,
        default_root_dir=str(paths.dir),
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        limit_val_batches=0 if spec.retrain else None,  # a retrain's split has no val samples: never validate
    )
    cuda = _record_devices(trainer, record if record is not None else {})
    resume_from = resume_checkpoint(paths)
    # The preemption signal (array_task.py, worker.py) saves this run while it trains or tests.
    try:
        with jobenv.on_preempt(lambda: save_interrupt_checkpoint(trainer, paths)):
            model = task.build_model(dict(spec.hparams))
            datamodule = task.build_datamodule(dict(spec.hparams), split)
            trainer.fit(model, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
            metrics = _floats(trainer.callback_metrics)
            if resume_from is not None and _missing(scoring, metrics) and not spec.retrain:
                # Resumed from the end of training (the previous attempt failed after fit, e.g. in test):
                # fit had nothing left to train or validate, so validate the final weights, as its last epoch did.
                trainer.validate(model, datamodule=datamodule, ckpt_path=str(resume_from), verbose=False)
                metrics.update(_floats(trainer.callback_metrics))
            if spec.score_epoch == "best" and checkpoint.best_model_path:
                # --score_epoch best: score the epoch that best.ckpt (and test/*) come from, not the last one.
                # Validating the best checkpoint gives exactly that epoch's val metrics; train/* stay the last's.
                trainer.validate(model, datamodule=datamodule, ckpt_path=checkpoint.best_model_path, verbose=False)
                metrics.update(_floats(trainer.callback_metrics))
            if split.test and type(model).test_step is not L.LightningModule.test_step:
                ckpt = "best" if checkpoint.best_model_path else None
                trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
                metrics.update(
                    {k: v for k, v in _floats(trainer.callback_metrics).items() if k.startswith("test")}
                )
    finally:
        if cuda is not None and record is not None:
            record["peak_memory_bytes"] = max(
                (cuda.max_memory_allocated(i) for i in range(cuda.device_count())), default=None
            )
        if wandb_logger is not None:
            _finish_wandb(spec)
    missing = _missing(scoring, metrics)
    if missing:
        raise MissingMetricError(
            f"the run ended without the scoring metric(s) {', '.join(missing)}; it logged: "
            f"{', '.join(sorted(metrics)) or 'nothing'}"
        )
    best = checkpoint.best_model_path or last.best_model_path or None
    return metrics, best, trainer.world_size


def accelerator_name(accelerator: Any) -> str:
    """Lightning's accelerator object -> "cpu", "cuda", "mps", "xla", ... (its class name without the suffix)."""
    return type(accelerator).__name__.removesuffix("Accelerator").lower() or "unknown"


def _record_devices(trainer: Any, record: dict[str, Any], cuda: Any = None) -> Any:
    """What ran where: the accelerator the Trainer chose, every visible device's name, and (on CUDA) the peak
    memory counters reset, so that `peak_memory_bytes` is this run's. Returns torch.cuda on CUDA, else None."""
    record["accelerator"] = accelerator_name(trainer.accelerator)
    if record["accelerator"] != "cuda":
        record["device_names"] = ["cpu"] if record["accelerator"] == "cpu" else [record["accelerator"]]
        return None
    if cuda is None:
        import torch

        cuda = torch.cuda
    count = cuda.device_count()
    record["device_names"] = [cuda.get_device_name(i) for i in range(count)]
    if record.get("cuda_visible_devices") is None:  # not pinned by a launcher: what this process could see
        record["cuda_visible_devices"] = ",".join(str(i) for i in range(count))
    for i in range(count):
        cuda.reset_peak_memory_stats(i)
    return cuda


def pinned_devices(devices: Any, environ: Mapping[str, str] | None = None) -> Any:
    """The Trainer's `devices` in a worker the launcher pinned to the requested GPU ids (PINNED_GPUS_ENV): the
    ids are renumbered to what the worker sees (ids 2 5 -> 0 1 under CUDA_VISIBLE_DEVICES=2,5)."""
    env = os.environ if environ is None else environ
    pinned = env.get(PINNED_GPUS_ENV)
    if isinstance(devices, list) and pinned and pinned == ",".join(str(d) for d in devices):
        return list(range(len(devices)))
    return devices


class MissingMetricError(RuntimeError):
    """A run without every scoring metric cannot be scored, so it is not a success."""


def _missing(scoring: list[Any], metrics: dict[str, float]) -> list[str]:
    return [m.name for m in scoring if m.name not in metrics]


def _floats(metrics: Any) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        out[key] = float(value.item() if hasattr(value, "item") else value)
    return out


def _wandb_logger(spec: RunSpec, tracked: dict[str, Any]) -> Any:
    """A WandbLogger whose run is already started, online or offline; None when wandb cannot start at all.

    Tracking never costs a run: the mode comes from tracking.decide (bounded probe in auto mode), and the start
    happens here, eagerly, so that a failure is caught before training (Lightning would start it lazily, inside
    fit, where it would fail the run). An online start that raises is retried offline. Only rank 0 starts a W&B
    run (the other ranks get Lightning's dummy experiment), so only rank 0 decides.
    """
    from nestling.core.host import tracking

    if JobEnvironment.from_environ().global_rank != 0:
        return _new_wandb_logger(spec, tracking.OFFLINE)
    decision = tracking.decide(spec.wandb_mode)
    if decision.mode == tracking.DISABLED:
        tracked.update(wandb_mode=tracking.DISABLED, wandb_reason=decision.reason)
        return None
    try:
        logger = _start_wandb(spec, decision.mode)
    except Exception as exc:  # online or not, W&B's start must not fail the run
        reason = f"W&B {decision.mode} start failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        log.warning("run %s: %s", spec.run_name, reason)
        if decision.mode == tracking.OFFLINE:
            tracked.update(wandb_mode=tracking.DISABLED, wandb_reason=reason)
            return None
        tracking.remember_failure(os.environ, reason)
        decision = tracking.Decision(tracking.OFFLINE, reason)
        try:
            logger = _start_wandb(spec, tracking.OFFLINE)
        except Exception as again:
            reason = f"{reason}; offline start failed too: {type(again).__name__}: {' '.join(str(again).split())}"
            tracked.update(wandb_mode=tracking.DISABLED, wandb_reason=reason[:1000])
            return None
    if decision.mode != tracking.ONLINE:
        log.warning("run %s: W&B offline (%s)", spec.run_name, decision.reason)
    tracked.update(wandb_mode=decision.mode, wandb_reason=decision.reason)
    return logger


def _finish_wandb(spec: RunSpec) -> None:
    """End the run's W&B run; a failure to do so (the service gone, a lost connection) is logged, not the run's."""
    import wandb

    try:
        wandb.finish()
    except Exception as exc:
        log.warning("run %s: W&B did not finish cleanly: %s: %s", spec.run_name, type(exc).__name__, exc)


def _start_wandb(spec: RunSpec, mode: str) -> Any:
    """Create the logger and start its W&B run now; after a failed start, wandb's service is torn down so that
    the same run id can start again (offline) in this process."""
    logger = _new_wandb_logger(spec, mode)
    try:
        logger.experiment  # noqa: B018  (starts the W&B run: wandb.init)
    except BaseException:
        import wandb

        with contextlib.suppress(Exception):
            wandb.teardown()
        raise
    return logger


def _new_wandb_logger(spec: RunSpec, mode: str) -> Any:
    from lightning.pytorch.loggers import WandbLogger

    from nestling.core.host import tracking

    extra: dict[str, Any] = {"mode": mode}
    if mode == tracking.ONLINE and not os.environ.get("WANDB_INIT_TIMEOUT"):
        import wandb

        extra["settings"] = wandb.Settings(init_timeout=tracking.INIT_TIMEOUT_S)
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
        **extra,
    )


def quiet_lightning() -> None:
    """Lightning's info lines (GPU available, tips) would drown the progress of hundreds of runs."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    os.environ.setdefault("WANDB_SILENT", "true")
