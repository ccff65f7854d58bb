"""Weights & Biases without risk: which mode a run logs in, and where its offline runs are.

Compute nodes of most clusters have no internet, and tracking is optional, so it must never cost a training run.
At a run's start `decide` picks the mode: the user's `WANDB_MODE` wins, `--wandb_mode online|offline` is taken as
given, and `auto` asks a short, bounded probe (is there an API key; does a TCP connect to the W&B host, or to the
proxy that reaches it, succeed within PROBE_TIMEOUT_S). run.py then guards `wandb.init` itself: an online init
that fails is retried offline. Offline runs are uploaded later, from a machine with network, by `nestling sync`
(sync.py), which marks each uploaded offline run so that a second sync skips it.

No wandb import here: the probe is plain sockets, so deciding costs nothing when the answer is "offline".
"""

from __future__ import annotations

import netrc
import os
import socket
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from nestling import naming

MODES = ("auto", "online", "offline")
DEFAULT_BASE_URL = "https://api.wandb.ai"
PROBE_TIMEOUT_S = 3.0  # the whole probe (name lookup included): a node without network answers "offline" in this
INIT_TIMEOUT_S = 30  # wandb.init's own limit for an online start (wandb's default is 90 s); WANDB_INIT_TIMEOUT wins
ONLINE, OFFLINE, DISABLED = "online", "offline", "disabled"

# Probe answers of this process, by (host, port): a worker that runs many specs asks the network once.
_probed: dict[tuple[str, int], str | None] = {}


@dataclass(frozen=True)
class Decision:
    """The mode a run logs in (online | offline | disabled) and, unless online, why."""

    mode: str
    reason: str | None = None


def decide(option: str, environ: Mapping[str, str] | None = None) -> Decision:
    """The W&B mode of one run; `option` is --wandb_mode. Never probes the network unless `option` is auto."""
    env = os.environ if environ is None else environ
    user = env.get("WANDB_MODE", "").strip().lower()
    if user:
        mode = {"dryrun": OFFLINE, "run": ONLINE}.get(user, user)
        return Decision(mode, None if mode == ONLINE else f"WANDB_MODE={user} in the environment")
    if option == OFFLINE:
        return Decision(OFFLINE, "--wandb_mode offline")
    if option == ONLINE:
        return Decision(ONLINE)
    problem = probe(env)
    return Decision(OFFLINE, problem) if problem else Decision(ONLINE)


def probe(environ: Mapping[str, str], timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when W&B looks usable from here; else the reason it is not (no key, host unreachable)."""
    base = environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
    host, port = _host_port(base)
    if not has_api_key(environ, host):
        return "no W&B API key (WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE or ~/.netrc)"
    target_host, target_port, via = host, port, ""
    proxy = _proxy_for(base, environ)
    if proxy is not None:
        target_host, target_port = proxy
        via = f" through the proxy {target_host}:{target_port}"
    key = (target_host, target_port)
    if key not in _probed:
        error = _connect(target_host, target_port, timeout)
        _probed[key] = None if error is None else f"W&B at {base} cannot be reached{via}: {error}"
    return _probed[key]


def remember_failure(environ: Mapping[str, str], reason: str) -> None:
    """An online init failed although the probe passed: later runs of this process go offline at once."""
    base = environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
    proxy = _proxy_for(base, environ)
    _probed[proxy if proxy is not None else _host_port(base)] = reason


def has_api_key(environ: Mapping[str, str], host: str) -> bool:
    """An online start needs credentials; without any, wandb.init fails (or, on a terminal, prompts and waits)."""
    if environ.get("WANDB_API_KEY") or environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    path = environ.get("NETRC") or os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _host_port(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(url if "://" in url else f"https://{url}")
    default = 80 if parsed.scheme == "http" else 443
    try:
        port = parsed.port or default
    except ValueError:
        port = default
    return parsed.hostname or "api.wandb.ai", port


def _proxy_for(url: str, environ: Mapping[str, str]) -> tuple[str, int] | None:
    """The proxy wandb would use for `url` (HTTPS_PROXY / HTTP_PROXY, unless NO_PROXY lists the host)."""
    scheme = urllib.parse.urlsplit(url).scheme or "https"
    proxies = {k.lower(): v for k, v in environ.items() if k.lower().endswith("_proxy") and v}
    proxy = proxies.get(f"{scheme}_proxy")
    if not proxy:
        return None
    host, _ = _host_port(url)
    no_proxy = [h.strip().lstrip(".") for h in proxies.get("no_proxy", "").split(",") if h.strip()]
    if "*" in no_proxy or any(host == h or host.endswith(f".{h}") for h in no_proxy):
        return None
    return _host_port(proxy if "://" in proxy else f"http://{proxy}")


def _connect(host: str, port: int, timeout: float) -> str | None:
    """A TCP connect, bounded as a whole: socket timeouts do not cover the name lookup, a thread's join does."""
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as exc:
            outcome.append(f"{type(exc).__name__}: {exc}".strip())

    thread = threading.Thread(target=attempt, name="nestling-wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no answer from {host}:{port} within {timeout:g} s"
    return outcome[0]


# -- offline runs on disk ---------------------------------------------------------------------------------------

_PRUNE = {naming.CHECKPOINTS, naming.LOGS, naming.WORKER_LOGS, naming.SUBMITIT_DIR}


def offline_runs(root: Path) -> Iterator[Path]:
    """Every offline W&B run dir (`wandb/offline-run-*`) under `root`, a tune, cv or run dir; per nestling run in
    the order they were made (their names start with a timestamp), so that attempts of one run upload in order."""
    root = Path(root)
    if root.name.startswith(naming.WANDB_OFFLINE_PREFIX) and root.is_dir():
        yield root
        return
    for dirpath, dirnames, _ in os.walk(root):
        if os.path.basename(dirpath) == naming.WANDB_DIR:
            for name in sorted(dirnames):
                if name.startswith(naming.WANDB_OFFLINE_PREFIX):
                    yield Path(dirpath) / name
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in _PRUNE)


def is_synced(offline_dir: Path) -> bool:
    """Uploaded already: nestling's marker, or wandb's own (`run-ID.wandb.synced`, left by a manual `wandb sync`)."""
    if naming.wandb_synced_marker(offline_dir).is_file():
        return True
    return any(p.name.endswith(".wandb.synced") for p in offline_dir.glob("*.wandb.synced"))


def unsynced_offline_runs(run_dirs: list[Path]) -> list[Path]:
    """The offline runs of these nestling run dirs that no sync has uploaded yet (one listdir per run dir)."""
    out: list[Path] = []
    for run_dir in run_dirs:
        wandb_dir = Path(run_dir) / naming.WANDB_DIR
        try:
            names = sorted(os.listdir(wandb_dir))
        except OSError:
            continue
        out.extend(
            wandb_dir / n for n in names if n.startswith(naming.WANDB_OFFLINE_PREFIX) and not is_synced(wandb_dir / n)
        )
    return out
