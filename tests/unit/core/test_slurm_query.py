"""slurm_query: parsing recorded squeue/sinfo/scontrol text, and None (not empty) when SLURM cannot be asked."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from nestling.core.host import slurm_query
from nestling.core.host.slurm_query import QueuedJob

# recorded on a site cluster (two node types in `gpu`, one partition down to drained nodes) and the local one
SINFO = """\
debug*|4|16384|gpu:2|2|infinite|idle|node[1-2]
gpu|64|515000|gpu:a100:4(S:0-1)|12|2-00:00:00|mix|g[01-12]
gpu|32|256000|gpu:v100:2,shard:8|3|2-00:00:00|idle|v[1-3]
cpu|128+|1000000|(null)|40|12:00:00|alloc|c[001-040]|1-16
old|8|6000|(null)|2|30:00|drain|o[1-2]
"""

SQUEUE = """\
101_[3-5]|PENDING|gpu|Resources
101_0|RUNNING|gpu|None
101_1|RUNNING|gpu|None
102|PENDING|debug|PartitionConfig
103_2|PENDING|old|ReqNodeNotAvail, UnavailableNodes:o[1-2]
104|PENDING|gpu|ReqNodeNotAvail, UnavailableNodes:g01
999_0|RUNNING|debug|None
"""


def fake(rc: int, out: str, err: str = "") -> Callable[..., subprocess.CompletedProcess[str]]:
    calls: list[list[str]] = []

    def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        assert kw["timeout"] in (slurm_query.SQUEUE_TIMEOUT_S, slurm_query.INFO_TIMEOUT_S)
        calls.append(argv)
        return subprocess.CompletedProcess(argv, rc, out, err)

    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_parse_sinfo_into_partitions_and_node_groups() -> None:
    parts = slurm_query.parse_sinfo(SINFO)
    assert sorted(parts) == ["cpu", "debug", "gpu", "old"]
    assert slurm_query.default_partition(parts) == "debug"
    gpu = parts["gpu"]
    assert (gpu.nodes, gpu.max_gpus, gpu.max_time_min) == (15, 4, 2880)
    assert [(g.cpus, g.mem_mb, g.gpus) for g in gpu.groups] == [(64, 515000, 4), (32, 256000, 2)]
    assert gpu.largest() == gpu.groups[0]
    assert parts["cpu"].groups[0].cpus == 128 and parts["cpu"].max_time_min == 720
    assert parts["cpu"].max_job_nodes == 16 and parts["debug"].max_job_nodes is None
    assert parts["debug"].max_time_min is None and parts["old"].max_time_min == 30
    assert parts["old"].groups[0].usable is False and parts["debug"].groups[0].usable is True


def test_parse_minutes_and_gres() -> None:
    cases = {"infinite": None, "UNLIMITED": None, "1-00:00:00": 1440, "2:00:00": 120, "30:00": 30,
             "45": 45, "0:30:01": 31, "1-12": 2160}  # fmt: skip
    assert {text: slurm_query.parse_minutes(text) for text in cases} == cases
    assert [slurm_query.gpus_in_gres(g) for g in ("(null)", "gpu:2", "gpu:a100:4(S:0-1)", "gpu:1,gpu:v100:2")] == [
        0, 2, 4, 3,
    ]  # fmt: skip


def test_queue_keeps_only_our_jobs_with_state_and_reason() -> None:
    run = fake(0, SQUEUE)
    queue = slurm_query.queue(["101", "102", "103", "104", None], run=run)
    assert queue == {
        "101_[3-5]": QueuedJob("PENDING", "Resources", "gpu"),
        "101_0": QueuedJob("RUNNING", "None", "gpu"),
        "101_1": QueuedJob("RUNNING", "None", "gpu"),
        "102": QueuedJob("PENDING", "PartitionConfig", "debug"),
        "103_2": QueuedJob("PENDING", "ReqNodeNotAvail, UnavailableNodes:o[1-2]", "old"),
        "104": QueuedJob("PENDING", "ReqNodeNotAvail, UnavailableNodes:g01", "gpu"),
    }
    assert run.calls == [["squeue", "-h", "-r", "-o", "%i|%T|%P|%r"]]  # type: ignore[attr-defined]
    assert [job for job, e in queue.items() if e.blocked] == ["102"]
    # waiting for nodes never ends only when no node of the partition is up (all of `old` is drained)
    parts = slurm_query.parse_sinfo(SINFO)
    assert [job for job, e in queue.items() if e.never_starts(parts)] == ["102", "103_2"]
    assert [job for job, e in queue.items() if e.never_starts(None)] == ["102"]
    assert slurm_query.queue([None], run=run) == {}  # nothing to ask about: not asked
    assert len(run.calls) == 1  # type: ignore[attr-defined]


def test_unknown_is_none_not_empty() -> None:
    down = fake(1, "", "squeue: error: Unable to contact slurm controller (connect failure)")
    assert slurm_query.queue(["5"], run=down) is None
    assert slurm_query.pending_reasons(["5"], run=down) is None
    assert slurm_query.partitions(run=down) is None
    answer = slurm_query.sinfo(run=down)
    assert answer.out is None and "Unable to contact" in answer.error

    def timeout(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(argv, 30)

    assert slurm_query.queue(["5"], run=timeout) is None
    assert slurm_query.max_array_size(run=timeout) == slurm_query.DEFAULT_MAX_ARRAY_SIZE


def test_pending_reasons_and_max_array_size() -> None:
    run = fake(0, "7_3|Priority\n7_4|JobHeldUser\n")
    assert slurm_query.pending_reasons(["7", "8"], run=run) == {"7_3": "Priority", "7_4": "JobHeldUser"}
    assert run.calls == [["squeue", "-h", "-r", "-t", "PD", "-j", "7,8", "-o", "%i|%r"]]  # type: ignore[attr-defined]
    config = "Configuration data as of 2026-12-04\nMaxArraySize            = 4\nMaxJobCount = 10000\n"
    assert slurm_query.max_array_size(run=fake(0, config)) == 4
    assert slurm_query.max_array_size(8, run=fake(0, config)) == 8  # --max_array_size wins, SLURM not asked
    assert slurm_query.max_array_size(run=fake(0, "no such line")) == slurm_query.DEFAULT_MAX_ARRAY_SIZE
