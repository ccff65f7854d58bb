"""The code snapshot: the task's files copied once at submit, content-addressed, imported by every worker.

Layout in each plan (``{plan}/_code``), and in the temporary directory a snapshot is taken into before its plan
exists (where a local pool started meanwhile imports it from)::

    _code/{key}/        the files, read-only, at their paths relative to the layout root (code_tree.py)
    _code/{key}.json    the manifest (CodeManifest): digest, commit, dirty, where it came from, every file's hash

``key`` is the digest of the files (16 hex digits of a SHA-256 over each path and its content's SHA-256), so
identical code gives one snapshot: a forced resume of unchanged code copies nothing, and a tune's retrain links the
tune's files (hard links, copies where the file system refuses them) instead of copying them again. Without a
snapshot (``--snapshot_code false``, or a task of nestling's own) only the manifest is written, keyed by its own
content: runs still record the commit and whether the tree was dirty, and import the code as installed.

Taking a snapshot reads every file once: its bytes are hashed and the same bytes written, so the digest always
describes exactly what was copied, even when a file changes meanwhile.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nestling.core.errors import UsageError
from nestling.core.provenance.code_tree import CodeSource
from nestling.core.provenance.digest import DIGEST_CHARS, short_digest
from nestling.core.tree import naming
from nestling.core.tree.atomic import current_umask, unique_dir, write_json

LARGEST_NAMED = 3  # the largest files named when a tree is refused for its size


@dataclass(frozen=True)
class CodeManifest:
    """``_code/{key}.json``: what the plan's runs import, and where it came from.

    ``digest``: of the files copied (None without a snapshot); ``commit``/``dirty``: git's view when the plan was
    made; ``source``: the layout root on the submitting host; ``import_path``: the sys.path entry of the task's
    package inside the snapshot; ``module``: the task's top-level module; ``snapshot``: whether files were copied,
    else ``reason`` says why not; ``files``: each path and its content's SHA-256 (to name changed files)."""

    key: str
    digest: str | None
    commit: str | None
    dirty: bool | None
    source: str
    import_path: str
    module: str
    snapshot: bool
    reason: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    size_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CodeManifest:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def short_commit(self) -> str | None:
        return self.commit[:12] if self.commit else None

    def describe(self) -> str:
        """One line: the commit (and uncommitted changes), the snapshot or why there is none."""
        if self.commit:
            code = f"commit {self.short_commit}" + (" + uncommitted changes" if self.dirty else "")
        else:
            code = "not in git" if self.dirty is None else "git tree without a commit"
        if self.snapshot:
            return f"{code}; snapshot {naming.CODE_DIR}/{self.key} ({len(self.files)} files)"
        return f"{code}; no snapshot ({self.reason})"


@dataclass(frozen=True)
class ReadCode:
    """The task's files read into memory and hashed, not written anywhere yet (what `write_snapshot` copies)."""

    source: CodeSource
    contents: dict[str, bytes | str]  # path -> the file's bytes, or a symbolic link's target (str)
    modes: dict[str, int]
    hashes: dict[str, str]
    digest: str

    @property
    def size_bytes(self) -> int:
        return sum(len(c) for c in self.contents.values() if isinstance(c, bytes))


def check_size(source: CodeSource, max_mb: float) -> int:
    """The tree's size in bytes; a UsageError naming the largest files when it exceeds `max_mb` MB."""
    sizes = {}
    for rel in source.files:
        try:
            sizes[rel] = os.lstat(source.root / rel).st_size
        except FileNotFoundError:
            continue
    total = sum(sizes.values())
    if total > max_mb * 1e6:
        largest = sorted(sizes, key=lambda p: -sizes[p])[:LARGEST_NAMED]
        listed = ", ".join(f"{p} ({sizes[p] / 1e6:.1f} MB)" for p in largest)
        raise UsageError(
            f"the task's code tree {source.root} holds {total / 1e6:.1f} MB in {len(sizes)} files (largest: {listed}), "
            f"over --snapshot_max_mb {max_mb:g}: keep data and checkpoints out of it (.gitignore them), raise "
            "--snapshot_max_mb, or pass --snapshot_code false"
        )
    return total


def read_code(source: CodeSource) -> ReadCode:
    """Read and hash every file of `source` (a file that vanished meanwhile is left out)."""
    contents: dict[str, bytes | str] = {}
    modes: dict[str, int] = {}
    hashes: dict[str, str] = {}
    for rel in source.files:
        path = source.root / rel
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                contents[rel], hashes[rel] = target, _sha256(b"symlink\0" + os.fsencode(target))
            else:
                with open(path, "rb") as f:
                    data = f.read()
                contents[rel], hashes[rel] = data, _sha256(data)
        except FileNotFoundError:
            continue
        modes[rel] = st.st_mode
    return ReadCode(source, contents, modes, hashes, tree_digest(hashes))


