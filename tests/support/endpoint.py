"""The stable endpoint's test helpers: the nginx requirement and a client that keeps sending through it."""

from __future__ import annotations

import os
import shutil
import threading
import time

import httpx
import pytest

from tests.support.env import REQUIRE_SYSTEM_TOOLS

# nginx is the stable endpoint: without it these tests skip locally, and fail in CI (.ci/run installs it
# and sets REQUIRE_DOCKER_TESTS=1), naming the package to install.
NEEDS_NGINX = pytest.mark.skipif(
    shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx")
    and not REQUIRE_SYSTEM_TOOLS,
    reason="nginx is not installed (apt-get install -y nginx; .ci/run installs it)")


class Client:
    """Sends requests through the stable URL until stopped (bounded: ``max_requests``, ``max_seconds``).

    ``versions`` is what answered each successful request, in order; ``failures`` every error or non-200.
    """

    def __init__(self, url: str, path: str = "/predict", body=lambda i: {"x": i},
                 version_of=lambda payload: payload["version"], max_requests: int = 3000,
                 max_seconds: float = 120) -> None:
        self.url, self.path, self.body, self.version_of = url, path, body, version_of
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.versions: list = []
        self.sent_at: list[float] = []  # wall-clock time each answered request was sent
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=30) as client:
            for i in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                sent = time.time()
                try:
                    response = client.post(f"{self.url}{self.path}", json=self.body(i))
                    if response.status_code == 200:
                        self.versions.append(self.version_of(response.json()))
                        self.sent_at.append(sent)
                    else:
                        self.failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def wait_for(self, answers: int, since: float = 0.0, timeout: float = 60.0) -> None:
        """Until ``answers`` requests sent at or after ``since`` (wall clock) were answered; fails naming
        how many were after ``timeout`` seconds (a synchronisation on the traffic itself, not a sleep)."""
        deadline = time.monotonic() + timeout
        while sum(1 for t in list(self.sent_at) if t >= since) < answers:
            if time.monotonic() > deadline or not self._thread.is_alive():
                got = sum(1 for t in list(self.sent_at) if t >= since)
                raise AssertionError(f"{got} of {answers} answers after {timeout:g} s; failures: {self.failures[:3]}")
            time.sleep(0.02)

    def assert_switched(self, old, new, cut: float) -> None:
        """No failure; ``old`` answered first, and every request sent after ``cut`` (the moment the
        switch completed, wall clock) was answered by ``new``: the answers switched and stayed."""
        assert self.failures == [], self.failures[:5]
        assert self.versions and self.versions[0] == old, self.versions[:5]
        after = [v for v, t in zip(self.versions, self.sent_at, strict=True) if t >= cut]
        assert after and set(after) == {new}, after[:10]
        assert set(self.versions) == {old, new}
