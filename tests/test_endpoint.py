"""The stable endpoint (nginx, re-pointed by a graceful reload) in front of two real `bentoml serve` services.

The backends are a tiny BentoML service (written to a temp dir, served twice: blue answers "v1", green
"v2", with a slow route) so these tests need no model; tests/test_rollout*.py repeat the switch with the
packaged model behind it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.support.endpoint import NEEDS_NGINX, Client
from tests.support.env import free_port, make_settings

pytestmark = NEEDS_NGINX

ECHO_SERVICE = '''
import asyncio
import os

import bentoml


@bentoml.service(workers=int(os.environ.get("ECHO_WORKERS", "1")))
class Echo:
    version = os.environ["ECHO_VERSION"]

    @bentoml.api
    def predict(self, x: float) -> dict:
        return {"version": self.version, "y": 2 * x}

    in_flight = 0  # slow requests being served by this worker

    @bentoml.api
    async def slow(self, seconds: float) -> dict:
        self.in_flight += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            self.in_flight -= 1
        return {"version": self.version}

    @bentoml.api
    async def busy(self) -> dict:
        return {"in_flight": self.in_flight}
'''


class EchoServer:
    """`bentoml serve service:Echo` on a free port, answering ``version``."""

    def __init__(self, folder, version: str, workers: int = 1) -> None:
        self.port = free_port()
        self.version = version
        self.log = folder / f"echo-{version}.log"
        env = {**os.environ, "ECHO_VERSION": version, "BENTOML_HOME": str(folder / "bentoml"),
               "BENTOML_DO_NOT_TRACK": "true", "ECHO_WORKERS": str(workers)}
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bentoml", "serve", "service:Echo", "--working-dir", str(folder),
                 "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"echo {self.version} not ready: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        from mlcycle.tasks.rollout.targets import stop_process_tree

        stop_process_tree(self.process.pid, 10)
        self.process.wait(10)


@pytest.fixture(scope="module")
def echo_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("echo")
    (folder / "service.py").write_text(ECHO_SERVICE)
    servers = [EchoServer(folder, "v1"), EchoServer(folder, "v2")]
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def ep_settings(tmp_path):
    settings = make_settings(tmp_path / "home", rollout={"endpoint_port": free_port(), "drain_seconds": 15})
    yield settings
    from mlcycle.tasks.rollout import endpoint

    endpoint.stop_endpoint(settings)


def upstream(server, deployment_id: str):
    from mlcycle.tasks.rollout.endpoint import Upstream

    return Upstream(deployment_id=deployment_id, port=server.port)


def test_switch_under_continuous_traffic_fails_no_request(echo_pair, ep_settings):
    from mlcycle.tasks.rollout import endpoint

    blue, green = echo_pair
    endpoint.start_endpoint(ep_settings, upstream(blue, "blue"))
    url = endpoint.endpoint_url(ep_settings)
    with Client(url) as c1, Client(url) as c2:
        for client in (c1, c2):
            client.wait_for(20)  # traffic flows through blue
        report = endpoint.switch_endpoint(ep_settings, upstream(green, "green"))
        cut = time.time()
        for client in (c1, c2):
            client.wait_for(20, since=cut)  # and goes on after the switch
    for client in (c1, c2):
        client.assert_switched("v1", "v2", cut)
    assert report.previous == "blue" and report.current == "green" and report.drained
    assert report.switch_seconds < 5
    response = httpx.post(f"{url}/predict", json={"x": 1})
    assert response.headers["x-mlcycle-deployment"] == "green"
    assert endpoint.serving_deployment(ep_settings) == "green"
    assert endpoint.configured_upstream(ep_settings).port == green.port


def test_forty_switches_under_four_busy_clients_fail_no_request(echo_pair, ep_settings):
    """The keep-alive race (an idle connection closed by a retiring worker) cannot happen: the endpoint
    closes client connections after each response (rollout.endpoint_keepalive_seconds: 0)."""
    from mlcycle.tasks.rollout import endpoint

    blue, green = echo_pair
    endpoint.start_endpoint(ep_settings, upstream(blue, "blue"))
    clients = [Client(endpoint.endpoint_url(ep_settings), max_requests=5000, max_seconds=90) for _ in range(4)]
    for client in clients:
        client.__enter__()
    try:
        for i in range(40):
            endpoint.switch_endpoint(ep_settings, upstream(green if i % 2 == 0 else blue, f"d{i}"))
            time.sleep(0.05)
    finally:
        for client in clients:
            client.__exit__()
    assert sum(len(c.versions) for c in clients) > 200
    assert [f for c in clients for f in c.failures] == []


def test_a_request_in_flight_during_the_switch_finishes_on_the_old_backend(echo_pair, ep_settings):
    from mlcycle.tasks.rollout import endpoint

    blue, green = echo_pair
    endpoint.start_endpoint(ep_settings, upstream(blue, "blue"))
    url = endpoint.endpoint_url(ep_settings)
    result = {}

    def slow() -> None:
        response = httpx.post(f"{url}/slow", json={"seconds": 2.5}, timeout=30)
        result.update(status=response.status_code, body=response.json())

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 30  # until blue is serving the slow request (its own count, not a sleep)
    while httpx.post(f"{blue.url}/busy", json={}).json()["in_flight"] < 1:
        assert time.monotonic() < deadline and thread.is_alive(), "the slow request never reached blue"
        time.sleep(0.02)
    report = endpoint.switch_endpoint(ep_settings, upstream(green, "green"))
    thread.join(30)
    assert result == {"status": 200, "body": {"version": "v1"}}
    assert report.drained and report.drain_seconds >= 1.5  # the old worker waited for the slow request
    assert httpx.post(f"{url}/predict", json={"x": 1}).json()["version"] == "v2"


def test_a_configuration_nginx_rejects_leaves_the_previous_backend_serving(echo_pair, ep_settings):
    from mlcycle.tasks.rollout import endpoint

    blue, _ = echo_pair
    endpoint.start_endpoint(ep_settings, upstream(blue, "blue"))
    with pytest.raises(endpoint.EndpointError, match="nginx rejected"):
        endpoint.switch_endpoint(ep_settings, endpoint.Upstream(deployment_id="bad", port=0))
    assert endpoint.configured_upstream(ep_settings).deployment_id == "blue"
    assert httpx.post(f"{endpoint.endpoint_url(ep_settings)}/predict", json={"x": 1}).json()["version"] == "v1"


def test_unsafe_deployment_ids_never_reach_the_configuration(ep_settings):
    from mlcycle.tasks.rollout import endpoint

    with pytest.raises(endpoint.EndpointError, match="not allowed"):
        endpoint.render_upstream(endpoint.Upstream(deployment_id='x"; }  server evil', port=1234))


def test_the_endpoint_is_a_stack_service_that_down_stops(echo_pair, ep_settings):
    from mlcycle.tasks import stack
    from mlcycle.tasks.rollout import endpoint

    blue, _ = echo_pair
    service = endpoint.start_endpoint(ep_settings, upstream(blue, "blue"))
    assert endpoint.start_endpoint(ep_settings, upstream(blue, "blue")).pid == service.pid  # idempotent
    assert [s.name for s in stack.services(ep_settings)] == ["endpoint"]
    assert stack.down(ep_settings) == ["endpoint"]
    assert not endpoint.is_running(ep_settings) and not stack.pid_alive(service.pid)
    with pytest.raises(endpoint.EndpointError, match="not running"):
        endpoint.switch_endpoint(ep_settings, upstream(blue, "blue"))


def test_a_second_projects_endpoint_on_a_taken_port_is_refused_and_the_first_keeps_serving(echo_pair, ep_settings,
                                                                                           tmp_path):
    """Two projects whose endpoints would share a port (set alike, or derived alike from their names): the second
    refuses to start, naming the setting, and never takes the first's health answer for its own."""
    from mlcycle.tasks.rollout import endpoint

    blue, green = echo_pair
    endpoint.start_endpoint(ep_settings, upstream(blue, "blue"))
    other = make_settings(tmp_path / "other", project_name="wine",
                          rollout={"endpoint_port": ep_settings.rollout.endpoint_port})
    with pytest.raises(endpoint.EndpointError) as refused:
        endpoint.start_endpoint(other, upstream(green, "green"))
    assert f"port 127.0.0.1:{ep_settings.rollout.endpoint_port} is in use" in str(refused.value)
    assert "rollout.endpoint_port" in str(refused.value)
    assert not endpoint.is_running(other)
    answer = httpx.post(f"{endpoint.endpoint_url(ep_settings)}/predict", json={"x": 1.0}, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"version": blue.version, "y": 2.0}


