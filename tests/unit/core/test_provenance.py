"""core/provenance/: where a task's code lives, the content-addressed snapshot, importing from it, the environment
digest, drift, image digests. Real git work trees in tmp dirs; real subprocesses where an import is the question."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nestling.core.containers import image
from nestling.core.containers.apptainer import Apptainer
from nestling.core.containers.oci import Podman
from nestling.core.containers.spec import ContainerSpec
from nestling.core.errors import UsageError
from nestling.core.provenance import environment
from nestling.core.provenance.capture import capture_code, describe_code, plan_data_digest
from nestling.core.provenance.code_tree import locate
from nestling.core.provenance.drift import code_lines
from nestling.core.provenance.snapshot import (
    changed_files,
    hash_files,
    link_snapshot,
    read_code,
    read_manifest,
    tree_digest,
)
from nestling.core.tree import naming
from nestling.testing.code_trees import code_tree, commit_all, git

TASK = "from nestling.tasks.sleep import SleepTask\n\n\nclass Probe(SleepTask):\n    pass\n"


def make_repo(root: Path, files: dict[str, str], gitignore: str = "") -> Path:
    return code_tree(root, dict(files), gitignore)


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Put a directory first on sys.path (as PYTHONPATH would); the task modules stay unimported here."""

    def add(path: Path) -> None:
        monkeypatch.syspath_prepend(str(path))

    yield add


def test_a_src_layout_git_tree_gives_tracked_and_untracked_files_not_ignored_ones(tmp_path: Path, on_path: Any) -> None:
    repo = make_repo(tmp_path / "repo", {"src/labpkg/__init__.py": "", "src/labpkg/task.py": TASK,
                                         "README.md": "lab\n"}, gitignore="data/\n*.ckpt\n")  # fmt: skip
    (repo / "data").mkdir()
    (repo / "data" / "train.npy").write_bytes(b"\0" * 1000)
    (repo / "model.ckpt").write_bytes(b"\0" * 10)
    (repo / "src" / "labpkg" / "models.py").write_text("WIDTH = 3\n")  # untracked, not ignored
    on_path(repo / "src")

    source = locate("labpkg.task:Probe")

    assert source is not None and source.in_git and not source.builtin
    assert source.root == repo.resolve() and source.import_path == "src" and source.module == "labpkg"
    assert source.files == (".gitignore", "README.md", "src/labpkg/__init__.py", "src/labpkg/models.py",
                            "src/labpkg/task.py")  # fmt: skip
    assert source.commit == git(repo, "rev-parse", "HEAD") and source.dirty is True  # the untracked models.py
    assert source.holds_task()


def test_a_committed_tree_is_clean_and_an_edit_makes_it_dirty(tmp_path: Path, on_path: Any) -> None:
    repo = make_repo(tmp_path / "repo", {"labpkg/__init__.py": "", "labpkg/task.py": TASK})
    on_path(repo)
    clean = locate("labpkg.task:Probe")
    (repo / "labpkg" / "task.py").write_text(TASK + "# edited\n")
    edited = locate("labpkg.task:Probe")
    assert clean is not None and clean.dirty is False and clean.import_path == ""
    assert edited is not None and edited.dirty is True and edited.commit == clean.commit


def test_a_package_that_is_its_own_repo_keeps_its_name_in_the_snapshot(tmp_path: Path, on_path: Any) -> None:
    """The git repo is the package dir; the sys.path entry is its parent: files are stored under the package name."""
    make_repo(tmp_path / "labpkg", {"__init__.py": "", "task.py": TASK})
    on_path(tmp_path)
    source = locate("labpkg.task:Probe")
    assert source is not None and source.root == tmp_path.resolve() and source.import_path == ""
    assert source.files == ("labpkg/__init__.py", "labpkg/task.py") and source.entry == "labpkg"


def test_outside_git_a_package_dir_or_a_module_and_its_python_siblings(tmp_path: Path, on_path: Any) -> None:
    pkg = tmp_path / "plain" / "labpkg"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "task.py").write_text(TASK)
    (pkg / "vocab.txt").write_text("a b c\n")
    (pkg / "__pycache__" / "task.cpython-311.pyc").write_bytes(b"\0")
    single = tmp_path / "single"
    single.mkdir()
    (single / "lonetask.py").write_text(TASK)
    (single / "helpers.py").write_text("X = 1\n")
    (single / "notes.txt").write_text("not code\n")
    on_path(tmp_path / "plain")
    on_path(single)
    package = locate("labpkg.task:Probe")
    module = locate("lonetask:Probe")
    assert package is not None and not package.in_git and package.commit is None and package.dirty is None
    assert package.files == ("labpkg/__init__.py", "labpkg/task.py", "labpkg/vocab.txt")
    assert module is not None and module.files == ("helpers.py", "lonetask.py") and module.entry == "lonetask.py"


