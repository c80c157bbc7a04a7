"""Several projects on one store: each project's objects live under its own prefix (``project_name``, or
``store_prefix``), so two declarations sharing one bucket or one ``MLCYCLE_HOME`` never see, overwrite or
supersede each other's batches, models or champions. Both backends: the local store (one home) and S3
(one bucket of the tests' S3 server)."""

from __future__ import annotations

import datetime as dt

import pytest

from mlcycle.tasks.ingest import ingest_date
from mlcycle.tasks.partitions import read_manifest, read_partition_bytes
from mlcycle.tasks.registry.aliases import promote
from mlcycle.tasks.registry.versions import read_alias, sealed_versions
from mlcycle.tasks.settings import ConfigError
from mlcycle.tasks.storage import LocalStore, open_store
from tests.support.env import make_settings, minio_overrides
from tests.support.registry import fitted_model, register_fitted

DAY = dt.date(2026, 10, 1)


@pytest.fixture(params=["local", "minio"])
def two_projects(request, tmp_path):
    """Two projects, one home and (for minio) one bucket; different simulator seeds: different data."""
    shared = minio_overrides(request.getfixturevalue("s3_running")) if request.param == "minio" else {}
    home = tmp_path / "home"
    first = make_settings(home, project_name="credit", **shared)
    second = make_settings(home, project_name="churn", simulator={"seed": 7}, **shared)
    return first, second


def test_two_projects_ingest_the_same_date_into_one_store_without_touching_each_other(two_projects):
    first, second = two_projects
    a, _ = ingest_date(first, DAY)
    b, _ = ingest_date(second, DAY)  # the same date: not "already ingested", not superseding the first
    assert a.zone == b.zone == "validated" and a.data_sha256 != b.data_sha256
    store_a, store_b = open_store(first), open_store(second)
    assert read_manifest(store_a, "validated", DAY).data_sha256 == a.data_sha256
    assert read_manifest(store_b, "validated", DAY).data_sha256 == b.data_sha256
    assert read_partition_bytes(store_a, a.ref()) != read_partition_bytes(store_b, b.ref())
    assert not store_a.list("superseded/") and not store_b.list("superseded/")
    assert {k.split("/")[0] for k in store_a.list()} == {k.split("/")[0] for k in store_b.list()}  # same layout
    assert store_a.uri("raw/x").replace("credit", "churn") == store_b.uri("raw/x")  # one prefix apart


def test_a_champion_of_one_project_is_not_another_projects(two_projects):
    first, second = two_projects
    store_a, store_b = open_store(first), open_store(second)
    model = fitted_model(first)
    version = register_fitted(store_a, model)
    promote(store_a, version.name, version.version, reason="first project's champion")
    assert read_alias(store_a, version.name).version == version.version
    assert read_alias(store_b, version.name) is None and sealed_versions(store_b, version.name) == []


def test_store_prefix_overrides_the_project_and_empty_reads_a_store_without_prefixes(tmp_path):
    """A store written before projects had prefixes (keys at the root) stays readable with
    ``store_prefix: ""``; an explicit prefix wins over the project name."""
    home = tmp_path / "home"
    LocalStore(home / "store").put_bytes("models/m/1/seal.json", b"{}")
    assert open_store(make_settings(home, store_prefix="")).exists("models/m/1/seal.json")
    assert not open_store(make_settings(home)).exists("models/m/1/seal.json")
    shared = make_settings(home, project_name="churn", store_prefix="team-a")
    assert shared.store_scope == "team-a" and shared.store_root == home / "store" / "team-a"


@pytest.mark.parametrize(("key", "value"), [("project_name", "my project"), ("project_name", "a/b"),
                                            ("store_prefix", "../up")])
def test_a_project_name_that_cannot_be_a_key_is_refused_naming_it(tmp_path, key, value):
    with pytest.raises(ConfigError, match=rf"{key}.*not allowed: use letters, digits and \._=\+- only"):
        make_settings(tmp_path / "home", **{key: value})


def test_deployments_work_pool_and_endpoint_port_derive_from_the_project(tmp_path):
    """What one Prefect server and one machine hold for several projects carries the project's name: the
    deployments a promotion and a retraining start, the work pool and the stable endpoint's port (3080 stays
    the default project's); explicit settings win."""
    default = make_settings(tmp_path / "home")
    assert (default.rollout.deployment, default.monitor.train_deployment) == ("rollout/mlcycle-on-demand",
                                                                              "train/mlcycle-on-demand")
    assert (default.work_pool, default.rollout.endpoint_port) == ("mlcycle-process", 3080)
    assert (default.serving.port, default.serving.bento_name) == (3000, "mlcycle-model")

    wine, diabetes = (make_settings(tmp_path / "home", project_name=n) for n in ("wine", "diabetes"))
    assert (wine.rollout.deployment, wine.monitor.train_deployment) == ("rollout/wine-on-demand",
                                                                        "train/wine-on-demand")
    assert wine.work_pool == "wine-process" and wine.serving.bento_name == "wine-model"
    assert wine.serving.port == wine.rollout.endpoint_port + 5
    assert make_settings(tmp_path / "home", project_name="Credit=Risk+2").serving.bento_name == "credit-risk-2-model"
    ports = {wine.rollout.endpoint_port, diabetes.rollout.endpoint_port, default.rollout.endpoint_port}
    assert len(ports) == 3 and all(10080 <= p <= 32070 and p % 10 == 0 for p in ports - {3080})
    again = make_settings(tmp_path / "elsewhere", project_name="wine")  # stable: another home, another session
    assert again.rollout.endpoint_port == wine.rollout.endpoint_port

    chosen = make_settings(tmp_path / "home", project_name="wine", rollout={"endpoint_port": 4080,
                                                                             "deployment": "rollout/blue"},
                           monitor={"train_deployment": "train/nightly"})
    assert (chosen.rollout.endpoint_port, chosen.rollout.deployment) == (4080, "rollout/blue")
    assert chosen.monitor.train_deployment == "train/nightly"


def test_prefect_yaml_names_every_deployment_and_the_pool_from_the_project(monkeypatch):
    """prefect.yaml's names are templated on MLCYCLE_PROJECT_NAME (what `mlcycle up` sets from the settings),
    resolved the way `prefect deploy` resolves them, and match what the settings derive."""
    import yaml
    from prefect.utilities.templating import apply_values

    from tests.support.env import ROOT

    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    monkeypatch.setenv("MLCYCLE_PROJECT_NAME", "wine")  # `prefect deploy` reads {{ $VAR }} from its environment
    resolved = [apply_values(d, {}, remove_notset=False) for d in declared]
    for deployment in resolved:
        assert deployment["name"].startswith("wine-"), deployment["name"]
        assert deployment["work_pool"]["name"] == "wine-process"
        assert "project:wine" in deployment["tags"]
    flows = {d["entrypoint"].rsplit(":", 1)[-1]: d["name"] for d in resolved if d["name"] == "wine-on-demand"}
    assert set(flows) == {"train_flow", "package_flow", "rollout_flow"}
    assert len({(d["entrypoint"], d["name"]) for d in resolved}) == len(resolved)
