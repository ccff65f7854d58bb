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

from nestling.core.containers.runtimes import Wrapped
from nestling.core.containers.spec import ContainerSpec
from nestling.core.host import jobenv, slurm_query, worker_limits
from nestling.core.host.devices import MEMORY_FRACTION_ENV, memory_fraction
from nestling.core.host.jobenv import JobEnvironment, save_in_progress
from nestling.core.tree import array_claims as claims
from nestling.core.tree import failfast, fault_ledger
from nestling.core.tree.failure_class import FailureClass, is_storage_error
from nestling.core.tree.naming import ArrayLaunchPaths
from nestling.core.tree.run_state import RunState
from nestling.execute.walltime import Walltime
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

    def run(self, run_dirs: list[str]) -> list[RunState]:
        """The runs' states (success, failed, or skipped when a live attempt elsewhere holds the run, ...)."""
        if self.container is None:
            worker_limits.apply()  # this process trains: its threads follow --cpus_per_task before torch loads
            return run_all(run_dirs)
        if self.child is None:
            env = worker_limits.for_worker(dict(os.environ), cpus=worker_limits.available_cpus())
            cmd = [sys.executable, "-m", "nestling.worker", "--serve"]
            wrapped = self.container.wrap(cmd, environ=env, interactive=True, job_task=True)
            self.child = wrapped.popen(stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write(json.dumps({"index": 0, "run_dirs": run_dirs}) + "\n")
        self.child.stdin.flush()
        statuses: list[RunState] = []
        for line in self.child.stdout:
            reply = json.loads(line)
            if "unit_done" in reply:
                return statuses
            if (state := RunState.named(reply.get("status"))) is not None:  # (a worker of another version)
                statuses.append(state)
        code = self.child.wait()
        if code == jobenv.EXIT_REQUEUED:  # a rank != 0 that waited for rank 0's save: the requeue ends the job
            print("nestling: the worker in the image stopped to be requeued", file=sys.stderr, flush=True)
            raise SystemExit(jobenv.EXIT_REQUEUED)
        raise RuntimeError(f"the container worker ended (exit code {code}) before its unit did")

    def finish(self) -> list[RunState]:
        """No unit left for this task: train what other tasks' runs still promote (asha/hyperband; in a container
        its worker does that when its input closes), then end. The states of those runs."""
        if self.container is None:
            return finish_promotions()
        return self.close()

    def close(self) -> list[RunState]:
        """End the container worker (it may train promoted runs first: their states)."""
        if self.child is None or self.child.poll() is not None:
            return []
        assert self.child.stdin is not None
        self.child.stdin.close()
        states = [state for _, state in _remaining_statuses(self.child)]
        self.child.wait()
        return states

    def save(self) -> None:
        """On the preemption signal: save the run in progress (in the container: the worker saves and exits)."""
        save_in_progress(self.child)


class PackedRunner:
    """--runs_per_gpu K: K worker processes on this task's GPU share its runs, one run at a time each.

    The runs come from `take` (see `RunSource`): the task's own unit, the units it stole before a requeue, then
    units it steals now, each split into single runs so that all K workers stay busy. Every worker caps itself at
    1/K of the GPU's memory (NESTLING_MEMORY_FRACTION, applied in execute/training.py), so an out-of-memory error fails only its
    own run, which then runs again alone on the GPU once the others are done. Take-over works as with one worker: stealing claims whole units, and a requeued task finishes the
    units it holds (runs already done are skipped by the workers)."""

    def __init__(self, container: ContainerSpec | None, k: int) -> None:
        self.container, self.k = container, k
        self.children: list[subprocess.Popen[str]] = []
        self._lock = threading.Lock()

    def command(self, alone: bool = False) -> Wrapped:
        """A worker's command line: capped at 1/K of the GPU's memory, or, `alone` on the GPU, not capped; its
        threads sized to its share of the task's CPUs (alone: all of them)."""
        env = {**os.environ, MEMORY_FRACTION_ENV: "1" if alone else memory_fraction(self.k) or "1"}
        cpus = worker_limits.available_cpus() if alone else worker_limits.share(self.k)
        worker_limits.for_worker(env, cpus=cpus)  # the task's CPUs split K ways
        cmd = [sys.executable, "-m", "nestling.worker", "--serve"]
        if self.container is not None:
            return self.container.wrap(cmd, environ=env, interactive=True, job_task=True)
        return Wrapped(cmd, env)

    def run_all(self, take: Callable[[], list[str] | None]) -> list[RunState]:
        """Every run `take` hands out, K at a time; then, one at a time alone on the GPU, the runs that ran out of
        memory while they shared it (failure class oom_shared, execute/retry.py). The last state of each run."""
        states: dict[str, RunState] = {}
        alone: list[str] = []

        def drive(source: Callable[[], list[str] | None], by_itself: bool) -> None:
            child = self.command(alone=by_itself).popen(stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            with self._lock:
                self.children.append(child)
            assert child.stdin is not None and child.stdout is not None
            try:
                while (runs := source()) is not None:
                    child.stdin.write(json.dumps({"index": 0, "run_dirs": runs}) + "\n")
                    child.stdin.flush()
                    for line in child.stdout:
                        reply = json.loads(line)
                        if (state := RunState.named(reply.get("status"))) is not None:
                            with self._lock:
                                states[reply["run_dir"]] = state
                                if reply.get("failure_class") == FailureClass.OOM_SHARED and not by_itself:
                                    alone.append(reply["run_dir"])
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
                        states.update(remaining)
                    child.wait()

        threads = [threading.Thread(target=drive, args=(take, False), daemon=True) for _ in range(self.k)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if alone:
            print(f"nestling: {len(alone)} run(s) ran out of GPU memory while sharing it; rerunning them alone",
                  file=sys.stderr, flush=True)  # fmt: skip
            drive(RunSource([alone], None), True)
        return list(states.values())

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


def _remaining_statuses(child: subprocess.Popen[str]) -> list[tuple[str, RunState]]:
    """A worker whose stdin was closed may still train promoted runs before it exits: read its replies (its
    stdout pipe must not fill) until it ends. (run dir, state) of each."""
    states: list[tuple[str, RunState]] = []
    if child.stdout is None:
        return states
    for line in child.stdout:
        try:
            reply = json.loads(line)
        except ValueError:
            continue
        if isinstance(reply, dict) and (state := RunState.named(reply.get("status"))) is not None:
            states.append((str(reply.get("run_dir")), state))
    return states


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
        self.handling = False  # a second signal while the first is handled (SLURM's and a scancel) changes nothing
        self.time_min = int(manifest.get("time_min", 60))
        self.max_timeouts = int(manifest.get("max_timeouts", 10))
        self.job = JobEnvironment.from_environ().job_key

    def install(self) -> None:
        signal.signal(jobenv.PREEMPT_SIGNAL, self.on_signal)
        signal.signal(signal.SIGTERM, lambda signum, frame: None)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.handling:
            return
        self.handling = True
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
    """The task's program; a full file system met outside a run (a claim, the units file) ends it with one line."""
    try:
        return _task(argv)
    except OSError as exc:
        if not is_storage_error(exc):
            raise
        print(f"nestling: task {JobEnvironment.from_environ().job_key} stops: {exc}; free space, then --resume",
              file=sys.stderr, flush=True)  # fmt: skip
        return 1


def _task(argv: list[str] | None) -> int:
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
    requeuer = Requeuer(paths, manifest, runner)
    requeuer.install()
    job = env.job_key
    fits = _fits_in_walltime(job, Walltime(
        paths, units, started=requeuer.started, time_min=requeuer.time_min,
        signal_delay_s=int(manifest.get("signal_delay_s", 90)), expected_run_s=manifest.get("expected_run_s"),
        parallel=per_gpu,
    ))  # fmt: skip
    several_ranks = env.multi_task  # all ranks run the same single unit
    if not several_ranks and not claims.claim(paths, own, job):
        print(f"nestling: unit {own} is run by task {claims.holder(paths, own)}; nothing left to do")
        return 0
    root = failfast.plan_root(Path(units[own][0])) or units_file.parent  # (a plan always has a root)
    if (stop := failfast.stopped(root)) is not None:  # exit before paying for torch
        print(f"nestling: task {job} starts nothing: {stop.message(root.name)}", flush=True)
        _cancel_waiting(paths)
        return 0
    broken = LeaveBrokenNode(paths, root, env, several_ranks)
    broken.leave_if_broken(runner)  # started on a node found broken since the array was submitted
    statuses: list[RunState] = []
    if isinstance(runner, PackedRunner):
        try:
            statuses = runner.run_all(
                _packed_source(paths, job, root, units, own, several_ranks, manifest, broken, fits)
            )
        finally:
            runner.close()
        broken.leave_if_broken(runner)
        return _ended(paths, root, job, statuses)
    finished = False
    try:
        statuses += runner.run(units[own])
        broken.leave_if_broken(runner)
        if not several_ranks and manifest.get("steal", True):
            for stolen in claims.stolen(paths, job):  # stolen before a requeue: finish them first
                statuses += runner.run(units[stolen])
                broken.leave_if_broken(runner)
            stealer = claims.Stealer(paths, job, fits=fits)
            while failfast.stopped(root) is None and (unit := stealer.next()) is not None:
                print(f"nestling: task {job} took over unit {unit} from its waiting task", flush=True)
                statuses += runner.run(units[unit])
                broken.leave_if_broken(runner)
        statuses += runner.finish()  # no unit left: promotions (asha/hyperband) before the task ends
        finished = True
    finally:
        if not finished:
            runner.close()
    return _ended(paths, root, job, statuses)


class LeaveBrokenNode:
    """A node fault (retry.py marked this node broken in the tree): keep the launch off the node and go elsewhere.

    The launch's arrays get the node in their ExcNodeList (their pending tasks never start there), and this task
    is requeued and excluded from it too, so that the run that met the fault, and the unfinished runs of the units
    this task holds, run on another node under the same job id (the collector's dependency, `--wait` and `status`
    follow it as they follow a preempted task). Multi-task jobs (one multi-node run) are left as they are."""

    def __init__(self, paths: ArrayLaunchPaths, root: Path, env: JobEnvironment, several_ranks: bool) -> None:
        self.paths, self.root, self.node = paths, root, env.node
        self.job, self.partition = env.job_key, os.environ.get("SLURM_JOB_PARTITION")
        self.active = not several_ranks and self.node is not None

    def is_broken(self) -> bool:
        return self.active and fault_ledger.is_broken(self.root, self.node)

    def leave_if_broken(self, runner: UnitRunner | PackedRunner) -> None:
        """Requeue this task off its node when the node is recorded broken; returns only when it is not (or when
        every node of the partition is, which no requeue can mend)."""
        if not self.is_broken():
            return
        nodes = [b.node for b in fault_ledger.broken_nodes(self.root)]
        parts = slurm_query.partitions()
        size = parts[self.partition].nodes if parts and self.partition in parts else None
        if size is not None and len(nodes) >= size:
            print(f"nestling: every node of partition {self.partition} is recorded broken ({', '.join(nodes)}); "
                  f"task {self.job} is not requeued: check them, remove {fault_ledger.FaultPaths(self.root).nodes}, "
                  "then --resume", file=sys.stderr, flush=True)  # fmt: skip
            return
        arrays = list(claims.array_offsets(self.paths))
        slurm_query.exclude_nodes(arrays, nodes)  # the launch's pending tasks
        runner.close()
        print(f"nestling: node {self.node} is broken; task {self.job} is requeued off it (excluded: "
              f"{', '.join(nodes)})", file=sys.stderr, flush=True)  # fmt: skip
        if slurm_query.requeue(self.job):
            slurm_query.exclude_nodes([self.job], nodes)  # requeued (completing): its next start is elsewhere
            os._exit(jobenv.EXIT_REQUEUED)
        print(f"nestling: scontrol requeue {self.job} failed; --resume reruns its runs", file=sys.stderr, flush=True)


def _packed_source(
    paths: ArrayLaunchPaths, job: str, root: Path, units: list[list[str]], own: int, several_ranks: bool,
    manifest: dict[str, Any], broken: LeaveBrokenNode, fits: Callable[[int], bool],
) -> RunSource:  # fmt: skip
    """The runs K packed workers share: the own unit, units stolen before a requeue, then units stolen now."""
    if several_ranks or not manifest.get("steal", True):
        return RunSource([units[own]], None)
    stealer = claims.Stealer(paths, job, fits=fits)

    def steal() -> list[str] | None:
        if failfast.stopped(root) is not None or broken.is_broken():
            return None
        unit = stealer.next()
        if unit is None:
            return None
        print(f"nestling: task {job} took over unit {unit} from its waiting task", flush=True)
        return units[unit]

    return RunSource([units[own], *(units[u] for u in claims.stolen(paths, job))], steal)


def _fits_in_walltime(job: str, walltime: Walltime) -> Callable[[int], bool]:
    """The Stealer's test: a waiting unit this task could not finish before its time limit is left to a fresh
    task (execute/walltime.py), and the log says so once per unit."""
    said: set[int] = set()

    def fits(unit: int) -> bool:
        ok, needed = walltime.fits(unit)
        if not ok and unit not in said:
            said.add(unit)
            print(f"nestling: task {job} leaves unit {unit} to a fresh task: about {needed:.0f} s of runs, "
                  f"{max(0.0, walltime.left_s()):.0f} s left before its time limit", flush=True)  # fmt: skip
        return ok

    return fits


def _ended(paths: ArrayLaunchPaths, root: Path, job: str, statuses: list[RunState]) -> int:
    if failfast.stopped(root) is not None:
        _cancel_waiting(paths)
    failed = statuses.count(RunState.FAILED)
    print(f"nestling: task {job} completed: {statuses.count(RunState.SUCCESS)} runs succeeded, {failed} failed")
    return 1 if failed else 0  # a failed run fails the SLURM task too: sacct shows FAILED, not COMPLETED

