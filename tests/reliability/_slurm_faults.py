"""The SLURM fault scenarios, started together at the beginning of the session and driven by one background thread.

Submitting them early lets their sleeps, signals and requeues overlap with the local tests; the thread injects
each fault at the right moment (whether or not a test is running then) and records what it did. The tests in
test_slurm_faults.py wait for a scenario to end and check its tree.

  preempt    cv-parallel, 2 array tasks, 6 epochs x 2 s; `scancel --signal=USR2` to task 0 once it finished an epoch
  timelimit  a cv of one run (--fold_method none), so one task and a plain job (id N, not N_i); 12 epochs x 8 s,
             --time_min 2 --signal_delay_s 30: SLURM signals at its first 30 s tick after the job passed
             limit - delay - 30 s = 60 s, i.e. 60 to 90 s after each start. 96 s of training (plus start-up) cannot
             fit in that, whatever the tick: not a race; and each attempt trains for 60 s minus its start-up, which
             a loaded machine stretches to tens of seconds (with --time_min 1 an attempt could be signalled before
             its first epoch ended, again and again). The run checkpoints, the job is requeued, and so on until the
             run is done; the attempt that finishes trained at most 90 s, so earlier ones trained the rest
  driver     cv-parallel --wait, the driver SIGKILLed while a run trains; artifact dir with spaces, quotes, $, `
             and a newline; fake secrets in the environment, wandb offline

SLURM keeps a requeued job pending until its old credential expires (EligibleTime = requeue + cred_expire + 1 s,
reason BeginTime): 11 s on the local cluster (`AuthInfo=cred_expire=10`). The thread records each requeue it sees
(the job's Restarts count); only on a cluster with SLURM's default 121 s does it bring the start forward, and never
before the credential expired: a job started earlier is refused by slurmd ("Job credential revoked") and ends.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import slurm_work
from _reliability import FIGURES, SLEEP, SLURM_TASK, completed_epochs, lock_pid, planned_runs, start

SECRETS = {"WANDB_API_KEY": "fake-secret-123", "MY_TOKEN": "tok-secret-456"}
WEIRD = "art dir 'q' \"dq\" $HOME `x`\nnl"


@dataclass(eq=False)
class Scenario:
    name: str
    art: Path
    max_epochs: int
    driver: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    events: list[str] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.art / "_cross_validations" / self.name

    def launch(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.root / "launch.json").read_text())["launches"][-1]
        except (FileNotFoundError, ValueError, KeyError, IndexError):
            return None

    def job_ids(self) -> list[str]:
        launch = self.launch()
        if not launch:
            return []
        ids = []
        for array in launch["arrays"]:
            ids += (
                [array["job_id"]]
                if array["tasks"] == 1
                else [f"{array['job_id']}_{i}" for i in range(array["tasks"])]
            )
        return ids

    def done(self, env: dict[str, str]) -> bool:
        """Every run has a result and the collector job wrote the parquet (it runs after every task ended)."""
        launch = self.launch()
        if not launch or not (self.root / "run_infos.parquet").is_file():
            return False
        collector = launch.get("collector_job_id")
        if collector and _state(collector, env) not in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", None):
            return False
        return all((r["dir"] / "run_result.json").is_file() for r in planned_runs(self.root))


def scontrol_job(job: str, env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, env=env, timeout=30).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def _state(job: str, env: dict[str, str]) -> str | None:
    return scontrol_job(job, env).get("JobState")


class SlurmFaults:
    def __init__(self, base: Path, slurm_env: dict[str, str]) -> None:
        self.base = base
        self.slurm_env = slurm_env  # the cluster's SLURM_CONF, for the queries of the fault thread and the tests
        self.env = {**slurm_env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **SECRETS}
        self.preempt = Scenario("preempt", base / "preempt", max_epochs=6)
        self.timelimit = Scenario("timelimit", base / "timelimit", max_epochs=12)
        self.driver = Scenario("driver", base / WEIRD, max_epochs=3)
        self.signalled: dict[str, Any] = {}
        self.released: dict[str, list[int]] = {}  # job -> Restarts seen at each release
        self.driver_killed_at: float | None = None
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="slurm-faults", daemon=True)

    # -- start ---------------------------------------------------------------------------------------------------
    def start(self) -> SlurmFaults:
        common = [*SLEEP, *SLURM_TASK, "--strategy", "cv-parallel", "--launcher", "slurm", "--n_folds", "2"]
        self.base.mkdir(parents=True, exist_ok=True)
        jobs = {
            self.timelimit: ["--max_epochs", "12", "--hp", "sleep_s=8", "--fold_method", "none", "--time_min", "2",
                             "--signal_delay_s", "30"],
            self.preempt: ["--max_epochs", "6", "--hp", "sleep_s=2"],
            self.driver: ["--max_epochs", "3", "--hp", "sleep_s=2", "--wait", "--wandb_project", "nestling-secrets"],
        }  # fmt: skip
        for scenario, extra in jobs.items():
            scenario.log = self.base / f"{scenario.name}.log"
            scenario.driver = start(
                "cv", *common, *extra, "--artifact_dir", str(scenario.art), "--name", scenario.name,
                log=scenario.log, env=self.env,
            )  # fmt: skip
        self._thread.start()
        return self

    def queued(self) -> bool:
        """Every scenario's jobs are submitted (or its command ended): the next SLURM work may be submitted."""
        return all(s.launch() is not None or (s.driver is not None and s.driver.poll() is not None)
                   for s in (self.preempt, self.timelimit, self.driver))  # fmt: skip

    def stop(self, env: dict[str, str] | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        ours = [j for s in (self.preempt, self.timelimit, self.driver) for j in s.job_ids()]
        collectors = [
            s.launch().get("collector_job_id")
            for s in (self.preempt, self.timelimit, self.driver)
            if s.launch()
        ]
        left = [
            j
            for j in [*ours, *collectors]
            if j and _state(j, self.slurm_env) in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING")
        ]
        if left:
            subprocess.run(["scancel", *left], capture_output=True, env=self.slurm_env, timeout=30, check=False)
        for s in (self.preempt, self.timelimit, self.driver):
            if s.driver is not None and s.driver.poll() is None:
                s.driver.kill()
                s.driver.wait()

    # -- the fault thread ---------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as exc:  # noqa: BLE001 - reported by the tests
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(0.5)

    def _tick(self) -> None:
        self._preempt_once()
        self._kill_driver_once()
        ours = [j for s in (self.preempt, self.timelimit) for j in s.job_ids()]
        if ours:
            out = subprocess.run(["squeue", "-h", "-r", "-t", "PD", "-o", "%i|%r"], capture_output=True, text=True,
                                 env=self.slurm_env, timeout=30).stdout  # fmt: skip
            waiting = dict(line.strip().split("|", 1) for line in out.splitlines() if "|" in line)
            for job in ours:
                if waiting.get(job) == "BeginTime":
                    self._release_if_requeued(job)

    def _preempt_once(self) -> None:
        launch = self.preempt.launch()
        if self.signalled or not launch:
            return
        array = launch["arrays"][0]
        victim = Path(array["run_dirs"][0][0])
        job = f"{array['job_id']}_0"
        done = completed_epochs(victim).get(1, [])
        if done and len(done) < self.preempt.max_epochs and lock_pid(victim):
            subprocess.run(["scancel", "--signal=USR2", job], check=True, capture_output=True, env=self.slurm_env,
                           timeout=30)  # fmt: skip
            self.signalled = {
                "job": job,
                "run_dir": str(victim),
                "epochs_done": list(done),
                "at": time.time(),
            }
            FIGURES.fault("SLURM preemption (scancel --signal=USR2)")

    def _kill_driver_once(self) -> None:
        proc = self.driver.driver
        if self.driver_killed_at is not None or proc is None or not self.driver.launch():
            return
        if any(lock_pid(r["dir"]) for r in planned_runs(self.driver.root)):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            self.driver_killed_at = time.time()
            FIGURES.fault("SLURM driver SIGKILL (--wait)")

    def _release_if_requeued(self, job: str) -> None:
        info = scontrol_job(job, self.slurm_env)
        if info.get("JobState") != "PENDING" or info.get("Reason") != "BeginTime":
            return
        restarts = int(info.get("Restarts", "0"))
        if restarts < 1 or restarts in self.released.get(job, []):
            return
        # Starting it before the old credential expired makes slurmd refuse it ("Job credential revoked") and
        # the task ends for good; the local cluster's cred_expire is 10 s, so only a later EligibleTime (a
        # cluster with SLURM's default 121 s) is brought forward, to 12 s from now.
        eligible = info.get("EligibleTime", "")
        try:
            wait_s = time.mktime(time.strptime(eligible, "%Y-%m-%dT%H:%M:%S")) - time.time()
        except ValueError:
            wait_s = 0
        if wait_s > 20:
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now+12"], check=True,
                           capture_output=True, env=self.slurm_env, timeout=30)  # fmt: skip
        self.released.setdefault(job, []).append(restarts)
        if job in self.timelimit.job_ids():
            FIGURES.fault("SLURM time limit (USR2 before --time_min, requeue)")


FAULTS = slurm_work.register("faults", 1, lambda base, env: SlurmFaults(base, env).start())
