"""`nestling doctor [run|cv|tune] [options]`: can this machine run that command line? Says what to fix.

Takes the options of `nestling run/cv/tune` (same parser, same config file) and checks what would otherwise fail
later, on a compute node or inside a job: the task imports and its metadata loads, the plan can be made, its code
can be snapshotted, the artifact dir is writable, the container runtime is installed, the image exists, the binds exist, the SLURM commands
answer, MaxArraySize, whether the partition's nodes have the CPUs, memory, GPUs, node count and time limit asked
for, wandb. Prints one line per check (ok / problem / note, with the fix under each problem).

Exit 0 when nothing is a problem, 1 when something is, 2 when an option value is invalid (as the other commands
would refuse it). Imports no torch: everything here runs on a login node in a second or two.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nestling import __version__
from nestling.core.containers import image
from nestling.core.containers.binds import auto_binds, task_data_dirs, worker_dir, worker_python
from nestling.core.containers.detect import resolve_runtime, runtime_named, runtime_version
from nestling.core.containers.options import REMOTE_IMAGE, option_problems, resolve_bind
from nestling.core.errors import UsageError
from nestling.core.host import slurm_query, tracking
from nestling.core.host.processes import Run, Which
from nestling.core.ml.task import load_task
from nestling.core.options.config import Config, parse_config
from nestling.core.provenance.capture import describe_code
from nestling.core.tree import naming
from nestling.launch.factory import container_spec, slurm_resources
from nestling.launch.slurm.resources import check_against_sinfo
from nestling.plan.preflight import prepare

OK, PROBLEM, NOTE, BAD = "ok", "problem", "note", "bad option"
KINDS = ("run", "cv", "tune")
DESCRIPTION = (
    "Check that this machine can run a nestling command line: task, plan, artifact dir, container runtime, image "
    "and binds, SLURM commands, MaxArraySize, partition/GRES, wandb. Give the options of the command to check, "
    "optionally after its name (default: cv, or tune with --hpconfig)."
)



@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | problem | note | bad option
    detail: str
    fix: str = ""


def doctor_main(argv: list[str], which: Which | None = None, run: Run | None = None) -> int:
    kind = argv[0] if argv and argv[0] in KINDS else None
    rest = argv[1:] if kind else argv
    config = parse_config(rest, prog="nestling doctor", description=DESCRIPTION)
    checks = run_checks(config, kind, which=which, run=run)
    print(format_table(checks))
    return checks_exit_code(checks)


def checks_exit_code(checks: list[Check]) -> int:
    if any(c.status == BAD for c in checks):
        return 2
    return 1 if any(c.status == PROBLEM for c in checks) else 0


def format_table(checks: list[Check]) -> str:
    width = max([len(c.name) for c in checks] + [5])
    lines = [f"{'check':<{width}}  {'status':<10}  detail", f"{'-' * width}  {'-' * 10}  {'-' * 40}"]
    for c in checks:
        lines.append(f"{c.name:<{width}}  {c.status:<10}  {c.detail}")
        if c.fix:
            lines.append(f"{'':<{width}}  {'':<10}  fix: {c.fix}")
    problems = [c for c in checks if c.status in (PROBLEM, BAD)]
    if problems:
        lines.append(f"\ndoctor: {len(problems)} problem(s): {', '.join(c.name for c in problems)}")
    else:
        lines.append(f"\ndoctor: all {sum(c.status == OK for c in checks)} checks ok")
    return "\n".join(lines)


def run_checks(
    config: Config, kind: str | None = None, which: Which | None = None, run: Run | None = None
) -> list[Check]:
    """Every check of the command line `nestling KIND` with these options, in the order a launch would meet them
    (KIND default: tune with --hpconfig, else cv). `which`/`run` are injectable for tests."""
    kind = kind or ("tune" if config.tune.hpconfig else "cv")
    which = which or shutil.which
    run = run or subprocess.run
    checks: list[Check] = []
    task, prepared = _task_checks(config, kind, checks)
    if task is not None:
        checks += _code_check(config)
    checks.append(_artifact_dir_check(config))
    _container_checks(config, task, which, run, checks)
    _slurm_checks(config, kind, prepared, which, run, checks)
    if config.logging.wandb_project:
        checks.append(_wandb_check(config.logging.wandb_mode))
    return checks


# -- task and plan --------------------------------------------------------------------------------------------


def _task_checks(config: Config, kind: str, checks: list[Check]) -> tuple[Any, Any]:
    spec = config.data.task
    try:
        task = load_task(spec)
    except UsageError as exc:
        checks.append(Check("task", PROBLEM, str(exc), "install the task's package or put it on PYTHONPATH"))
        return None, None
    checks.append(Check("task", OK, f"{spec} ({type(task).__module__}.{type(task).__name__})"))
    try:
        table = task.metadata()
        checks.append(Check("task metadata", OK, f"{len(table)} samples, columns {', '.join(table.columns)}"))
    except Exception as exc:  # the user's code: any error is a finding, not a crash of the doctor
        checks.append(
            Check("task metadata", PROBLEM, f"{type(exc).__name__}: {exc}", "fix the task's metadata()")
        )
        return task, None

    try:
        prepared = prepare(config, kind)
    except UsageError as exc:
        checks.append(Check(f"{kind} plan", BAD, str(exc)))
        return task, None
    except Exception as exc:
        checks.append(Check(f"{kind} plan", PROBLEM, f"{type(exc).__name__}: {exc}", "see the error above"))
        return task, None
    n_runs = len(prepared.plan.runs)
    checks.append(Check(f"{kind} plan", OK, f"{n_runs} run(s) on the {config.launch.launcher} launcher"))
    return task, prepared


def _code_check(config: Config) -> list[Check]:
    """What a launch would snapshot of the task's code (docs/provenance.md); nothing for a built-in task."""
    try:
        line = describe_code(config.data.task, enabled=config.launch.snapshot_code, max_mb=config.launch.snapshot_max_mb)
    except UsageError as exc:
        return [Check("code snapshot", PROBLEM, str(exc), "see the error above")]
    return [] if line is None else [Check("code snapshot", OK, line.removeprefix("code: "))]