def test_the_body_limit_is_the_services_and_nginx_refuses_over_it_in_json(echo_pair, tmp_path):
    """serving.max_body_bytes is nginx's limit too: a body at the limit reaches the backend, one byte over
    gets the service's JSON 413 naming the setting (never nginx's HTML page), on the same connection rules."""
    from mlcycle.tasks.rollout import endpoint

    limit = 64 * 1024
    settings = make_settings(tmp_path / "home", rollout={"endpoint_port": free_port()},
                             serving={"max_body_bytes": limit})
    blue, _ = echo_pair
    try:
        endpoint.start_endpoint(settings, upstream(blue, "blue"))
        url = f"{endpoint.endpoint_url(settings)}/predict"
        head = b'{"x": 1, "pad": "'
        at_limit = head + b"p" * (limit - len(head) - 2) + b'"}'
        assert len(at_limit) == limit
        reached = httpx.post(url, content=at_limit, headers={"content-type": "application/json"}, timeout=30)
        assert reached.status_code != 413 and reached.headers["x-mlcycle-deployment"] == "blue"
        over = httpx.post(url, content=at_limit + b" ", headers={"content-type": "application/json"}, timeout=30)
        assert over.status_code == 413 and over.headers["content-type"].startswith("application/json")
        assert f"limit of {limit} bytes (serving.max_body_bytes)" in over.json()["error"]
        assert over.headers["x-mlcycle-deployment"] == "blue"
    finally:
        endpoint.stop_endpoint(settings)


