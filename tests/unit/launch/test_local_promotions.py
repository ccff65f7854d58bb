"""The local pool's driver and a worker that dies while it trains a promoted run (--pruner asha|hyperband): the
driver learns which run from the worker's {"started"} line, so the unit's own runs are not lost, and the promoted
run goes to a fresh worker once. The workers here are small scripts speaking the --serve protocol."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nestling.launch.local import LocalLauncher
from nestling.plan.model import WorkUnit
from nestling.read.progress import RunProgress

FAKE_WORKER = """
import json, os, sys
log, marker, promoted = sys.argv[1:4]
print(json.dumps({"ready": os.getpid()}), flush=True)
for line in sys.stdin:
    unit = json.loads(line)
    with open(log, "a") as f:
        f.write(json.dumps(unit["run_dirs"]) + "\\n")
    for d in unit["run_dirs"]:
        print(json.dumps({"started": d}), flush=True)
        print(json.dumps({"run_dir": d, "status": "success"}), flush=True)
    if not os.path.exists(marker):  # the first worker takes a promotion after its unit, and dies training it
        open(marker, "w").close()
        print(json.dumps({"started": promoted}), flush=True)
        os._exit(9)
    print(json.dumps({"unit_done": unit["index"]}), flush=True)
"""


class FakePool(LocalLauncher):
    def __init__(self, script: Path, args: list[str]) -> None:
        super().__init__([None])
        self.script, self.args = script, args

    def _command(self) -> list[str]:
        return [sys.executable, str(self.script), *self.args]


def test_a_worker_killed_in_a_promotion_loses_that_run_and_a_fresh_worker_trains_it_once(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(FAKE_WORKER)
    log, promoted = tmp_path / "units.log", str(tmp_path / "t-cv0" / "run-f0")
    pool = FakePool(script, [str(log), str(tmp_path / "died"), promoted])
    units = [WorkUnit(0, [str(tmp_path / "t-cv3" / "run-f0")])]
    progress = RunProgress(1, "t", quiet=True)
    record = pool.launch(tmp_path, units, progress)
    sent = [json.loads(line) for line in log.read_text().splitlines()]
    assert sent == [units[0].run_dirs, [promoted]]  # the unit's run ended; the promoted one went to a fresh worker
    assert record.lost_runs == [promoted] and record.lost_units == [0]
    assert progress.counts == {"success": 2}  # the promoted run, lost at first, then trained
