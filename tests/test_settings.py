"""The one settings model: file, environment and errors that name the key; each stage's retry policy."""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest

from mlcycle.tasks.settings import ConfigError, RetryPolicy, get_settings, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_project_file_declares_the_dataset(settings):
    spec = settings.dataset
    assert spec.id_column == "application_id" and spec.timestamp_column == "applied_at"
    assert spec.target == "defaulted"
    assert {f.kind for f in spec.features} == {"numeric", "categorical"}
    assert spec.columns[0] == spec.id_column and spec.columns[-1] == spec.target


def test_environment_overrides_the_file(env_settings):
    settings = env_settings(simulator__seed="7", store="local", s3_bucket="other")
    assert settings.simulator.seed == 7 and settings.s3_bucket == "other"


def test_secrets_never_appear_in_repr_or_dump(env_settings):
    settings = env_settings(s3_secret_key="very-secret-value")
    assert "very-secret-value" not in repr(settings)
    assert "very-secret-value" not in settings.model_dump_json()
    assert settings.s3_secret_key.get_secret_value() == "very-secret-value"


def test_schema_hash_changes_when_the_declaration_changes(settings):
    changed = settings.dataset.model_copy(deep=True)
    changed.features[0].max = 1.0
    assert changed.schema_hash() != settings.dataset.schema_hash()
    assert settings.dataset.model_copy(deep=True).schema_hash() == settings.dataset.schema_hash()


@pytest.mark.parametrize("env, fragment", [
    ({"MLCYCLE_STORE": "ftp"}, "store"),
    ({"MLCYCLE_S3_ENDPOINT": "http://host:9000/path"}, "without a path"),
    ({"MLCYCLE_INGEST__BACKFILL_CONCURRENCY": "0"}, "ingest.backfill_concurrency"),
    ({"MLCYCLE_SIMULATOR__SEED": "abc"}, "simulator.seed"),
    ({"MLCYCLE_MONITOR__PERFORMANCE_METRIC": "rmse"}, r"monitor\.performance_metric 'rmse' is not a binary metric"),
    ({"MLCYCLE_RETRIES__TRAINING__RETRIES": "-1"}, r"retries\.training\.retries"),
    ({"MLCYCLE_RETRIES__PACKAGING__DELAY_SECONDS": "-2"}, r"retries\.packaging\.delay_seconds"),
    ({"MLCYCLE_INGEST__RETRIES": "3"}, r"ingest\.retries: Extra inputs"),  # the old key: retries.ingest now
])
def test_bad_values_are_config_errors_naming_the_key(monkeypatch, env, fragment):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=fragment):
        load_settings()


def test_unknown_keys_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "bad.yaml"
    from pathlib import Path

    base = Path(__file__).resolve().parents[1] / "mlcycle.yaml"
    path.write_text(base.read_text() + "\nnot_a_setting: 1\n")
    monkeypatch.setenv("MLCYCLE_CONFIG", str(path))
    with pytest.raises(ConfigError, match="not_a_setting"):
        load_settings()


def test_categorical_feature_without_categories_is_refused(tmp_path, monkeypatch):
    from pathlib import Path

    base = Path(__file__).resolve().parents[1] / "mlcycle.yaml"
    text = base.read_text().replace(
        "- {name: region, kind: categorical, categories: [north, south, east, west, central]}",
        "- {name: region, kind: categorical}")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    monkeypatch.setenv("MLCYCLE_CONFIG", str(path))
    with pytest.raises(ConfigError, match="'region' must declare its categories"):
        load_settings()


def test_missing_config_file_named_by_env_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MLCYCLE_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="does not name a file"):
        load_settings()


def test_get_settings_is_read_once(env_settings):
    first = env_settings()
    assert get_settings() is first


@pytest.mark.parametrize("key", ["api_token", "s3_secret_key", "s3_access_key"])
def test_a_secret_in_the_config_file_is_refused_naming_the_key(tmp_path, monkeypatch, key):
    """The config file is committed and bundled into bentos: a secret there must not be used, nor echoed."""
    config = tmp_path / "mlcycle.yaml"
    config.write_text(f"store: local\n{key}: do-not-commit-me-0451\n")
    monkeypatch.setenv("MLCYCLE_CONFIG", str(config))
    with pytest.raises(ConfigError, match=f"{key} set in the config file") as info:
        load_settings()
    assert f"MLCYCLE_{key.upper()}" in str(info.value)
    assert "do-not-commit-me-0451" not in str(info.value)


# --------------------------------------------------------------------------------------------------
# retries: one policy per stage (tasks/retry.py)
# --------------------------------------------------------------------------------------------------

