"""The --container_* values: parsing binds, env items and pass patterns, and every problem with them found before
anything runs (one line naming the value and the fix)."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from nestling.core.containers.env import is_secret_name
from nestling.core.errors import UsageError
from nestling.core.options.choices import RuntimeName

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nestling.core.options.config import Container as ContainerConfig

SIF_RUNTIMES = ("apptainer", "singularity")
OCI_RUNTIMES = ("docker", "podman")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_PATTERN = re.compile(r"^[A-Za-z0-9_*?]+$")
# Images apptainer fetches from elsewhere each time it starts one (docker://, oras://, library://, shub://, https://)
REMOTE_IMAGE = re.compile(r"^(docker|oras|library|shub|https?)://")
_URI = re.compile(r"^[a-z][a-z0-9+.-]*://")


@dataclass(frozen=True)
class Bind:
    """One bind mount; ``dst`` defaults to ``src`` so paths inside match the host."""

    src: str
    dst: str
    ro: bool = False

    def spec(self) -> str:
        """The ``SRC:DST[:ro]`` form every runtime accepts."""
        return f"{self.src}:{self.dst}:ro" if self.ro else f"{self.src}:{self.dst}"


@dataclass(frozen=True)
class EnvItem:
    """One --container_env item: ``KEY=VALUE`` sets a literal value; a bare ``KEY`` passes the host's value by
    name (it never appears in a command line or a file)."""

    key: str
    value: str | None

    @property
    def by_name(self) -> bool:
        return self.value is None


def parse_bind(spec: str) -> Bind:
    """Parse ``SRC[:DST[:ro|rw]]`` (``SRC:ro`` too); a DST must be absolute, a SRC alone may be relative."""
    hint = "use SRC[:DST[:ro]] with an absolute DST, e.g. --container_bind /data:/data:ro"
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
    if dst != src and not dst.startswith("/"):
        raise UsageError(f"invalid container bind {spec!r}: destination {dst!r} must be absolute; {hint}")
    return Bind(src=src, dst=dst, ro=mode == "ro")


def resolve_bind(spec: str, cwd: str | Path) -> Bind:
    """The bind as the runtime must see it: the source absolute and resolved, the destination as given.

    A relative source becomes absolute against ``cwd`` (podman and docker take ``reldata:/data`` for a *named
    volume*, created empty); a symlinked source is bound from where it points, at the path the user gave (bound
    at its resolved path only, the task's own path would not exist inside).
    """
    bind = parse_bind(spec)
    given = os.path.normpath(os.path.join(cwd, bind.src))
    dst = given if bind.dst == bind.src else bind.dst
    return Bind(src=os.path.realpath(given), dst=dst, ro=bind.ro)


def parse_env(item: str) -> EnvItem:
    """Parse ``KEY=VALUE`` or a bare ``KEY`` (passed by name); a secret's value is refused on the command line."""
    key, sep, value = item.partition("=")
    if not _ENV_KEY.match(key):
        raise UsageError(
            f"invalid container env {_shown(item)!r}: use KEY=VALUE, or KEY to pass this shell's value by name, "
            "with KEY made of letters, digits and '_' (e.g. --container_env WANDB_MODE=offline)"
        )
    if sep and is_secret_name(key):
        raise UsageError(
            f"container env {key}=… puts a secret on the command line (and into the plan): export {key} in the "
            f"shell that launches and pass it by name, --container_env {key}"
        )
    return EnvItem(key, value if sep else None)


def _shown(item: str) -> str:
    """An env item as an error may print it: a secret-looking key never shows its value."""
    key, sep, _ = item.partition("=")
    return f"{key}=…" if sep and is_secret_name(key) else item


def parse_env_pass(pattern: str) -> str:
    """A --container_env_pass pattern: a variable name, or a glob such as ``NCCL_*``."""
    if not _ENV_PATTERN.match(pattern) or not re.search(r"[A-Za-z_]", pattern):
        raise UsageError(
            f"invalid container env pass pattern {pattern!r}: use a variable name or a glob of letters, digits, "
            "'_', '*' and '?' (e.g. --container_env_pass 'MY_SITE_*')"
        )
    return pattern


def option_problems(c: ContainerConfig, environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """Every container option value that is wrong on this machine, as (what, one line naming the value and the fix).

    ``what`` names the option group ("container", "container runtime", "container image", "container option",
    "container args"); :func:`validate` raises the first, ``nestling doctor`` shows each as a row. ``environ``
    (default: this process's) must hold every variable passed by name.
    """
    environ = os.environ if environ is None else environ
    problems: list[tuple[str, str]] = []
    if c.container_runtime not in get_args(RuntimeName):
        problems.append((
            "container runtime",
            f"unknown container runtime {c.container_runtime!r}: choose one of {', '.join(get_args(RuntimeName))} "
            "(e.g. --container_runtime auto)",
        ))  # fmt: skip
    image = c.container_image
    if image is None:
        given = c.container_bind or c.container_env or c.container_env_pass or c.container_args
        if given or c.container_runtime != "auto":
            problems.append((
                "container",
                "container options given without an image: set --container_image (a .sif file or an image "
                "reference) or drop the container options",
            ))  # fmt: skip
        return problems
    if not image.strip():
        problems.append(
            ("container image", f"invalid container image {image!r}: give a .sif path or an image reference")
        )
    apptainer_only = image.endswith(".sif") or (REMOTE_IMAGE.match(image) and not image.startswith("docker://"))
    if apptainer_only and c.container_runtime in OCI_RUNTIMES:
        problems.append((
            "container image",
            f"container image {image!r} is an apptainer image, which {c.container_runtime} cannot run: use "
            "--container_runtime apptainer (or auto)",
        ))  # fmt: skip
    for spec in c.container_bind:
        try:
            parse_bind(spec)
        except UsageError as exc:
            problems.append(("container option", str(exc)))
    for item in c.container_env:
        try:
            env = parse_env(item)
        except UsageError as exc:
            problems.append(("container option", str(exc)))
            continue
        if env.by_name and env.key not in environ:
            problems.append((
                "container option",
                f"container env {env.key!r} is passed by name but is not set here: export {env.key} before "
                f"launching, or give a value with --container_env {env.key}=VALUE",
            ))  # fmt: skip
    for pattern in c.container_env_pass:
        try:
            parse_env_pass(pattern)
        except UsageError as exc:
            problems.append(("container option", str(exc)))
    try:
        shlex.split(c.container_args)
    except ValueError as exc:
        problems.append(
            ("container args", f"invalid container args {c.container_args!r}: {exc}; quote them as in a shell")
        )
    return problems


def validate(c: ContainerConfig, cwd: str | Path | None = None) -> None:
    """Refuse bad container options before anything is submitted, one line naming the value and the fix.

    First the values themselves (:func:`option_problems`), then what must exist on this machine: a .sif file
    given by path and every bind source (relative ones against ``cwd``, the submitting directory).
    """
    problems = option_problems(c)
    if problems:
        raise UsageError(problems[0][1])
    image = c.container_image
    if image is None:
        return
    if image.endswith(".sif") and not _URI.match(image) and not Path(image).is_file():
        raise UsageError(
            f"container image {image!r} does not exist: build it (see containers/README.md) or fix the path"
        )
    for spec in c.container_bind:
        bind = resolve_bind(spec, cwd or os.getcwd())
        if not Path(bind.src).exists():
            raise UsageError(
                f"container bind source {bind.src!r} (from {spec!r}) does not exist: create it or fix the path"
            )
