"""Every name and every path nestling uses; nothing else builds a path into the artifact tree.

Names follow the seed exactly:
  tune_name  given or generated            cv_name  = {tune_name}-cv{hp_index}
  run_name   = {cv_name}-run-f{fold}s{seed} run_id   = 8 characters [a-z0-9]
and directories
  tune runs  {artifact_dir}/{tune_name}/{cv_name}/{run_name}-{run_id}
  cv runs    {artifact_dir}/_cross_validations/{cv_name}/{run_name}-{run_id}
  one run    {artifact_dir}/_runs/{run_name}-{run_id}
  retrain    {artifact_dir}/{tune_name}/{tune_name}-final/{tune_name}-final-run-f0s{seed}-{run_id}
             (`nestling retrain`: the selected configuration trained on train + val, tested on the test split)
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import string
from pathlib import Path
from typing import Any

from nestling.core.errors import UsageError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]+$")
RUN_ID_ALPHABET = string.ascii_lowercase + string.digits
RUN_ID_LENGTH = 8

CV_ROOT = "_cross_validations"
RUN_ROOT = "_runs"

RUN_SPEC = "run_spec.json"
RUN_SPECS = "run_specs.jsonl"  # every RunSpec of a plan, one JSON line each, at the plan root
RUN_RESULT = "run_result.json"
RUN_LOCK = "attempt.lock"
RUN_ERROR = "error.txt"  # the traceback of a failed attempt
RUN_CURVE = "curve.json"  # the scoring metrics after every epoch (execute/training.py), for rungs and the report
RUN_INFOS = "run_infos.parquet"
RUN_INFOS_STAMP = "run_infos.stamp.json"  # what a cv's run_infos.parquet was built from (execute/cv_table.py)
TUNE_INFOS = "tune_infos.parquet"
FINAL_INFOS = "final_infos.parquet"  # a tune's retrain (a cv inside the tune dir): test metrics per seed, mean, std, sem
FINAL_SUFFIX = "-final"
PLAN = "plan.json"
SPLITS = "splits.json"
LAUNCH = "launch.json"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
ATTEMPT_LOG_PREFIX = "attempt-"  # logs/attempt-N/: one CSV log folder per attempt
CSV_LOG = "metrics.csv"
WORKER_LOGS = "_workers"
SUBMITIT_DIR = "_submitit"
DRY_RUN_DIR = "_dry_run"
IMAGES_DIR = "_images"  # apptainer images pulled once from a URI (docker://, oras://, ...) for every launch
FAIL_FAST_DIR = "_failfast"
WANDB_DIR = "wandb"  # made by wandb inside a run dir (save_dir = the run dir)
WANDB_OFFLINE_PREFIX = "offline-run-"  # wandb's name of an offline run's dir: offline-run-{YYYYmmdd_HHMMSS}-{run_id}
WANDB_SYNCED = "nestling-synced.json"  # in an offline run's dir once `nestling sync` uploaded it
REPORT = "report.html"  # `nestling report`: one self-contained page per tune, cv or run dir
REPORT_FIGURES = "report_figures"  # beside it: one PNG per figure of the page
SUPERVISOR_LOG = "_supervisor.log"  # what a detached local sweep's supervisor prints (--detach)
SUPERVISOR_PID = "_supervisor.pid"  # who supervises it: pid, hostname, start time (JSON)
SUPERVISOR_REQUEST = "_supervisor.json"  # what the foreground hands the supervisor: the runs and the options
TRIALS_DIR = "_trials"  # adaptive search: one draw file per trial, and prune marks
FAULTS_DIR = "_faults"  # what went wrong below the user's code: retries per run, broken nodes (fault_ledger.py)
PLAN_COPY = "plan.copy.json"  # plan.json's twin, written first: a damaged plan.json is restored from it
CHECKPOINTS_KEPT_DIR = "_checkpoints"  # --keep_checkpoints: finished trials ranked, removed ones (checkpoint_keeping.py)
CODE_DIR = "_code"  # code snapshots: {plan}/_code/{key}/ (the files) + {key}.json (the manifest)


def validate_name(name: str, what: str = "name") -> str:
    """Refuse names that would escape or confuse the artifact tree."""
    if not NAME_PATTERN.fullmatch(name) or name in {".", ".."}:  # fullmatch: "$" would accept "x\n"
        raise UsageError(
            f"invalid {what} {name!r}: use only letters, digits, '.', '_' and '-' (e.g. --name my-tune-1)"
        )
    if name.startswith(
        ("_", "-")
    ):  # _cross_validations, _runs, _workers, _submitit are nestling's; -x looks like a flag
        raise UsageError(
            f"invalid {what} {name!r}: names starting with {name[0]!r} are reserved; start with a letter or digit "
            f"(e.g. --name {name.lstrip('_-') or 'my-tune-1'})"
        )
    return name


def generate_name(rng: random.Random | None = None) -> str:
    """A readable random name such as 'brave-otter'."""
    from coolname import generate_slug

    if rng is not None:
        from coolname import RandomGenerator
        from coolname.data import config

        wordlists: dict[str, Any] = config  # typed dict[str, object] by coolname, which its own class refuses
        return RandomGenerator(wordlists, rand=rng).generate_slug(2)
    return generate_slug(2)


_SYSTEM_RANDOM = random.SystemRandom()
_ID_SPACE = len(RUN_ID_ALPHABET) ** RUN_ID_LENGTH


def new_run_id(rng: random.Random | None = None) -> str:
    if rng is not None:
        return "".join(rng.choice(RUN_ID_ALPHABET) for _ in range(RUN_ID_LENGTH))
    # One draw from the OS for the whole id (not one per character): planning 10,000 runs stays cheap.
    n = _SYSTEM_RANDOM.randrange(_ID_SPACE)
    chars = []
    for _ in range(RUN_ID_LENGTH):
        n, k = divmod(n, len(RUN_ID_ALPHABET))
        chars.append(RUN_ID_ALPHABET[k])
    return "".join(chars)


def cv_name_for(tune_name: str, hp_index: int) -> str:
    return f"{tune_name}-cv{hp_index}"


def run_name_for(cv_name: str, fold: int, seed: int) -> str:
    return f"{cv_name}-run-f{fold}s{seed}"


def final_name(tune_name: str) -> str:
    """The name of a tune's retrain: one more cv of the tune, its runs `{tune}-final-run-f0s{seed}`."""
    return f"{tune_name}{FINAL_SUFFIX}"