STAGE_OF_FLOW_FILE = {"ingest.py": "ingest", "train.py": "training", "package.py": "packaging",
                      "monitor.py": "monitoring"}


def test_each_stage_has_its_own_retry_policy_in_the_project_file(settings):
    assert set(type(settings.retries).model_fields) == set(STAGE_OF_FLOW_FILE.values())
    for stage in STAGE_OF_FLOW_FILE.values():
        assert getattr(settings.retries, stage) == RetryPolicy(retries=3, delay_seconds=2.0)


def test_a_policy_set_for_one_stage_leaves_the_others_alone(env_settings):
    settings = env_settings(retries__training__retries="7", retries__training__delay_seconds="0.5")
    assert settings.retries.training == RetryPolicy(retries=7, delay_seconds=0.5)
    assert settings.retries.ingest == settings.retries.packaging == settings.retries.monitoring == \
        RetryPolicy(retries=3, delay_seconds=2.0)


def test_retrying_gives_a_task_the_policy_with_doubling_waits_for_transient_store_faults_only():
    from prefect import task

    from mlcycle.tasks.retry import retry_on_transient, retrying
    from mlcycle.tasks.storage import IntegrityError, StoreAuthError, StoreUnavailable

    @task
    def touch_store() -> None: ...

    wrapped = retrying(touch_store, RetryPolicy(retries=3, delay_seconds=0.5))
    assert wrapped.retries == 3 and wrapped.retry_delay_seconds == [0.5, 1.0, 2.0]
    assert wrapped.retry_condition_fn is retry_on_transient
    assert retrying(touch_store, RetryPolicy(retries=0, delay_seconds=2)).retries == 0

    class FailedWith:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def result(self, raise_on_failure: bool) -> Exception:
            return self.exc

    assert retry_on_transient(touch_store, None, FailedWith(StoreUnavailable("endpoint unreachable")))
    for final in (StoreAuthError("credentials rejected"), IntegrityError("sha256 mismatch"), ValueError("bad batch")):
        assert not retry_on_transient(touch_store, None, FailedWith(final))


def _retrying_policies(path: Path) -> list[str]:
    """The policy argument of every ``retrying(task, policy)`` call in a flow module, as written."""
    return [ast.unparse(node.args[1]) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "retrying"]


def test_every_flow_wraps_its_tasks_in_its_own_stage_policy():
    """Read from the flows themselves: the train flow's tasks get ``retries.training``, and so on."""
    found = {path.relative_to(ROOT / "flows").as_posix(): _retrying_policies(path)
             for path in sorted((ROOT / "flows").rglob("*.py"))}
    for name, stage in STAGE_OF_FLOW_FILE.items():
        assert found[name] and set(found[name]) == {f"settings.retries.{stage}"}, (name, found[name])
    stages = {f"settings.retries.{stage}" for stage in STAGE_OF_FLOW_FILE.values()}
    others = {name: policies for name, policies in found.items() if name not in STAGE_OF_FLOW_FILE and policies}
    assert all(set(policies) <= stages for policies in others.values()), others


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_counts(flow_run_id) -> dict[str, int]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name: run.run_count for run in runs}


@pytest.mark.flow
@pytest.mark.parametrize("flow_module, flow_name, first_task, stage", [
    ("mlcycle.flows.ingest", "ingest_flow", "ingest-raw", "ingest"),
    ("mlcycle.flows.train", "train_flow", "select-window", "training"),
])
def test_a_flow_retries_a_store_outage_as_often_as_its_own_stage_policy_says(
        env_settings, prefect_harness, flow_module, flow_name, first_task, stage):
    """Every stage gets a different retry count; the store is unreachable, so the flow's first task fails
    on a transient fault each time: it runs exactly 1 + its own stage's retries times."""
    import importlib

    retries = {"ingest": 1, "training": 2, "packaging": 3, "monitoring": 4}
    env = {f"retries__{name}__retries": str(n) for name, n in retries.items()}
    env |= {f"retries__{name}__delay_seconds": "0" for name in retries}
    env_settings(store="minio", s3_endpoint=f"127.0.0.1:{_closed_port()}", s3_timeout_seconds="1", **env)
    run = getattr(importlib.import_module(flow_module), flow_name)
    state = run(**({"date": "2026-10-02"} if stage == "ingest" else {}), return_state=True)
    assert state.is_failed() and "StoreUnavailable" in state.message, state.message
    counts = _run_counts(state.state_details.flow_run_id)  # task run names may carry a generated suffix
    assert len(counts) == 1 and next(iter(counts)).startswith(first_task), counts
    assert list(counts.values()) == [1 + retries[stage]], counts
