"""`python -m nestling.array_task UNITS_JSON OFFSET`: what one SLURM array task (or one srun rank) runs.

One sbatch script per array serves every task: task i reads unit OFFSET + i from the launch's units.json, so a
submission writes one file, not one pickle per task. The task then

1. claims its unit (exits at once if another task stole it),
2. runs the unit's runs in this process (torch and Lightning load once), or in one container process,
3. runs the units it stole before a requeue, then steals waiting units of the launch until none wait
   (see core/tree/array_claims.py), so short runs do not pay a fresh Python + torch start-up each.

Signals (the same contract as submitit's): SLURM sends USR2 `--signal_delay_s` before the time limit, and
`scancel --signal=USR2` stands for a preemption. Global rank 0 then saves the run in progress (or tells the worker
in the container to), requeues this task with `scontrol requeue` and exits; the requeued task skips finished runs
and resumes the interrupted one from its checkpoint. Hitting the time limit more than `max_timeouts` times ends
the task instead. SIGTERM is ignored, as submitit does, so that a requeue ends the task through the path above.
Lightning's own SLURM requeue is off (run._cluster_plugins), so the two never fight over the signal.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from nestling.core.containers.spec import ContainerSpec
from nestling.core.host import jobenv
from nestling.core.host.devices import MEMORY_FRACTION_ENV, memory_fraction
from nestling.core.host.jobenv import JobEnvironment, save_in_progress
from nestling.core.tree import array_claims as claims
from nestling.core.tree import failfast
from nestling.core.tree.naming import ArrayLaunchPaths
from nestling.execute.worker import finish_promotions
from nestling.execute.worker import run_dirs as run_all


def timed_out(started: float, time_min: int, now: float | None = None) -> bool:
    """Was the signal the time limit (not a preemption)? submitit's rule: past the guaranteed part of the limit."""
    limit = time_min * 60
    return ((now or time.time()) - started) >= min(limit * 0.8, limit - 600)


class UnitRunner:
    """Runs work units one after another: in this process, or in one long-lived containerised worker."""

    def __init__(self, container: ContainerSpec | None) -> None:
        self.container = container
        self.child: subprocess.Popen[str] | None = None

    def run(self, run_dirs: list[str]) -> list[str]:
        """The runs' statuses (success, failed, or skipped when a live attempt elsewhere holds the run)."""
        if self.container is None:
            return [str(r.get("status")) for r in run_all(run_dirs)]
        if self.child is None:
            cmd = [sys.executable, "-m", "nestling.worker", "--serve"]
            cmd = self.container.wrap(cmd, environ=os.environ, interactive=True, job_task=True)
            self.child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write(json.dumps({"index": 0, "run_dirs": run_dirs}) + "\n")
        self.child.stdin.flush()
        statuses: list[str] = []
        for line in self.child.stdout:
            reply = json.loads(line)
            if "unit_done" in reply:
                return statuses
            if "status" in reply:
                statuses.append(str(reply["status"]))
        raise RuntimeError(f"the container worker ended (exit code {self.child.wait()}) before its unit did")

    def finish(self) -> list[str]:
        """No unit left for this task: train what other tasks' runs still promote (asha/hyperband; in a container
        its worker does that when its input closes), then end. The statuses of those runs."""
        if self.container is None:
            return [str(r.get("status")) for r in finish_promotions()]
        return self.close()

    def close(self) -> list[str]:
        """End the container worker (it may train promoted runs first: their statuses)."""
        if self.child is None or self.child.poll() is not None:
            return []
        assert self.child.stdin is not None
        self.child.stdin.close()
        statuses = _remaining_statuses(self.child)
        self.child.wait()
        return statuses

    def save(self) -> None:
        """On the preemption signal: save the run in progress (in the container: the worker saves and exits)."""
        save_in_progress(self.child)


