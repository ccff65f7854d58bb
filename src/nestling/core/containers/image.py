"""The image before the first worker starts: a URI pulled once, the image's interpreter and nestling found once.

- A URI image (``docker://``, ``oras://``, ``library://``, ...) given to apptainer/singularity would be fetched and
  converted to SIF by every worker when it starts, each SLURM array task racing the others in the same cache
  (apptainer/singularity issues #5020, #5334). The launch pulls it once instead, ``apptainer pull`` to the .sif
  the spec names (``{artifact_dir}/_images/``, shared by the plans of that dir; delete it to pull again).
- ``python`` is what most images have, but some ship ``python3`` only: the launch runs the image once and takes
  the one that answers. The same probe tells ``nestling doctor`` whether the image's nestling imports and which
  version it is.
- The image's digest (the runtime class says how: a .sif file's SHA-256, an OCI image's ID) is learnt once here,
  so that every run records the image it ran in without each worker asking the runtime. Hashing a .sif of several
  GB takes seconds, so a file's digest is kept in this user's cache (naming.image_digest_cache) under its path,
  size, mtime and inode: the next launch (a resume, another plan) of the same file reads it back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nestling.core.containers.detect import runtime_named
from nestling.core.containers.options import parse_bind
from nestling.core.containers.spec import ContainerSpec
from nestling.core.errors import UsageError
from nestling.core.host.processes import Run
from nestling.core.tree import naming
from nestling.core.tree.atomic import write_json

PROBE = (
    "import json\n"
    "try:\n    import nestling; v = nestling.__version__\nexcept Exception:\n    v = None\n"
    "print(json.dumps({'nestling_version': v}))"
)
PYTHONS = ("python", "python3")


@dataclass(frozen=True)
class ImageProbe:
    """What the image answered: the interpreter that ran (None: neither ``python`` nor ``python3``), its nestling
    version (None: not importable), and the runtime's last words when nothing ran."""

    python: str | None
    nestling_version: str | None
    detail: str = ""


def probe_image(spec: ContainerSpec, environ: Mapping[str, str] = os.environ, run: Run = subprocess.run) -> ImageProbe:
    """Run the image once with its own interpreter (``python``, then ``python3``), or the bound host one."""
    candidates = PYTHONS if spec.python == "python" else (spec.python,)
    # before the first launch the artifact dir may not exist yet: the probe needs none of it
    exists = [b for b in spec.auto_binds if os.path.exists(parse_bind(b).src)]
    workdir = spec.workdir if spec.workdir and os.path.isdir(spec.workdir) else None
    detail = ""
    for python in candidates:
        wrapped = dataclasses.replace(spec, python=python, auto_binds=tuple(exists), workdir=workdir).wrap(
            [python, "-c", PROBE], environ=environ, extra_args=runtime_named(spec.runtime).probe_args()
        )
        wrapped.prepare()
        try:
            done = run(wrapped.argv, env=wrapped.env, capture_output=True, text=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return ImageProbe(None, None, f"{type(exc).__name__}: {exc}")
        lines = (done.stdout or "").strip().splitlines()
        if done.returncode == 0 and lines:
            try:
                version = json.loads(lines[-1]).get("nestling_version")
            except (ValueError, AttributeError):
                version = None
            return ImageProbe(python, version)
        detail = " ".join((done.stderr or "").strip().splitlines()[-2:]) or f"exit code {done.returncode}"
    return ImageProbe(None, None, detail)


def pull(spec: ContainerSpec, environ: Mapping[str, str] = os.environ, run: Run = subprocess.run) -> None:
    """``apptainer pull`` the spec's URI to its .sif, atomically (a half-pulled file never has the final name)."""
    target = Path(spec.image)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    argv = [spec.runtime, "pull", "--force", str(tmp), str(spec.image_source)]
    print(f"nestling: pulling {spec.image_source} once to {target}", file=sys.stderr, flush=True)
    try:
        done = run(argv, env=dict(environ), check=False)
    except OSError as exc:
        done = subprocess.CompletedProcess(argv, 127, stderr=str(exc))
    if done.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise UsageError(
            f"could not pull container image {spec.image_source!r} (exit code {done.returncode}): check the "
            f"reference, or pull it yourself and pass the .sif: {spec.runtime} pull {target} {spec.image_source}"
        )
    os.replace(tmp, target)


def image_digest(spec: ContainerSpec, run: Run = subprocess.run) -> str | None:
    """The digest of the spec's image; an image file's from the cache when the file is unchanged since hashed."""
    runtime = runtime_named(spec.runtime)
    try:
        st = os.stat(spec.image)
    except OSError:  # an image reference (docker/podman), not a file
        return runtime.image_digest(spec.image, run)
    key = os.path.realpath(spec.image)
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    cache_file = naming.image_digest_cache()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    known = cache.get(key) if isinstance(cache, dict) else None
    if isinstance(known, dict) and known.get("stamp") == stamp and known.get("digest"):
        return str(known["digest"])
    digest = runtime.image_digest(spec.image, run)
    if digest is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            write_json(cache_file, {**(cache if isinstance(cache, dict) else {}), key: {"stamp": stamp, "digest": digest}})
        except OSError:  # a read-only home: hash again next time
            pass
    return digest


def ready(spec: ContainerSpec, environ: Mapping[str, str] = os.environ, run: Run = subprocess.run) -> ContainerSpec:
    """What a launch does once before any worker starts: pull a URI image, learn its digest, find its interpreter."""
    if spec.image_source is not None and not Path(spec.image).is_file():
        pull(spec, environ, run)
    if spec.image_digest is None:
        spec = dataclasses.replace(spec, image_digest=image_digest(spec, run))
    if spec.python != "python":  # the host interpreter, bound in: nothing to find
        return spec
    found = probe_image(spec, environ, run)
    if found.python is None:
        print(
            f"nestling: could not run python or python3 in {spec.image} here ({found.detail}); workers run "
            "`python` (`nestling doctor` checks the image)",
            file=sys.stderr,
            flush=True,
        )
        return spec
    return dataclasses.replace(spec, python=found.python)
