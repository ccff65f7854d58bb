"""The --container_* options: parsing binds and env items, and every problem with them found before anything runs."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from nestling.core.errors import UsageError
from nestling.core.options.choices import ContainerRuntime

if TYPE_CHECKING:
    from nestling.core.options.config import Container as ContainerConfig

SIF_RUNTIMES = ("apptainer", "singularity")
OCI_RUNTIMES = ("docker", "podman")
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
    if opts.runtime not in get_args(ContainerRuntime):
        problems.append((
            "container runtime",
            f"unknown container runtime {opts.runtime!r}: choose one of {', '.join(get_args(ContainerRuntime))} "
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
