"""The object-store contract, run against both backends (local directory and S3 over HTTP)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from mlcycle.tasks.storage import (
    IntegrityError,
    LocalStore,
    MinioStore,
    ObjectNotFound,
    StoreAuthError,
    StoreError,
    StoreUnavailable,
    UnsafeKey,
    check_key,
    get_verified,
    sha256_bytes,
)
from tests.support.concurrency import at_once
from tests.support.env import S3_ACCESS_KEY, S3_SECRET_KEY, free_port


def test_put_get_roundtrip_reports_size_and_sha(store):
    info = store.put_bytes("raw/date=2026-10-01/a.bin", b"hello")
    assert info.size == 5 and info.sha256 == sha256_bytes(b"hello")
    assert store.get_bytes("raw/date=2026-10-01/a.bin") == b"hello"
    assert store.exists("raw/date=2026-10-01/a.bin")


def test_put_file_streams_large_object(store, tmp_path):
    payload = os.urandom(12 * 1024 * 1024)  # above the S3 SDK's single-part threshold
    src = tmp_path / "big.bin"
    src.write_bytes(payload)
    info = store.put_file("models/x/1/model.joblib", src)
    assert info.sha256 == sha256_bytes(payload)
    dest = tmp_path / "back.bin"
    store.download("models/x/1/model.joblib", dest)
    assert dest.read_bytes() == payload


def test_list_is_recursive_sorted_and_prefix_scoped(store):
    for key in ["raw/date=2026-10-02/m.json", "raw/date=2026-10-01/m.json", "validated/date=2026-10-01/m.json"]:
        store.put_bytes(key, b"{}")
    assert store.list("raw/") == ["raw/date=2026-10-01/m.json", "raw/date=2026-10-02/m.json"]
    assert store.list("raw/date=2026-10-01") == ["raw/date=2026-10-01/m.json"]
    assert store.list("quarantine/") == []


def test_overwrite_replaces_whole_object(store):
    store.put_bytes("k/v.txt", b"first version")
    store.put_bytes("k/v.txt", b"second")
    assert store.get_bytes("k/v.txt") == b"second"


def test_missing_key_is_object_not_found_naming_the_key(store):
    with pytest.raises(ObjectNotFound, match="nothing/here.json"):
        store.get_bytes("nothing/here.json")
    assert not store.exists("nothing/here.json")


def test_create_exclusive_writes_once(store):
    assert store.create_exclusive("models/m/versions/1.claim", b"a") is True
    assert store.create_exclusive("models/m/versions/1.claim", b"b") is False
    assert store.get_bytes("models/m/versions/1.claim") == b"a"


def test_create_exclusive_has_one_winner_under_contention(store):
    winners: list[int] = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        barrier.wait()
        if store.create_exclusive("locks/race.claim", str(i).encode()):
            winners.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert store.get_bytes("locks/race.claim") == str(winners[0]).encode()


def test_replace_if_writes_only_over_the_bytes_it_read(store):
    store.put_bytes("aliases/champion.json", b"v1")
    seen = store.read_tagged("aliases/champion.json")
    assert seen.data == b"v1" and seen.tag
    assert store.replace_if("aliases/champion.json", b"v2", seen.tag) is True
    assert store.replace_if("aliases/champion.json", b"v3", seen.tag) is False  # it moved since
    assert store.get_bytes("aliases/champion.json") == b"v2"
    # a second writer of the very same bytes did not win: only a write whose answer was lost may count as ours
    assert store.replace_if("aliases/champion.json", b"v2", seen.tag) is False
    assert store.create_exclusive("aliases/once.json", b"same") is True
    assert store.create_exclusive("aliases/once.json", b"same") is False
    assert store.replace_if("aliases/absent.json", b"x", seen.tag) is False
    assert not store.exists("aliases/absent.json")
    with pytest.raises(ObjectNotFound):
        store.read_tagged("aliases/absent.json")


def test_replace_if_has_one_winner_under_contention(store):
    store.put_bytes("aliases/race.json", b"start")
    tag = store.read_tagged("aliases/race.json").tag
    results, _ = at_once(8, lambda i: (i, store.replace_if("aliases/race.json", f"writer {i}".encode(), tag)))
    winners = [i for i, won in results if won]
    assert len(winners) == 1
    assert store.get_bytes("aliases/race.json") == f"writer {winners[0]}".encode()


def test_get_verified_refuses_tampered_bytes(store):
    info = store.put_bytes("validated/date=2026-10-01/data.parquet", b"original bytes")
    store.put_bytes("validated/date=2026-10-01/data.parquet", b"tampered bytes")
    with pytest.raises(IntegrityError, match="sha256"):
        get_verified(store, "validated/date=2026-10-01/data.parquet", info.sha256)


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "raw/../../x", "a//b", "a\\b", "raw/./x",
                                 "raw/date=2026-10-01/\x00", "", "raw/.hidden", "models/name with space/1"])
def test_unsafe_keys_are_refused_before_any_io(store, key):
    with pytest.raises(UnsafeKey):
        store.put_bytes(key, b"x")
    with pytest.raises(UnsafeKey):
        check_key(key)


def test_local_writes_leave_no_temp_files_visible(tmp_path):
    store = LocalStore(tmp_path / "store")
    for i in range(20):
        store.put_bytes(f"raw/date=2026-10-01/{i}.bin", b"x" * 1000)
    assert all(not k.startswith(".tmp") for k in store.list(""))
    assert list((tmp_path / "store" / ".tmp").iterdir()) == []


def test_local_reader_never_sees_a_partial_object(tmp_path):
    """A reader polling while a writer rewrites a 4 MB object sees only whole versions."""
    store = LocalStore(tmp_path / "store")
    versions = [bytes([i]) * (4 * 1024 * 1024) for i in range(1, 4)]
    store.put_bytes("obj.bin", versions[0])
    seen_bad = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            data = store.get_bytes("obj.bin")
            if data not in versions:
                seen_bad.append(len(data))

    t = threading.Thread(target=reader)
    t.start()
    for _ in range(10):
        for v in versions:
            store.put_bytes("obj.bin", v)
    done.set()
    t.join()
    assert seen_bad == []


def test_local_root_that_is_a_file_is_a_store_error_naming_root_and_key(tmp_path):
    """A store root that is a file fails clearly, not with a traceback: a StoreError naming the root, the key
    and the cause. It is not transient (not StoreUnavailable): retrying cannot make a file a folder."""
    blocker = tmp_path / "store"
    blocker.write_text("not a directory")
    store = LocalStore(blocker)
    with pytest.raises(StoreError) as info:
        store.put_bytes("a/b.txt", b"x")
    assert type(info.value) is StoreError
    assert str(info.value) == f"local store at {blocker}: cannot write 'a/b.txt': Not a directory"


def test_minio_unreachable_endpoint_is_store_unavailable():
    store = MinioStore(f"127.0.0.1:{free_port()}", "k", "s", "bucket", timeout_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unreachable"):
        store.put_bytes("raw/x", b"x")
    assert time.monotonic() - started < 30  # fails fast rather than hanging


def test_minio_endpoint_that_is_not_s3_is_named(tmp_path):
    """A misconfigured endpoint (an HTTP server that is not S3) gets an error naming MLCYCLE_S3_ENDPOINT."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        store = MinioStore(f"127.0.0.1:{port}", "k", "s", "bucket", timeout_seconds=2.0)
        with pytest.raises(StoreError) as info:
            store.put_bytes("raw/x", b"x")
        # not transient (retrying a server that is not S3 cannot help), and the message says what to check
        assert type(info.value) is StoreError, f"{type(info.value).__name__}: {info.value}"
        assert str(info.value).startswith(
            f"S3 bucket 'bucket' at http://127.0.0.1:{port}: cannot create bucket '': the endpoint did not answer "
            "like S3 (is MLCYCLE_S3_ENDPOINT right?): "), str(info.value)
    finally:
        proc.terminate()
        proc.wait()