def tree_digest(hashes: dict[str, str]) -> str:
    """The digest of a set of files: each path with its content's hash, in path order."""
    h = hashlib.sha256()
    for rel in sorted(hashes):
        h.update(f"{rel}\0{hashes[rel]}\n".encode())
    return h.hexdigest()[:DIGEST_CHARS]  # (the same length as digest.short_digest's)


def hash_files(source: CodeSource) -> dict[str, str]:
    """Each file's content hash, as a snapshot of `source` would record it now (drift reports compare these)."""
    return read_code(source).hashes


def write_snapshot(code: ReadCode, under: Path) -> CodeManifest:
    """Copy the files read into ``{under}/_code/{digest}/`` (nothing when that snapshot exists) and write its
    manifest; `under` is a plan root, or the temporary directory a new plan's snapshot is taken into."""
    manifest = CodeManifest(
        key=code.digest, digest=code.digest, commit=code.source.commit, dirty=code.source.dirty,
        source=str(code.source.root), import_path=code.source.import_path, module=code.source.module,
        snapshot=True, files=dict(sorted(code.hashes.items())), size_bytes=code.size_bytes,
    )  # fmt: skip
    target = naming.code_snapshot(under, code.digest)
    if not target.is_dir():

        def write(tmp: Path) -> None:
            for rel, content in code.contents.items():
                _write_file(tmp / rel, content, code.modes[rel])

        _build_dir(target, write)
    write_manifest(target, manifest)
    return manifest


def without_snapshot(source: CodeSource, reason: str) -> CodeManifest:
    """The manifest of code that is not copied: the commit and the tree's state, keyed by its own content."""
    record = {"commit": source.commit, "dirty": source.dirty, "source": str(source.root), "reason": reason,
              "import_path": source.import_path, "module": source.module}  # fmt: skip
    key = "live-" + short_digest(json.dumps(record, sort_keys=True).encode())
    return CodeManifest(key=key, digest=None, commit=source.commit, dirty=source.dirty, source=str(source.root),
                        import_path=source.import_path, module=source.module, snapshot=False, reason=reason)  # fmt: skip


def write_manifest(snapshot: Path, manifest: CodeManifest) -> None:
    path = naming.code_manifest(snapshot)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, manifest.to_json(), compact=True)


def read_manifest(snapshot: Path | str) -> CodeManifest | None:
    """The manifest of the snapshot dir `snapshot` (``_code/{key}``); None when it is missing or unreadable."""
    try:
        with open(naming.code_manifest(snapshot), "rb") as f:
            return CodeManifest.from_json(json.loads(f.read()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def link_snapshot(manifest: CodeManifest, from_root: Path, to_root: Path) -> Path:
    """Give the plan at `to_root` its own ``_code/{key}`` (and manifest) from the one under `from_root` (where it
    was taken, or another plan's root): hard links, copies where links fail. Returns the plan's snapshot dir."""
    source = naming.code_snapshot(from_root, manifest.key)
    target = naming.code_snapshot(to_root, manifest.key)
    if manifest.snapshot and not target.is_dir():
        if not source.is_dir():
            raise UsageError(f"the code snapshot {source} is gone (deleted while planning?); run the command again")

        def link(tmp: Path) -> None:
            for rel in manifest.files:
                _link_or_copy(source / rel, tmp / rel)

        _build_dir(target, link)
    write_manifest(target, manifest)
    return target


def changed_files(manifest: CodeManifest, now: dict[str, str]) -> list[str]:
    """The files that differ between the snapshot and the tree now (`hash_files`): edited, added and removed."""
    before = manifest.files
    return sorted(p for p in {*before, *now} if before.get(p) != now.get(p))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_file(path: Path, content: bytes | str, mode: int) -> None:
    """One snapshot file, read-only (a snapshot never changes; its executable bits are kept), readable by whom the
    umask lets read the rest of the tree."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        os.symlink(content, path)
        return
    with open(path, "wb") as f:
        f.write(content)
    os.chmod(path, (0o444 | (mode & 0o111)) & ~current_umask())


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        os.symlink(os.readlink(source), target)
        return
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links: a copy
        shutil.copy2(source, target)


def _build_dir(target: Path, fill: Callable[[Path], None]) -> None:
    """Make the snapshot dir `target` whole or not at all: `fill` fills a temporary sibling, renamed into place at
    the end. When another process published the same snapshot first, theirs is kept (the content is the same: its
    name says so)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_dir(target.parent, prefix=f".{target.name}.", suffix=".tmp")  # the umask's mode, not 0700
    try:
        fill(tmp)
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