def final_dir(tune_path: Path, tune_name: str) -> Path:
    """The retrain's plan root, inside the tune dir beside the tune's cvs."""
    return Path(tune_path) / final_name(tune_name)


def tune_of_final(name: str) -> str:
    """The tune a retrain named `name` belongs to."""
    return name.removesuffix(FINAL_SUFFIX)


def tune_dir(artifact_dir: Path, tune_name: str) -> Path:
    return artifact_dir / tune_name


def cv_dir(artifact_dir: Path, cv_name: str, tune_name: str | None = None) -> Path:
    if tune_name is not None:
        return tune_dir(artifact_dir, tune_name) / cv_name
    return artifact_dir / CV_ROOT / cv_name


def run_dir(
    artifact_dir: Path,
    run_name: str,
    run_id: str,
    cv_name: str | None = None,
    tune_name: str | None = None,
) -> Path:
    if cv_name is not None:
        return run_dir_in(cv_dir(artifact_dir, cv_name, tune_name), run_name, run_id)
    return artifact_dir / RUN_ROOT / f"{run_name}-{run_id}"


def run_dir_in(cv_path: Path, run_name: str, run_id: str) -> Path:
    """The run dir inside a known cv dir (the planner builds the cv dir once, not once per run)."""
    return cv_path / f"{run_name}-{run_id}"