class PackedRunner:
    """--runs_per_gpu K: K worker processes on this task's GPU share its runs, one run at a time each.

    The runs come from `take` (see `RunSource`): the task's own unit, the units it stole before a requeue, then
    units it steals now, each split into single runs so that all K workers stay busy. Every worker caps itself at
    1/K of the GPU's memory (NESTLING_MEMORY_FRACTION, applied in execute/training.py), so an out-of-memory error fails only its
    own run. Take-over works as with one worker: stealing claims whole units, and a requeued task finishes the
    units it holds (runs already done are skipped by the workers)."""

    def __init__(self, container: ContainerSpec | None, k: int) -> None:
        self.container, self.k = container, k
        self.children: list[subprocess.Popen[str]] = []
        self._lock = threading.Lock()

    def command(self) -> tuple[list[str], dict[str, str]]:
        env = {**os.environ, MEMORY_FRACTION_ENV: memory_fraction(self.k) or "1"}
        cmd = [sys.executable, "-m", "nestling.worker", "--serve"]
        if self.container is not None:
            cmd = self.container.wrap(cmd, environ=env, interactive=True, job_task=True)
        return cmd, env

    def run_all(self, take: Callable[[], list[str] | None]) -> list[str]:
        statuses: list[str] = []

        def drive() -> None:
            cmd, env = self.command()
            child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            with self._lock:
                self.children.append(child)
            assert child.stdin is not None and child.stdout is not None
            try:
                while (runs := take()) is not None:
                    child.stdin.write(json.dumps({"index": 0, "run_dirs": runs}) + "\n")
                    child.stdin.flush()
                    for line in child.stdout:
                        reply = json.loads(line)
                        if "status" in reply:
                            with self._lock:
                                statuses.append(str(reply["status"]))
                        if "unit_done" in reply:
                            break
                    else:
                        print(f"nestling: a packed worker ended (exit code {child.wait()}) during {runs}",
                              file=sys.stderr, flush=True)  # fmt: skip
                        return
            finally:
                if child.poll() is None:
                    child.stdin.close()
                    remaining = _remaining_statuses(child)
                    with self._lock:
                        statuses.extend(remaining)
                    child.wait()

        threads = [threading.Thread(target=drive, daemon=True) for _ in range(self.k)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return statuses

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None and child.stdin is not None:
                child.stdin.close()
                child.wait()

    def save(self) -> None:
        """On the preemption signal: every packed worker saves its run in progress and exits (in parallel)."""
        live = [c for c in self.children if c.poll() is None]
        for child in live:
            child.send_signal(jobenv.PREEMPT_SIGNAL)
        for child in live:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()


def _remaining_statuses(child: subprocess.Popen[str]) -> list[str]:
    """A worker whose stdin was closed may still train promoted runs before it exits: read its replies (its
    stdout pipe must not fill) until it ends."""
    statuses: list[str] = []
    if child.stdout is None:
        return statuses
    for line in child.stdout:
        try:
            reply = json.loads(line)
        except ValueError:
            continue
        if isinstance(reply, dict) and "status" in reply:
            statuses.append(str(reply["status"]))
    return statuses


class RunSource:
    """Hands out single runs to the packed workers: the own unit's, the previously stolen units', then runs of
    units stolen now (one unit at a time, only when the runs in hand are given out). Thread-safe."""

    def __init__(self, first: list[list[str]], steal: Callable[[], list[str] | None] | None) -> None:
        self._runs = [run for unit in first for run in unit]
        self._steal = steal
        self._lock = threading.Lock()

    def __call__(self) -> list[str] | None:
        with self._lock:
            if not self._runs and self._steal is not None:
                self._runs = list(self._steal() or [])
            return [self._runs.pop(0)] if self._runs else None


class Requeuer:
    """USR2 on global rank 0: save, requeue this task unless it timed out too often, exit."""

    def __init__(
        self, paths: ArrayLaunchPaths, manifest: dict[str, Any], runner: UnitRunner | PackedRunner
    ) -> None:
        self.paths, self.runner, self.started = paths, runner, time.time()
        self.time_min = int(manifest.get("time_min", 60))
        self.max_timeouts = int(manifest.get("max_timeouts", 10))
        self.job = JobEnvironment.from_environ().job_key

    def install(self) -> None:
        signal.signal(jobenv.PREEMPT_SIGNAL, self.on_signal)
        signal.signal(signal.SIGTERM, lambda signum, frame: None)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        job = JobEnvironment.from_environ()
        if job.multi_task and job.global_rank != 0:
            return  # only rank 0 decides; the others end when the requeue stops the job
        path = self.paths.requeues(self.job)
        try:
            count = int(path.read_text())
        except (FileNotFoundError, ValueError):
            count = 0
        late = timed_out(self.started, self.time_min)
        count += late
        why = "timed-out" if late else "preempted"
        print(f"nestling: {signal.Signals(signum).name} on task {self.job}: this job is {why}; saving the run in "
              "progress", file=sys.stderr, flush=True)  # fmt: skip
        self.runner.save()
        if count > self.max_timeouts:
            print(
                f"nestling: not requeued: the task hit its time limit {count} times",
                file=sys.stderr,
                flush=True,
            )
            os._exit(1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(count))
        subprocess.run(["scontrol", "requeue", self.job], check=False, timeout=60)
        print(f"nestling: requeued {self.job}", file=sys.stderr, flush=True)
        os._exit(jobenv.EXIT_REQUEUED)


def _cancel_waiting(paths: ArrayLaunchPaths) -> None:
    """Fail-fast fired: the launch's tasks still in the queue would only start to stop; cancel them."""
    job_ids = list(claims.array_offsets(paths))
    if job_ids and shutil.which("scancel"):
        subprocess.run(["scancel", "--state=PENDING", *job_ids], capture_output=True, timeout=60, check=False)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m nestling.array_task UNITS_JSON OFFSET", file=sys.stderr)
        return 2
    units_file, offset = Path(args[0]), int(args[1])
    manifest = json.loads(units_file.read_text())
    paths = ArrayLaunchPaths(units_file.parent)
    units: list[list[str]] = manifest["units"]
    env = JobEnvironment.from_environ()
    own = offset + int(env.array_task_id or 0)
    container = manifest.get("container")
    spec = ContainerSpec.from_json(container) if container else None
    per_gpu = int(manifest.get("runs_per_gpu", 1))
    runner: UnitRunner | PackedRunner = UnitRunner(spec) if per_gpu <= 1 else PackedRunner(spec, per_gpu)
    Requeuer(paths, manifest, runner).install()
    job = env.job_key
    several_ranks = env.multi_task  # all ranks run the same single unit
    if not several_ranks and not claims.claim(paths, own, job):
        print(f"nestling: unit {own} is run by task {claims.holder(paths, own)}; nothing left to do")
        return 0
    root = failfast.plan_root(Path(units[own][0])) or units_file.parent  # (a plan always has a root)
    if (stop := failfast.stopped(root)) is not None:  # exit before paying for torch
        print(f"nestling: task {job} starts nothing: {stop.message(root.name)}", flush=True)
        _cancel_waiting(paths)
        return 0
    statuses: list[str] = []
    if isinstance(runner, PackedRunner):
        try:
            statuses = runner.run_all(_packed_source(paths, job, root, units, own, several_ranks, manifest))
        finally:
            runner.close()
        return _ended(paths, root, job, statuses)
    finished = False
    try:
        statuses += runner.run(units[own])
        if not several_ranks and manifest.get("steal", True):
            for stolen in claims.stolen(paths, job):  # stolen before a requeue: finish them first
                statuses += runner.run(units[stolen])
            stealer = claims.Stealer(paths, job)
            while failfast.stopped(root) is None and (unit := stealer.next()) is not None:
                print(f"nestling: task {job} took over unit {unit} from its waiting task", flush=True)
                statuses += runner.run(units[unit])
        statuses += runner.finish()  # no unit left: promotions (asha/hyperband) before the task ends
        finished = True
    finally:
        if not finished:
            runner.close()
    return _ended(paths, root, job, statuses)


def _packed_source(
    paths: ArrayLaunchPaths, job: str, root: Path, units: list[list[str]], own: int, several_ranks: bool,
    manifest: dict[str, Any],
) -> RunSource:  # fmt: skip
    """The runs K packed workers share: the own unit, units stolen before a requeue, then units stolen now."""
    if several_ranks or not manifest.get("steal", True):
        return RunSource([units[own]], None)
    stealer = claims.Stealer(paths, job)

    def steal() -> list[str] | None:
        if failfast.stopped(root) is not None:
            return None
        unit = stealer.next()
        if unit is None:
            return None
        print(f"nestling: task {job} took over unit {unit} from its waiting task", flush=True)
        return units[unit]

    return RunSource([units[own], *(units[u] for u in claims.stolen(paths, job))], steal)


def _ended(paths: ArrayLaunchPaths, root: Path, job: str, statuses: list[str]) -> int:
    if failfast.stopped(root) is not None:
        _cancel_waiting(paths)
    failed = statuses.count("failed")
    print(f"nestling: task {job} completed: {statuses.count('success')} runs succeeded, {failed} failed")
    return 1 if failed else 0  # a failed run fails the SLURM task too: sacct shows FAILED, not COMPLETED

