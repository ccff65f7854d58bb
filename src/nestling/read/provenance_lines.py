"""What the readers of a tree say about provenance: the plan's code line (status, summary, report header), each
trial's commit (tune_infos), and which digests differ between the runs (a tune's summary says so)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nestling.core.provenance.record import DIGEST_FIELDS

if TYPE_CHECKING:
    from nestling.plan.model import Plan
    from nestling.read.collect import Collected, CvSummary

DIFFERING_FIELDS = ("code_commit", *DIGEST_FIELDS)


def code_line(plan: Plan) -> str | None:
    """`code: commit 1a2b3c4d5e6f + uncommitted changes; snapshot _code/... (42 files)`; None for a plan made
    before provenance was recorded (or whose task's code was not found)."""
    manifest = plan.provenance.manifest(plan.root) if plan.provenance is not None else None
    return None if manifest is None else f"code: {manifest.describe()}"


def code_record(plan: Plan) -> dict[str, Any] | None:
    """The plan's code for `nestling status --json`: commit, dirty, digest, snapshot dir (relative to the root)."""
    manifest = plan.provenance.manifest(plan.root) if plan.provenance is not None else None
    if manifest is None or plan.provenance is None:
        return None
    return {"commit": manifest.commit, "dirty": manifest.dirty, "digest": manifest.digest,
            "snapshot": plan.provenance.code if manifest.snapshot else None}  # fmt: skip


def trial_code(cv: CvSummary) -> tuple[str | None, bool | None]:
    """A trial's commit (several, comma-separated, when its runs differ: a forced resume took other code) and
    whether any of its runs came from a tree with uncommitted changes; None where no run recorded it."""
    commits = sorted({c for c in cv.table.get_column("code_commit").to_list() if c})
    dirty = [d for d in cv.table.get_column("code_dirty").to_list() if d is not None]
    return (", ".join(commits) or None), (any(dirty) if dirty else None)


def differing(collected: Collected) -> dict[str, list[str]]:
    """The provenance fields whose recorded values differ between the plan's runs, with the values (sorted)."""
    out = {}
    for name in DIFFERING_FIELDS:
        values = {v for cv in collected.cvs for v in cv.table.get_column(name).to_list() if v is not None}
        if len(values) > 1:
            out[name] = sorted(values)
    return out


def differing_line(collected: Collected) -> str | None:
    """`runs differ in env_digest (2 values), image_digest (2 values): see run_infos.parquet`; None when they do
    not."""
    found = differing(collected)
    if not found:
        return None
    parts = ", ".join(f"{name} ({len(values)} values)" for name, values in found.items())
    return f"provenance: the runs differ in {parts}; compare them in run_infos.parquet"
