"""The container runtime interface: one class per runtime (apptainer.py, oci.py) behind one small abstract class,
as Lightning's ``ClusterEnvironment`` (``lightning/fabric/plugins/environments/cluster_environment.py``) puts one
class per cluster behind ``detect()`` and a few properties. detect.py lists them and picks one.

A runtime turns an :class:`Invocation` (the worker command, the image, the binds, the environment, the GPUs) into
a :class:`Wrapped` command: an argv list, never a shell string (paths with spaces, quotes or newlines stay one
argument), plus the environment the runtime process itself must get (secrets travel there, by name, never in the
argv). Only what the invocation names is bound from the host, and the host environment does not leak in.

Every runtime sets ``NESTLING_IN_CONTAINER=1``, ``NESTLING_IMAGE_DIGEST`` when the launch learnt the image's
digest (the run records it), and, with GPUs, ``NESTLING_PHYSICAL_GPUS`` (the node-level ids) and
``CUDA_VISIBLE_DEVICES`` (the ids as CUDA numbers them inside: the runtime's business).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from nestling.core.containers.env import EnvPlan
from nestling.core.containers.options import Bind
from nestling.core.host.processes import Run, Which

IN_CONTAINER_ENV = "NESTLING_IN_CONTAINER"
IMAGE_DIGEST_ENV = "NESTLING_IMAGE_DIGEST"
PHYSICAL_GPUS_ENV = "NESTLING_PHYSICAL_GPUS"


def host_user() -> tuple[int, int]:
    """The invoking user's uid and gid (a function so tests can pretend to be someone else)."""
    return os.getuid(), os.getgid()


def node_scratch(environ: Mapping[str, str]) -> str:
    """A node-local directory of this user for a runtime's own scratch: under ``$TMPDIR`` when it is set (SLURM
    sites point it at a job-private directory on local disk), else under /tmp; never a tmpfs of the runtime."""
    base = environ.get("TMPDIR", "")
    return os.path.join(base if os.path.isabs(base) else "/tmp", f"nestling-{host_user()[0]}")


@dataclass(frozen=True)
class WorkerGpus:
    """The GPUs one worker was given.

    ``physical``: the node-level ids (as nvidia-smi, docker and CDI number them); ``host_visible``: the worker's
    ``CUDA_VISIBLE_DEVICES`` on the host (SLURM renumbers it from 0 when it constrains devices with cgroups);
    ``wanted``: the run trains on GPUs, so the driver must be there even when no id is known (a count-only GRES
    leaves ``CUDA_VISIBLE_DEVICES`` unset).
    """

    physical: tuple[str, ...] = ()
    host_visible: tuple[str, ...] = ()
    wanted: bool = False

    @property
    def any(self) -> bool:
        return bool(self.physical or self.host_visible or self.wanted)


@dataclass(frozen=True)
class Invocation:
    """What to run in the image and with what; a runtime turns it into a :class:`Wrapped` command.

    ``cmd``: the command inside (interpreter first); ``env``: literal values and values passed by name;
    ``workdir``: where the command starts; ``interactive``: keep stdin attached (``worker --serve``);
    ``multi_task``: one of several tasks of a job (srun ranks), which must reach each other's rendezvous;
    ``args``: the user's extra runtime flags; ``scratch``: a node-local directory the runtime may use;
    ``image_digest``: the image's digest, when the launch learnt it (the worker records it).
    """

    cmd: tuple[str, ...]
    image: str
    binds: tuple[Bind, ...] = ()
    env: EnvPlan = field(default_factory=EnvPlan)
    gpus: WorkerGpus = field(default_factory=WorkerGpus)
    workdir: str | None = None
    interactive: bool = False
    multi_task: bool = False
    args: tuple[str, ...] = ()
    scratch: str = "/tmp"
    image_digest: str | None = None


@dataclass(frozen=True)
class Wrapped:
    """A command ready to start: ``argv`` and the environment of the runtime process (``env``); ``make_dirs``
    must exist first (the runtime's scratch)."""

    argv: list[str]
    env: dict[str, str]
    make_dirs: tuple[str, ...] = ()

    def prepare(self) -> None:
        for d in self.make_dirs:
            Path(d).mkdir(mode=0o700, parents=True, exist_ok=True)

    def popen(self, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start it: the scratch dirs are made, the environment is this command's own."""
        self.prepare()
        return subprocess.Popen(self.argv, env=self.env, **kwargs)


class ContainerRuntime(ABC):
    """One container runtime.

    ``detect`` says whether ``--container_runtime auto`` picks it for an image on this machine (detect.py asks the
    runtimes in order); ``command`` builds what starts a worker; ``image_available`` and ``version`` serve
    ``nestling doctor`` and the checks at launch. ``version`` is the runtime's ``--version`` line on the
    submitting host, when known: a runtime may choose its flags by it.
    """

    name: ClassVar[str]
    sif_images: ClassVar[bool] = False  # runs .sif files (apptainer, singularity)

    def __init__(self, version: str | None = None) -> None:
        self.version = version

    @classmethod
    def installed(cls, which: Which = shutil.which) -> bool:
        return which(cls.name) is not None

    @classmethod
    @abstractmethod
    def detect(cls, image: str, which: Which = shutil.which) -> bool:
        """Whether ``auto`` picks this runtime for ``image`` here."""

    @abstractmethod
    def command(self, inv: Invocation, environ: Mapping[str, str]) -> Wrapped:
        """The command that runs ``inv`` in its image; ``environ`` is what the runtime process would inherit."""

    @abstractmethod
    def image_available(self, image: str, run: Run = subprocess.run) -> bool:
        """Whether ``image`` can be started here without fetching it."""

    def probe_args(self) -> tuple[str, ...]:
        """Extra flags for a one-off probe of the image on the submitting host (never pull)."""
        return ()

    def image_digest(self, image: str, run: Run = subprocess.run) -> str | None:
        """The digest that names the image's content (``sha256:...``), once per launch on the submitting host;
        None when it cannot be learnt without fetching the image."""
        return None

    @staticmethod
    def literal_env(inv: Invocation, visible: Sequence[str], base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The values set inside on the command line: ``base`` (default: the invocation's literal ones), then
        nestling's own, last so they win: the marker, the GPU ids inside and the physical ones."""
        own = {IN_CONTAINER_ENV: "1"}
        if inv.image_digest:
            own[IMAGE_DIGEST_ENV] = inv.image_digest
        if visible:
            own["CUDA_VISIBLE_DEVICES"] = ",".join(visible)
        physical = inv.gpus.physical or inv.gpus.host_visible
        if physical:
            own[PHYSICAL_GPUS_ENV] = ",".join(physical)
        given = inv.env.literal if base is None else base
        return {**{k: v for k, v in given.items() if k not in own}, **own}
