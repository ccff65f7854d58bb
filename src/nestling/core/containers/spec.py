"""ContainerSpec: the image a launch's workers run in, checked and resolved once on the submitting host, carried as
JSON in units.json (SLURM array tasks) or pickled (submitit-local); one `wrap()` for every launcher. Also whether
this process runs in an image."""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.core.containers.binds import auto_binds, task_data_dirs, worker_dir, worker_python
from nestling.core.containers.detect import resolve_runtime, runtime_named, runtime_version
from nestling.core.containers.env import EnvPlan, plan_env
from nestling.core.containers.options import (
    REMOTE_IMAGE,
    SIF_RUNTIMES,
    Bind,
    parse_bind,
    parse_env,
    resolve_bind,
    validate,
)
from nestling.core.containers.runtimes import (
    IN_CONTAINER_ENV,
    Invocation,
    Run,
    Which,
    WorkerGpus,
    Wrapped,
    node_scratch,
)
from nestling.core.errors import UsageError
from nestling.core.tree import naming

if TYPE_CHECKING:
    from nestling.core.options.config import Container as ContainerConfig


def in_container() -> bool:
    """Whether nestling's wrapper (or apptainer/singularity) started this process inside an image.

    Only the environment counts: ``NESTLING_IN_CONTAINER=1`` (set by every runtime's command) and the variables
    apptainer/singularity set themselves. The marker files ``/.dockerenv`` and ``/run/.containerenv`` are
    deliberately not consulted: they describe the machine nestling itself runs on (CI runners, dev containers and
    sandboxes are often containers), so a launcher started there would record ``in_container: true`` for runs it
    never wrapped. ``run_result.json`` must tell whether *this* run went through ``--container_image``.
    """
    if os.environ.get(IN_CONTAINER_ENV) == "1":
        return True
    return bool(os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER"))


def _ids(value: str | None) -> tuple[str, ...]:
    return tuple(g for g in (value or "").split(",") if g and g != "NoDevFiles")


@dataclass(frozen=True)
class ContainerSpec:
    """The image a launch's workers run in, checked and resolved once on the submitting host.

    ``image``: what the runtime starts (a .sif, an image reference, or the .sif a URI is pulled to once, then
    ``image_source`` is the URI); ``runtime``: resolved, never ``auto``, with its ``--version`` line when it chooses
    flags by it; ``binds``: the user's, sources absolute and resolved; ``env``: ``KEY=VALUE`` literal or ``KEY``
    passed by name; ``env_pass``: extra host variable patterns; ``auto_binds``: nestling's own (the artifact dir,
    the task's data dirs); ``python``: the interpreter inside; ``workdir``: where the worker starts; ``gpu``: the
    workers train on GPUs (the driver goes in even when no GPU id is known); ``image_digest``: what names the
    image's content, learnt once by `image.ready` (each run records it).
    """

    image: str
    runtime: str
    binds: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    env_pass: tuple[str, ...] = ()
    args: str = ""
    auto_binds: tuple[str, ...] = ()
    python: str = "python"
    workdir: str | None = None
    runtime_version: str | None = None
    gpu: bool = False
    image_source: str | None = None
    image_digest: str | None = None

    @classmethod
    def from_config(
        cls,
        c: ContainerConfig,
        *,
        artifact_dir: Path | str,
        task: Any,
        task_name: str = "the task",
        gpu: bool = False,
        cwd: str | None = None,
        which: Which = shutil.which,
        run: Run = subprocess.run,
    ) -> ContainerSpec | None:
        """Validate the CLI's container options and describe the image, or None when no image is set.

        ``task`` is the task preflight already loaded: its ``data_dirs()`` are bound (a missing one is a
        UsageError naming ``task_name``). Relative bind sources are taken from ``cwd`` (the submitting
        directory), where the worker starts when a bind carries it (:func:`worker_dir`).
        """
        cwd = cwd or os.getcwd()
        validate(c, cwd)
        if c.container_image is None:
            return None
        runtime = resolve_runtime(c.container_image, c.container_runtime, which)
        nestling_binds, missing = auto_binds(artifact_dir, task_data_dirs(task))
        if missing:
            raise UsageError(
                f"data dir {missing[0]!r} of task {task_name!r} does not exist, so it cannot be bound into "
                "the container image: create it or fix the task's data_dirs()"
            )
        user = [resolve_bind(b, cwd) for b in c.container_bind]
        for b in [*nestling_binds, *user]:
            _check_bindable(b, runtime)
        image, source = c.container_image, None
        if runtime in SIF_RUNTIMES and REMOTE_IMAGE.match(image):
            image, source = str(naming.pulled_image(Path(artifact_dir).resolve(), image)), image
        return cls(
            image=image,
            runtime=runtime,
            binds=tuple(b.spec() for b in user),
            env=tuple(c.container_env),
            env_pass=tuple(c.container_env_pass),
            args=c.container_args,
            auto_binds=tuple(b.spec() for b in nestling_binds),
            python=worker_python([*nestling_binds, *user]),
            workdir=worker_dir(cwd, [*nestling_binds, *user]),
            runtime_version=runtime_version(runtime, run) if runtime in SIF_RUNTIMES else None,
            gpu=gpu,
            image_source=source,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON object; :meth:`from_json` reads it back equal."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContainerSpec:
        """Also reads what older versions wrote into units.json (launches may still be queued): the shape before
        0.2 ({"options": {...}, "runtime", ...}) and fields this version does not know (ignored)."""
        if "options" in data:
            # the resolved runtime wins over the option's "auto"; the old top-level "env" was always empty
            data = {**data["options"], **{k: v for k, v in data.items() if k not in ("options", "env")}}
        known = {f.name for f in dataclasses.fields(cls)}
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**fields)

    def env_plan(self, environ: Mapping[str, str]) -> EnvPlan:
        """The environment a worker started from ``environ`` takes into the image (env.py)."""
        items = [parse_env(e) for e in self.env]
        return plan_env(environ, [(e.key, e.value) for e in items], self.env_pass)

    def wrap(
        self,
        cmd: Sequence[str],
        *,
        environ: Mapping[str, str],
        gpus: Sequence[str] | None = None,
        interactive: bool = False,
        job_task: bool = False,
        extra_args: Sequence[str] = (),
    ) -> Wrapped:
        """The command that runs the worker command ``cmd`` (``cmd[0]``: the host interpreter) in the image.

        ``environ`` is the worker's host environment: the runtime process gets it (with secrets added by name),
        the image only what :meth:`env_plan` lets in. ``gpus``: the physical ids the worker was given (the local
        pool's slot). ``job_task``: ``cmd`` is one task of a job (a SLURM array task, one srun rank, a submitit
        job), so its GPUs come from ``environ`` instead: ``CUDA_VISIBLE_DEVICES`` as the task has it (renumbered
        from 0 when SLURM constrains devices with cgroups; apptainer runs in the task's cgroup and uses it) and the
        node-level ``SLURM_STEP_GPUS`` / ``SLURM_JOB_GPUS`` (docker/podman select devices by them, and they are
        the physical ids recorded). ``interactive`` keeps stdin attached (``worker --serve``).
        """
        if job_task:
            visible = _ids(environ.get("CUDA_VISIBLE_DEVICES"))
            physical = _ids(environ.get("SLURM_STEP_GPUS")) or _ids(environ.get("SLURM_JOB_GPUS")) or visible
            multi_task = int(environ.get("SLURM_NTASKS", "1") or 1) > 1
        else:
            visible = physical = tuple(str(g) for g in gpus or ())
            multi_task = False
        env = self.env_plan(environ)
        binds = [parse_bind(b) for b in (*self.auto_binds, *self.binds)]
        taken = {b.dst for b in binds}
        binds += [Bind(src, dst) for src, dst in env.dirs if dst not in taken]
        for b in binds:
            _check_bindable(b, self.runtime)
        invocation = Invocation(
            cmd=(self.python, *cmd[1:]),
            image=self.image,
            binds=tuple(binds),
            env=env,
            gpus=WorkerGpus(physical=physical, host_visible=visible, wanted=self.gpu),
            workdir=self.workdir,
            interactive=interactive,
            multi_task=multi_task,
            args=(*shlex.split(self.args), *extra_args),
            scratch=node_scratch(environ),
            image_digest=self.image_digest,
        )
        return runtime_named(self.runtime, self.runtime_version).command(invocation, environ)


def _check_bindable(bind: Bind, runtime: str) -> None:
    """Paths every runtime's bind syntax can carry: no ':' anywhere, no ',' for apptainer/singularity."""
    for path in (bind.src, bind.dst):
        if ":" in path:
            raise UsageError(f"path {path!r} contains ':', which cannot be bound into a container: move it")
        if runtime in SIF_RUNTIMES and "," in path:
            raise UsageError(f"path {path!r} contains ',', which {runtime} --bind splits on: rename it")
