"""`nestling sync DIR`: upload the offline W&B runs of a tune, cv or run, from a machine with network.

Runs on compute nodes without internet log offline (see tracking.py); after the sweep, on a login node, this
uploads each offline run with `wandb sync` and marks it (naming.WANDB_SYNCED, written atomically after a successful
upload), so a second sync skips it: syncing is idempotent and may be repeated after a partial failure. The offline
run files already hold the run's id (run_id), name (run_name), group (tune name) and job type (cv name), and
`wandb sync` keeps them.

The upload is one call per offline run dir: `upload(path) -> (ok, message)`. By default it runs the `wandb`
executable next to this interpreter, or the one named by NESTLING_WANDB_EXECUTABLE (a test points it at a stand-in),
and counts an upload as done when it exits 0 and left wandb's own `run-ID.wandb.synced` marker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nestling.core.errors import NestlingError, UsageError, strict_parser
from nestling.core.host import tracking
from nestling.core.tree import naming
from nestling.core.tree.atomic import write_json

WANDB_EXECUTABLE_ENV = "NESTLING_WANDB_EXECUTABLE"
Upload = Callable[[Path], tuple[bool, str]]


@dataclass
class SyncCounts:
    """What a sync did with each offline run: uploaded, skipped (uploaded before), failed (path, why); a dry run
    lists in `pending` what it would upload."""

    synced: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    pending: list[Path] = field(default_factory=list)


def wandb_executable() -> str:
    """NESTLING_WANDB_EXECUTABLE, else the `wandb` of this interpreter's environment, else the one on PATH."""
    named = os.environ.get(WANDB_EXECUTABLE_ENV)
    if named:
        return named
    beside = Path(sys.executable).parent / "wandb"
    if beside.is_file():
        return str(beside)
    found = shutil.which("wandb")
    if found is None:
        raise UsageError(f"no `wandb` executable found: pip install wandb (or set {WANDB_EXECUTABLE_ENV})")
    return found


def wandb_sync(executable: str) -> Upload:
    """The real upload: `wandb sync OFFLINE_DIR`; its output tail becomes the message of a failure."""

    def upload(offline_dir: Path) -> tuple[bool, str]:
        try:
            proc = subprocess.run(
                [executable, "sync", str(offline_dir)],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            return False, f"{executable}: {exc}"
        tail = " ".join((proc.stderr + proc.stdout).strip().splitlines()[-3:])
        if proc.returncode != 0:
            return False, f"exit {proc.returncode}: {tail}"
        # `wandb sync` exits 0 even when the server refused the upload (e.g. "ERROR user is not logged in"); its
        # own marker, run-ID.wandb.synced, is what says the upload went through.
        if not any(offline_dir.glob("*.wandb.synced")):
            return False, f"wandb sync did not mark the run synced: {tail}"
        return True, tail

    return upload


def upload_offline_runs(root: Path, upload: Upload) -> SyncCounts:
    """Upload every offline run under `root` that is not marked synced; mark each one that uploads.

    The attempts of one nestling run (same run id, one offline dir each) upload in order; after a failed one the
    later attempts of that run wait for the next sync (counted as failed), so history is never appended out of
    order.
    """
    counts = SyncCounts()
    blocked: set[Path] = set()  # nestling run dirs with a failed upload in this sync
    for offline_dir in tracking.offline_runs(root):
        run_dir = offline_dir.parent.parent
        if tracking.is_synced(offline_dir):
            counts.skipped.append(offline_dir)
            continue
        if run_dir in blocked:
            counts.failed.append((offline_dir, "an earlier attempt of this run did not upload"))
            continue
        ok, message = upload(offline_dir)
        if ok:
            write_json(naming.wandb_synced_marker(offline_dir), {"synced_at": time.time(), "output": message})
            counts.synced.append(offline_dir)
        else:
            blocked.add(run_dir)
            counts.failed.append((offline_dir, message))
    return counts


class WandbUnreachable(NestlingError):
    """W&B cannot be reached from here: each `wandb sync` would retry for minutes, so nothing is tried."""


def sync_main(argv: list[str], description: str) -> int:
    parser = strict_parser("nestling sync", description)
    parser.add_argument("dir", type=Path, help="a tune, cv or run directory")
    parser.add_argument("--dry_run", action="store_true", help="list what would be uploaded; upload nothing")
    args = parser.parse_args(argv)
    if args.dry_run:
        print_pending(pending_uploads(args.dir), args.dir)
        return 0
    counts = sync_dir(args.dir)
    print_counts(counts, args.dir)
    return 1 if counts.failed else 0


def print_pending(pending: list[Path], root: Path) -> None:
    for path in pending:
        print(path)
    print(f"{len(pending)} offline W&B runs to upload under {root}")


def print_counts(counts: SyncCounts, root: Path) -> None:
    for path, message in counts.failed:
        print(f"failed: {path}: {message}", file=sys.stderr)
    print(
        f"W&B runs under {root}: {len(counts.synced)} synced, {len(counts.skipped)} already synced (skipped), "
        f"{len(counts.failed)} failed"
    )


def pending_uploads(root: Path) -> list[Path]:
    """The offline W&B runs under a tune, cv or run dir that `sync_dir` would upload."""
    return [p for p in tracking.offline_runs(_existing(root)) if not tracking.is_synced(p)]


def sync_dir(root: Path) -> SyncCounts:
    """Upload the offline W&B runs under a tune, cv or run dir with `wandb sync` (see `upload_offline_runs`)."""
    root = _existing(root)
    executable = wandb_executable()
    if WANDB_EXECUTABLE_ENV not in os.environ:
        problem = tracking.probe(os.environ)
        if problem is not None:  # each `wandb sync` would retry for minutes
            raise WandbUnreachable(
                f"{problem}; nothing uploaded. Run it where W&B can be reached (a login node), with `wandb login` "
                "done or WANDB_API_KEY set."
            )
    return upload_offline_runs(root, wandb_sync(executable))


def _existing(root: Path) -> Path:
    if not Path(root).exists():
        raise UsageError(f"{str(root)!r} does not exist; pass a tune, cv or run directory")
    return Path(root)
