"""Weights & Biases without risk: which mode a run logs in, and where its offline runs are.

Compute nodes of most clusters have no internet, and tracking is optional, so it must never cost a training run.
At a run's start `decide` picks the mode: the user's `WANDB_MODE` wins, `--wandb_mode online|offline` is taken as
given, and `auto` asks a short, bounded probe (is there an API key; does W&B answer and accept it within
PROBE_TIMEOUT_S). execute/wandb_run.py then guards `wandb.init` itself: an online init that fails is retried offline. Offline runs are uploaded later, from a machine with network, by `nestling sync`
(sync.py), which marks each uploaded offline run so that a second sync skips it.

No wandb import here: the probe is one stdlib HTTP request, so deciding costs nothing when the answer is "offline".
"""

from __future__ import annotations

import base64
import json
import netrc
import os
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from nestling.core.tree import naming

DEFAULT_BASE_URL = "https://api.wandb.ai"
PROBE_TIMEOUT_S = 3.0  # the whole probe (name lookup included): a node without network answers "offline" in this
INIT_TIMEOUT_S = 30  # wandb.init's own limit for an online start (wandb's default is 90 s); WANDB_INIT_TIMEOUT wins
ONLINE, OFFLINE, DISABLED = "online", "offline", "disabled"

# Probe answers of this process, by base URL: a worker that runs many specs asks the network once.
_probed: dict[str, str | None] = {}


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
    """None when W&B answers and accepts the key from here; else why not (no key, unreachable, key refused).

    One small GraphQL request (`viewer`, what `wandb login --verify` asks) to WANDB_BASE_URL, through the proxy
    of HTTPS_PROXY/HTTP_PROXY unless NO_PROXY lists the host, bounded to `timeout` as a whole. A plain TCP connect
    is not enough: on many networks a proxy or firewall accepts every connect and then fails the TLS handshake.
    """
    base = (environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    host, _ = _host_port(base)
    key = api_key(environ, host)
    if key is None and not environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return "no W&B API key (WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE or ~/.netrc)"
    if base not in _probed:
        _probed[base] = _bounded(lambda: _ask_wandb(base, key, environ, timeout), timeout, base)
    return _probed[base]


def remember_failure(environ: Mapping[str, str], reason: str) -> None:
    """An online start failed although the probe passed: later runs of this process go offline at once."""
    _probed[(environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")] = reason


def api_key(environ: Mapping[str, str], host: str) -> str | None:
    """WANDB_API_KEY, else the ~/.netrc password for the W&B host (where `wandb login` saves it). Never logged."""
    if environ.get("WANDB_API_KEY"):
        return environ["WANDB_API_KEY"]
    path = environ.get("NETRC") or os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return entry[2] if entry and entry[2] else None


def _host_port(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(url if "://" in url else f"https://{url}")
    default = 80 if parsed.scheme == "http" else 443
    try:
        port = parsed.port or default
    except ValueError:
        port = default
    return parsed.hostname or "api.wandb.ai", port


def _opener(base: str, environ: Mapping[str, str]) -> urllib.request.OpenerDirector:
    """urllib with the proxies of `environ` (not of os.environ) and the CA bundle wandb would use."""
    proxies = {k.lower()[: -len("_proxy")]: v for k, v in environ.items() if k.lower().endswith("_proxy") and v}
    host, _ = _host_port(base)
    no_proxy = [h.strip().lstrip(".") for h in proxies.pop("no", "").split(",") if h.strip()]
    if "*" in no_proxy or any(host == h or host.endswith(f".{h}") for h in no_proxy):
        proxies = {}
    cafile = environ.get("REQUESTS_CA_BUNDLE") or environ.get("SSL_CERT_FILE")
    context = ssl.create_default_context(cafile=cafile if cafile and os.path.isfile(cafile) else None)
    return urllib.request.build_opener(
        urllib.request.ProxyHandler(proxies), urllib.request.HTTPSHandler(context=context)
    )


def _ask_wandb(base: str, key: str | None, environ: Mapping[str, str], timeout: float) -> str | None:
    body = json.dumps({"query": "query Viewer { viewer { id } }"}).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "nestling-wandb-probe"}
    if key is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"api:{key}".encode()).decode()
    request = urllib.request.Request(f"{base}/graphql", data=body, headers=headers, method="POST")
    try:
        with _opener(base, environ).open(request, timeout=timeout) as response:
            answer = response.read(65536)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return f"W&B at {base} refused the API key (HTTP {exc.code})"
        return f"W&B at {base} answered HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        return f"W&B at {base} cannot be reached: {_reason_text(exc.reason)}"
    except (OSError, ValueError) as exc:  # timeouts, resets, a malformed URL
        return f"W&B at {base} cannot be reached: {_reason_text(exc)}"
    if key is None:
        return None  # identity token auth: wandb itself checks it; the server answered
    try:
        viewer = json.loads(answer).get("data", {}).get("viewer")
    except (ValueError, AttributeError):
        return f"W&B at {base} gave an answer that is not W&B's (a captive portal or proxy?)"
    return None if viewer else f"W&B at {base} did not accept the API key"


def _reason_text(reason: object) -> str:
    return f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)


def _bounded(ask: Callable[[], str | None], timeout: float, base: str) -> str | None:
    """Run `ask` with a hard limit: socket timeouts do not cover the name lookup, a thread's join does."""
    outcome: list[str | None] = []
    thread = threading.Thread(target=lambda: outcome.append(ask()), name="nestling-wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"W&B at {base} did not answer within {timeout:g} s"
    return outcome[0]


# -- offline runs on disk ---------------------------------------------------------------------------------------

_PRUNE = {naming.CHECKPOINTS, naming.LOGS, naming.WORKER_LOGS, naming.SUBMITIT_DIR, naming.CODE_DIR}


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
