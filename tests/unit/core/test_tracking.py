"""W&B mode decision (tracking.py) and `nestling sync` (sync.py), without wandb: real sockets on loopback, a
stand-in `wandb` executable that records its calls.

With the real wandb client end to end (an unreachable W&B, an invalid key): tests/e2e/test_tracking_offline.py.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import socket
import stat
import sys
import threading
import time
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestling.commands.cli import main
from nestling.commands.sync import WANDB_EXECUTABLE_ENV, upload_offline_runs
from nestling.core.host import tracking
from nestling.core.options.choices import WandbMode
from nestling.core.tree import naming
from nestling.core.tree.run_spec import RunSpec

KEY = "k" * 40


@pytest.fixture(autouse=True)
def _fresh_probe_cache() -> Iterator[None]:
    tracking._probed.clear()
    yield
    tracking._probed.clear()


class FakeWandb(http.server.BaseHTTPRequestHandler):
    """W&B's GraphQL endpoint as far as the probe asks: `viewer` for the right key, 401 for another. A request
    in proxy form (absolute URL) is answered the same way, so the server also stands in for a proxy."""

    status = 200

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        good = "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()
        type(self).seen.append(self.path)
        if not self.path.endswith("/graphql"):
            code, body = 404, b"{}"
        elif self.status != 200:
            code, body = self.status, b"{}"
        elif self.headers.get("Authorization") != good:
            code, body = 401, b'{"errors": [{"message": "invalid key"}]}'
        else:
            code, body = 200, b'{"data": {"viewer": {"id": "VXNlcjox"}}}'
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass

    seen: list[str] = []


@pytest.fixture
def listening() -> Iterator[int]:
    """The port of a fake W&B server on loopback."""
    FakeWandb.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeWandb)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_for(port: int, **extra: str) -> dict[str, str]:
    return {"WANDB_BASE_URL": f"http://127.0.0.1:{port}", "WANDB_API_KEY": KEY, "HOME": "/nonexistent", **extra}


# -- the decision -------------------------------------------------------------------------------------------------


def test_auto_is_online_when_wandb_answers_and_accepts_the_key(listening: int) -> None:
    assert tracking.decide("auto", env_for(listening)) == tracking.Decision("online", None)
    assert FakeWandb.seen == ["/graphql"]


def test_auto_is_offline_when_the_key_is_refused(listening: int) -> None:
    decision = tracking.decide("auto", env_for(listening, WANDB_API_KEY="bad" * 10))
    assert decision == tracking.Decision("offline", f"W&B at http://127.0.0.1:{listening} refused the API key (HTTP 401)")


def test_auto_is_offline_when_the_service_is_down(listening: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FakeWandb, "status", 503)
    decision = tracking.decide("auto", env_for(listening))
    assert decision.mode == "offline" and decision.reason is not None and "answered HTTP 503" in decision.reason


def test_a_server_that_is_not_wandb_is_not_online(tmp_path: Path) -> None:
    """A plain web server (a captive portal, a wrong WANDB_BASE_URL) answers, but not as W&B."""
    handler = type("Plain", (http.server.BaseHTTPRequestHandler,), {
        "do_POST": lambda self: (self.send_response(200), self.send_header("Content-Length", "2"),
                                 self.end_headers(), self.wfile.write(b"ok")),
        "log_message": lambda self, *a: None,
    })  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        decision = tracking.decide("auto", env_for(server.server_address[1]))
    finally:
        server.shutdown()
        server.server_close()
    assert decision.mode == "offline" and decision.reason is not None and "not W&B's" in decision.reason


def test_auto_is_offline_with_the_reason_when_the_host_refuses() -> None:
    port = closed_port()
    decision = tracking.decide("auto", env_for(port))
    assert decision.mode == "offline"
    assert decision.reason is not None
    assert f"127.0.0.1:{port}" in decision.reason and "refused" in decision.reason.lower()


def test_auto_is_offline_without_any_key(listening: int, tmp_path: Path) -> None:
    env = {"WANDB_BASE_URL": f"http://127.0.0.1:{listening}", "HOME": str(tmp_path)}
    decision = tracking.decide("auto", env)
    assert decision.mode == "offline" and decision.reason is not None and "no W&B API key" in decision.reason


def test_a_netrc_entry_for_the_host_is_a_key(listening: int, tmp_path: Path) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text(f"machine 127.0.0.1\n  login user\n  password {KEY}\n")
    netrc.chmod(0o600)
    env = {"WANDB_BASE_URL": f"http://127.0.0.1:{listening}", "HOME": str(tmp_path)}
    assert tracking.decide("auto", env).mode == "online"


@pytest.mark.parametrize(
    ("user", "mode"), [("offline", "offline"), ("dryrun", "offline"), ("disabled", "disabled"), ("online", "online")]
)
def test_the_users_wandb_mode_wins_and_nothing_is_probed(
    user: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_probe(*args: object) -> str:
        raise AssertionError("probed although WANDB_MODE was set")

    monkeypatch.setattr(tracking, "_ask_wandb", no_probe)
    for option in typing.get_args(WandbMode):  # every --wandb_mode
        decision = tracking.decide(option, env_for(closed_port(), WANDB_MODE=user))
        assert decision.mode == mode
        assert (decision.reason is None) == (mode == "online")


@pytest.mark.parametrize("option", ["offline", "online"])
def test_an_explicit_mode_never_probes(option: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_probe(*args: object) -> str:
        raise AssertionError("probed although --wandb_mode was given")

    monkeypatch.setattr(tracking, "_ask_wandb", no_probe)
    decision = tracking.decide(option, env_for(closed_port()))
    assert decision.mode == option
    assert decision.reason == ("--wandb_mode offline" if option == "offline" else None)


def test_the_probe_is_bounded_even_when_the_request_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node whose packets are dropped (or whose DNS hangs) answers "offline" within the probe's time."""

    def hang(*args: object) -> str | None:
        time.sleep(5)
        return None

    monkeypatch.setattr(tracking, "_ask_wandb", hang)
    clock = time.perf_counter()
    reason = tracking.probe(env_for(443), timeout=0.3)
    elapsed = time.perf_counter() - clock
    assert elapsed < 1.5, elapsed
    assert reason == "W&B at http://127.0.0.1:443 did not answer within 0.3 s"


