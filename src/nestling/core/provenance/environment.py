"""The Python environment a process runs in, as a record and a digest: the installed distributions and their
versions, the interpreter, and the torch build (its CUDA / ROCm version and git commit).

Nothing is imported to learn it: distributions come from the names of the ``*.dist-info`` / ``*.egg-info``
directories on sys.path (importlib.metadata would parse every METADATA file: 0.2 s for 120 distributions, here
1 ms), and torch's build from its ``torch/version.py``, read as text. So the CLI computes the same digest as a
worker that imported torch, and `nestling status` stays light.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import platform
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from nestling.core.provenance.digest import short_digest

TORCH_BUILD_KEYS = ("__version__", "cuda", "hip", "rocm", "xpu", "git_version", "debug")


@dataclass(frozen=True)
class EnvRecord:
    """``digest``: of everything else here; ``python``: implementation, version, machine and OS; ``torch``: its
    build (None without torch); ``distributions``: normalised name -> version, as the import system sees them."""

    digest: str
    python: str
    torch: dict[str, Any] | None = None
    distributions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "python": self.python, "torch": self.torch,
                "distributions": self.distributions}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EnvRecord:
        return cls(str(data["digest"]), str(data.get("python", "")), data.get("torch"),
                   dict(data.get("distributions") or {}))  # fmt: skip


def current(path: Iterable[str] | None = None) -> EnvRecord:
    """This process's environment (`path`: sys.path)."""
    python = f"{platform.python_implementation()} {platform.python_version()} {platform.machine()} {sys.platform}"
    dists = distributions(list(sys.path if path is None else path))
    torch = torch_build()
    payload = json.dumps({"python": python, "torch": torch, "distributions": dists}, sort_keys=True)
    return EnvRecord(short_digest(payload.encode()), python, torch, dists)


@lru_cache(maxsize=1)
def process_digest() -> str:
    """This process's environment digest, computed once (a warm worker records it on every run)."""
    return current().digest


_DIST_DIR = re.compile(r"^(?P<name>[^-]+)(?:-(?P<version>[^-]+?))?(?:-py[\d.]+)?\.(?:dist|egg)-info$")


def distributions(path: list[str]) -> dict[str, str]:
    """name -> version of every distribution on `path`; the first of a name wins, as for imports."""
    found: dict[str, str] = {}
    for entry in path:
        if not entry or not os.path.isdir(entry):
            continue
        try:
            names = sorted(os.listdir(entry))
        except OSError:
            continue
        for name in names:
            match = _DIST_DIR.match(name)
            if match is None:
                continue
            key = re.sub(r"[-_.]+", "_", match["name"]).lower()
            if key in found:
                continue
            version = match["version"] or _pkg_info_version(Path(entry, name))
            found[key] = version or "unknown"
    return dict(sorted(found.items()))


def _pkg_info_version(egg_info: Path) -> str | None:
    """The Version: line of an .egg-info's PKG-INFO (an editable install's dir name carries no version)."""
    target = egg_info / "PKG-INFO" if egg_info.is_dir() else egg_info
    try:
        with open(target, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("Version:"):
                    return line.split(":", 1)[1].strip()
                if not line.strip():
                    break
    except OSError:
        return None
    return None


def torch_build() -> dict[str, Any] | None:
    """torch's version.py values (version, CUDA, HIP/ROCm, git commit), read without importing torch."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    version_file = Path(next(iter(spec.submodule_search_locations)), "version.py")
    try:
        tree = ast.parse(version_file.read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    build: dict[str, Any] = {}
    for node in tree.body:
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            target, value = node.target.id, node.value
        if target in TORCH_BUILD_KEYS and isinstance(value, ast.Constant):
            build[target.strip("_")] = value.value
    return build or None


def changes(before: EnvRecord, now: EnvRecord) -> list[str]:
    """What differs, for a person: `torch 2.13.0 -> 2.14.1`, `numpy added`, `python ... -> ...`, torch's build."""
    out = []
    if before.python != now.python:
        out.append(f"python {before.python} -> {now.python}")
    if (before.torch or {}) != (now.torch or {}):
        keys = sorted({*(before.torch or {}), *(now.torch or {})})
        out += [f"torch {k} {(before.torch or {}).get(k)} -> {(now.torch or {}).get(k)}"
                for k in keys if (before.torch or {}).get(k) != (now.torch or {}).get(k) and k != "version"]  # fmt: skip
    old, new = before.distributions, now.distributions
    for name in sorted({*old, *new}):
        if name not in new:
            out.append(f"{name} removed")
        elif name not in old:
            out.append(f"{name} {new[name]} added")
        elif old[name] != new[name]:
            out.append(f"{name} {old[name]} -> {new[name]}")
    return out