def _artifact_dir_check(config: Config) -> Check:
    path = Path(config.logging.artifact_dir).resolve()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if os.access(existing, os.W_OK):
        made = "" if existing == path else f" (created on first use under {existing})"
        return Check("artifact dir", OK, f"{path} is writable{made}")
    return Check(
        "artifact dir",
        PROBLEM,
        f"{existing} is not writable",
        "choose another --artifact_dir or fix the permissions",
    )


# -- container ------------------------------------------------------------------------------------------------


def _container_checks(config: Config, task: Any, which: Which, run: Run, checks: list[Check]) -> None:
    c = config.container
    problems = option_problems(c)
    for what, message in problems:  # the values themselves are wrong: what `nestling cv` would refuse
        checks.append(Check(what, BAD, message))
    image = c.container_image
    if problems or image is None:
        return
    try:
        runtime = resolve_runtime(image, c.container_runtime, which=which)
    except UsageError as exc:
        checks.append(Check("container runtime", PROBLEM, str(exc), _install_hint(image)))
        return
    version = runtime_version(runtime, run) or ""
    shown = version if version.startswith(runtime) else f"{runtime} {version}".strip()
    checks.append(Check("container runtime", OK, shown))

    rt = runtime_named(runtime, version or None)
    pulled = naming.pulled_image(Path(config.logging.artifact_dir).resolve(), image)
    available = True
    if rt.sif_images and REMOTE_IMAGE.match(image):
        when = "pulled already" if pulled.is_file() else "pulled once when a launch starts"
        checks.append(Check("container image", OK, f"{image} -> {pulled} ({when}, {runtime} pull)"))
        available = pulled.is_file()
    elif rt.image_available(image, run):
        checks.append(Check("container image", OK, image))
    elif rt.sif_images:
        available = False
        checks.append(Check("container image", PROBLEM, f"{image} does not exist",
                            f"build it: {runtime} build {shlex.quote(image)} containers/nestling.def "
                            "(see containers/README.md), or fix the path"))  # fmt: skip
    else:
        available = False
        build = (
            "containers/test-image/build.sh"
            if "nestling-test" in image
            else f"{runtime} build -f containers/Dockerfile -t {shlex.quote(image)} ."
        )
        checks.append(Check("container image", PROBLEM, f"{image} is not available to {runtime} here",
                            f"{runtime} pull {shlex.quote(image)}, or build it: {build}"))  # fmt: skip

    user = [resolve_bind(spec, os.getcwd()) for spec in c.container_bind]
    for spec, bind in zip(c.container_bind, user, strict=True):
        if Path(bind.src).exists():
            checks.append(Check("container bind", OK, spec if bind.spec() == spec else f"{spec} -> {bind.spec()}"))
        else:
            checks.append(Check("container bind", PROBLEM, f"{bind.src} (from {spec}) does not exist",
                                "create it or fix the path in --container_bind"))  # fmt: skip
    auto, missing = auto_binds(config.logging.artifact_dir, task_data_dirs(task))
    for d in missing:
        checks.append(Check("task data dir", PROBLEM, f"{d} does not exist, so it cannot be bound",
                            "create it or fix the task's data_dirs()"))  # fmt: skip
    checks.append(Check("auto binds", OK, "; ".join(b.spec() for b in auto)))
    workdir = worker_dir(os.getcwd(), [*auto, *user])
    unbound = "" if workdir == str(Path.cwd().resolve()) else " (this dir is not bound into the image)"
    checks.append(Check("worker dir", OK, f"{workdir}{unbound}"))
    python = worker_python([*auto, *user])
    if python != "python" or not available or missing or any(not Path(b.src).exists() for b in user):
        where = "the host interpreter, bound in" if python != "python" else "the image's python"
        checks.append(Check("worker python", OK, f"{python} ({where})"))
        return
    _image_checks(config, task, which, run, checks)


