"""A stand-in ``apptainer`` (or ``singularity``) for tests: it reads a command line as Apptainer does, records what
Apptainer would do with it, and runs the command on the host.

No apptainer package exists for the test machines (Debian 12), so this is how nestling's apptainer path runs end
to end: put :func:`install`'s directory first on PATH and launch as usual. It follows apptainer's source
(github.com/apptainer/apptainer) where the outcome is observable:

- flags: the ones nestling may use are known, any other is refused as cobra does ("Error: unknown flag");
  ``--no-eval`` only from the versions that have it (Apptainer 1.1, SingularityCE 3.10), so a fallback for older
  runtimes is tested against the refusal it avoids;
- ``--env``: parsed as pflag's ``stringToString`` (one ``=``: the item trimmed of ``"``; more: one CSV record);
  with ``APPTAINERENV_*`` (``SINGULARITYENV_*``) from its own environment, each value is written into a script as
  ``export KEY="VALUE"`` (only ``"`` escaped) or, with ``--no-eval``, ``export KEY='VALUE'``, and that script is
  sourced by a real shell, as ``process_linux.go`` ``injectEnvHandler`` has it: what the command gets is what a
  shell made of it;
- ``--cleanenv``: the command starts from apptainer's own variables only;
- mounts (recorded, since the command runs on the host): ``/dev`` and ``/dev/shm`` are the host's unless
  ``--contain`` without ``--bind /dev``; ``/tmp`` and ``$HOME`` are the host's without ``--contain``, else under
  ``--workdir`` (which must exist) or in the 64 MiB session tmpfs; a bind source must exist.

Each call appends one JSON line to ``$NESTLING_FAKE_APPTAINER_LOG``: the argv, the mounts, the injected variables
(values of ``--env`` items; only the names of those from the environment, which carry secrets). The image file
is JSON naming the host interpreter that stands for each of its commands (:func:`make_image`); ``pull`` writes
such a file. Then the command is exec'd on the host (signals reach it directly, as apptainer forwards them).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from nestling.core.containers.apptainer import parse_version

LOG_ENV = "NESTLING_FAKE_APPTAINER_LOG"
VERSION_ENV = "NESTLING_FAKE_APPTAINER_VERSION"
DEFAULT_VERSION = {"apptainer": "apptainer version 1.3.4", "singularity": "singularity-ce version 4.1.2"}
VALUE_FLAGS = {"--bind": "bind", "-B": "bind", "--env": "env", "--pwd": "pwd", "--workdir": "workdir", "-W": "workdir"}
BOOL_FLAGS = {"--contain", "-c", "--containall", "-C", "--cleanenv", "-e", "--nv", "--no-eval", "--no-home"}
SESSION_TMPFS = "session tmpfs (64 MiB)"


class Refused(Exception):
    """What apptainer prints before it exits 255."""


def install(bin_dir: Path, name: str = "apptainer") -> Path:
    """Write an executable ``name`` into ``bin_dir`` that runs this stand-in with this interpreter."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!{sys.executable}\nfrom nestling.testing.fake_apptainer import main\nraise SystemExit(main())\n")
    path.chmod(0o755)
    return path


def make_image(path: Path, pythons: dict[str, str] | None = None) -> Path:
    """A fake .sif: which host executable stands for each command of the image (default: ``python`` and
    ``python3`` are this interpreter)."""
    pythons = {"python": sys.executable, "python3": sys.executable} if pythons is None else pythons
    path.write_text(json.dumps({"commands": pythons}))
    return path


def parse_string_to_string(item: str) -> dict[str, str]:
    """pflag's stringToString ``Set``: how apptainer reads one ``--env`` value."""
    n = item.count("=")
    if n == 0:
        raise Refused(f'invalid argument "{item}" for "--env" flag: {item} must be formatted as key=value')
    if n == 1:
        pairs = [item.strip('"')]
    else:
        try:
            pairs = next(csv.reader(io.StringIO(item, newline=""), strict=True))
        except (csv.Error, StopIteration) as exc:
            raise Refused(f'invalid argument "{item}" for "--env" flag: {exc}') from None
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise Refused(f'invalid argument "{item}" for "--env" flag: {pair} must be formatted as key=value')
        out[key] = value
    return out


