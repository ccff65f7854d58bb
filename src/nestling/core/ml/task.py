"""The Task interface users implement, and loading a task from a "module:attr" spec.

A task is what varies between projects: its samples (a metadata table), its default hyperparameters, and how to
build a LightningModule and a LightningDataModule for one split. nestling does everything else.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.core.errors import UsageError

if TYPE_CHECKING:
    import lightning
    import polars

BUILTIN_TASKS = {
    "synthetic-segmentation": "nestling.tasks.synthetic:SyntheticSegmentation",
    "sleep": "nestling.tasks.sleep:SleepTask",
    "bowl": "nestling.tasks.bowl:BowlTask",
}


@dataclass(frozen=True)
class Split:
    """Sample ids of one fold: train on `train`, select on `val`, report on `test`. `staged_dir`: where the task's
    `stage` hook copied its data on this node (None for a task without one)."""

    train: list[str]
    val: list[str]
    test: list[str]
    staged_dir: Path | None = None


class Task:
    """Implement these four methods; see docs/custom-task.md.

    metadata() must be cheap and must not import torch: the planner calls it on the login node.
    """

    def metadata(self) -> polars.DataFrame:
        """Columns: `sample_id` (str), optional `region` (str) and `label` (stratification key)."""
        raise NotImplementedError

    def default_hparams(self) -> dict[str, Any]:
        raise NotImplementedError

    def build_model(self, hparams: dict[str, Any]) -> lightning.LightningModule:
        raise NotImplementedError

    def build_datamodule(self, hparams: dict[str, Any], split: Split) -> lightning.LightningDataModule:
        raise NotImplementedError

    def scoring_metrics(self) -> list[str] | None:
        """Optional: the metrics (NAME[:higher|:lower]) a cv scores runs on when --scoring_metric is not given,
        e.g. ["val/acc"] for a task that logs only that. None: nestling's defaults (val/JaccardIndex val/Recall)."""
        return None

    # Optional: `def stage(self, dest: Path) -> None` copies the task's data to `dest`, a node-local directory, once
    # per node and launch (one worker calls it, the others on the node wait); every run then finds it as
    # `split.staged_dir` in build_datamodule. See docs/custom-task.md and execute/staging.py.
    stage: Callable[[Path], None] | None = None

    def data_dirs(self) -> list[str]:
        """Optional: host directories holding the task's data. With --container_image each is bound into the
        image at the same path (read-write), like the artifact dir; nothing else from the host is visible."""
        return []

    def data_digest(self) -> str | None:
        """Optional: a short string that changes when the data changes (a dataset version, a hash of a manifest
        file), recorded as every run's `data_digest` and compared on --resume. Called once when the plan is made
        and once per worker process, so keep it cheap. None: not recorded."""
        return None


def task_module(spec: str) -> str | None:
    """The module a task spec names (a built-in's too); None when the spec is no "module:attr"."""
    target = BUILTIN_TASKS.get(spec, spec)
    return target.partition(":")[0] if ":" in target else None


def load_task(spec: str) -> Task:
    """`spec` is a built-in short name or "module:attr" naming a Task instance, class or zero-argument factory."""
    target = BUILTIN_TASKS.get(spec, spec)
    if ":" not in target:
        raise UsageError(
            f"--task {spec!r} is not a built-in task nor 'module:attr': use one of "
            f"{', '.join(sorted(BUILTIN_TASKS))} or e.g. --task mypackage.tasks:MyTask"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"--task {spec!r}: cannot import module {module_name!r} ({exc}); check the name and that it is installed"
        ) from exc
    try:
        obj = getattr(module, attr)
    except AttributeError as exc:
        raise UsageError(f"--task {spec!r}: module {module_name!r} has no attribute {attr!r}") from exc
    task = obj() if inspect.isclass(obj) or (callable(obj) and not _is_task(obj)) else obj
    if not _is_task(task):
        raise UsageError(
            f"--task {spec!r} gave {type(task).__name__}, not a Task: it needs metadata, default_hparams, "
            "build_model and build_datamodule"
        )
    return task


class DescribedTask(Task):
    """The planning half of a task, as a worker that loaded it described it (issue 15 #1).

    A local worker pool starts before planning; its first worker loads the task and sends its metadata, default
    hyperparameters, declared scoring metrics and data dirs. The CLI plans from this, so a task module that imports
    torch or lightning at the top is imported once (in the worker), not once in the CLI and again in the worker.
    Models and datamodules are only ever built in workers, from the spec."""

    def __init__(self, spec: str, payload: dict[str, Any]) -> None:
        import base64
        import io

        import polars as pl

        self.spec = spec
        self._metadata = pl.read_ipc(io.BytesIO(base64.b64decode(payload["metadata"])))
        self._hparams = dict(payload["default_hparams"])
        self._scoring = payload.get("scoring_metrics")
        self._data_dirs = [str(d) for d in payload.get("data_dirs") or []]
        self._data_digest = payload.get("data_digest")

    def metadata(self) -> polars.DataFrame:
        return self._metadata

    def default_hparams(self) -> dict[str, Any]:
        return dict(self._hparams)

    def scoring_metrics(self) -> list[str] | None:
        return None if self._scoring is None else list(self._scoring)

    def data_dirs(self) -> list[str]:
        return list(self._data_dirs)

    def data_digest(self) -> str | None:
        return None if self._data_digest is None else str(self._data_digest)

    def build_model(self, hparams: dict[str, Any]) -> lightning.LightningModule:
        raise RuntimeError(f"task {self.spec!r} was described by a worker; models are built in workers")

    def build_datamodule(self, hparams: dict[str, Any], split: Split) -> lightning.LightningDataModule:
        raise RuntimeError(f"task {self.spec!r} was described by a worker; datamodules are built in workers")


def task_description(task: Any) -> dict[str, Any]:
    """What `DescribedTask` is rebuilt from, JSON-ready (metadata as base64 Arrow IPC: dtypes survive)."""
    import base64
    import io
    import json

    buf = io.BytesIO()
    task.metadata().write_ipc(buf)
    data_dirs = getattr(task, "data_dirs", None)
    payload = {
        "metadata": base64.b64encode(buf.getvalue()).decode("ascii"),
        "default_hparams": task.default_hparams(),
        "scoring_metrics": declared_scoring_metrics(task),
        "data_dirs": [str(d) for d in data_dirs()] if callable(data_dirs) else [],
        "data_digest": declared_data_digest(task),
    }
    if json.loads(json.dumps(payload))["default_hparams"] != payload["default_hparams"]:
        raise ValueError("default_hparams do not survive JSON unchanged")  # the CLI then loads the task itself
    return payload


def declared_scoring_metrics(task: object) -> list[str] | None:
    """What a task declares with `scoring_metrics` (a method or a plain attribute); None when it declares nothing."""
    declared = getattr(task, "scoring_metrics", None)
    if callable(declared):
        declared = declared()
    if declared is None:
        return None
    return [declared] if isinstance(declared, str) else [str(m) for m in declared]


def declared_data_digest(task: object) -> str | None:
    """What a task's optional `data_digest()` gives, as a string; None when it has none. Its errors propagate:
    the planner turns them into a one-line error, a worker records the digest as unknown."""
    declared = getattr(task, "data_digest", None)
    value = declared() if callable(declared) else declared
    return None if value is None else str(value)


def _is_task(obj: object) -> bool:
    return all(
        callable(getattr(obj, m, None))
        for m in ("metadata", "default_hparams", "build_model", "build_datamodule")
    )
