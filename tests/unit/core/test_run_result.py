"""core/tree/run_state.py and run_result.py: the states are the strings on disk, and a run result is a typed record
that writes exactly the file the dict-based versions wrote and reads every version's files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nestling.core.provenance.record import RUN_FIELDS
from nestling.core.tree.atomic import write_json
from nestling.core.tree.clock import utc_now
from nestling.core.tree.naming import RunPaths
from nestling.core.tree.run_result import RESULT_KEYS, RunResult, parse_result, read_result, result_state
from nestling.core.tree.run_spec import RunSpec
from nestling.core.tree.run_state import STATUS_STATES, RunState

# The run_result.json keys in their order, as every version since issue 15 wrote them (byte-compatible files).
KEYS_ON_DISK = [
    "run_name", "run_id", "cv_name", "tune_name", "fold", "seed", "hparams", "status", "error", "metrics",
    "checkpoint", "duration", "started_at", "finished_at", "host", "pid", "cuda_visible_devices", "slurm_job_id",
    "slurm_array_task_id", "world_size", "attempt", "in_container", "nestling_version", "worker_startup_s",
    "wandb_mode", "wandb_reason", "accelerator", "device_names", "peak_memory_bytes", "failure_class", "stage_s",
    "code_commit", "code_dirty", "code_digest", "env_digest", "data_digest", "image_digest", "epochs_trained",
    "stop_reason",
]  # fmt: skip
ADDED_LATER = [
    "worker_startup_s", "wandb_mode", "wandb_reason", "accelerator", "device_names", "peak_memory_bytes",
    "failure_class", "stage_s", "code_commit", "code_dirty", "code_digest", "env_digest", "data_digest",
    "image_digest", "epochs_trained", "stop_reason",
]  # fmt: skip


def spec() -> RunSpec:
    return RunSpec(
        run_name="t-cv0-run-f1s42", run_id="abcd1234", run_dir="/x", cv_name="t-cv0", tune_name="t", fold=1, seed=42,
        hparams={"lr": 0.01}, task="sleep", splits_file="", max_epochs=1, early_stopping_patience=0,
        scoring_metric=["val/score"], multi_score_strategy="geometric", accelerator="cpu", strategy="auto",
        devices=1, num_nodes=1,
    )  # fmt: skip


def test_run_states_are_the_strings_on_disk_with_their_rules() -> None:
    assert [s.value for s in RunState] == [
        "success", "failed", "running", "pending", "lost", "blocked", "not started", "interrupted", "pruned",
        "missing", "skipped", "paused",
    ]  # fmt: skip
    assert json.dumps({RunState.NOT_STARTED: RunState.NOT_STARTED}) == '{"not started": "not started"}'
    assert f"{RunState.SUCCESS}" == "success" and RunState("failed") is RunState.FAILED
    assert [s for s in RunState if s.is_recorded()] == [RunState.SUCCESS, RunState.FAILED]
    assert [s for s in RunState if s.is_active()] == [RunState.RUNNING, RunState.PENDING]
    assert [s for s in RunState if s.is_queued()] == [RunState.PENDING, RunState.BLOCKED]
    assert [s for s in RunState if s.is_settled()] == [RunState.SUCCESS, RunState.PRUNED]
    assert RunState.named("not started") is RunState.NOT_STARTED  # a worker's reply, a file's status
    assert RunState.named("exploded") is None and RunState.named(None) is None and RunState.named(["x"]) is None
    # `nestling status` counts these, in this order (its --json keys)
    assert [str(s) for s in STATUS_STATES] == [
        "success", "failed", "running", "pending", "lost", "blocked", "not started", "interrupted", "pruned", "paused"
    ]


def test_a_result_is_written_as_the_dict_versions_wrote_it(tmp_path: Path) -> None:
    result = RunResult.for_spec(spec(), RunState.SUCCESS, metrics={"val/score": 0.5}, attempt=2, duration=1.5)
    write_json(tmp_path / "run_result.json", result.to_json())
    text = (tmp_path / "run_result.json").read_text()
    data = json.loads(text)
    assert list(data) == KEYS_ON_DISK == list(RESULT_KEYS)
    assert (data["status"], data["run_name"], data["fold"], data["seed"], data["hparams"]) == (
        "success", "t-cv0-run-f1s42", 1, 42, {"lr": 0.01}
    )
    assert (data["metrics"], data["attempt"], data["duration"], data["error"]) == ({"val/score": 0.5}, 2, 1.5, None)
    legacy = dict.fromkeys(KEYS_ON_DISK)  # what run_result.empty_result + update wrote before the record
    legacy.update(run_name="t-cv0-run-f1s42", run_id="abcd1234", cv_name="t-cv0", tune_name="t", fold=1, seed=42,
                  hparams={"lr": 0.01}, metrics={"val/score": 0.5}, status="success", attempt=2, duration=1.5)  # fmt: skip
    assert text == json.dumps(legacy, indent=1, default=str) + "\n"  # byte for byte
    back = read_result(tmp_path)
    assert back == result and back is not None and back.status is RunState.SUCCESS
    assert result_state(tmp_path) is RunState.SUCCESS and result_state(tmp_path / "nothing") is None


def test_files_of_older_and_newer_versions_load(tmp_path: Path) -> None:
    full = RunResult.for_spec(spec(), RunState.FAILED, error="RuntimeError: x", host="node1").to_json()
    older = {k: v for k, v in full.items() if k not in ADDED_LATER}
    old = parse_result(json.dumps(older))
    assert old is not None and (old.status, old.error, old.host) == (RunState.FAILED, "RuntimeError: x", "node1")
    assert (old.wandb_mode, old.accelerator, old.device_names, old.worker_startup_s) == (None, None, None, None)
    assert old == RunResult(**{**full, "status": RunState.FAILED})
    newer = parse_result(json.dumps({**full, "energy_joules": 12.5, "provenance": {"git": "abc"}}))
    assert newer is not None and newer.to_json() == full  # keys of a newer version are ignored
    assert not hasattr(newer, "energy_joules")
    (tmp_path / "run_result.json").write_text(json.dumps({**older, "metrics": None}))
    loaded = read_result(tmp_path)
    assert loaded is not None and loaded.metrics == {}
    bare = parse_result('{"status": "failed", "renamed_key": 1}')  # hand-made: no identity, a key no version wrote
    assert bare is not None and (bare.status, bare.run_name, bare.fold, bare.metrics) == (RunState.FAILED, None, None, {})
    assert bare.to_json() == {**dict.fromkeys(KEYS_ON_DISK), "status": "failed", "metrics": {}}
    with pytest.raises(AttributeError):
        bare.no_such_field  # noqa: B018


@pytest.mark.parametrize(
    "text", ["", "{", "[]", "null", '{"status": "weird"}', '{"status": ["success"]}', '{"run_name": "x"}']
)
def test_what_is_no_result_reads_as_none(tmp_path: Path, text: str) -> None:
    (tmp_path / "run_result.json").write_text(text)
    assert read_result(tmp_path) is None and parse_result(text) is None


def test_timestamps_and_csv_logs_have_one_place(tmp_path: Path) -> None:
    now = utc_now()
    assert len(now) == 20 and now.endswith("Z") and now[10] == "T"
    paths = RunPaths(tmp_path)
    for version in ["attempt-10", "attempt-2", "version_0", "attempt-1"]:
        (paths.logs / version).mkdir(parents=True)
        (paths.logs / version / "metrics.csv").write_text("epoch\n")
    (paths.logs / "attempt-3").mkdir()  # an attempt that logged nothing yet
    assert [p.parent.name for p in paths.csv_logs()] == ["attempt-1", "attempt-2", "attempt-10", "version_0"]
    assert paths.logs / paths.log_version(4) == tmp_path / "logs" / "attempt-4"


def test_a_result_carries_the_run_origin_fields_in_their_order() -> None:
    """RunOrigin (core/provenance) is what a worker records about the code, environment, data and image; RunResult
    (core/tree, which cannot import provenance) declares the same fields flat: they must not drift apart."""
    start = RESULT_KEYS.index(RUN_FIELDS[0])
    assert RESULT_KEYS[start : start + len(RUN_FIELDS)] == RUN_FIELDS
    assert RUN_FIELDS == ("code_commit", "code_dirty", "code_digest", "env_digest", "data_digest", "image_digest")