def _workers(serve_pid: int) -> list[int]:
    import psutil

    found = []
    for p in psutil.Process(serve_pid).children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "_bentoml_impl.worker.service" in " ".join(p.cmdline()):
                found.append(p.pid)
        except psutil.Error:  # gone, or a zombie not yet reaped by the arbiter
            continue
    return found


def test_a_worker_killed_under_load_loses_no_request_behind_the_endpoint(tmp_path, retries=None):
    """SIGKILL of one of the backend's two workers while 4 clients keep requests in flight (a slow route, so
    some are on the killed worker): the endpoint retries each failed connection on the backend's shared
    socket, a live worker answers, and no client sees a failure. Without the retry the same kill fails them
    (measured while building this with ``endpoint_retries: 0``: a 502 per kill, in 3 of 3 runs)."""
    import signal

    from mlcycle.tasks.rollout import endpoint

    folder = tmp_path / "echo2"
    folder.mkdir()
    (folder / "service.py").write_text(ECHO_SERVICE)
    server = EchoServer(folder, "v1", workers=2)
    rollout = {"endpoint_port": free_port(), **({} if retries is None else {"endpoint_retries": retries})}
    settings = make_settings(tmp_path / "home", rollout=rollout)
    try:
        server.wait_ready()
        deadline = time.monotonic() + 60
        while len(_workers(server.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        first, _ = _workers(server.process.pid)
        endpoint.start_endpoint(settings, upstream(server, "blue"))
        url = endpoint.endpoint_url(settings)
        clients = [Client(url, path="/slow", body=lambda i: {"seconds": 0.3}, max_seconds=60) for _ in range(4)]
        for c in clients:
            c.__enter__()
        for c in clients:
            c.wait_for(3)  # steady load on both workers
        killed_at = time.time()
        os.kill(first, signal.SIGKILL)
        for c in clients:
            c.wait_for(5, since=killed_at)  # requests go on being answered after the kill
        for c in clients:
            c.__exit__(None, None, None)
        answered = sum(len(c.versions) for c in clients)
        failures = [f for c in clients for f in c.failures]
        assert failures == [], failures
        assert answered >= 20  # the load was steady across the kill
        assert server.process.poll() is None and first not in _workers(server.process.pid)
    finally:
        endpoint.stop_endpoint(settings)
        server.stop()
