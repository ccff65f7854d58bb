"""Tracking never costs a training run, with the real wandb client: W&B unreachable (a closed loopback port), an
invalid key, no WANDB_MODE -> the run succeeds, logs offline, records why; `nestling sync` uploads it once.

The upload itself goes to a stand-in `wandb` executable (there is no network here); tests/unit/core/test_tracking.py
covers the decision and sync's bookkeeping in detail.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support import wandb_run_record

INVALID_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, like a real key; no server knows it
SLEEP = ["--task", "sleep", "--hp", "sleep_s=0.0", "--max_epochs", "1", "--n_seeds", "1", "--accelerator", "cpu"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unreachable_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    home = tmp_path / "wandb-home"
    env.update(
        WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}",
        WANDB_API_KEY=INVALID_KEY,
        WANDB_CACHE_DIR=str(home / "cache"),
        WANDB_CONFIG_DIR=str(home / "config"),
        WANDB_DATA_DIR=str(home / "data"),
        **extra,
    )
    return env


def cli(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nestling.cli", *args],
        capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def only_run_dir(cv: Path) -> Path:
    (run_dir,) = [p for p in cv.iterdir() if p.is_dir() and "-run-" in p.name]
    return run_dir


@pytest.mark.min_versions
def test_unreachable_wandb_logs_offline_and_sync_uploads_once(tmp_path: Path) -> None:
    art = tmp_path / "art"
    env = unreachable_env(tmp_path)
    proc = ok(cli("cv", *SLEEP, "--fold_method", "none", "--wandb_project", "p", "--artifact_dir", str(art),
                  "--name", "wb", env=env))  # fmt: skip
    cv = art / "_cross_validations" / "wb"
    run_dir = only_run_dir(cv)
    result = json.loads((run_dir / "run_result.json").read_text())
    assert result["status"] == "success", result["error"]
    assert result["wandb_mode"] == "offline"
    assert result["wandb_reason"].startswith(f"W&B at {env['WANDB_BASE_URL']} cannot be reached")
    assert "refused" in result["wandb_reason"].lower()  # the probe was answered (refused), it did not time out
    run_id, run_name = result["run_id"], result["run_name"]
    (offline,) = (run_dir / "wandb").glob(f"offline-run-*-{run_id}")
    run = wandb_run_record(offline / f"run-{run_id}.wandb")  # what the offline run holds, field by field
    assert (run.run_id, run.display_name, run.project, run.job_type, run.run_group) == (run_id, run_name, "p", "wb", "")
    # the summary says once how to upload
    hints = [line for line in proc.stdout.splitlines() if line.startswith("W&B:")]
    assert hints == [
        f"W&B: 1 offline run not uploaded yet ({result['wandb_reason']}); upload it from a machine with "
        f"network (a login node): nestling sync {cv}"
    ]
    # the secret reaches no file
    leaked = [p for p in art.rglob("*") if p.is_file() and INVALID_KEY.encode() in p.read_bytes()]
    assert leaked == []

    calls = tmp_path / "calls.jsonl"
    fake = tmp_path / "fake-wandb"
    fake.write_text(  # records its call and, like `wandb sync` after an upload, marks the .wandb file synced
        f"#!{sys.executable}\nimport json, pathlib, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "for f in pathlib.Path(sys.argv[-1]).glob('*.wandb'):\n    f.with_name(f.name + '.synced').write_text('')\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    sync_env = {**env, "NESTLING_WANDB_EXECUTABLE": str(fake)}
    first = ok(cli("sync", str(cv), env=sync_env))
    assert first.stdout.strip() == f"W&B runs under {cv}: 1 synced, 0 already synced (skipped), 0 failed"
    second = ok(cli("sync", str(cv), env=sync_env))
    assert second.stdout.strip() == f"W&B runs under {cv}: 0 synced, 1 already synced (skipped), 0 failed"
    assert [json.loads(line) for line in calls.read_text().splitlines()] == [["sync", str(offline)]]
    collected = ok(cli("collect", str(cv), env=env))
    assert "W&B:" not in collected.stdout  # uploaded: no more hint


def test_a_failing_online_start_is_retried_offline(tmp_path: Path) -> None:
    """--wandb_mode online skips the probe; wandb.init then fails (bounded by WANDB_INIT_TIMEOUT) and the run
    goes on offline."""
    art = tmp_path / "art"
    env = unreachable_env(tmp_path, WANDB_INIT_TIMEOUT="2")
    ok(cli("cv", *SLEEP, "--fold_method", "none", "--wandb_project", "p", "--wandb_mode", "online", "--quiet",
           "--artifact_dir", str(art), "--name", "on", env=env))  # fmt: skip
    run_dir = only_run_dir(art / "_cross_validations" / "on")
    result = json.loads((run_dir / "run_result.json").read_text())
    assert result["status"] == "success", result["error"]
    assert result["wandb_mode"] == "offline"
    assert result["wandb_reason"].startswith("W&B online start failed: ")
    assert list((run_dir / "wandb").glob(f"offline-run-*-{result['run_id']}"))
    # wandb's logs of the failed online start hold no key either
    assert [p for p in art.rglob("*") if p.is_file() and INVALID_KEY.encode() in p.read_bytes()] == []


def test_wandb_mode_offline_never_probes(tmp_path: Path) -> None:
    art = tmp_path / "art"
    env = unreachable_env(tmp_path)
    ok(cli("run", *SLEEP, "--wandb_project", "p", "--wandb_mode", "offline", "--quiet", "--artifact_dir", str(art),
           "--name", "off", env=env))  # fmt: skip
    (run_dir,) = (art / "_runs").iterdir()
    result = json.loads((run_dir / "run_result.json").read_text())
    assert (result["status"], result["wandb_mode"], result["wandb_reason"]) == ("success", "offline", "--wandb_mode offline")
    run_id = result["run_id"]  # wandb's offline dir and file are named by nestling's run id
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}", offline.name)
    assert (offline / f"run-{run_id}.wandb").is_file()


@pytest.mark.parametrize("launcher", ["local", "submitit-local"])
def test_no_secret_reaches_a_file_of_the_tree(launcher: str, tmp_path: Path) -> None:
    """Specs, results, launch.json, worker logs, submitit's pickles and logs, wandb's offline files: none holds a
    secret of the environment (the SLURM scripts and the container command: tests/unit/core/test_security.py)."""
    secrets = {"MY_TOKEN": "tok-secret-456", "AWS_SECRET_ACCESS_KEY": "aws-789"}
    art = tmp_path / "art"
    env = unreachable_env(tmp_path, **secrets)
    ok(cli("cv", *SLEEP, "--n_folds", "2", "--launcher", launcher, "--wandb_project", "p", "--quiet",
           "--cpus_per_task", "1", "--mem_gb", "1", "--artifact_dir", str(art), "--name", "sec", env=env))  # fmt: skip
    root = art / "_cross_validations" / "sec"
    results = [json.loads(p.read_text()) for p in sorted(root.glob("*/run_result.json"))]
    assert [(r["status"], r["wandb_mode"]) for r in results] == [("success", "offline")] * 2
    assert len(list(root.glob("*/wandb/offline-run-*"))) == 2
    files = [p for p in art.rglob("*") if p.is_file()]
    assert len(files) > 20
    values = [INVALID_KEY, *secrets.values()]
    assert [str(p) for p in files if any(v.encode() in p.read_bytes() for v in values)] == []


class _RefusingWandb:
    """A local server that answers nestling's probe as W&B would (the key is fine) and refuses every upload, as
    W&B does for a key without access: `wandb sync` then exits 0 without marking the run synced."""

    def __init__(self) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                probe = self.headers.get("User-Agent") == "nestling-wandb-probe"
                code, body = (200, b'{"data": {"viewer": {"id": "x"}}}') if probe else (
                    401, b'{"errors": [{"message": "user is not logged in"}]}')  # fmt: skip
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_real_wandb_sync_refused_by_the_server_is_a_failure_not_a_mark(tmp_path: Path) -> None:
    run_dir = tmp_path / "_runs" / "r-abcd1234"
    run_dir.mkdir(parents=True)
    env = unreachable_env(tmp_path)
    made = subprocess.run(
        [sys.executable, "-c", "import sys, wandb; wandb.init(project='p', id='abcd1234', name='r', "
         "dir=sys.argv[1], mode='offline').finish()", str(run_dir)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    (offline,) = (run_dir / "wandb").glob("offline-run-*-abcd1234")
    server = _RefusingWandb()
    try:
        proc = cli("sync", str(tmp_path), env={**env, "WANDB_BASE_URL": server.url}, timeout=120)
    finally:
        server.close()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"W&B runs under {tmp_path}: 0 synced, 0 already synced (skipped), 1 failed"
    assert f"failed: {offline}: wandb sync did not mark the run synced" in proc.stderr
    assert "user is not logged in" in proc.stderr
    assert not (offline / "nestling-synced.json").exists()
    assert list((run_dir / "wandb").glob("debug-cli.*.log"))  # wandb's log beside the run, not in the cwd