def test_a_builtin_task_is_nestling_itself_and_an_unknown_module_is_none() -> None:
    builtin = locate("sleep")
    assert builtin is not None and builtin.builtin and builtin.module == "nestling"
    assert locate("no_such_module_here:Task") is None and locate("not a spec") is None


def test_a_snapshot_is_what_was_hashed_content_addressed_read_only_and_linked_not_copied(
    tmp_path: Path, on_path: Any
) -> None:
    repo = make_repo(tmp_path / "repo", {"labpkg/__init__.py": "", "labpkg/task.py": TASK, "run.sh": "#!/bin/sh\n"})
    os.chmod(repo / "run.sh", 0o755)
    commit_all(repo, "executable")  # (a mode change is a change git sees)
    on_path(repo)
    first = capture_code("labpkg.task:Probe", tmp_path / "taken", enabled=True, max_mb=50)
    again = capture_code("labpkg.task:Probe", tmp_path / "taken", enabled=True, max_mb=50)
    assert first is not None and again is not None and first.manifest == again.manifest
    manifest = first.manifest
    snapshot = naming.code_snapshot(tmp_path / "taken", manifest.key)
    assert sorted(p.name for p in (tmp_path / "taken" / naming.CODE_DIR).iterdir()) == [manifest.key,
                                                                                        f"{manifest.key}.json"]
    expected = {rel: hashlib.sha256((repo / rel).read_bytes()).hexdigest()
                for rel in ("labpkg/__init__.py", "labpkg/task.py", "run.sh")}  # fmt: skip
    assert manifest.files == expected and manifest.digest == manifest.key == tree_digest(expected)
    assert manifest.commit == git(repo, "rev-parse", "HEAD") and manifest.dirty is False and manifest.snapshot
    assert (snapshot / "labpkg" / "task.py").read_text() == TASK
    assert oct((snapshot / "labpkg" / "task.py").stat().st_mode & 0o777) == "0o444"
    assert oct((snapshot / "run.sh").stat().st_mode & 0o777) == "0o555"  # the executable bits are kept
    assert read_manifest(snapshot) == manifest

    plan_dir = link_snapshot(manifest, tmp_path / "taken", tmp_path / "plan")
    assert plan_dir == naming.code_snapshot(tmp_path / "plan", manifest.key)
    assert (plan_dir / "labpkg" / "task.py").stat().st_ino == (snapshot / "labpkg" / "task.py").stat().st_ino
    assert read_manifest(plan_dir) == manifest


def test_a_tree_over_the_limit_is_refused_naming_its_largest_files_and_nothing_is_written(
    tmp_path: Path, on_path: Any
) -> None:
    repo = make_repo(tmp_path / "repo", {"labpkg/__init__.py": "", "labpkg/task.py": TASK})
    (repo / "labpkg" / "weights.bin").write_bytes(b"\0" * 2_000_000)  # untracked and not ignored: it would be taken
    on_path(repo)
    with pytest.raises(UsageError) as refused:
        capture_code("labpkg.task:Probe", tmp_path / "taken", enabled=True, max_mb=1)
    message = str(refused.value)
    assert "2.0 MB in 3 files" in message and "labpkg/weights.bin (2.0 MB)" in message
    assert "--snapshot_max_mb 1" in message and "--snapshot_code false" in message
    assert not (tmp_path / "taken").exists()
    with pytest.raises(UsageError, match="weights.bin"):
        describe_code("labpkg.task:Probe", enabled=True, max_mb=1)
    opted_out = capture_code("labpkg.task:Probe", tmp_path / "taken", enabled=False, max_mb=1)
    assert opted_out is not None and not opted_out.manifest.snapshot
    assert opted_out.manifest.reason == "--snapshot_code false" and opted_out.manifest.digest is None
    assert opted_out.manifest.dirty is True and opted_out.manifest.commit == git(repo, "rev-parse", "HEAD")
    assert not (tmp_path / "taken").exists()  # without a snapshot only the plan gets a manifest (write_plan)


def test_a_task_module_git_ignores_is_refused(tmp_path: Path, on_path: Any) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"}, gitignore="scratch/\n")
    (repo / "scratch").mkdir()
    (repo / "scratch" / "mytask.py").write_text(TASK)
    on_path(repo / "scratch")
    with pytest.raises(UsageError, match="git ignores scratch/mytask.py"):
        capture_code("mytask:Probe", tmp_path / "taken", enabled=True, max_mb=50)