def _has_no_eval(name: str, version: str) -> bool:
    parsed = parse_version(version)
    if parsed is None:
        return False
    flavor, v = parsed
    if flavor == "singularity-ce":
        return v >= (3, 10)
    return flavor == "apptainer" and v >= (1, 1)


def _parse_exec(args: list[str], name: str, version: str) -> dict[str, Any]:
    opts: dict[str, Any] = {"bind": [], "env": [], "flags": set()}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        flag, eq, inline = args[i].partition("=")
        if flag in VALUE_FLAGS:
            if eq:
                value = inline
            else:
                i += 1
                if i >= len(args):
                    raise Refused(f"flag needs an argument: {flag}")
                value = args[i]
            key = VALUE_FLAGS[flag]
            if key in ("bind", "env"):
                opts[key].append(value)
            else:
                opts[key] = value
        elif flag in BOOL_FLAGS and not (flag == "--no-eval" and not _has_no_eval(name, version)):
            opts["flags"].add({"-c": "--contain", "-C": "--containall", "-e": "--cleanenv"}.get(flag, flag))
        else:
            raise Refused(f"unknown flag: {flag}")
        i += 1
    if len(args) - i < 2:
        raise Refused("requires at least 2 arg(s)")
    opts["image"], opts["cmd"] = args[i], args[i + 1 :]
    return opts


def _binds(specs: list[str]) -> list[tuple[str, str, str]]:
    out = []
    for spec in specs:
        for one in spec.split(","):  # --bind takes a comma-separated list
            parts = one.split(":")
            src = parts[0]
            dst = parts[1] if len(parts) > 1 else src
            mode = parts[2] if len(parts) > 2 else "rw"
            if not os.path.exists(src):
                raise Refused(f"container creation failed: mount hook function failure: mount {src}->{dst} error: "
                              f"while mounting {src}: mount source {src} doesn't exist")  # fmt: skip
            out.append((os.path.abspath(src), dst, mode))
    return out


def _mounts(opts: dict[str, Any], binds: list[tuple[str, str, str]], home: str) -> dict[str, str]:
    """Where /dev, /dev/shm, /tmp, /var/tmp and $HOME come from (container_linux.go, mount dev/tmp/home = yes)."""
    contain = bool(opts["flags"] & {"--contain", "--containall"})
    host_dev = not contain or any(src == "/dev" and dst == "/dev" for src, dst, _ in binds)
    workdir = opts.get("workdir")
    if contain and workdir is not None:
        if not os.path.isdir(workdir):
            raise Refused(f"container creation failed: failed to create {workdir}/tmp: no such file or directory")
        for sub in ("tmp", "var_tmp", "home"):
            os.makedirs(os.path.join(workdir, sub), exist_ok=True)
    scratch = (lambda sub: os.path.join(workdir, sub)) if contain and workdir else (lambda sub: SESSION_TMPFS)
    mounts = {
        "/dev": "host" if host_dev else "minimal",
        "/dev/shm": "host" if host_dev else SESSION_TMPFS,
        "/tmp": "/tmp" if not contain else scratch("tmp"),
        "/var/tmp": "/var/tmp" if not contain else scratch("var_tmp"),
        "$HOME": home if not contain else scratch("home"),
    }
    if "--no-home" in opts["flags"]:
        mounts["$HOME"] = "none"
    for _, dst, _ in binds:
        if dst in mounts and dst != "/dev":
            mounts[dst] = "bind"
    return mounts


