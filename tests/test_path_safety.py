"""Path and key safety: names from users never escape their prefix.

Every user-facing way a name reaches a path or an object key is probed with the same hostile values
(``../``, ``..\\``, absolute paths, URL-encoded traversal, NUL and newline, very long names, Unicode
lookalikes and digits, empty strings): the CLI's options and arguments, flow parameters, store keys on
both backends, registry functions, landing file names and the inference log's spill folder. Each is
refused before any I/O, with an error that names the bad value (the CLI exits 2), and the filesystem
around the temporary home is left exactly as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.env import run_cli

# Values a user (or an attacker) may type where a name, a version or a date is expected.
HOSTILE = {
    "parent": "../escape",
    "deep-parent": "a/../../escape",
    "backslash": "..\\escape",
    "absolute": "/etc/passwd",
    "url-encoded": "%2e%2e%2fescape",
    "nul": "name\x00.txt",
    "newline": "name\n",
    "long": "n" * 300,
    "fullwidth": "ｍodel",  # FULLWIDTH LATIN SMALL LETTER M
    "dotless-i": "moduıe",
    "dot": ".",
    "dotdot": "..",
    "empty": "",
}
# Version numbers in other scripts: str.isdigit() is True for all of them, int() accepts the first two.
FOREIGN_DIGITS = {"arabic-indic": "٣", "devanagari": "३", "superscript": "²", "fullwidth": "３"}


def snapshot(root: Path) -> dict[str, int]:
    """Every file and folder under ``root`` with its size (folders: -1)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = -1
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = os.lstat(p).st_size
    return out


@pytest.fixture
def sandbox(tmp_path, env_settings):
    """A temp home inside a sandbox folder; yields a function asserting nothing changed around it."""
    env_settings()
    (tmp_path / "neighbour").mkdir()
    (tmp_path / "neighbour" / "keep.txt").write_text("untouched")
    before = snapshot(tmp_path)

    def unchanged() -> None:
        after = snapshot(tmp_path)
        assert after == before, f"files appeared or changed: {sorted(set(after.items()) ^ set(before.items()))}"

    return unchanged


# --------------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------------

def _named(value: str) -> str:
    """How an error names a value a user typed: its repr, quoted, with a newline or a backslash escaped."""
    return repr(value)


def _cli_cases() -> list[tuple[str, tuple[str, ...], str]]:
    """(id, argv, how the error must name the value) for each option that becomes a path, key or version.

    An error names a value by its ``repr`` (``_named``), so it shows on one line exactly as typed; a missing
    value is named by the option it belongs to.
    """
    cases = []
    for label, bad in HOSTILE.items():
        if bad in ("", "\x00") or "\x00" in bad:
            continue  # the OS refuses NUL in argv; the empty string is covered below
        cases += [
            (f"ingest-date-{label}", ("ingest", "--date", bad), _named(bad)),
            (f"backfill-end-{label}", ("ingest", "--start", "2026-10-01", "--end", bad), _named(bad)),
            (f"validate-date-{label}", ("validate", "--date", bad), _named(bad)),
            (f"train-end-{label}", ("train", "--end", bad), _named(bad)),
            (f"labels-date-{label}", ("labels", "--simulate", "--date", bad), _named(bad)),
            (f"models-show-{label}", ("models", "show", bad), _named(bad)),
            (f"models-promote-{label}", ("models", "promote", bad), _named(bad)),
            (f"package-version-{label}", ("package", "--version", bad), _named(bad)),
            (f"serve-version-{label}", ("serve", "--version", bad), _named(bad)),
            (f"rollout-version-{label}", ("rollout", "--version", bad), _named(bad)),
            (f"rollout-bento-{label}", ("rollout", "--bento", f"{bad}:v1"), _named(bad)),
            (f"rollout-bento-version-{label}", ("rollout", "--bento", f"mlcycle-model:{bad}"), _named(bad)),
            (f"monitor-end-{label}", ("monitor", "--end", bad), _named(bad)),
        ]
    for label, digit in FOREIGN_DIGITS.items():
        cases += [
            (f"models-show-{label}", ("models", "show", digit), _named(digit)),
            (f"models-promote-{label}", ("models", "promote", digit), _named(digit)),
            (f"package-version-{label}", ("package", "--version", digit), _named(digit)),
            (f"serve-version-{label}", ("serve", "--version", digit), _named(digit)),
            (f"rollout-version-{label}", ("rollout", "--version", digit), _named(digit)),
        ]
    cases += [
        ("ingest-date-empty", ("ingest", "--date", ""), "give --date YYYY-MM-DD"),
        ("rollout-bento-no-version", ("rollout", "--bento", "mlcycle-model"), _named("mlcycle-model")),
        ("ingest-date-fullwidth-digits", ("ingest", "--date", "２０２６-10-01"), _named("２０２６-10-01")),
    ]
    return cases


