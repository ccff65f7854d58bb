"""A tune followed by its retrain keeps its local workers warm for it (issue 21: a fresh worker for the retrain
cost a second torch import). The real path: tests/e2e/test_retrain.py (the retrain runs in the tune's worker)."""

from __future__ import annotations

import subprocess
import sys

from nestling.core.host.devices import parse_devices
from nestling.core.options.config import parse_config
from nestling.launch import factory, local

IDLE_WORKER = "import sys\nfor line in sys.stdin:\n    pass\n"  # ends when its stdin closes, as a worker does


def idle() -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", IDLE_WORKER], stdin=subprocess.PIPE, text=True)


def test_only_a_tune_with_a_retrain_keeps_its_workers_warm() -> None:
    def keeps(kind: str, *argv: str) -> bool:
        config = parse_config(["--accelerator", "cpu", *argv])
        return bool(getattr(factory.make_launcher(config, kind, "x", parse_devices(["auto"])), "keep_warm", False))

    assert keeps("tune", "--retrain", "--test_split", "random")
    assert not keeps("tune") and not keeps("cv") and not keeps("retrain")


def test_parked_workers_go_to_the_next_pool_like_theirs_and_the_rest_are_stopped() -> None:
    mine, other = idle(), idle()
    local._park(("pool", 1), 0, mine)
    local._park(("pool", 2), 0, other)
    taken = local._take_warm(("pool", 1))
    assert taken == {0: mine} and mine.poll() is None
    assert other.wait(timeout=10) == 0  # another pool's: nothing will take it, stopped by closing its stdin
    local._park(("pool", 1), 0, mine)
    local.discard_warm()  # the retrain did not come (or ended): nothing stays behind
    assert mine.wait(timeout=10) == 0 and local._PARKED == {}
