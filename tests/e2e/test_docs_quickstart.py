"""docs/quickstart.md, run as written (issue 16): every command of its ```bash blocks and its Python snippet, on CPU
with small sizes, must exit 0, so the page cannot drift from the code again.

Commands that need what a test machine does not give are skipped, each for a stated reason (SKIPPED). Training
commands get SMALL appended: later flags override earlier ones, so the command itself is unchanged. The detached
"overnight" sweep gets LONG instead, so that it still runs when the page stops it: `status --watch` is left with a
Ctrl-C once it showed the supervisor, and what `stop` and `--resume --detach` did is checked on the tree.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import poll

from nestling.core.tree import naming
from nestling.core.tree import supervisor_pid as supervision
from nestling.core.tree.atomic import read_json
from nestling.core.tree.run_result import read_result
from nestling.plan.store import load_plan

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "docs" / "quickstart.md"
SMALL = ["--max_epochs", "1", "--n_folds", "2", "--n_seeds", "1", "--n_trials", "2", "--accelerator", "cpu",
         "--quiet"]  # fmt: skip
LONG = ["--max_epochs", "200", "--n_folds", "2", "--n_seeds", "1", "--n_trials", "2", "--accelerator", "cpu",
        "--quiet"]  # fmt: skip  # a run takes a minute or more: the sweep is certainly running when it is stopped
DETACHED = "overnight"
TRAINING = ("run", "cv", "tune")
SKIPPED = {  # first word(s) of a command -> why the test does not run it
    "make": "installs into .venv / as root (covered by ./dev and CI)",
    "python3 -m venv": "installation",
    ".venv/bin/pip": "installation",
    ". .venv/bin/activate": "installation (the test runs this interpreter's nestling)",
    "pip": "installation",
    "git": "needs the network",
}


def bash_commands(markdown: str) -> list[str]:
    """Each command of the ```bash blocks: comments stripped, `\\` continuations joined, blank lines dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def skip_reason(command: str) -> str | None:
    if "--launcher slurm" in command:
        return "needs SLURM"
    if "--container_image" in command:
        return "needs a container runtime"
    if "<" in command:
        return "has a placeholder"
    return next((why for start, why in SKIPPED.items() if command.startswith(start)), None)


def argv(command: str) -> list[str]:
    words = shlex.split(command)
    if words[0] == ".venv/bin/nestling":
        words[0] = "nestling"
    assert words[0] == "nestling", f"not a nestling command: {command}"
    sizes = LONG if DETACHED in words else SMALL
    small = [*sizes, *(["--retrain", "false"] if words[1] == "tune" else [])]  # 1 epoch: nothing worth retraining
    return [sys.executable, "-m", "nestling.cli", *words[1:], *(small if words[1] in TRAINING else [])]


def test_quickstart_lists_what_it_skips() -> None:
    """The parser finds the page's commands, and only install and SLURM lines are skipped."""
    commands = bash_commands(QUICKSTART.read_text())
    run = [c for c in commands if skip_reason(c) is None]
    assert any(c.startswith("nestling tune") for c in run) and any(c.startswith("nestling status") for c in run)
    assert all(c.startswith(("nestling", ".venv/bin/nestling")) for c in run), run


def test_every_quickstart_command_exits_0(tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")  # the page runs from the clone's root
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *sys.path])}
    markdown = QUICKSTART.read_text()
    detached = tmp_path / "artifacts" / DETACHED
    ran = []
    try:
        for command in bash_commands(markdown):
            if skip_reason(command) is not None:
                continue
            if "--watch" in command:
                watched = _watch_until_the_supervisor_shows(argv(command), tmp_path, env)
                assert "detached: supervisor pid" in watched and " alive; " in watched, watched
                ran.append(command)
                continue
            done = subprocess.run(argv(command), cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
            assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
            ran.append(command)
            if command.startswith("nestling stop"):
                _check_stopped(done.stdout, detached)
            elif DETACHED in command and "--resume" in command:
                _check_resumed(done.stdout, detached)
        assert len(ran) >= 8
        assert any(c.startswith("nestling stop") for c in ran) and any("--resume" in c for c in ran)
        # the resumed sweep would run on after the test: once it trains again, stop it and read its launch record
        poll(lambda: _counts(detached, tmp_path, env)["running"] == 1, 180, "the resumed sweep to train")
        stop = subprocess.run(argv(f"nestling stop {detached}"), cwd=tmp_path, env=env, timeout=300,
                              capture_output=True, text=True)  # fmt: skip
        assert stop.returncode == 0, stop.stdout + stop.stderr
        launches = read_json(naming.launch_file(detached))["launches"]
        assert [(x.get("resume", False), x["interrupted"]) for x in launches] == [(False, True), (True, True)]
        assert launches[-1]["rerun"] == len(load_plan(detached).runs)
    finally:  # a failure above must not leave a sweep running either
        if supervision.live_supervisor(detached) is not None:
            subprocess.run(argv(f"nestling stop {detached}"), cwd=tmp_path, env=env, timeout=300,
                           capture_output=True, check=False)  # fmt: skip
    for snippet in python_blocks(markdown):  # the results snippets read what the commands above wrote
        done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, env=env,
                              timeout=120)  # fmt: skip
        assert done.returncode == 0, f"{snippet}\n{done.stderr}"


def _watch_until_the_supervisor_shows(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """`status --watch` refreshes until every run ended; a user leaves it with Ctrl-C once they saw enough: here,
    the supervisor and a run in progress (so the stop that follows meets one)."""
    out = cwd / "watch.txt"
    with open(out, "w") as f:
        proc = subprocess.Popen([*args, "--interval", "0.5"], cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                                env={**env, "COLUMNS": "200"})  # fmt: skip
    try:
        poll(lambda: "detached: supervisor" in (text := out.read_text()) and "running=1" in text, 180,
             "status --watch to show the supervisor and a run in progress")  # fmt: skip
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    return out.read_text()


def _counts(root: Path, cwd: Path, env: dict[str, str]) -> dict[str, int]:
    done = subprocess.run(argv(f"nestling status {root} --json"), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    counts: dict[str, int] = json.loads(done.stdout)["counts"]
    return counts


def _check_stopped(printed: str, root: Path) -> None:
    """`nestling stop` met the sweep running: it stopped the supervisor, the runs in progress saved (interrupted,
    not lost), none finished, and it printed the command that continues."""
    assert f"stopping tune {DETACHED} (supervisor pid" in printed, printed
    assert f"continue with: nestling tune --resume {DETACHED}" in printed, printed
    assert supervision.live_supervisor(root) is None
    launches = read_json(naming.launch_file(root))["launches"]
    assert launches[-1]["detached"] is True and launches[-1]["interrupted"] is True
    runs = load_plan(root).runs
    assert [read_result(r.dir) for r in runs] == [None] * len(runs)  # a run takes minutes at LONG sizes
    assert any((r.dir / naming.RUN_LOCK).exists() for r in runs)  # one had started when the stop came


def _check_resumed(printed: str, root: Path) -> None:
    """`--resume --detach` started a new supervisor, given every unfinished run (here: all of them)."""
    sup = supervision.live_supervisor(root)
    assert sup is not None and f"detached: supervisor pid {sup.pid}" in printed, printed
    request = read_json(naming.SupervisorPaths(root).request)
    runs = load_plan(root).runs
    record = request["record"]
    assert (record["resume"], record["rerun"], record["detached"]) == (True, len(runs), True), record
    assert sorted(d for unit in request["units"] for d in unit["run_dirs"]) == sorted(str(r.dir) for r in runs)
