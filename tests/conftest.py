"""Shared fixtures and hooks of the whole suite (tests/README.md says which to use when): the real local SLURM
clusters, started once per test run (with pytest-xdist: once for all workers), the SLURM work submitted as soon as
the cluster is up (tests/slurm_work.py), markers and xdist groups from what a test needs, and the skip count."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import slurm_work as work
from _pytest.nodeid import coerce_node_id
from support import require

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "slurm" / "local-cluster"
RUN_ID = "NESTLING_TEST_RUN_ID"  # one id per pytest run, shared by its xdist workers (they inherit the environment)
SLURM_GROUP = "slurm"  # the xdist group of every test that needs the cluster: one worker, one start of the work
NEEDS_SLURM = ("slurm_conf", "small_array_cluster")


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist): workers inherit the id
        os.environ[RUN_ID] = uuid.uuid4().hex[:12]


def needs_slurm(item: pytest.Item) -> bool:
    names = getattr(item, "fixturenames", ())
    return any(n in names for n in NEEDS_SLURM) or item.get_closest_marker("slurm_work") is not None


@pytest.hookimpl(tryfirst=True)  # before any hook that reads the xdist_group markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers from the folder and from what a test needs (so no file can forget them); xdist groups: every test
    that needs the cluster in one group (one worker starts the SLURM work and checks it), every other test with
    the tests of its module (a module's fixtures are built once); the cluster's tests first, so the SLURM work
    starts at the beginning of the run and runs while the rest does."""
    for item in items:
        folder = item.path.relative_to(REPO / "tests").parts[0]
        if folder == "e2e":
            item.add_marker(pytest.mark.e2e)
        if needs_slurm(item):
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.xdist_group(SLURM_GROUP))
        else:
            if "podman_env" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.container)
            item.add_marker(pytest.mark.xdist_group(item.path.relative_to(REPO).as_posix()))
    items.sort(key=lambda item: not needs_slurm(item))  # stable: otherwise in collection order


@pytest.hookimpl(trylast=True, specname="pytest_collection_modifyitems")
def pytest_collection_modifyitems_xdist_groups(config: pytest.Config, items: list[pytest.Item]) -> None:
    """What pytest-xdist's loadgroup does in a worker, where it did not: xdist 3.8 renames `item._nodeid`, which
    pytest 9 no longer reads (a node's id is `_id`), so no test had a group and `--dist loadgroup` spread every test
    on its own (both workers started the SLURM work). The scheduler reads the group after the last `@`."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        group = next((m.args[0] for m in item.iter_markers("xdist_group") if m.args), None)
        if group is not None and not item.nodeid.endswith(f"@{group}") and hasattr(item, "_id"):
            item._id = coerce_node_id(f"{item.nodeid}@{group}")


def _started_marker(state_dir: Path) -> Path:
    """Written by the test run that found the cluster down and started it: that run brings it down at its end."""
    return state_dir / f".started-by-{os.environ.get(RUN_ID, 'pytest')}"


def _state_dir(options: tuple[str, ...]) -> Path:
    given = [o for i, o in enumerate(options) if i and options[i - 1] == "--state-dir"]
    return Path(given[0]) if given else Path(os.environ.get("NESTLING_CLUSTER_DIR", REPO / ".cluster"))


def _cluster_up(*options: str) -> str:
    """Start a local cluster with these options (idempotent, locked by slurm/local-cluster itself); its SLURM_CONF."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    require(shutil.which("slurmctld", path=path) is not None, "SLURM",
            "slurm/local-cluster install, or apt-get install -y slurm-wlm munge")  # fmt: skip
    state = _state_dir(options)
    env = {**os.environ, "NESTLING_CLUSTER_DIR": str(state)}
    was_up = subprocess.run([str(CLUSTER), "status"], capture_output=True, env=env, check=False).returncode == 0
    done = subprocess.run(
        [str(CLUSTER), "up", *options], capture_output=True, text=True, env=env, timeout=180, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"slurm/local-cluster up {' '.join(options)} failed ({done.returncode}):\n{done.stderr}")
    if not was_up:  # leave a cluster somebody else started as it was
        _started_marker(state).touch()
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("export SLURM_CONF="), done.stdout
    return line.split("=", 1)[1]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Bring down the clusters this run started, once every xdist worker is done (in the controller)."""
    if hasattr(session.config, "workerinput"):
        return
    for options in (_default_options(), _small_options()):
        state = _state_dir(options)
        marker = _started_marker(state)
        if marker.exists():
            env = {**os.environ, "NESTLING_CLUSTER_DIR": str(state)}
            subprocess.run([str(CLUSTER), "down", *options], capture_output=True, env=env, timeout=120, check=False)
            marker.unlink(missing_ok=True)


def _default_options() -> tuple[str, ...]:
    return ("--cpus-per-node", "4")


def _small_options() -> tuple[str, ...]:
    port = str(int(os.environ.get("NESTLING_CLUSTER_PORT", "17000")) + 1000)  # beside the default cluster's
    return ("--state-dir", str(REPO / ".cluster-small"), "--port", port, "--max-array-size", "4",
            "--cpus-per-node", "4")  # fmt: skip


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dir every xdist worker of this run sees (the run's base temp dir; each worker's own is below it): where
    `support.built_once` keeps the trees the tests of several modules read."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def slurm_conf() -> str:
    """The default cluster (<repo>/.cluster, port $NESTLING_CLUSTER_PORT or 17000): 2 nodes x 2 fake GPUs x 4 CPUs;
    its SLURM_CONF. Session fixtures use it with `slurm_env`; nothing sets SLURM_CONF for the whole session."""
    return _cluster_up(*_default_options())


@pytest.fixture(scope="session")
def slurm_env(slurm_conf: str) -> dict[str, str]:
    """The environment of a process that talks to the default cluster: this one's plus SLURM_CONF."""
    return {**os.environ, "SLURM_CONF": slurm_conf}


@pytest.fixture
def slurm_cluster(slurm_conf: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The default cluster for one test: SLURM_CONF is set in os.environ for this test only (and restored after),
    so its CLI calls and in-process queries reach the cluster; yields the SLURM_CONF path."""
    monkeypatch.setenv("SLURM_CONF", slurm_conf)
    return slurm_conf


@pytest.fixture(scope="session")
def slurm_work(request: pytest.FixtureRequest, slurm_env: dict[str, str],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The SLURM work of every selected test (@pytest.mark.slurm_work), started at once: name -> handle."""
    handles = work.start(work.selected(request.session.items), tmp_path_factory.mktemp("slurm-work"), slurm_env)
    try:
        yield handles
    finally:
        work.stop(handles, slurm_env)


@pytest.fixture(autouse=True)
def _slurm_work_first(request: pytest.FixtureRequest) -> None:
    """The first test that needs the cluster starts the SLURM work of all of them (in its xdist worker only)."""
    if needs_slurm(request.node):
        request.getfixturevalue("slurm_work")


@pytest.fixture(scope="session")
def small_array_cluster() -> dict[str, str]:
    """A second cluster with MaxArraySize=4 (<repo>/.cluster-small, port 1000 above the default cluster's); an env
    for subprocesses."""
    return {**os.environ, "SLURM_CONF": _cluster_up(*_small_options())}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The skip count, always: under CI every real-path test fails instead of skipping, so CI shows 0."""
    skipped = len(terminalreporter.stats.get("skipped", []))
    ci = " (CI is set)" if os.environ.get("CI") else ""
    terminalreporter.write_line(f"nestling: {skipped} test{'s' if skipped != 1 else ''} skipped{ci}")