def test_a_server_that_accepts_but_never_answers_is_offline_within_the_timeout() -> None:
    with socket.socket() as server:  # accepts connections (the kernel's backlog), never reads or answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        clock = time.perf_counter()
        reason = tracking.probe(env_for(server.getsockname()[1]), timeout=0.5)
        elapsed = time.perf_counter() - clock
    assert elapsed < 2, elapsed
    assert reason is not None and "127.0.0.1" in reason


def test_one_probe_per_process_and_host(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def refuse(base: str, *args: object) -> str:
        calls.append(base)
        return "refused"

    monkeypatch.setattr(tracking, "_ask_wandb", refuse)
    env = env_for(9)
    assert [tracking.decide("auto", env).mode for _ in range(3)] == ["offline"] * 3
    assert calls == ["http://127.0.0.1:9"]


def test_a_failed_online_start_sends_later_runs_of_the_process_offline(listening: int) -> None:
    env = env_for(listening)
    assert tracking.decide("auto", env).mode == "online"
    tracking.remember_failure(env, "W&B online start failed: AuthenticationError")
    assert tracking.decide("auto", env) == tracking.Decision("offline", "W&B online start failed: AuthenticationError")


def test_the_request_goes_through_the_proxy_unless_no_proxy_lists_the_host(listening: int) -> None:
    """Behind a proxy the W&B host is not reachable directly; the probe asks through the proxy, as wandb does."""
    env = {**env_for(closed_port()), "HTTP_PROXY": f"http://127.0.0.1:{listening}"}
    assert tracking.decide("auto", env).mode == "online"
    assert FakeWandb.seen == [f"{env['WANDB_BASE_URL']}/graphql"]  # the proxy form of the request
    tracking._probed.clear()
    bypassed = {**env, "NO_PROXY": "localhost,127.0.0.1"}
    assert tracking.decide("auto", bypassed).mode == "offline"


def test_the_wandb_mode_option_is_a_choice_in_help_and_refused_otherwise(capsys: pytest.CaptureFixture[str]) -> None:
    from nestling.core.options.config import parse_config

    assert parse_config(["--wandb_mode", "offline"]).logging.wandb_mode == "offline"
    assert parse_config([]).logging.wandb_mode == "auto"
    assert main(["run", "--wandb_mode", "sometimes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nestling: error: --wandb_mode 'sometimes' is not one of auto, online, offline; e.g. --wandb_mode auto"]
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--wandb_mode {auto,online,offline}" in capsys.readouterr().out


def test_the_mode_reaches_the_run_spec(tmp_path: Path) -> None:
    from nestling.core.options.config import parse_config
    from nestling.plan.preflight import prepare

    args = ["--task", "sleep", "--n_folds", "2", "--n_seeds", "1", "--artifact_dir", str(tmp_path), "--name", "m",
            "--wandb_project", "p", "--wandb_mode", "offline"]  # fmt: skip
    from nestling.plan.specs import run_specs

    specs = run_specs(prepare(parse_config(args), "cv").plan)
    assert [s.wandb_mode for s in specs] == ["offline", "offline"]
    old = {k: v for k, v in specs[0].to_dict().items() if k != "wandb_mode"}  # a spec written before the option
    assert RunSpec.from_dict(old).wandb_mode == "auto"


# -- offline runs on disk, and `nestling sync` --------------------------------------------------------------------


def offline_run(run_dir: Path, stamp: str) -> Path:
    run_id = run_dir.name.rsplit("-", 1)[1]
    path = run_dir / "wandb" / f"offline-run-{stamp}-{run_id}"
    path.mkdir(parents=True)
    (path / f"run-{run_id}.wandb").write_bytes(b"W&B\x00")
    return path


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A cv dir with three runs: two offline runs (one with two attempts), one online-only run, checkpoints."""
    cv = tmp_path / "_cross_validations" / "cv"
    a, b, c = (cv / f"cv-run-f{i}s42-abcd000{i}" for i in range(3))
    paths = {
        "a1": offline_run(a, "20261204_100000"),
        "a2": offline_run(a, "20261204_110000"),
        "b1": offline_run(b, "20261204_100500"),
    }
    (c / "wandb" / "run-20261204_100000-abcd0002").mkdir(parents=True)  # an online run: nothing to upload
    (a / "checkpoints" / "wandb" / "offline-run-x-y").mkdir(parents=True)  # not a place wandb writes to
    return {"cv": cv, **paths}


def stand_in(tmp_path: Path, fail_on: str = "", refuse_on: str = "") -> tuple[Path, Path]:
    """A `wandb` executable that appends its arguments to calls.jsonl and, like `wandb sync`, marks each .wandb
    file it uploaded with .wandb.synced. For a path containing `fail_on` it exits 1; for one containing
    `refuse_on` it exits 0 without the marker, as `wandb sync` does when the server refuses the upload."""
    calls = tmp_path / "calls.jsonl"
    script = tmp_path / "fake-wandb"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, pathlib, sys\n"
        f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "path = sys.argv[-1]\n"
        f"if {fail_on!r} and {fail_on!r} in path:\n"
        "    sys.exit(1)\n"
        f"if {refuse_on!r} and {refuse_on!r} in path:\n"
        "    print('wandb: ERROR user is not logged in', file=sys.stderr)\n"
        "    sys.exit(0)\n"
        "for f in pathlib.Path(path).glob('*.wandb'):\n"
        "    f.with_name(f.name + '.synced').write_text('')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, calls


def recorded(calls: Path) -> list[list[str]]:
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def test_offline_runs_are_found_in_order_and_nothing_else(tree: dict[str, Path]) -> None:
    assert list(tracking.offline_runs(tree["cv"])) == [tree["a1"], tree["a2"], tree["b1"]]
    assert list(tracking.offline_runs(tree["a2"])) == [tree["a2"]]  # one offline run dir given directly


def test_sync_is_idempotent(tree: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    script, calls = stand_in(tmp_path)
    monkeypatch.setenv(WANDB_EXECUTABLE_ENV, str(script))
    assert main(["sync", str(tree["cv"])]) == 0
    assert capsys.readouterr().out.strip().endswith("3 synced, 0 already synced (skipped), 0 failed")
    assert recorded(calls) == [["sync", str(tree[k])] for k in ("a1", "a2", "b1")]
    for key in ("a1", "a2", "b1"):
        marker = json.loads(naming.wandb_synced_marker(tree[key]).read_text())
        assert marker["synced_at"] > 0
    assert main(["sync", str(tree["cv"])]) == 0
    assert capsys.readouterr().out.strip().endswith("0 synced, 3 already synced (skipped), 0 failed")
    assert len(recorded(calls)) == 3  # nothing uploaded twice


def test_a_failed_upload_is_retried_by_the_next_sync_and_later_attempts_wait(
    tree: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    script, calls = stand_in(tmp_path, fail_on="110000")  # a2 fails
    monkeypatch.setenv(WANDB_EXECUTABLE_ENV, str(script))
    assert main(["sync", str(tree["cv"])]) == 1
    out, err = capsys.readouterr()
    assert out.strip().endswith("2 synced, 0 already synced (skipped), 1 failed")
    assert f"failed: {tree['a2']}: exit 1" in err
    assert not naming.wandb_synced_marker(tree["a2"]).exists()
    (tmp_path / "ok").mkdir()
    script, calls2 = stand_in(tmp_path / "ok")  # now every upload succeeds
    monkeypatch.setenv(WANDB_EXECUTABLE_ENV, str(script))
    assert main(["sync", str(tree["cv"])]) == 0
    assert capsys.readouterr().out.strip().endswith("1 synced, 2 already synced (skipped), 0 failed")
    assert recorded(calls2) == [["sync", str(tree["a2"])]]


def test_an_upload_the_server_refused_is_not_marked(
    tree: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`wandb sync` exits 0 when the server refuses the key; only its .wandb.synced marker proves the upload."""
    script, calls = stand_in(tmp_path, refuse_on="100500")  # b1 is refused
    monkeypatch.setenv(WANDB_EXECUTABLE_ENV, str(script))
    assert main(["sync", str(tree["cv"])]) == 1
    out, err = capsys.readouterr()
    assert out.strip().endswith("2 synced, 0 already synced (skipped), 1 failed")
    assert f"failed: {tree['b1']}: wandb sync did not mark the run synced: wandb: ERROR user is not logged in" in err
    assert not naming.wandb_synced_marker(tree["b1"]).exists()
    assert not tracking.is_synced(tree["b1"])


def test_an_earlier_failed_attempt_holds_back_the_later_ones(tree: dict[str, Path]) -> None:
    uploaded: list[Path] = []

    def upload(path: Path) -> tuple[bool, str]:
        uploaded.append(path)
        return path != tree["a1"], "boom"

    counts = upload_offline_runs(tree["cv"], upload)
    assert uploaded == [tree["a1"], tree["b1"]]  # a2 is not uploaded before a1
    assert counts.synced == [tree["b1"]]
    assert [p for p, _ in counts.failed] == [tree["a1"], tree["a2"]]


def test_a_run_synced_by_hand_with_wandb_sync_is_skipped(tree: dict[str, Path]) -> None:
    (tree["b1"] / "run-abcd0001.wandb.synced").write_text("")
    uploaded: list[Path] = []

    def upload(path: Path) -> tuple[bool, str]:
        uploaded.append(path)
        return True, ""

    counts = upload_offline_runs(tree["cv"], upload)
    assert uploaded == [tree["a1"], tree["a2"]]
    assert counts.skipped == [tree["b1"]]


def test_sync_refuses_quickly_where_wandb_cannot_be_reached(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`wandb sync` against an unreachable host retries for minutes per run; nestling sync says so at once."""
    monkeypatch.delenv(WANDB_EXECUTABLE_ENV, raising=False)
    for key, value in env_for(closed_port()).items():
        monkeypatch.setenv(key, value)
    clock = time.perf_counter()
    assert main(["sync", str(tree["cv"])]) == 1
    assert time.perf_counter() - clock < 5
    err = capsys.readouterr().err
    assert "cannot be reached" in err and "nothing uploaded" in err
    assert not any(naming.wandb_synced_marker(tree[k]).exists() for k in ("a1", "a2", "b1"))


def test_sync_dry_run_lists_and_uploads_nothing(tree: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", str(tree["cv"]), "--dry_run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [str(tree["a1"]), str(tree["a2"]), str(tree["b1"]), f"3 offline W&B runs to upload under {tree['cv']}"]
    assert not any(naming.wandb_synced_marker(tree[k]).exists() for k in ("a1", "a2", "b1"))


def test_sync_of_a_missing_dir_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unsynced_offline_runs_of_run_dirs(tree: dict[str, Path]) -> None:
    run_dirs = sorted(p for p in tree["cv"].iterdir())
    assert tracking.unsynced_offline_runs(run_dirs) == [tree["a1"], tree["a2"], tree["b1"]]
    naming.wandb_synced_marker(tree["a1"]).write_text("{}")
    assert tracking.unsynced_offline_runs(run_dirs) == [tree["a2"], tree["b1"]]
    assert os.path.basename(naming.wandb_synced_marker(tree["a1"])) == naming.WANDB_SYNCED


# -- execute/wandb_run.py's guard around wandb's start (the start itself replaced; with the real wandb: tests/e2e) ----------------


def spec_for(tmp_path: Path, mode: str) -> RunSpec:
    return RunSpec(
        run_name="r", run_id="abcd1234", run_dir=str(tmp_path), cv_name="cv", tune_name="t", fold=0, seed=0,
        hparams={}, task="sleep", splits_file="", max_epochs=1, early_stopping_patience=0, scoring_metric=[],
        multi_score_strategy="geometric", accelerator="cpu", strategy="auto", devices=1, num_nodes=1,
        wandb_project="p", wandb_mode=mode,
    )  # fmt: skip


def test_an_online_start_that_raises_is_retried_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    run = importlib.import_module("nestling.execute.wandb_run")

    monkeypatch.delenv("WANDB_MODE", raising=False)
    started: list[str] = []

    def start(spec: object, mode: str) -> str:
        started.append(mode)
        if mode == "online":
            raise RuntimeError("AuthenticationError: API key invalid\n  (401)")
        return f"logger-{mode}"

    monkeypatch.setattr(run, "_start_wandb", start)
    logger, tracked = run.start_wandb_logger(spec_for(tmp_path, "online"))
    assert logger == "logger-offline"
    assert started == ["online", "offline"]
    assert tracked == run.Tracking(
        mode="offline", reason="W&B online start failed: RuntimeError: AuthenticationError: API key invalid (401)"
    )


def test_a_run_trains_without_wandb_when_not_even_offline_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    run = importlib.import_module("nestling.execute.wandb_run")

    monkeypatch.delenv("WANDB_MODE", raising=False)

    def start(spec: object, mode: str) -> str:
        raise OSError(f"no space left ({mode})")

    monkeypatch.setattr(run, "_start_wandb", start)
    logger, tracked = run.start_wandb_logger(spec_for(tmp_path, "online"))
    assert logger is None
    assert tracked.mode == "disabled"
    assert tracked.reason == (
        "W&B online start failed: OSError: no space left (online); offline start failed too: OSError: no space "
        "left (offline)"
    )
    logger, tracked = run.start_wandb_logger(spec_for(tmp_path, "offline"))
    assert logger is None
    assert tracked == run.Tracking("disabled", "W&B offline start failed: OSError: no space left (offline)")