WORKER_SIDE = """
import json, sys
from nestling.core.provenance.imports import imported_snapshot, load_task_from
task = load_task_from("labpkg.task:Probe", sys.argv[1])
import labpkg.models
print(json.dumps({"task_file": sys.modules["labpkg.task"].__file__, "models_file": labpkg.models.__file__,
                  "width": labpkg.models.WIDTH, "digest": imported_snapshot("labpkg")}))
"""


def test_a_worker_imports_the_task_and_its_later_imports_from_the_snapshot_not_the_edited_tree(
    tmp_path: Path, on_path: Any
) -> None:
    """After the snapshot, the live module raises on import and a sibling changes: a fresh interpreter with the
    live tree on PYTHONPATH still imports the snapshot's files, the lazily imported sibling too."""
    repo = make_repo(tmp_path / "repo", {"src/labpkg/__init__.py": "", "src/labpkg/task.py": TASK,
                                         "src/labpkg/models.py": "WIDTH = 3\n"})  # fmt: skip
    on_path(repo / "src")
    taken = capture_code("labpkg.task:Probe", tmp_path / "plan", enabled=True, max_mb=50)
    assert taken is not None
    (repo / "src" / "labpkg" / "task.py").write_text('raise RuntimeError("edited after submit")\n')
    (repo / "src" / "labpkg" / "models.py").write_text("WIDTH = 99\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "src"), *sys.path])}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a worker as on most machines: it writes the bytecode it compiles
    done = subprocess.run([sys.executable, "-c", WORKER_SIDE, str(taken.snapshot_dir)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    inside = str(taken.snapshot_dir / "src" / "labpkg")
    assert seen["task_file"] == f"{inside}/task.py" and seen["models_file"] == f"{inside}/models.py"
    assert seen["width"] == 3 and seen["digest"] == taken.manifest.digest
    # ... and leaves the snapshot as it was submitted: no __pycache__ in it (other imports keep theirs)
    assert sorted(p.name for p in taken.snapshot_dir.rglob("*") if p.is_file() and "__pycache__" in p.parts) == []


def test_bytecode_is_no_code_and_a_tree_that_only_gained_it_is_clean(tmp_path: Path, on_path: Any) -> None:
    """Every import of a tree whose .gitignore does not name __pycache__ writes .pyc files, untracked and not
    ignored: they are neither snapshotted nor a change."""
    repo = make_repo(tmp_path / "repo", {"labpkg/__init__.py": "", "labpkg/task.py": TASK})
    (repo / "labpkg" / "__pycache__").mkdir()
    (repo / "labpkg" / "__pycache__" / "task.cpython-311.pyc").write_bytes(b"\0")
    (repo / "labpkg" / "old.pyc").write_bytes(b"\0")
    on_path(repo)
    source = locate("labpkg.task:Probe")
    assert source is not None and source.files == ("labpkg/__init__.py", "labpkg/task.py")
    assert source.dirty is False
    (repo / "labpkg" / "extra.py").write_text("X = 1\n")
    edited = locate("labpkg.task:Probe")
    assert edited is not None and edited.dirty is True and "labpkg/extra.py" in edited.files


def test_the_environment_digest_reads_the_torch_build_without_importing_torch() -> None:
    code = ("import json, sys\nfrom nestling.core.provenance import environment\nrecord = environment.current()\n"
            "print(json.dumps({'digest': record.digest, 'torch': record.torch, 'dists': record.distributions,"
            " 'imported': 'torch' in sys.modules}))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    seen = json.loads(done.stdout)
    import torch

    assert seen["imported"] is False
    assert seen["torch"]["version"] == torch.__version__ and seen["torch"]["cuda"] == torch.version.cuda
    assert seen["torch"]["git_version"] == torch.version.git_version
    assert seen["dists"]["torch"] == torch.__version__ and "polars" in seen["dists"]
    assert seen["digest"] == environment.current().digest  # this process (torch imported) computes the same


def test_environment_changes_name_versions_added_and_removed_distributions(tmp_path: Path) -> None:
    for name in ("alpha-1.0.dist-info", "beta-2.0.dist-info", "gamma.egg-info"):
        (tmp_path / "old" / name).mkdir(parents=True)
    (tmp_path / "old" / "gamma.egg-info" / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: gamma\nVersion: 0.3\n")
    for name in ("alpha-1.1.dist-info", "Delta_Lib-4.0.dist-info"):
        (tmp_path / "new" / name).mkdir(parents=True)
    before, after = environment.current([str(tmp_path / "old")]), environment.current([str(tmp_path / "new")])
    assert before.distributions == {"alpha": "1.0", "beta": "2.0", "gamma": "0.3"}
    assert environment.changes(before, after) == ["alpha 1.0 -> 1.1", "beta removed", "delta_lib 4.0 added",
                                                  "gamma removed"]  # fmt: skip
    assert before.digest != after.digest and environment.changes(before, before) == []


def test_drift_names_the_edited_added_and_removed_files(tmp_path: Path, on_path: Any) -> None:
    repo = make_repo(tmp_path / "repo", {"labpkg/__init__.py": "", "labpkg/task.py": TASK, "train.py": "x = 1\n"})
    on_path(repo)
    taken = capture_code("labpkg.task:Probe", tmp_path / "plan", enabled=True, max_mb=50)
    assert taken is not None
    assert code_lines(taken.manifest, "labpkg.task:Probe", forced=False) == []
    (repo / "labpkg" / "task.py").write_text(TASK + "# edited\n")
    (repo / "labpkg" / "unet.py").write_text("y = 2\n")
    (repo / "train.py").unlink()
    now = hash_files(locate("labpkg.task:Probe"))  # type: ignore[arg-type]
    assert changed_files(taken.manifest, now) == ["labpkg/task.py", "labpkg/unet.py", "train.py"]
    assert code_lines(taken.manifest, "labpkg.task:Probe", forced=False) == [
        "code changed since the plan: labpkg/task.py, labpkg/unet.py, train.py; the resumed runs use the plan's "
        "snapshot (--force to take the current code)"
    ]
    assert code_lines(taken.manifest, "labpkg.task:Probe", forced=True, runs="the retrain's runs")[0].endswith(
        "the retrain's runs use the current code (--force)"
    )


def test_a_failing_data_digest_is_refused_when_planning() -> None:
    class Broken:
        def data_digest(self) -> str:
            raise OSError("dataset mount missing")

    class Versioned:
        def data_digest(self) -> int:
            return 3

    with pytest.raises(UsageError, match="data_digest\\(\\) raised OSError: dataset mount missing"):
        plan_data_digest(Broken(), "lab:Broken")
    assert plan_data_digest(Versioned(), "lab:Versioned") == "3" and plan_data_digest(object(), "x") is None


def test_image_digests_a_sif_file_by_its_sha256_and_an_oci_image_by_its_id(tmp_path: Path) -> None:
    sif = tmp_path / "image.sif"
    sif.write_bytes(b"SIF" * 1000)
    assert Apptainer().image_digest(str(sif)) == "sha256:" + hashlib.sha256(b"SIF" * 1000).hexdigest()
    assert Apptainer().image_digest(str(tmp_path / "missing.sif")) is None
    calls: list[list[str]] = []

    def podman(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout="0123abcd\n", stderr="")

    assert Podman().image_digest("localhost/lab:1", run=podman) == "sha256:0123abcd"
    assert calls == [["podman", "image", "inspect", "--format", "{{.Id}}", "localhost/lab:1"]]
    refused = Podman().image_digest("x", run=lambda argv, **kw: subprocess.CompletedProcess(argv, 125, "", "no"))
    assert refused is None


def test_read_code_skips_a_file_that_vanished(tmp_path: Path, on_path: Any) -> None:
    repo = make_repo(tmp_path / "repo", {"labpkg/__init__.py": "", "labpkg/task.py": TASK, "old.py": "1\n"})
    on_path(repo)
    source = locate("labpkg.task:Probe")
    assert source is not None
    (repo / "old.py").unlink()  # tracked, deleted after the listing
    assert sorted(read_code(source).hashes) == ["labpkg/__init__.py", "labpkg/task.py"]


def test_a_sif_is_hashed_once_and_again_when_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sif = tmp_path / "image.sif"
    sif.write_bytes(b"v1" * 1000)
    spec = ContainerSpec(image=str(sif), runtime="apptainer")
    first = image.image_digest(spec)
    assert first == "sha256:" + hashlib.sha256(b"v1" * 1000).hexdigest()
    cache_file = naming.image_digest_cache()
    cached = json.loads(cache_file.read_text())
    cached[str(sif.resolve())]["digest"] = "sha256:from-the-cache"
    cache_file.write_text(json.dumps(cached))
    assert image.image_digest(spec) == "sha256:from-the-cache"  # unchanged file: not read again
    sif.write_bytes(b"v2" * 1001)  # rebuilt (here: another size)
    assert image.image_digest(spec) == "sha256:" + hashlib.sha256(b"v2" * 1001).hexdigest()


def test_a_snapshot_whose_manifest_is_gone_is_an_error_not_a_live_import(tmp_path: Path) -> None:
    from nestling.core.provenance.imports import load_task_from

    with pytest.raises(FileNotFoundError, match="resume with --force to take the current code"):
        load_task_from("sleep", str(tmp_path / "_code" / "0123456789abcdef"))
    assert type(load_task_from("sleep", None)).__name__ == "SleepTask"  # no snapshot named: as installed