def _image_checks(config: Config, task: Any, which: Which, run: Run, checks: list[Check]) -> None:
    """Run the image once, as a launch does: which interpreter answers, and whether its nestling is this one."""
    try:
        spec = container_spec(config, task, which=which, run=run)
    except UsageError as exc:
        checks.append(Check("worker python", PROBLEM, str(exc)))
        return
    assert spec is not None
    found = image.probe_image(spec, run=run)
    if found.python is None:
        checks.append(Check("worker python", PROBLEM, f"neither python nor python3 runs in {spec.image}: "
                            f"{found.detail}", "install python and nestling in the image, or bind a host "
                            "python (docs/containers.md, 'Which python')"))  # fmt: skip
        return
    checks.append(Check("worker python", OK, f"{found.python} (the image's python)"))
    if found.nestling_version is None:
        checks.append(Check("image nestling", PROBLEM, f"nestling does not import with {found.python} in "
                            f"{spec.image}", "install it in the image (containers/Dockerfile), or bind it "
                            "with its venv and pass PYTHONPATH with --container_env"))  # fmt: skip
    elif found.nestling_version != __version__:
        checks.append(Check("image nestling", PROBLEM, f"the image has nestling {found.nestling_version}, this "
                            f"host {__version__}", f"rebuild the image with nestling=={__version__} "
                            "(containers/README.md), or install its version here"))  # fmt: skip
    else:
        checks.append(Check("image nestling", OK, f"{found.nestling_version}, the same as here"))


def _install_hint(image: str) -> str:
    if image.endswith(".sif") or REMOTE_IMAGE.match(image):
        return (
            "install apptainer (https://apptainer.org/docs/admin/main/installation.html) or load its module"
        )
    return "install docker or podman (Debian: apt-get install -y podman runc), or set --container_runtime"


# -- SLURM ----------------------------------------------------------------------------------------------------