@pytest.mark.parametrize(("argv", "named"), [pytest.param(a, n, id=i) for i, a, n in _cli_cases()])
def test_cli_refuses_hostile_names_with_exit_2_naming_the_value(monkeypatch, capsys, sandbox, argv, named):
    code, out, err = run_cli(monkeypatch, capsys, *argv)
    assert code == 2, f"exit {code}; stderr: {err}"
    assert err.startswith("mlcycle: error: ") and len(err.strip().splitlines()) == 1, err
    if len(named) < 100:
        assert named in err, err
    assert out == ""
    sandbox()


def test_an_unsafe_model_name_in_the_configuration_is_a_config_error(monkeypatch, capsys, tmp_path, env_settings):
    from mlcycle.tasks.settings import get_settings

    env_settings()
    monkeypatch.setenv("MLCYCLE_TRAINING__MODEL_NAME", "../../etc")
    get_settings.cache_clear()
    code, _, err = run_cli(monkeypatch, capsys, "models", "list")
    assert code == 2 and "training.model_name" in err, err
    assert not (tmp_path / "home").exists()


# --------------------------------------------------------------------------------------------------
# store keys, on both backends
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", list(HOSTILE.values()), ids=list(HOSTILE))
def test_store_refuses_hostile_keys_before_any_io(store, tmp_path, bad):
    from mlcycle.tasks.storage import UnsafeKey

    before = snapshot(tmp_path)
    for key in (bad, f"raw/{bad}", f"raw/{bad}/manifest.json"):
        calls = [lambda k: store.put_bytes(k, b"x"), store.get_bytes, store.exists, store.delete,
                 lambda k: store.create_exclusive(k, b"x"), lambda k: store.put_file(k, Path(__file__))]
        if bad:  # list("") and list("raw/") are listings of the store and of a prefix
            calls.append(store.list)
        for call in calls:
            with pytest.raises(UnsafeKey) as info:
                call(key)
            assert "key" in str(info.value)
    assert store.list() == []
    assert snapshot(tmp_path) == before


def test_a_long_key_is_refused_naming_the_limit(store):
    from mlcycle.tasks.storage import UnsafeKey

    with pytest.raises(UnsafeKey, match="too long: at most 1024 characters"):
        store.put_bytes("raw/" + "/".join(["abcdefgh"] * 200), b"x")
    with pytest.raises(UnsafeKey, match="255 per segment"):
        store.put_bytes("raw/" + "x" * 256, b"x")
    assert store.put_bytes("raw/" + "x" * 255, b"x").size == 1  # the limit itself is allowed


# --------------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", list(HOSTILE.values()), ids=list(HOSTILE))
def test_registry_refuses_hostile_model_names_naming_them(settings, bad):
    from mlcycle.tasks.registry.aliases import promote, rollback
    from mlcycle.tasks.registry.versions import list_versions, load_metadata, read_alias, sealed_versions
    from mlcycle.tasks.storage import LocalStore, UnsafeKey

    store = LocalStore(settings.store_root)
    for call in (lambda: list_versions(store, bad), lambda: load_metadata(store, bad, 1),
                 lambda: promote(store, bad, 1, reason="probe"), lambda: rollback(store, bad),
                 lambda: read_alias(store, bad), lambda: sealed_versions(store, bad)):
        with pytest.raises(UnsafeKey, match="model name"):
            call()
    assert not settings.home.exists()


@pytest.mark.parametrize("ref", [*HOSTILE.values(), *FOREIGN_DIGITS.values(), "0", "-1", "1.5", True])
def test_registry_refuses_anything_but_a_version_number_or_alias(ref):
    from mlcycle.tasks.registry.versions import ModelNotFound, parse_version

    with pytest.raises(ModelNotFound, match="is not a model version"):
        parse_version(ref)
    assert parse_version("12") == 12


# --------------------------------------------------------------------------------------------------
# flow parameters (through Prefect, as a deployment run would pass them)
# --------------------------------------------------------------------------------------------------

