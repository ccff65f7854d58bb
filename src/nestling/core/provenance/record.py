"""A plan's provenance (plan.json's ``provenance``) and a run's (the six fields of run_result.json that name it).

The plan records what was there when it was made: its code snapshot (``_code/{key}``, relative to the plan root),
the submitting host's environment (with every distribution, so that a resume can name what changed) and the
task's data digest. Each run records what its own worker saw: the snapshot it imported, its environment's digest,
the data digest its task gave, and the image it ran in; these may differ from the plan's (a run in an image, a
node with other packages), which is exactly what a reader of the results wants to see.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestling.core.provenance.environment import EnvRecord
from nestling.core.provenance.snapshot import CodeManifest, read_manifest
from nestling.core.tree import naming

DIGEST_FIELDS = ("code_digest", "env_digest", "data_digest", "image_digest")


@dataclass(frozen=True)
class TakenCode:
    """The code of a plan about to be written: its manifest, and the root whose ``_code`` holds it (a temporary
    directory of its own, or another plan's root) for `snapshot.link_snapshot` to give the plan its own copy.
    ``temporary``: `under` is that temporary directory, removed when the command ends."""

    manifest: CodeManifest
    under: Path
    temporary: bool = False

    @property
    def ref(self) -> str:
        """Where the plan keeps it, relative to the plan root."""
        return f"{naming.CODE_DIR}/{self.manifest.key}"

    @property
    def snapshot_dir(self) -> Path:
        return naming.code_snapshot(self.under, self.manifest.key)


@dataclass(frozen=True)
class Provenance:
    """plan.json's ``provenance``: ``code`` is ``_code/{key}`` relative to the plan root (None: the task's code was
    not found on disk), ``env`` the submitting environment, ``data_digest`` what the task's data_digest() gave."""

    code: str | None
    env: EnvRecord
    data_digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "env": self.env.to_json(), "data_digest": self.data_digest}

    @classmethod
    def from_json(cls, data: Any) -> Provenance | None:
        if not isinstance(data, dict) or not isinstance(data.get("env"), dict):
            return None
        return cls(data.get("code"), EnvRecord.from_json(data["env"]), data.get("data_digest"))

    def manifest(self, root: Path) -> CodeManifest | None:
        """The manifest of the plan's code (None without one)."""
        return read_manifest(Path(root) / self.code) if self.code else None


@dataclass(frozen=True)
class RunOrigin:
    """What one run records about the code, environment, data and image it ran with (run_result.json)."""

    code_commit: str | None = None
    code_dirty: bool | None = None
    code_digest: str | None = None
    env_digest: str | None = None
    data_digest: str | None = None
    image_digest: str | None = None

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in RUN_FIELDS}


# run_result.json and run_infos.parquet carry these as flat keys (RunResult declares them again, in this order:
# tests/unit/core/test_run_result.py holds the two together)
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunOrigin))