def _environment(opts: dict[str, Any], name: str, image: str, mounts: dict[str, str]) -> tuple[dict[str, str], dict]:
    """The command's environment: apptainer's own variables (+ the host's without --cleanenv), then the injected
    ones evaluated by a shell. Returns it and what to record of the injected ones."""
    home = os.environ.get("HOME", "/root")
    base = {} if "--cleanenv" in opts["flags"] else dict(os.environ)
    base.update(
        PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        HOME=mounts["$HOME"] if mounts["$HOME"] not in (SESSION_TMPFS, "none") else home,
        APPTAINER_CONTAINER=image,
        APPTAINER_NAME=os.path.basename(image),
    )
    if name == "singularity":
        base["SINGULARITY_CONTAINER"] = image
    injected: dict[str, str] = {}
    from_env: list[str] = []
    prefixes = ("APPTAINERENV_",) if name == "apptainer" else ("SINGULARITYENV_", "APPTAINERENV_")
    for key, value in os.environ.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                injected[key[len(prefix) :]] = value
                from_env.append(key[len(prefix) :])
    flagged: dict[str, str] = {}
    for item in opts["env"]:
        flagged.update(parse_string_to_string(item))
    injected.update(flagged)  # --env wins over APPTAINERENV_
    no_eval = "--no-eval" in opts["flags"]
    lines = []
    for key, value in injected.items():
        quoted = "'" + value.replace("'", "'\"'\"'") + "'" if no_eval else '"' + value.replace('"', '\\"') + '"'
        lines.append(f"export {key}={quoted}\n")
    script = "".join(lines)
    done = subprocess.run(
        ["/bin/sh", "-c", 'eval "$1" && exec env -0', "sh", script], env=base, capture_output=True, check=False
    )
    if done.returncode != 0:
        raise Refused(f"while sourcing the environment: {done.stderr.decode(errors='replace').strip()}")
    env = dict(e.split("=", 1) for e in done.stdout.decode().split("\0") if "=" in e)
    record = {
        "env": {k: env.get(k) for k in flagged},
        "env_by_name": sorted(k for k in from_env if k not in flagged),
        "no_eval": no_eval,
    }
    return env, record


def _log(entry: dict[str, Any]) -> None:
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def _exec(args: list[str], name: str, version: str) -> int:
    opts = _parse_exec(args, name, version)
    image = opts["image"]
    try:
        commands = json.loads(Path(image).read_text())["commands"]
    except (OSError, ValueError, KeyError):
        raise Refused(f"could not open image {image}: failed to retrieve path for {image}") from None
    binds = _binds(opts["bind"])
    home = os.environ.get("HOME", "/root")
    mounts = _mounts(opts, binds, home)
    env, injected = _environment(opts, name, image, mounts)
    cmd = opts["cmd"]
    exe = commands.get(cmd[0])
    if exe is None and os.path.isabs(cmd[0]) and any(cmd[0].startswith(dst.rstrip("/") + "/") for _, dst, _ in binds):
        exe = cmd[0]  # a host interpreter bound into the image
    if exe is None:
        raise Refused(f'"{cmd[0]}": executable file not found in $PATH')
    cwd = opts.get("pwd")
    _log({"runtime": name, "version": version, "argv": [name, "exec", *args], "pid": os.getpid(),
          "image": image, "cmd": cmd, "binds": [list(b) for b in binds], "mounts": mounts, "flags": sorted(opts["flags"]),
          "pwd": cwd, "workdir": opts.get("workdir"), **injected})  # fmt: skip
    if cwd is not None:
        try:
            os.chdir(cwd)
        except OSError:
            raise Refused(f"could not set working directory {cwd}") from None
    os.execve(exe, [exe, *cmd[1:]], env)
    return 0  # not reached


def _fake_pull(args: list[str], name: str) -> int:
    rest = [a for a in args if a != "--force"]
    if len(rest) != 2:
        raise Refused("pull requires 2 arguments: OUTPUT URI")
    out, uri = rest
    if os.path.exists(out) and "--force" not in args:
        raise Refused(f"image file already exists: {out!r} - will not overwrite")
    make_image(Path(out))
    _log({"runtime": name, "argv": [name, "pull", *args], "pull": uri, "to": out})
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    name = os.path.basename(sys.argv[0]) if os.path.basename(sys.argv[0]) in DEFAULT_VERSION else "apptainer"
    version = os.environ.get(VERSION_ENV) or DEFAULT_VERSION[name]
    try:
        if args[:1] == ["--version"]:
            print(version)
            return 0
        if args[:1] == ["exec"]:
            return _exec(args[1:], name, version)
        if args[:1] == ["pull"]:
            return _fake_pull(args[1:], name)
        raise Refused(f"unknown command {args[:1]}")
    except Refused as exc:
        print(f"FATAL:   {exc}", file=sys.stderr)
        return 255
