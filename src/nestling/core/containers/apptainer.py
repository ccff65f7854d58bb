"""Apptainer and SingularityCE: the runtimes HPC sites allow. Each choice below cites where the behaviour comes
from (apptainer source at github.com/apptainer/apptainer; docs/containers.md explains them for users):

``exec --contain --bind /dev --workdir SCRATCH --cleanenv [--no-eval] [--nv] --bind ... --env ... --pwd DIR``

- ``--contain`` keeps the host's ``$HOME``, ``/tmp``, ``/var/tmp`` and working directory out: nothing from the host
  is visible unless declared. Alone it would also give the image a minimal ``/dev`` with its own tmpfs
  ``/dev/shm`` and no ``/dev/infiniband`` (``container_linux.go`` ``addDevMount``: "mount dev = minimal ||
  GetContain()"); NCCL then rules out P2P/NVLink and SHM between two ranks whose ``/dev/shm`` differ
  (``src/graph/paths.cc`` ``ncclTopoCheckP2p`` and ``src/transport/shm.cc`` ``shmCanConnect`` compare the
  ``shmDev`` that ``src/init.cc`` takes from ``stat("/dev/shm")``), so the ranks of one node would talk over TCP.
  ``--bind /dev`` is the one bind that undoes it: under ``--contain`` it resets the staged ``/dev`` to the host's
  (``addUserbindsMount``: "--bind /dev" case, ``RemoveByTag(DevTag)``), while ``--bind /dev/shm`` alone is skipped
  as "already mounted". Without ``--contain`` a ``--bind /dev`` would be a second bind of ``/dev`` (apptainer
  issue #2963), which is why the two go together.
- ``--workdir SCRATCH``: with ``--contain``, ``/tmp``, ``/var/tmp`` and ``$HOME`` are otherwise directories of the
  session tmpfs (64 MiB, ``sessiondir max size`` in apptainer.conf), where torch hub, Hugging Face, Triton and
  wandb's config run out of space; under ``--workdir`` they are ``SCRATCH/tmp``, ``SCRATCH/var_tmp`` and
  ``SCRATCH/home`` on node-local disk (``addTmpMount``, ``addHomeStagingDir``).
- ``--cleanenv``: the host environment stays out; what a worker needs is named in env.py. Host ``APPTAINERENV_*``,
  ``APPTAINER_BIND`` and the other ``APPTAINER_*`` settings of the person launching still apply.
- ``--no-eval`` (Apptainer >= 1.1, SingularityCE >= 3.10): otherwise each ``--env`` value is written into a
  script as ``export KEY="VALUE"`` with only ``"`` escaped and sourced by a shell (``process_linux.go``
  ``injectEnvHandler``, ``shell.EscapeDoubleQuotes``), so ``$HOME`` is expanded and a trailing ``\\`` breaks the
  start. Older runtimes get the values escaped for that shell instead (:func:`for_eval`), which yields the same
  literal value.
- ``--env KEY=VALUE`` is parsed by pflag's ``stringToString``: a value with another ``=`` is read as CSV, one with
  a single ``=`` has its quotes trimmed (:func:`env_flag`). Secrets and values ``--env`` cannot carry go as
  ``APPTAINERENV_KEY`` in the runtime's environment instead (``SINGULARITYENV_`` for SingularityCE).
- ``--nv`` whenever the worker trains on GPUs, also with no id known (a count-only GRES leaves
  ``CUDA_VISIBLE_DEVICES`` unset); apptainer runs inside the task's cgroup, so the ``CUDA_VISIBLE_DEVICES`` the
  host process has is the one that selects its GPUs inside.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from nestling.core.containers.options import REMOTE_IMAGE
from nestling.core.containers.runtimes import ContainerRuntime, Invocation, Wrapped
from nestling.core.host.processes import Run, Which

_VERSION = re.compile(r"(?P<flavor>apptainer|singularity-ce|singularity)?\D*(?P<major>\d+)\.(?P<minor>\d+)")


def parse_version(text: str | None) -> tuple[str, tuple[int, int]] | None:
    """(flavor, (major, minor)) from a ``--version`` line: "apptainer version 1.3.4",
    "singularity-ce version 3.11.4-jammy", "singularity version 3.8.7-1.el7"; None when unreadable."""
    if not text:
        return None
    m = _VERSION.search(text.strip().lower())
    if m is None:
        return None
    return m["flavor"] or "", (int(m["major"]), int(m["minor"]))


def for_eval(value: str) -> str:
    """``value`` escaped so that the shell apptainer sources it with (``export K="…"``, ``"`` escaped by apptainer
    itself) yields it literally: ``\\``, ``$`` and backquote get a backslash."""
    return value.replace("\\", "\\\\").replace("$", "\\$").replace("`", "\\`")


def env_flag(key: str, value: str) -> str | None:
    """One ``--env`` item as pflag's stringToString reads it back to (key, value), or None when it cannot.

    With one ``=`` the whole item is ``strings.Trim``-med of ``"``: a value ending in ``"`` cannot pass. With more
    ``=`` the item is one CSV record: quote it, doubling quotes, and a comma stays inside the field.
    """
    pair = f"{key}={value}"
    if "=" in value:
        return '"' + pair.replace('"', '""') + '"'
    if value.endswith('"'):
        return None
    return pair


class Apptainer(ContainerRuntime):
    name: ClassVar[str] = "apptainer"
    sif_images: ClassVar[bool] = True
    env_prefix: ClassVar[str] = "APPTAINERENV_"

    @classmethod
    def detect(cls, image: str, which: Which = shutil.which) -> bool:
        """A .sif, or a URI in apptainer's syntax (docker://, oras://, library://, ...)."""
        return (image.endswith(".sif") or bool(REMOTE_IMAGE.match(image))) and cls.installed(which)

    @property
    def no_eval(self) -> bool:
        """Whether this runtime has ``--no-eval`` (Apptainer 1.1, SingularityCE 3.10); unknown: no, the escaped
        fallback is right on every version."""
        parsed = parse_version(self.version)
        if parsed is None:
            return False
        flavor, version = parsed
        if flavor == "singularity-ce":
            return version >= (3, 10)
        if flavor == "singularity":  # Singularity before the CE/Apptainer split: 3.8 at most
            return False
        return version >= (1, 1)

    def command(self, inv: Invocation, environ: Mapping[str, str]) -> Wrapped:
        argv = [self.name, "exec", "--contain", "--bind", "/dev", "--workdir", inv.scratch, "--cleanenv"]
        if self.no_eval:
            argv.append("--no-eval")
        if inv.gpus.any:
            argv.append("--nv")
        for b in inv.binds:  # no ',' in them: spec.py refuses such paths, --bind splits on it
            argv += ["--bind", b.spec()]
        child = dict(environ)
        literal = self.literal_env(inv, inv.gpus.host_visible)
        by_name = dict(inv.env.by_name)
        for key, value in literal.items():
            item = env_flag(key, value if self.no_eval else for_eval(value))
            if item is None:
                by_name[key] = value
            else:
                argv += ["--env", item]
        for key, value in by_name.items():
            child[self.env_prefix + key] = value if self.no_eval else for_eval(value)
        if inv.workdir is not None:
            argv += ["--pwd", inv.workdir]
        return Wrapped([*argv, *inv.args, inv.image, *inv.cmd], child, make_dirs=(inv.scratch,))

    def image_available(self, image: str, run: Run = subprocess.run) -> bool:
        return bool(REMOTE_IMAGE.match(image)) or Path(image).exists()

    def image_digest(self, image: str, run: Run = subprocess.run) -> str | None:
        """The SHA-256 of the .sif file (a URI is pulled to one before this is asked)."""
        try:
            with open(image, "rb") as f:
                return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
        except OSError:
            return None


class Singularity(Apptainer):
    """SingularityCE, or an apptainer install's ``singularity`` name: apptainer's flags; SingularityCE reads
    ``SINGULARITYENV_`` only."""

    name: ClassVar[str] = "singularity"

    @property
    def env_prefix(self) -> str:  # type: ignore[override]
        parsed = parse_version(self.version)
        return "APPTAINERENV_" if parsed is not None and parsed[0] == "apptainer" else "SINGULARITYENV_"
