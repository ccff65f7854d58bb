"""What a run records about what produced it (core/provenance/record.py `RunOrigin`), as its worker sees it.

The code: the commit and state of the tree the plan's snapshot was taken from (its manifest), and the digest of the
snapshot this process actually imported the task from. The environment: this process's, so a run in an image or on
a node with other packages says so. The data: what the task's data_digest() gives here. The image: its digest,
learnt once by the launch and handed in by the runtime. Each is learnt once per worker process; none of them may
cost the run: a data_digest() that raises is logged and recorded as unknown.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache

from nestling.core.containers.runtimes import IMAGE_DIGEST_ENV
from nestling.core.containers.spec import in_container
from nestling.core.ml.task import declared_data_digest
from nestling.core.provenance import environment
from nestling.core.provenance.imports import imported_snapshot
from nestling.core.provenance.record import RunOrigin
from nestling.core.provenance.snapshot import CodeManifest, read_manifest
from nestling.core.tree.run_spec import RunSpec
from nestling.execute.training import cached_task

log = logging.getLogger("nestling.run")

_DATA_DIGESTS: dict[tuple[str, str | None], str | None] = {}


@lru_cache(maxsize=8)
def _manifest_once(code: str) -> CodeManifest | None:
    return read_manifest(code)


def run_origin(spec: RunSpec) -> RunOrigin:
    """The run's provenance fields; loads the task (from its snapshot) when it is not loaded yet. Never raises for
    the task's own failures: a task that does not import fails the run in training, where the error is recorded."""
    manifest = _manifest_once(spec.code) if spec.code else None
    data = _data_digest(spec)
    return RunOrigin(
        code_commit=manifest.commit if manifest else None,
        code_dirty=manifest.dirty if manifest else None,
        code_digest=imported_snapshot(manifest.module) if manifest and manifest.snapshot else None,
        env_digest=environment.process_digest(),
        data_digest=data,
        image_digest=(os.environ.get(IMAGE_DIGEST_ENV) or None) if in_container() else None,
    )


def _data_digest(spec: RunSpec) -> str | None:
    key = (spec.task, spec.code)
    if key in _DATA_DIGESTS:
        return _DATA_DIGESTS[key]
    try:
        task = cached_task(spec.task, spec.code)
    except Exception:  # noqa: BLE001 - training loads it again and records why it failed
        return None
    try:
        digest = declared_data_digest(task)
    except Exception as exc:  # noqa: BLE001 - the task's own code; provenance never costs a run
        log.warning("run %s: the task's data_digest() raised %s: %s; data_digest not recorded",
                    spec.run_name, type(exc).__name__, exc)  # fmt: skip
        digest = None
    _DATA_DIGESTS[key] = digest
    return digest
