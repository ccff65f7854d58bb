"""Wrap a worker command so it runs inside a container image (apptainer, singularity, docker, podman).

Everything here builds argv lists, never shell strings: paths with spaces, quotes or newlines stay one argument.
Only what the caller names is bound from the host (the auto binds: artifact dir, data dir; plus the user's
``binds``), and the host environment does not leak in; the caller passes the variables it wants (SLURM_*, ...).

GPU pinning per runtime (``gpus`` are the physical ids the worker was given):

- apptainer/singularity ``--nv`` exposes every GPU; ``CUDA_VISIBLE_DEVICES=<ids>`` then selects exactly those.
- docker ``--gpus device=<ids>`` exposes only those, renumbered from 0, so ``CUDA_VISIBLE_DEVICES=0..n-1``.
- podman with an NVIDIA CDI spec (``/etc/cdi`` or ``/var/run/cdi``): ``--device nvidia.com/gpu=<id>`` per GPU,
  renumbered like docker. Without a CDI spec (no NVIDIA stack, e.g. a test machine with fake SLURM GPUs) no
  device is passed and ``CUDA_VISIBLE_DEVICES=<physical ids>`` is set, so the pinning is still observable.

Every launcher wraps its worker command through one :class:`ContainerSpec`, built once per launch from the
options and the loaded task, carried as JSON in ``units.json`` (SLURM array tasks) or pickled (submitit-local).

Every runtime sets ``NESTLING_IN_CONTAINER=1`` and, with GPUs, ``NESTLING_PHYSICAL_GPUS=<physical ids>``.

What a worker gets from the host environment is chosen by :func:`passthrough_env` (SLURM's job variables,
``MASTER_*``, ``WANDB_MODE``, ``OMP_NUM_THREADS``); the rest stays outside.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nestling.core.errors import UsageError

if TYPE_CHECKING:
    from nestling.core.options.config import Container as ContainerConfig

RUNTIMES = ("auto", "apptainer", "singularity", "docker", "podman")
SIF_RUNTIMES = ("apptainer", "singularity")
OCI_RUNTIMES = ("docker", "podman")
CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
IN_CONTAINER_ENV = "NESTLING_IN_CONTAINER"
PHYSICAL_GPUS_ENV = "NESTLING_PHYSICAL_GPUS"

# Host variables a containerised worker needs: SLURM's job/step description (Lightning's SLURMEnvironment, the
# result record), the DDP rendezvous, wandb's mode and the thread count the launcher chose.
PASSTHROUGH_PREFIXES = (
    "SLURM",
    "MASTER_ADDR",
    "MASTER_PORT",
    "WANDB_MODE",
    "OMP_NUM_THREADS",
    "PYTHONUNBUFFERED",
    "NESTLING_MEMORY_FRACTION",  # --runs_per_gpu: each packed worker's share of the GPU's memory
    "NESTLING_PINNED_GPUS",  # a serial worker pinned to --devices ids: run.py renumbers them
)

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URI = re.compile(r"^[a-z][a-z0-9+.-]*://")


@dataclass(frozen=True)
class ContainerOptions:
    """How to run workers inside an image; ``image=None`` means no container."""

    image: str | None = None  # a .sif path or an image reference
    runtime: str = "auto"
    binds: tuple[str, ...] = ()  # "SRC[:DST[:ro]]"
    env: tuple[str, ...] = ()  # "KEY=VALUE"
    args: str = ""  # extra runtime flags, split with shlex

    @classmethod
    def from_config(cls, c: ContainerConfig) -> ContainerOptions:
        """From the CLI's Container option group (--container_image, --container_bind, ...)."""
        return cls(
            image=c.container_image,
            runtime=c.container_runtime,
            binds=tuple(c.container_bind),
            env=tuple(c.container_env),
            args=c.container_args,
        )


@dataclass(frozen=True)
class Bind:
    """One parsed bind mount; ``dst`` defaults to ``src`` so paths inside match the host."""

    src: str
    dst: str
    ro: bool = False

    def spec(self) -> str:
        """The ``SRC:DST[:ro]`` form every runtime accepts."""
        return f"{self.src}:{self.dst}:ro" if self.ro else f"{self.src}:{self.dst}"


