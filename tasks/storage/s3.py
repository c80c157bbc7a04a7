"""The S3 backend through the ``minio`` SDK: MinIO in production, moto's S3 server in tests.

Conditional writes (``If-None-Match: *``, ``If-Match: <etag>``) are one PUT signed with the SDK's public SigV4
signer (``minio.signer.sign_v4_s3``) and sent on the client's connection pool, the condition a signed header
(the SDK's ``put_object`` would turn it into ``x-amz-meta-*``, and its raw ``_put_object`` is private). Before
its first conditional write a store probes the server once per process: a server that accepts a write whose
condition fails is refused with :class:`ConditionalWritesUnsupported`, never silently trusted.

The MinIO client is set up here and nowhere else: :meth:`MinioStore.from_settings` builds a store on the
configured endpoint with its credentials, for the project bucket (``open_store``) or another one (a
landing zone at ``s3://bucket/prefix``). S3 error codes become the errors of tasks/storage/base.py.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mlcycle.tasks.storage.base import (
    ConditionalWritesUnsupported,
    ObjectInfo,
    ObjectNotFound,
    StoreAuthError,
    StoreError,
    StoreUnavailable,
    Tagged,
    check_key,
    check_object_key,
    sha256_bytes,
    sha256_file,
)

if TYPE_CHECKING:
    from mlcycle.tasks.settings import Settings

_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
               "ExpiredToken", "AuthorizationHeaderMalformed"}
_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                    "XMinioServerNotInitialized"}
_TRANSIENT_HTTP = (500, 502, 503, 504)  # statuses a retry can outlast (the AWS SDKs' retry set)
# A condition that did not hold: 412, or 409 when S3 saw two conditional writes of one key at once; a 404
# is an If-Match on a key that is gone.
_LOST_CONDITION = {412, 409, 404}
# (scheme, endpoint, bucket) whose server was seen to honour conditional writes, in this process
_CONDITIONAL_OK: set[tuple[str, str, str]] = set()
PROBE_PREFIX = "probes/"  # the probe's short-lived objects (the flows' bucket policy grants it)
_PROBE_LOCK = threading.Lock()


class MinioStore:
    """Objects in an S3 bucket through the ``minio`` SDK; the bucket is created on first use."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str = "us-east-1",
        timeout_seconds: float = 10.0,
        prefix: str = "",
    ) -> None:
        import urllib3
        from minio import Minio

        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.scheme = "https" if secure else "http"
        self.description = f"S3 bucket {bucket!r} at {self.scheme}://{endpoint}"
        # Fail fast: two quick urllib3 retries on connection errors and 5xx (as the AWS SDKs do);
        # the real retry policy, with backoff, is each stage's (tasks/retry.py).
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout_seconds, 5.0), read=timeout_seconds),
            maxsize=16,
            retries=urllib3.Retry(total=2, backoff_factor=0.1, status_forcelist=[500, 502, 503, 504],
                                  raise_on_status=False),
        )
        self._http = http
        self._access_key, self._secret_key, self._region = access_key, secret_key, region
        self._client = Minio(
            endpoint, access_key=access_key or None, secret_key=secret_key or None,
            secure=secure, region=region, http_client=http,
        )
        self._bucket_ready = False

    @classmethod
    def from_settings(cls, settings: Settings, bucket: str | None = None, prefix: str = "") -> MinioStore:
        """The store on ``bucket`` (default: ``settings.s3_bucket``) at the configured endpoint, its keys
        under ``prefix`` (the project's store is ``open_store``: its ``store_scope``)."""
        return cls(
            settings.s3_endpoint,
            settings.s3_access_key.get_secret_value(),
            settings.s3_secret_key.get_secret_value(),
            bucket or settings.s3_bucket,
            secure=settings.s3_secure,
            region=settings.s3_region,
            timeout_seconds=settings.s3_timeout_seconds,
            prefix=prefix,
        )

    def _k(self, key: str) -> str:
        return self.prefix + check_object_key(key)

    @contextmanager
    def _errors(self, key: str, action: str) -> Iterator[None]:
        import urllib3.exceptions
        from minio.error import InvalidResponseError, S3Error, ServerError

        where = f"{self.description}: cannot {action} {key!r}"
        try:
            yield
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise ObjectNotFound(f"{self.uri(key)} does not exist ({action})") from None
            if exc.code in _AUTH_CODES:
                raise StoreAuthError(
                    f"{where}: credentials rejected ({exc.code}); check MLCYCLE_S3_ACCESS_KEY and "
                    "MLCYCLE_S3_SECRET_KEY"
                ) from None
            if exc.code == "NoSuchBucket":  # nothing was ever written there
                raise ObjectNotFound(f"{self.uri(key)} does not exist: bucket {self.bucket!r} does not exist "
                                     f"({action})") from None
            if exc.code in _TRANSIENT_CODES:
                raise StoreUnavailable(f"{where}: {exc.code} {exc.message}") from None
            raise StoreError(f"{where}: {exc.code} {exc.message}") from None
        except ServerError as exc:
            raise StoreUnavailable(f"{where}: server error HTTP {exc.status_code}") from None
        except InvalidResponseError as exc:  # an answer that is not S3's XML
            # 500/502/503/504 with an HTML body: a proxy or load balancer in front of a restarting S3, worth a
            # retry; any other status (501 Not Implemented from a plain web server, 404, 405...) means the
            # endpoint is not S3 at all, which no retry can mend
            if getattr(exc, "_code", 0) in _TRANSIENT_HTTP:
                raise StoreUnavailable(f"{where}: server error HTTP {exc._code}") from None
            raise StoreError(
                f"{where}: the endpoint did not answer like S3 (is MLCYCLE_S3_ENDPOINT right?): "
                f"{str(exc)[:200]}"
            ) from None
        except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise StoreUnavailable(f"{where}: endpoint unreachable: {str(reason)[:200]}") from None

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._errors("", "create bucket"):
            if not self._client.bucket_exists(self.bucket):
                from minio.error import S3Error

                try:
                    self._client.make_bucket(self.bucket)
                except S3Error as exc:  # another writer created it first
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
        self._bucket_ready = True

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        k = self._k(key)
        self._ensure_bucket()
        digest = sha256_bytes(data)
        with self._errors(key, "write"):
            self._client.put_object(self.bucket, k, io.BytesIO(data), len(data),
                                    metadata={"sha256": digest})
        return ObjectInfo(key, len(data), digest)

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        k = self._k(key)
        self._ensure_bucket()
        digest = sha256_file(path)
        size = Path(path).stat().st_size
        with self._errors(key, "write"):
            self._client.fput_object(self.bucket, k, str(path), metadata={"sha256": digest})
        return ObjectInfo(key, size, digest)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        return self._conditional_put(key, data, {"If-None-Match": "*"})

    def read_tagged(self, key: str) -> Tagged:
        k = self._k(key)
        with self._errors(key, "read"):
            response = self._client.get_object(self.bucket, k)
            try:
                data, etag = response.read(), response.headers.get("ETag", "")
            finally:
                response.close()
                response.release_conn()
        return Tagged(data, etag.strip('"'))

    def replace_if(self, key: str, data: bytes, tag: str) -> bool:
        return self._conditional_put(key, data, {"If-Match": f'"{tag}"'})

    def _conditional_put(self, key: str, data: bytes, condition: dict[str, str]) -> bool:
        """PUT ``data`` only if ``condition`` holds: True when written, False when the condition failed
        (unless the object already holds exactly ``data``: a retried write of ours that had landed)."""
        self._ensure_bucket()
        self._probe_conditional_writes()
        written, retried = self._raw_conditional_put(key, data, condition)
        if not written and retried:  # an attempt whose answer was lost may have landed: ours if it holds our bytes
            try:
                return self.get_bytes(key) == data
            except ObjectNotFound:
                return False
        return written

    def _raw_conditional_put(self, key: str, data: bytes, condition: dict[str, str],
                             attempts: int = 3) -> tuple[bool, bool]:
        """(written, retried). The pool's own retries are off for this request: only a write whose first
        answer was lost (a transport error) is retried, and only then may a refused condition be our own
        earlier attempt. Two writers of identical bytes (two monitors claiming one slot with the same record)
        must not both count as the winner."""
        import hashlib
        import time
        import urllib.parse

        from minio.credentials import Credentials
        from minio.signer import sign_v4_s3

        path = "/" + urllib.parse.quote(f"{self.bucket}/{self._k(key)}", safe="/-_.~")
        url = urllib.parse.urlsplit(f"{self.scheme}://{self.endpoint}{path}")
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        content_sha256 = hashlib.sha256(data).hexdigest()
        headers = {**condition, "Host": self.endpoint, "Content-Type": "application/octet-stream",
                   "Content-Length": str(len(data)), "x-amz-content-sha256": content_sha256,
                   "x-amz-date": now.strftime("%Y%m%dT%H%M%SZ")}
        if self._access_key:
            headers = sign_v4_s3(method="PUT", url=url, region=self._region, headers=headers,
                                 credentials=Credentials(self._access_key, self._secret_key),
                                 content_sha256=content_sha256, date=now)
        retried = False
        for attempt in range(attempts):
            try:
                with self._errors(key, "write"):
                    response = self._http.request("PUT", url.geturl(), body=data, headers=headers, retries=False)
                break
            except StoreUnavailable:
                if attempt == attempts - 1:
                    raise
                retried = True
                time.sleep(0.2 * (attempt + 1))
        if response.status in (200, 201, 204):
            return True, retried
        if response.status in _LOST_CONDITION:
            return False, retried
        code = re.search(rb"<Code>([^<]+)</Code>", response.data or b"")
        what = f"HTTP {response.status} {code.group(1).decode(errors='replace') if code else ''}".strip()
        where = f"{self.description}: cannot write {key!r}"
        if response.status in (401, 403):
            raise StoreAuthError(f"{where}: credentials rejected ({what}); check MLCYCLE_S3_ACCESS_KEY and "
                                 "MLCYCLE_S3_SECRET_KEY")
        if response.status >= 500:
            raise StoreUnavailable(f"{where}: {what}")
        raise StoreError(f"{where}: {what}")

    def _probe_conditional_writes(self) -> None:
        """Once per server and bucket in this process: a second create of one key and a replace with a
        wrong ETag must both be refused; otherwise claims and pointers would be last-writer-wins."""
        identity = (self.scheme, self.endpoint, self.bucket)
        if identity in _CONDITIONAL_OK:
            return
        with _PROBE_LOCK:
            if identity in _CONDITIONAL_OK:
                return
            key = f"{PROBE_PREFIX}conditional-writes-{uuid.uuid4().hex}"
            try:
                first = self._raw_conditional_put(key, b"first", {"If-None-Match": "*"})[0]
                second = self._raw_conditional_put(key, b"second", {"If-None-Match": "*"})[0]
                wrong = self._raw_conditional_put(key, b"third", {"If-Match": '"' + "0" * 32 + '"'})[0]
            finally:
                self.delete(key)
            if not first or second or wrong:
                broken = "If-None-Match: *" if second else "If-Match" if wrong else "conditional PUT"
                raise ConditionalWritesUnsupported(
                    f"{self.description} does not honour conditional writes ({broken} was ignored): mlcycle "
                    "needs them for version claims, the champion pointer, rollout leases and the trigger "
                    "ledger; use a MinIO release with conditional PUTs (2024 or later) or AWS S3")
            _CONDITIONAL_OK.add(identity)

    def get_bytes(self, key: str) -> bytes:
        k = self._k(key)
        with self._errors(key, "read"):
            response = self._client.get_object(self.bucket, k)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def modified(self, key: str) -> dt.datetime:
        k = self._k(key)
        with self._errors(key, "stat"):
            stat = self._client.stat_object(self.bucket, k)
        when = stat.last_modified
        return when if when.tzinfo else when.replace(tzinfo=dt.UTC)

    def download(self, key: str, dest: Path) -> None:
        k = self._k(key)
        with self._errors(key, "read"):
            self._client.fget_object(self.bucket, k, str(dest))

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        k = self._k(key)
        with self._errors(key, "stat"):
            try:
                self._client.stat_object(self.bucket, k)
                return True
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound"):
                    return False
                raise

    def list(self, prefix: str = "") -> list[str]:
        if prefix:
            check_key(prefix)
        with self._errors(prefix, "list"):
            if not self._client.bucket_exists(self.bucket):
                return []
            names = [
                o.object_name
                for o in self._client.list_objects(self.bucket, prefix=self.prefix + prefix, recursive=True)
            ]
        return sorted(n[len(self.prefix):] for n in names if n and not n.endswith("/"))

    def delete(self, key: str) -> None:
        k = self._k(key)
        with self._errors(key, "delete"):
            self._client.remove_object(self.bucket, k)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def http_url(self, key: str) -> str:
        return f"{self.scheme}://{self.endpoint}/{self.bucket}/{self.prefix}{key}"

    def check(self) -> None:
        self._ensure_bucket()
