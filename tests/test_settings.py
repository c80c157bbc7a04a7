"""The one settings model: file, environment and errors that name the key."""

from __future__ import annotations

import pytest

from mlcycle.tasks.settings import ConfigError, get_settings, load_settings


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
