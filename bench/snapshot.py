"""Provenance at submit (issue 24): what the code snapshot and the digests cost on a research repo of a few hundred
files, against copying the same files by hand (`shutil.copytree` of the git-visible files, the baseline a user who
froze their code would pay), and the environment digest against `importlib.metadata` (the obvious way to list the
installed distributions). Median of several in-process repetitions; the repo is a real git work tree with
uncommitted changes and 20 MB of ignored data beside the code.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench._common import Row, judge, scratch, standalone
from nestling.testing.code_trees import code_tree

NAME = "snapshot"
FILES = 300  # 30 packages x 10 modules of ~4 KB, plus the repo's own files
MODULE = "".join(f"def f{i}(x):\n    return x * {i}  # {'#' * 40}\n\n" for i in range(60))  # ~4 KB


def make_repo(root: Path) -> Path:
    """A git work tree: a src/ layout package of FILES modules, committed; then one edit, one untracked file;
    data/ (ignored) holds 20 MB that must not be read."""
    pkg = root / "src" / "labcode"
    for p in range(FILES // 10):
        sub = pkg / f"part{p:02d}"
        sub.mkdir(parents=True)
        (sub / "__init__.py").write_text("")
        for m in range(9):
            (sub / f"mod{m}.py").write_text(MODULE)
    (pkg / "__init__.py").write_text("")
    (pkg / "task.py").write_text("from nestling.tasks.sleep import SleepTask\n\n\nclass Task(SleepTask):\n    pass\n")
    code_tree(root, {f"data/shard{k}.bin": b"\0" * 10_000_000 for k in range(2)}, gitignore="data/\n")
    (pkg / "part00" / "mod0.py").write_text(MODULE + "# edited\n")
    (pkg / "scratch.py").write_text("# untracked\n")
    return root


def _median(action: Callable[[int], None], repeat: int) -> float:
    times = []
    for k in range(repeat):
        start = time.perf_counter()
        action(k)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(quick: bool = False) -> list[Row]:
    """The snapshot and the digests of a plan of a 300-file repo, vs a hand copy and importlib.metadata."""
    from nestling.commands.code_capture import release_code, take_code
    from nestling.core.options.config import parse_config
    from nestling.core.provenance import environment
    from nestling.core.provenance.code_tree import locate
    from nestling.core.provenance.drift import code_lines
    from nestling.core.provenance.snapshot import link_snapshot

    repeat = 3 if quick else 7
    with scratch(NAME) as tmp:
        repo = make_repo(tmp / "repo")
        sys.path.insert(0, str(repo / "src"))
        try:
            config = parse_config(["--task", "labcode.task:Task", "--artifact_dir", str(tmp / "art")])
            source = locate(config.data.task)
            assert source is not None and source.dirty and len(source.files) >= FILES
            taken = []

            def submit(k: int) -> None:  # what `nestling cv` adds: take the snapshot, give the plan its copy, clean up
                code = take_code(config)
                assert code is not None
                link_snapshot(code.manifest, code.under, tmp / "art" / f"plan{k}")
                environment.current()
                release_code(code)
                taken.append(code.manifest)

            nestling = _median(submit, repeat)

            def by_hand(k: int) -> None:
                for rel in source.files:
                    (tmp / "hand" / str(k) / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(repo / rel, tmp / "hand" / str(k) / rel)

            baseline = _median(by_hand, repeat)
            manifest = taken[-1]
            (repo / "src" / "labcode" / "part01" / "mod3.py").write_text(MODULE + "# later\n")
            drift = _median(lambda k: code_lines(manifest, config.data.task, forced=False), repeat)
            env = _median(lambda k: environment.current(), repeat)
            listing = _median(lambda k: {d.name: d.version for d in importlib.metadata.distributions()}, repeat)
        finally:
            sys.path.remove(str(repo / "src"))
    files, mb = len(manifest.files), manifest.size_bytes / 1e6
    return [
        Row(NAME, f"{files} files ({mb:.1f} MB) + 20 MB ignored: snapshot, plan copy, digests", nestling, baseline,
            baseline_name="copy of the same files", target="< 1 s", met=judge(nestling, "<", 1.0), quick=quick,
            note="take_code (git status and listing, read + hash + write once) + link into a plan + environment "
                 "digest; the ignored data is never read"),
        Row(NAME, f"{files} files: drift check (resume)", drift, None, target="< 1 s", met=judge(drift, "<", 1.0),
            quick=quick, note="locate + hash every file + compare with the manifest"),
        Row(NAME, "environment digest", env, listing, baseline_name="importlib.metadata listing", quick=quick,
            note=f"{len(environment.current().distributions)} distributions, torch build read without import"),
    ]  # fmt: skip


if __name__ == "__main__":
    standalone(NAME, run)