def top_dir(artifact_dir: Path, kind: str, name: str) -> Path:
    """The directory that holds a whole plan: the tune dir, the cv dir, or the run dir's parent."""
    if kind == "tune":
        return tune_dir(artifact_dir, name)
    if kind == "cv":
        return cv_dir(artifact_dir, name)
    if kind == "retrain":
        return final_dir(tune_dir(artifact_dir, tune_of_final(name)), tune_of_final(name))
    return artifact_dir / RUN_ROOT


class RunPaths:
    """The files inside one run directory (like submitit's JobPaths)."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)

    @property
    def spec(self) -> Path:
        return self.dir / RUN_SPEC

    @property
    def result(self) -> Path:
        return self.dir / RUN_RESULT

    @property
    def lock(self) -> Path:
        return self.dir / RUN_LOCK

    @property
    def checkpoints(self) -> Path:
        return self.dir / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def interrupted_checkpoint(self) -> Path:
        return self.checkpoints / "interrupted.ckpt"

    @property
    def attempts(self) -> Path:
        return self.dir / "attempts.json"

    @property
    def error(self) -> Path:
        return self.dir / RUN_ERROR

    def archived_result(self, attempt: int) -> Path:
        """The result of an earlier attempt, kept beside the next one's (resume archives a failed result)."""
        return self.dir / f"run_result.attempt-{attempt}.json"

    @property
    def unreadable_result(self) -> Path:
        """A run_result.json no reader could parse, moved aside by --resume before the run runs again."""
        return self.dir / "run_result.unreadable.json"

    def archived_error(self, attempt: int) -> Path:
        """The traceback of an earlier failed attempt, moved aside when the next attempt starts."""
        return self.dir / f"error.attempt-{attempt}.txt"

    @property
    def logs(self) -> Path:
        return self.dir / LOGS

    @property
    def curve(self) -> Path:
        return self.dir / RUN_CURVE

    def preempt_marker(self, incarnation: str) -> Path:
        """Written by rank 0 of a multi-task job once it saved (or chose not to) on the preemption signal; the
        other ranks wait for it before they stop. ``incarnation``: the job id and its restart count."""
        return self.dir / f"preempted.{incarnation}.json"

    @staticmethod
    def log_version(attempt: int) -> str:
        """The Lightning CSV logger's version folder of an attempt, under logs/: each attempt keeps its metrics.csv."""
        return f"{ATTEMPT_LOG_PREFIX}{attempt}"

    def csv_logs(self) -> list[Path]:
        """Every attempt's CSV log (logs/attempt-N/metrics.csv), in attempt order; a version folder of another name
        (trees from before attempts had their own) after them."""

        def order(path: Path) -> tuple[bool, int, str]:
            number = path.parent.name.removeprefix(ATTEMPT_LOG_PREFIX)
            return (not number.isdigit(), int(number) if number.isdigit() else 0, path.parent.name)

        return sorted(self.logs.glob(f"*/{CSV_LOG}"), key=order)


def report_file(target: Path) -> Path:
    """The report of a tune, cv or run dir: inside that dir."""
    return Path(target) / REPORT


def report_figures_dir(target: Path) -> Path:
    """The PNGs of the report of `target`."""
    return Path(target) / REPORT_FIGURES


def report_figure(target: Path, key: str) -> Path:
    """The PNG of figure `key` of the report of `target`."""
    return report_figures_dir(target) / f"{key}.png"


def final_infos_files(tune_root: Path) -> list[Path]:
    """The retrain tables of a tune (whatever its retrain cv is called): one per retrain cv that wrote one."""
    return sorted(Path(tune_root).glob(f"*/{FINAL_INFOS}"))


def launch_file(root: Path) -> Path:
    """launch.json of the plan at `root`: every launch of the plan (launch_record.LaunchRecord entries)."""
    return Path(root) / LAUNCH


def unreadable_launch_file(root: Path) -> Path:
    """A launch.json no reader could parse, moved aside when the next launch is recorded."""
    return Path(root) / "launch.unreadable.json"


def plan_copy(root: Path) -> Path:
    """plan.json's twin, written before it: what a damaged plan.json is restored from."""
    return Path(root) / PLAN_COPY