def parse_bind(spec: str) -> Bind:
    """Parse ``SRC[:DST[:ro|rw]]``; ``SRC:ro`` is accepted too since a DST must be absolute."""
    hint = "use SRC[:DST[:ro]] with absolute paths, e.g. --container_bind /data:/data:ro"
    parts = spec.split(":")
    if not spec or any(p == "" for p in parts) or len(parts) > 3:
        raise UsageError(f"invalid container bind {spec!r}: {hint} (paths cannot contain ':')")
    src, rest = parts[0], parts[1:]
    if len(rest) == 1 and rest[0] in ("ro", "rw"):
        rest = [src, rest[0]]
    dst = rest[0] if rest else src
    mode = rest[1] if len(rest) == 2 else "rw"
    if mode not in ("ro", "rw"):
        raise UsageError(f"invalid container bind {spec!r}: mode {mode!r} must be 'ro' or 'rw'; {hint}")
    if not dst.startswith("/"):
        raise UsageError(f"invalid container bind {spec!r}: destination {dst!r} must be absolute; {hint}")
    return Bind(src=src, dst=dst, ro=mode == "ro")


def parse_env(item: str) -> tuple[str, str]:
    """Parse ``KEY=VALUE``; a bare KEY is refused since nothing is inherited from the host."""
    key, sep, value = item.partition("=")
    if not sep or not _ENV_KEY.match(key):
        raise UsageError(
            f"invalid container env {item!r}: use KEY=VALUE with KEY made of letters, digits and '_' "
            "(e.g. --container_env WANDB_MODE=offline)"
        )
    return key, value


def option_problems(opts: ContainerOptions) -> list[tuple[str, str]]:
    """Every container option value that is wrong on any machine, as (what, one line naming the value and the fix).

    ``what`` names the option group ("container", "container runtime", "container image", "container option",
    "container args"); :func:`validate` raises the first, ``nestling doctor`` shows each as a row.
    """
    problems: list[tuple[str, str]] = []
    if opts.runtime not in RUNTIMES:
        problems.append((
            "container runtime",
            f"unknown container runtime {opts.runtime!r}: choose one of {', '.join(RUNTIMES)} "
            "(e.g. --container_runtime auto)",
        ))  # fmt: skip
    if opts.image is None:
        if opts.binds or opts.env or opts.args or opts.runtime != "auto":
            problems.append((
                "container",
                "container options given without an image: set --container_image (a .sif file or an image "
                "reference) or drop the container options",
            ))  # fmt: skip
        return problems
    if not opts.image.strip():
        problems.append(
            ("container image", f"invalid container image {opts.image!r}: give a .sif path or an image reference")
        )
    if opts.image.endswith(".sif") and opts.runtime in OCI_RUNTIMES:
        problems.append((
            "container image",
            f"container image {opts.image!r} is a .sif file, which {opts.runtime} cannot run: use "
            "--container_runtime apptainer (or auto)",
        ))  # fmt: skip
    for spec in opts.binds:
        try:
            parse_bind(spec)
        except UsageError as exc:
            problems.append(("container option", str(exc)))
    for item in opts.env:
        try:
            parse_env(item)
        except UsageError as exc:
            problems.append(("container option", str(exc)))
    try:
        shlex.split(opts.args)
    except ValueError as exc:
        problems.append(
            ("container args", f"invalid container args {opts.args!r}: {exc}; quote them as in a shell")
        )
    return problems


def validate(opts: ContainerOptions) -> None:
    """Refuse bad container options before anything is submitted, one line naming the value and the fix.

    First the values themselves (:func:`option_problems`), then what must exist on this machine: a .sif file
    given by path and every bind source.
    """
    problems = option_problems(opts)
    if problems:
        raise UsageError(problems[0][1])
    if opts.image is None:
        return
    if opts.image.endswith(".sif") and not _URI.match(opts.image) and not Path(opts.image).is_file():
        raise UsageError(
            f"container image {opts.image!r} does not exist: build it (see containers/README.md) or fix the path"
        )
    for spec in opts.binds:
        bind = parse_bind(spec)
        if not Path(bind.src).exists():
            raise UsageError(
                f"container bind source {bind.src!r} (from {spec!r}) does not exist: create it or fix the path"
            )


def docker_daemon_present() -> bool:
    """Cheap check that a docker daemon could answer: DOCKER_HOST, the system socket or a rootless one."""
    if os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists():
        return True
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime_dir, "docker.sock").exists() if runtime_dir else False