def _slurm_checks(
    config: Config, kind: str, prepared: Any, which: Which, run: Run, checks: list[Check]
) -> None:
    """Problems when --launcher slurm; notes otherwise (SLURM is only probed because sinfo is installed)."""
    wanted = config.launch.launcher == "slurm"
    if not wanted and which("sinfo") is None:
        return
    fix = (
        "start slurmctld/slurmd or point SLURM_CONF at the cluster's slurm.conf (local test cluster: "
        'eval "$(slurm/local-cluster up)")'
    )
    if which("sinfo") is None:
        checks.append(
            Check(
                "slurm",
                PROBLEM,
                "sinfo is not installed",
                "run on a SLURM login node, or load the slurm module",
            )
        )
        return

    queries = (
        ("sinfo", slurm_query.sinfo, f"sinfo -h -o {slurm_query.SINFO_FORMAT}"),
        ("squeue", slurm_query.squeue_all, f"squeue -h -r -o {slurm_query.SQUEUE_FORMAT}"),
        ("scontrol", slurm_query.show_config, "scontrol show config"),
    )
    answers: dict[str, str] = {}
    for name, query, shown in queries:
        answer = query(run)
        if answer.out is None:
            why = f"`{shown}` failed: {answer.error}"
            if not wanted:  # one line is enough: SLURM only matters for --launcher slurm
                checks.append(Check("slurm", NOTE, f"{why} (only needed for --launcher slurm)"))
                return
            checks.append(Check(name, PROBLEM, why, fix))
            if name == "sinfo":  # no controller: squeue and scontrol would say the same
                return
            continue
        answers[name] = answer.out
        if name == "sinfo":
            parsed = slurm_query.parse_sinfo(answer.out)
            parts = sorted(
                {f"{p.name}{'*' if p.default else ''} ({g.gres})" for p in parsed.values() for g in p.groups}
            )
            checks.append(Check(name, OK, "partitions: " + ", ".join(parts) if parts else "answers"))
        elif name == "squeue":
            checks.append(Check(name, OK, f"answers ({len(answer.out.splitlines())} job(s) queued)"))
        else:
            checks.append(Check(name, OK, "answers"))
    if "scontrol" in answers:
        limit = config.launch.max_array_size or slurm_query.parse_max_array_size(answers["scontrol"])
        if limit is None:
            checks.append(Check("MaxArraySize", NOTE, "not in `scontrol show config`; nestling assumes 1001"))
        else:
            detail = f"{limit}: at most {limit} tasks per array"
            if prepared is not None:
                units = len(prepared.plan.runs)
                detail += f"; this {kind} submits {-(-units // limit)} array(s) for up to {units} unit(s)"
            checks.append(Check("MaxArraySize", OK, detail))
    if wanted and "sinfo" in answers and prepared is not None:
        try:
            resources = slurm_resources(config, kind, prepared.plan.name, prepared.devices)
        except UsageError as exc:
            checks.append(Check("slurm resources", BAD, str(exc)))
            return
        try:
            check_against_sinfo(resources, slurm_query.parse_sinfo(answers["sinfo"]))
        except UsageError as exc:
            checks.append(
                Check("partition/GRES", PROBLEM, str(exc), "change the flag named above, or choose a --partition sinfo lists")
            )
            return
        gres = f"gpu:{resources.gpus_per_task}" if resources.gpus_per_task else "no GRES"
        checks.append(
            Check("partition/GRES", OK, f"{resources.partition or '(default partition)'}, {gres} per task")
        )


def _wandb_check(mode: str) -> Check:
    """What a run started on this machine would do (each run decides again where it runs: tracking.decide)."""
    if importlib.util.find_spec("wandb") is None:
        return Check(
            "wandb", PROBLEM, "--wandb_project is set but wandb is not installed", "pip install wandb"
        )

    decision = tracking.decide(mode)
    if decision.mode == tracking.ONLINE:
        return Check("wandb", OK, "importable; a run here logs online (nodes without network log offline)")
    return Check("wandb", NOTE, f"importable; a run here logs {decision.mode}: {decision.reason}",
                 "upload offline runs later from a machine with network: nestling sync DIR")  # fmt: skip


if __name__ == "__main__":  # pragma: no cover
    sys.exit(doctor_main(sys.argv[1:]))