def worker_log_dir(root: Path) -> Path:
    return root / WORKER_LOGS


def worker_log(log_dir: Path, worker: int) -> Path:
    """The stderr of local worker `worker` (appended to by every process that takes that slot)."""
    return log_dir / f"worker-{worker}.log"


class SupervisorPaths:
    """The files of a detached local sweep (`--detach`) at its plan root (core/tree/supervisor_pid.py, commands/supervisor.py)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def log(self) -> Path:
        return self.root / SUPERVISOR_LOG

    @property
    def pid(self) -> Path:
        return self.root / SUPERVISOR_PID

    @property
    def request(self) -> Path:
        return self.root / SUPERVISOR_REQUEST


def artifact_dir_of(root: Path, kind: str) -> Path:
    """The --artifact_dir a plan at `root` was made in (the inverse of top_dir for a tune or cv)."""
    return Path(root).parent if kind == "tune" else Path(root).parent.parent


def submitit_dir(root: Path) -> Path:
    """Where a SLURM/submitit launch writes its scripts and logs unless --submitit_dir says otherwise."""
    return root / SUBMITIT_DIR


def dry_run_dir(artifact_dir: Path, name: str) -> Path:
    """Where --dry_run writes the job scripts of plan `name` (no plan tree is created)."""
    return Path(artifact_dir) / DRY_RUN_DIR / name


def pulled_image(artifact_dir: Path, uri: str) -> Path:
    """The .sif an image URI is pulled to, once, for every plan of this artifact dir (delete it to pull again)."""
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", uri.split("://", 1)[-1].rstrip("/").rsplit("/", 1)[-1]).strip("-.")
    digest = hashlib.sha256(uri.encode()).hexdigest()[:10]
    return Path(artifact_dir) / IMAGES_DIR / f"{tail or 'image'}-{digest}.sif"


def code_snapshot(root: Path, key: str) -> Path:
    """A code snapshot's directory: {plan}/_code/{key} (or the same below the temporary directory a new plan's
    snapshot is taken into)."""
    return Path(root) / CODE_DIR / key


def code_manifest(snapshot: Path | str) -> Path:
    """The manifest beside a snapshot's directory: _code/{key}.json (written also when no files were copied)."""
    snapshot = Path(snapshot)
    return snapshot.with_name(f"{snapshot.name}.json")


def user_cache_dir() -> Path:
    """This user's cache of nestling's own (the report's Vega bundle, image digests): $XDG_CACHE_HOME/nestling."""
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")) / "nestling"


def image_digest_cache() -> Path:
    """The digests of image files already hashed, by path, size, mtime and inode (a .sif is hashed once)."""
    return user_cache_dir() / "image-digests.json"


def dry_run_script(folder: Path, array: int) -> Path:
    return folder / f"dry-run-array-{array}.sbatch"


class FailFastPaths:
    """The fail-fast ledger of one plan (failfast.py): what failed alike, whether anything succeeded, the stop."""

    def __init__(self, root: Path) -> None:
        self.dir = Path(root) / FAIL_FAST_DIR

    @property
    def limit(self) -> Path:
        return self.dir / "limit"

    @property
    def success(self) -> Path:
        return self.dir / "success"

    @property
    def errors(self) -> Path:
        return self.dir / "errors"

    @property
    def stopped(self) -> Path:
        return self.dir / "stopped.json"