def test_flow_parameters_refuse_hostile_values(prefect_harness, env_settings, tmp_path):
    from mlcycle.flows.ingest import backfill_flow, ingest_flow, validate_flow
    from mlcycle.flows.monitor import monitor_flow
    from mlcycle.flows.rollout import rollout_flow
    from mlcycle.flows.train import train_flow
    from mlcycle.tasks.sources import SourceError
    from mlcycle.tasks.storage import UnsafeKey

    env_settings()
    before = snapshot(tmp_path)
    for bad in ("../escape", "/etc/passwd", "2026-10-01/../x", "%2e%2e%2f"):
        for call in (lambda b=bad: ingest_flow(date=b), lambda b=bad: validate_flow(date=b),
                     lambda b=bad: backfill_flow(start="2026-10-01", end=b), lambda b=bad: train_flow(end=b)):
            with pytest.raises(SourceError, match="invalid date"):
                call()
        with pytest.raises(UnsafeKey, match="bento"):
            rollout_flow(bento_tag=f"{bad}:v1")
        with pytest.raises(ValueError):
            monitor_flow(end=bad)
    created = set(snapshot(tmp_path)) - set(before)
    assert not [p for p in created if not p.startswith("home")], created
    home = tmp_path / "home"
    assert not (home / "store").exists() or not [p for p in (home / "store").rglob("*") if p.is_file()
                                                 and ".tmp" not in p.parts]


# --------------------------------------------------------------------------------------------------
# landing file names
# --------------------------------------------------------------------------------------------------

def test_a_landing_link_out_of_the_landing_folder_is_refused(settings, tmp_path):
    import datetime as dt

    from mlcycle.tasks.landing import LandingZone
    from mlcycle.tasks.sources import SourceError

    secret = tmp_path / "outside" / "secret.csv"
    secret.parent.mkdir()
    secret.write_text("application_id,token\n1,do-not-read\n")
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "date=2026-10-01.csv").symlink_to(secret)
    with pytest.raises(SourceError, match=r"'date=2026-10-01.csv' resolves to .*outside the landing path"):
        LandingZone(str(landing)).fetch(dt.date(2026, 10, 1), settings.dataset)


def test_landing_objects_with_unsafe_names_are_refused_naming_them(s3_running, tmp_path):
    """An S3 landing prefix may hold keys no local file could have (``%2e%2e``, spaces): never read."""
    import datetime as dt
    import io

    from mlcycle.tasks.landing import LandingZone
    from mlcycle.tasks.storage import MinioStore, UnsafeKey
    from tests.support.env import make_settings, minio_overrides

    settings = make_settings(tmp_path / "home", **minio_overrides(s3_running))
    store = MinioStore.from_settings(settings)  # the bucket as a landing zone sees it: no project prefix
    store.check()
    for name in ("landing/%2e%2e/date=2026-10-01.csv", "landing/a b/date=2026-10-01.csv"):
        store._client.put_object(settings.s3_bucket, name, io.BytesIO(b"x,y\n1,2\n"), 8)
        zone = LandingZone("landing", store=store)
        with pytest.raises(UnsafeKey, match=r"object key 'landing/(%2e%2e|a b)/date=2026-10-01.csv'"):
            zone.fetch(dt.date(2026, 10, 1), settings.dataset)
        store._client.remove_object(settings.s3_bucket, name)


# --------------------------------------------------------------------------------------------------
# the inference log's spill folder
# --------------------------------------------------------------------------------------------------

def test_an_oddly_named_file_in_the_spill_folder_never_blocks_the_spilled_parts(tmp_path, caplog):
    """A file the writer did not spill (an unsafe key) is skipped with a warning; real parts go up."""
    import datetime as dt

    from mlcycle.tasks.inference_log import INFERENCE_PREFIX, InferenceLogWriter, part_key
    from mlcycle.tasks.inference_reader import read_inference_log
    from mlcycle.tasks.inference_rows import table_bytes
    from mlcycle.tasks.storage import LocalStore
    from tests.support.env import make_settings
    from tests.support.inference import submit

    spec = make_settings(tmp_path / "cfg").dataset
    store = LocalStore(tmp_path / "store")
    spill = tmp_path / "spill"
    good = InferenceLogWriter(LocalStore(tmp_path / "scratch"), model="m", model_version=1, features=spec.features,
                              id_column=spec.id_column, spill_dir=spill, journal=False)
    submit(good, spec, "spilled", 3)
    entries, _ = good._take()
    good._spill(part_key(INFERENCE_PREFIX, dt.date(2026, 10, 1)), table_bytes(good.layout.table(entries)))
    odd = spill / INFERENCE_PREFIX / "date=2026-10-01" / "part-!odd name.parquet"
    odd.write_bytes(b"not ours")
    log = InferenceLogWriter(store, model="m", model_version=1, features=spec.features, id_column=spec.id_column,
                             spill_dir=spill, flush_interval_seconds=60)
    with caplog.at_level("WARNING", logger="mlcycle.inference_log"):
        log.flush()
    assert list(read_inference_log(store)["request_id"]) == ["spilled"] * 3
    assert odd.exists() and "part-!odd name.parquet" in caplog.text
    assert [p.name for p in spill.rglob("*.parquet")] == [odd.name]