def _wait_port(port: int, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(port)


@pytest.fixture(scope="module")
def auth_s3_server():
    """A second moto server that enforces credentials (IAM auth on), in its own process."""
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, 60)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


def test_minio_wrong_credentials_is_auth_error_naming_the_settings(auth_s3_server):
    store = MinioStore(auth_s3_server, "AKIAWRONGWRONGWRONG1", "wrong-secret", "bucket", timeout_seconds=3.0)
    with pytest.raises(StoreAuthError, match="MLCYCLE_S3_ACCESS_KEY") as info:
        store.put_bytes("raw/x", b"x")
    assert "wrong-secret" not in str(info.value)


def test_minio_stopped_server_is_unavailable_then_recovers(s3_running):
    store = MinioStore(s3_running.endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, "outage-bucket", timeout_seconds=2.0)
    store.put_bytes("raw/a", b"before")
    s3_running.stop()
    with pytest.raises(StoreUnavailable):
        store.get_bytes("raw/a")
    s3_running.start()
    assert store.get_bytes("raw/a") == b"before"


def test_one_minio_set_up_serves_the_project_bucket_and_a_landing_bucket(s3_running, tmp_path):
    """``open_store`` and a landing zone's bucket share MinioStore.from_settings: endpoint, keys, timeouts."""
    from mlcycle.tasks.settings import load_settings
    from mlcycle.tasks.storage import open_store

    settings = load_settings(home=tmp_path / "home", store="minio", s3_endpoint=s3_running.endpoint,
                             s3_access_key=S3_ACCESS_KEY, s3_secret_key=S3_SECRET_KEY, s3_bucket="project-bucket",
                             s3_timeout_seconds=2.0)
    project, landing = open_store(settings), MinioStore.from_settings(settings, "landing-bucket")
    assert isinstance(project, MinioStore) and project.uri("a") == "s3://project-bucket/mlcycle/a"  # under the project
    assert landing.uri("a") == "s3://landing-bucket/a" and landing.endpoint == project.endpoint
    landing.put_bytes("2026-10-02/loans.csv", b"x,y\n")
    assert landing.get_bytes("2026-10-02/loans.csv") == b"x,y\n" and not project.exists("2026-10-02/loans.csv")


def test_a_server_that_ignores_conditional_writes_is_refused_before_any_claim(s3_running):
    """Behind a proxy that drops If-Match / If-None-Match, the first claim fails naming the problem, and
    nothing is written; plain reads and writes still work (so `mlcycle ingest` can say what is wrong later)."""
    from mlcycle.tasks.storage import ConditionalWritesUnsupported
    from tests.support.s3proxy import IgnoresConditions

    proxy = IgnoresConditions(s3_running)
    try:
        store = MinioStore(proxy.endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, "ignores-conditions")
        store.put_bytes("raw/a.json", b"{}")
        with pytest.raises(ConditionalWritesUnsupported, match="does not honour conditional writes"):
            store.create_exclusive("models/m/versions/1.claim", b"mine")
        assert not store.exists("models/m/versions/1.claim")
        with pytest.raises(ConditionalWritesUnsupported):
            store.replace_if("raw/a.json", b"[]", store.read_tagged("raw/a.json").tag)
        assert store.get_bytes("raw/a.json") == b"{}"
        assert store.list("probes/") == []  # the probe leaves nothing behind
    finally:
        proxy.stop()
    direct = MinioStore(s3_running.endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, "ignores-conditions")
    assert direct.create_exclusive("models/m/versions/1.claim", b"mine") is True  # the real server honours them