def resolve_runtime(
    opts: ContainerOptions,
    which: Callable[[str], str | None] = shutil.which,
    docker_ok: Callable[[], bool] = docker_daemon_present,
) -> str:
    """Pick the runtime for ``opts``; ``auto`` follows the image kind and what is installed.

    .sif -> apptainer, else singularity. Otherwise docker when its client is installed and a daemon socket
    is there (a docker client without a daemon, as on podman-only machines, would only fail later), else
    podman, else docker if at least its client is installed. ``opts`` passed :func:`option_problems` already.
    """
    if opts.runtime != "auto":
        if which(opts.runtime) is None:
            raise UsageError(
                f"container runtime {opts.runtime!r} is not installed (not on PATH): install it, "
                "or choose another with --container_runtime (auto picks what is installed)"
            )
        return opts.runtime
    image = opts.image or ""
    if image.endswith(".sif"):
        for rt in SIF_RUNTIMES:
            if which(rt) is not None:
                return rt
        raise UsageError(
            f"container image {image!r} is a .sif file but neither apptainer nor singularity is installed: "
            "install apptainer, or use a docker/podman image reference"
        )
    if which("docker") is not None and docker_ok():
        return "docker"
    if which("podman") is not None:
        return "podman"
    if which("docker") is not None:
        return "docker"
    raise UsageError(
        f"no container runtime found for image {image!r}: install docker or podman (or apptainer for .sif "
        "images), or set --container_runtime"
    )