class ArrayLaunchPaths:
    """The files of one SLURM launch inside the submission folder: what its array tasks read and share.

    units.json   the work units (lists of run dirs) of every array of the launch, in order; task i of the array
                 that starts at offset k runs unit k + i
    jobs.json    the array job ids and their offsets, written after each sbatch (for stealing and status)
    claims/      one file per unit that a task has started: who runs it (its own task, or one that stole it)
    requeues/    per SLURM job: how often it was requeued on hitting its time limit
    """

    def __init__(self, launch_dir: Path) -> None:
        self.dir = Path(launch_dir)

    @property
    def units(self) -> Path:
        return self.dir / "units.json"

    @property
    def jobs(self) -> Path:
        return self.dir / "jobs.json"

    @property
    def claims(self) -> Path:
        return self.dir / "claims"

    def claim(self, unit: int) -> Path:
        return self.claims / str(unit)

    def stolen_by(self, job: str) -> Path:
        return self.claims / f"{job}.stolen"

    def requeues(self, job: str) -> Path:
        return self.dir / "requeues" / job

    def script(self, array: int) -> Path:
        return self.dir / f"array-{array}.sbatch"

    @property
    def collector_script(self) -> Path:
        return self.dir / "collect.sbatch"

    @property
    def retrain_script(self) -> Path:
        """`nestling tune --retrain` on SLURM: the job that runs `nestling retrain` once the collector succeeded."""
        return self.dir / "retrain.sbatch"


def wandb_synced_marker(offline_dir: Path) -> Path:
    """The marker `nestling sync` leaves in an offline W&B run's dir after uploading it."""
    return Path(offline_dir) / WANDB_SYNCED

def run_infos_stamp(cv_dir: Path) -> Path:
    """Beside a cv's run_infos.parquet: the (mtime, size) of the files it was built from (execute/cv_table.py)."""
    return Path(cv_dir) / RUN_INFOS_STAMP


class TrialPaths:
    """The trials of a tune's adaptive search (study.py): `{i}.json` is trial i's drawn configuration (its
    O_EXCL creation is the claim), `{i}.pruned` says trial i was stopped (after some folds, or at a rung). With
    --pruner asha|hyperband (rungs.py) `{i}.rung{k}` holds trial i's value at rung k and `{i}.rung{k}.decided`
    (created exclusively: the first decision stands) whether it goes on from there."""

    def __init__(self, tune_root: Path) -> None:
        self.dir = Path(tune_root) / TRIALS_DIR

    def draw(self, index: int) -> Path:
        return self.dir / f"{index}.json"

    def pruned(self, index: int) -> Path:
        return self.dir / f"{index}.pruned"

    def rung(self, index: int, rung: int) -> Path:
        return self.dir / f"{index}.rung{rung}"

    def decision(self, index: int, rung: int) -> Path:
        return self.dir / f"{index}.rung{rung}.decided"


class FaultPaths:
    """The fault ledger of one plan (core/tree/fault_ledger.py): the retry policy of the launch, the retries each
    run had in it, and the nodes found broken."""

    def __init__(self, root: Path) -> None:
        self.dir = Path(root) / FAULTS_DIR

    @property
    def policy(self) -> Path:
        return self.dir / "policy.json"

    @property
    def retries(self) -> Path:
        return self.dir / "retries"

    def run_retries(self, run_id: str) -> Path:
        return self.retries / run_id

    @property
    def nodes(self) -> Path:
        return self.dir / "nodes"

    def node(self, name: str) -> Path:
        return self.nodes / f"{name}.json"


class KeptCheckpointPaths:
    """--keep_checkpoints of a tune (execute/checkpoint_keeping.py): `ranked/{i}.json` holds finished trial i's rank
    key while it keeps its checkpoints; `removed/{i}.json` says what was removed from trial i, and when."""

    def __init__(self, tune_root: Path) -> None:
        self.dir = Path(tune_root) / CHECKPOINTS_KEPT_DIR

    @property
    def ranked_dir(self) -> Path:
        return self.dir / "ranked"

    def ranked(self, index: int) -> Path:
        return self.ranked_dir / f"{index}.json"

    @property
    def removed_dir(self) -> Path:
        return self.dir / "removed"

    def removed(self, index: int) -> Path:
        return self.removed_dir / f"{index}.json"


def replay_table(tune_root: Path, pruner: str) -> Path:
    """`nestling replay TUNE_DIR --pruner P`'s table: the trials as P would have left them, in the tune dir."""
    return Path(tune_root) / f"replay-{pruner}.parquet"