def nvidia_cdi_present(dirs: Sequence[str] = CDI_DIRS) -> bool:
    """Whether podman can select NVIDIA GPUs by CDI name (``nvidia-ctk cdi generate`` writes such a spec)."""
    for d in dirs:
        try:
            entries = sorted(Path(d).iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.suffix not in (".yaml", ".yml", ".json"):
                continue
            try:
                if "nvidia.com/gpu" in entry.read_text(errors="replace"):
                    return True
            except OSError:
                continue
    return False


def _host_user() -> tuple[int, int]:
    """The invoking user's uid and gid (a function so tests can pretend to be someone else)."""
    return os.getuid(), os.getgid()


def _apptainer_env(key: str, value: str) -> str:
    """Encode one ``--env`` item: apptainer parses it as a pflag stringToString (CSV once it holds two '=')."""
    pair = f"{key}={value}"
    if "=" in value:
        return '"' + pair.replace('"', '""') + '"'
    if value.endswith('"'):
        raise UsageError(
            f"container env {key}={value!r} ends with a double quote, which apptainer --env strips: "
            "drop the quote or set it inside the image"
        )
    return pair


def wrap_command(
    cmd: Sequence[str],
    opts: ContainerOptions,
    *,
    runtime: str,
    gpus: Sequence[str] | None,
    auto_binds: Sequence[Path],
    env: Mapping[str, str] | None = None,
    workdir: Path | str | None = None,
    interactive: bool = False,
) -> list[str]:
    """Return the argv that runs ``cmd`` inside ``opts.image`` with ``runtime`` (already resolved).

    ``auto_binds`` are bound read-write at the same path; ``env`` (e.g. the SLURM_* variables the caller
    chose) comes after the user's ``opts.env``; nestling's own variables come last and win. ``interactive``
    keeps stdin attached (docker/podman ``-i``; apptainer always passes it), for ``worker --serve``.
    """
    if runtime not in RUNTIMES or runtime == "auto":
        raise ValueError(
            f"wrap_command needs a resolved runtime, got {runtime!r}; call resolve_runtime first"
        )
    if not opts.image:
        raise ValueError("wrap_command needs ContainerOptions.image")
    gpu_ids = [str(g) for g in gpus or ()]
    binds = [Bind(str(p), str(p)) for p in auto_binds] + [parse_bind(b) for b in opts.binds]
    for b in binds:
        if ":" in b.src or ":" in b.dst:
            raise UsageError(f"path {b.src!r} contains ':', which cannot be bound into a container: move it")
        if runtime in SIF_RUNTIMES and ("," in b.src or "," in b.dst):
            raise UsageError(f"path {b.src!r} contains ',', which {runtime} --bind splits on: rename it")

    merged: dict[str, str] = dict(parse_env(e) for e in opts.env)
    merged.update(env or {})
    merged[IN_CONTAINER_ENV] = "1"
    cdi = runtime == "podman" and bool(gpu_ids) and nvidia_cdi_present()
    if gpu_ids:
        renumbered = runtime == "docker" or cdi
        visible = [str(i) for i in range(len(gpu_ids))] if renumbered else gpu_ids
        merged["CUDA_VISIBLE_DEVICES"] = ",".join(visible)
        merged[PHYSICAL_GPUS_ENV] = ",".join(gpu_ids)
    extra = shlex.split(opts.args)

    if runtime in SIF_RUNTIMES:
        # --contain: no $HOME, /tmp or $PWD from the host; --cleanenv: no host environment.
        argv = [runtime, "exec", "--contain", "--cleanenv"]
        if gpu_ids:
            argv.append("--nv")
        for b in binds:
            argv += ["--bind", b.spec()]
        for key, value in merged.items():
            argv += ["--env", _apptainer_env(key, value)]
        if workdir is not None:
            argv += ["--pwd", str(workdir)]
        return [*argv, *extra, opts.image, *cmd]

    # docker / podman: --init forwards SIGTERM (scancel, preemption) and reaps zombies; --ipc=host gives
    # DataLoader workers and NCCL a real /dev/shm instead of the 64 MB default.
    argv = [runtime, "run", "--rm", "--init", "--ipc=host"]
    if interactive:
        argv.append("-i")
    uid, gid = _host_user()
    if runtime == "podman":
        # SELinux hosts would deny the unlabelled binds; relabelling (:z) the user's data is worse.
        argv += ["--security-opt", "label=disable"]
        if uid != 0:
            argv.append("--userns=keep-id")  # rootless: files written keep the user's uid
    elif uid != 0:
        argv += ["--user", f"{uid}:{gid}"]
        merged.setdefault("HOME", "/tmp")  # an arbitrary uid has no writable home in most images
    for b in binds:
        argv += ["-v", b.spec()]
    for key, value in merged.items():
        argv += ["-e", f"{key}={value}"]
    if gpu_ids:
        if runtime == "docker":
            joined = ",".join(gpu_ids)
            # docker parses --gpus as CSV: several ids need the quotes inside the value.
            argv += ["--gpus", f"device={joined}" if len(gpu_ids) == 1 else f'"device={joined}"']
        elif cdi:
            for g in gpu_ids:
                argv += ["--device", f"nvidia.com/gpu={g}"]
    if workdir is not None:
        argv += ["-w", str(workdir)]
    return [*argv, *extra, opts.image, *cmd]


def in_container() -> bool:
    """Whether nestling's wrapper (or apptainer/singularity) started this process inside an image.

    Only the environment counts: ``NESTLING_IN_CONTAINER=1`` (set by :func:`wrap_command` for every runtime)
    and the variables apptainer/singularity set themselves. The marker files ``/.dockerenv`` and
    ``/run/.containerenv`` are deliberately not consulted: they describe the machine nestling itself runs on
    (CI runners, dev containers and sandboxes are often containers), so a launcher started there would record
    ``in_container: true`` for runs it never wrapped. ``run_result.json`` must tell whether *this* run went
    through ``--container_image``.
    """
    if os.environ.get(IN_CONTAINER_ENV) == "1":
        return True
    return bool(os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER"))


def passthrough_env(environ: Mapping[str, str], opts: ContainerOptions | None = None) -> dict[str, str]:
    """The host variables (PASSTHROUGH_PREFIXES) a worker takes into the image; ``--container_env`` keys win."""
    user = {parse_env(e)[0] for e in opts.env} if opts is not None else set()
    return {k: v for k, v in environ.items() if k.startswith(PASSTHROUGH_PREFIXES) and k not in user}


def worker_python(opts: ContainerOptions, executable: str | None = None) -> str:
    """The interpreter a worker runs with inside the image.

    The host's own ``sys.executable`` when a declared bind puts it at the same path inside (the test image and
    "bring your own python" images, see :func:`host_python_binds`); otherwise the image's ``python``.
    """
    exe = os.path.normpath(os.path.abspath(executable or sys.executable))
    for spec in opts.binds:
        bind = parse_bind(spec)
        src, dst = os.path.normpath(bind.src), os.path.normpath(bind.dst)
        if src == dst and (exe == dst or exe.startswith(dst.rstrip("/") + "/")):
            return executable or sys.executable
    return "python"


def image_exists(
    opts: ContainerOptions,
    runtime: str,
    run: Callable[..., subprocess.CompletedProcess[Any]] = subprocess.run,
) -> bool:
    """Whether the image is available locally, for ``nestling doctor``.

    apptainer/singularity fetch URIs (docker://, oras://, library://) at run time, so those count as present.
    """
    image = opts.image
    if not image:
        return False
    if runtime in SIF_RUNTIMES:
        return bool(_URI.match(image)) or Path(image).exists()
    if runtime == "podman":
        probe = ["podman", "image", "exists", image]
    elif runtime == "docker":
        probe = ["docker", "image", "inspect", image]
    else:
        raise ValueError(f"image_exists needs a resolved runtime, got {runtime!r}")
    try:
        done = run(probe, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def host_python_binds() -> list[str]:
    """Read-only binds that let a minimal image run *this* host interpreter, venv and import path.

    For test images (containers/test-image) and "bring your own python" images: the system library dirs
    (for the dynamic loader and libc), the Python install (``sys.base_prefix`` and the real directory of
    ``sys.executable``), the venv (``sys.prefix``) and every directory on ``sys.path``. Each is bound at its
    host path, so ``sys.executable`` works unchanged inside; PYTHONPATH still has to be passed as env.
    """
    system = [p for p in ("/usr", "/lib", "/lib64", "/etc/ld.so.cache") if os.path.exists(p)]
    python: list[str] = [sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))]
    python += [os.path.dirname(os.path.abspath(sys.executable))]
    python += [p for p in sys.path if p and os.path.isabs(p)]
    candidates: list[str] = []
    for p in python:
        for q in (os.path.abspath(p), os.path.realpath(p)):
            if os.path.exists(q) and q not in candidates:
                candidates.append(q)
    chosen: list[str] = list(system)
    for p in sorted(candidates, key=len):
        if p == "/" or ":" in p or any(p == c or p.startswith(c.rstrip("/") + "/") for c in chosen):
            continue
        chosen.append(p)
    return [f"{p}:{p}:ro" for p in chosen]


# -- the description every launcher wraps its worker with -----------------------------------------------------


@dataclass(frozen=True)
class ContainerSpec:
    """The image a launch's workers run in, checked and resolved once on the submitting host.

    ``runtime`` is resolved (never ``auto``); ``auto_binds`` (the artifact dir, the task's data dirs) are bound
    read-write at the same path; ``python`` is the interpreter inside the image (:func:`worker_python`);
    ``workdir`` is where the worker starts.
    """

    image: str
    runtime: str
    binds: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    args: str = ""
    auto_binds: tuple[str, ...] = ()
    python: str = "python"
    workdir: str | None = None

    @classmethod
    def from_config(
        cls, c: ContainerConfig, *, artifact_dir: Path | str, task: Any, task_name: str = "the task"
    ) -> ContainerSpec | None:
        """Validate the CLI's container options and describe the image, or None when no image is set.

        ``task`` is the task preflight already loaded: its ``data_dirs()`` are bound (a missing one is a
        UsageError naming ``task_name``). The worker starts in :func:`worker_dir`.
        """
        opts = ContainerOptions.from_config(c)
        validate(opts)
        if opts.image is None:
            return None
        runtime = resolve_runtime(opts)
        binds, missing = auto_binds(artifact_dir, _data_dirs(task))
        if missing:
            raise UsageError(
                f"data dir {missing[0]!r} of task {task_name!r} does not exist, so it cannot be bound into "
                "the container image: create it or fix the task's data_dirs()"
            )
        return cls(
            image=opts.image,
            runtime=runtime,
            binds=opts.binds,
            env=opts.env,
            args=opts.args,
            auto_binds=tuple(binds),
            python=worker_python(opts),
            workdir=worker_dir(os.getcwd(), opts.binds, binds),
        )

    @property
    def options(self) -> ContainerOptions:
        return ContainerOptions(
            image=self.image, runtime=self.runtime, binds=self.binds, env=self.env, args=self.args
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON object (lists for tuples); :meth:`from_json` reads it back equal."""
        return {
            "image": self.image,
            "runtime": self.runtime,
            "binds": list(self.binds),
            "env": list(self.env),
            "args": self.args,
            "auto_binds": list(self.auto_binds),
            "python": self.python,
            "workdir": self.workdir,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ContainerSpec:
        """Also reads the older units.json shape ({"options": {...}, "runtime", ...}) of launches still queued."""
        if "options" in data:
            # the resolved runtime wins over the option's "auto"; the old top-level "env" was always empty
            data = {**data["options"], **{k: v for k, v in data.items() if k not in ("options", "env")}}
        return cls(
            image=str(data["image"]),
            runtime=str(data["runtime"]),
            binds=tuple(data.get("binds", ())),
            env=tuple(data.get("env", ())),
            args=str(data.get("args", "")),
            auto_binds=tuple(data.get("auto_binds", ())),
            python=str(data.get("python", "python")),
            workdir=data.get("workdir"),
        )

    def wrap(
        self,
        cmd: Sequence[str],
        *,
        environ: Mapping[str, str],
        gpus: Sequence[str] | None = None,
        interactive: bool = False,
        job_task: bool = False,
    ) -> list[str]:
        """The argv that runs the worker command ``cmd`` (``cmd[0]``: the host interpreter) in the image.

        ``environ`` is the worker's host environment; only :func:`passthrough_env` of it enters. ``gpus``: the
        physical ids the worker was given (the local pool's slot). ``job_task``: ``cmd`` is one task of a job
        (a SLURM array task, one srun rank, a submitit job), so its GPUs come from ``environ`` instead:
        apptainer/singularity see the job's devices, so SLURM's ``CUDA_VISIBLE_DEVICES`` passes through;
        docker/podman select devices by node-level id, which is ``SLURM_STEP_GPUS`` / ``SLURM_JOB_GPUS``
        (``CUDA_VISIBLE_DEVICES`` is renumbered when SLURM constrains devices with cgroups). A job with several
        tasks (multi-node DDP) gets the host network on docker/podman so ranks can reach MASTER_ADDR, unless
        ``--container_args`` chose a network. ``interactive`` keeps stdin attached (``worker --serve``).
        """
        opts = self.options
        if job_task:
            ids = environ.get("CUDA_VISIBLE_DEVICES", "")
            if self.runtime in OCI_RUNTIMES:
                ids = environ.get("SLURM_STEP_GPUS") or environ.get("SLURM_JOB_GPUS") or ids
            gpus = [g for g in ids.split(",") if g and g != "NoDevFiles"] or None
            multi_task = int(environ.get("SLURM_NTASKS", "1") or 1) > 1
            if (
                self.runtime in OCI_RUNTIMES
                and multi_task
                and not any(a.startswith("--net") for a in shlex.split(opts.args))
            ):
                opts = dataclasses.replace(opts, args=f"{opts.args} --network host".strip())
        return wrap_command(
            [self.python, *cmd[1:]],
            opts,
            runtime=self.runtime,
            gpus=gpus,
            auto_binds=[Path(p) for p in self.auto_binds],
            env=passthrough_env(environ, opts),
            workdir=self.workdir,
            interactive=interactive,
        )


def auto_binds(artifact_dir: Path | str, data_dirs: Sequence[str | Path]) -> tuple[list[str], list[str]]:
    """(what to bind at the same path, the data dirs that do not exist): the artifact dir, then each data dir
    not already inside a bind."""
    binds = [str(Path(artifact_dir).resolve())]
    missing: list[str] = []
    for d in data_dirs:
        path = Path(d).resolve()
        if not path.exists():
            missing.append(str(d))
        elif not any(path == Path(b) or Path(b) in path.parents for b in binds):
            binds.append(str(path))
    return binds, missing


def worker_dir(cwd: str, binds: Sequence[str], auto: Sequence[str]) -> str:
    """Where the worker starts inside the image: a directory that exists there whatever the runtime.

    The submitting directory when a bind puts it at the same path (``python -m`` then keeps a task module that
    lives there importable); otherwise the artifact dir (``auto[0]``), which is always bound. Podman refuses to
    start in a directory the image lacks (``workdir ... does not exist on container``), and the code may well be
    baked into the image with nothing of the submitting directory bound. Run dirs, specs and splits files hold
    absolute paths (preflight resolves the artifact dir), so nothing depends on which of the two it is.
    """
    here = Path(cwd).resolve()
    same_path = [Path(b) for b in auto]
    for spec in binds:
        bind = parse_bind(spec)
        if os.path.normpath(bind.src) == os.path.normpath(bind.dst):
            same_path.append(Path(bind.src).resolve())
    if any(here == b or b in here.parents for b in same_path):
        return str(here)
    return str(auto[0])


def _data_dirs(task: Any) -> list[str | Path]:
    """The task's optional ``data_dirs()`` (directories its data lives in), [] when it has none."""
    data_dirs = getattr(task, "data_dirs", None) if task is not None else None
    return list(data_dirs()) if callable(data_dirs) else []
