"""A `bentoml serve` process: started on a free port in its own process group, ready, stopped.

::

    start_serving       `bentoml serve <bento>` on a free 127.0.0.1 port (or the one given), log to a file
    wait_ready          until /readyz answers 200 (or the process dies, its workers crash-loop, or the time
                        is up: ServeFailed with the log's tail)
    serve_in_background the same as a stack service (pid file + log under <home>/run/), stopped by
                        `mlcycle down`

Test-serving (tasks/serving/client.py) and the rollout's process target (tasks/rollout/targets.py) both
start their servers here; :func:`free_port` is the one free-port helper of both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlcycle.tasks.serving.packaging import ServingError, bentoml_env, output_tail
from mlcycle.tasks.settings import Settings

SERVICE_NAME = "model-server"


class ServeFailed(ServingError):
    """`bentoml serve` could not start or become ready (port in use, crash, timeout; with its log tail)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ServeFailed(f"port {port} on {host} is in use ({exc.strerror}); stop what listens there or "
                              "choose another port (--port, serving.port)") from None


@dataclass
class ServeProcess:
    """A running `bentoml serve`: its URL, pid (its own process group) and log file."""

    bento_tag: str
    host: str
    port: int
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return output_tail(self.log_path.read_text(errors="replace"), chars)
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM `bentoml serve` (its workers flush their inference log and exit), SIGKILL after ``grace``.

        BentoML's arbiter starts each worker in a process group of its own, so the workers are
        collected first and killed too if anything is left after the arbiter is gone.
        """
        import psutil

        children: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(self.process.pid).children(recursive=True)
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        _, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
        return self.process.returncode


def start_serving(settings: Settings, bento_tag: str, *, port: int | None = None, host: str = "127.0.0.1",
                  log_path: Path | None = None, env: dict[str, str] | None = None) -> ServeProcess:
    """Start `bentoml serve <bento_tag>` in its own process group (port 0 or None: a free port)."""
    port = port or free_port(host)
    check_port_free(host, port)
    log_path = log_path or settings.run_dir / f"serve-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "bentoml", "serve", bento_tag, "--host", host, "--port", str(port), "--do-not-track"]
    with open(log_path, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=bentoml_env(settings, bento_tag=bento_tag, **(env or {})),
                                   start_new_session=True,
                                   cwd=Path(settings.home).resolve() if Path(settings.home).is_dir() else None)
    return ServeProcess(bento_tag=bento_tag, host=host, port=port, log_path=log_path, process=process)


def wait_ready(serving: ServeProcess, timeout: float) -> float:
    """Wait until /readyz answers 200; return the seconds it took. ServeFailed with the log tail otherwise."""
    import httpx

    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        code = serving.process.poll()
        if code is not None:
            raise ServeFailed(f"bentoml serve {serving.bento_tag} exited with code {code} before it was ready; "
                              f"log {serving.log_path}: {serving.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{serving.url}/readyz", timeout=2.0).status_code == 200:
                return round(time.monotonic() - started, 2)
        failure = startup_failure(serving.log_tail(20_000))
        if failure:
            raise ServeFailed(f"bentoml serve {serving.bento_tag}: the service fails to start (its workers exit "
                              f"and are restarted): {failure}; log {serving.log_path}")
        time.sleep(0.25)
    raise ServeFailed(f"bentoml serve {serving.bento_tag} was not ready at {serving.url}/readyz within "
                      f"{timeout:.0f}s; log {serving.log_path}: {serving.log_tail()}")


def startup_failure(log: str, repeats: int = 2) -> str | None:
    """The error of a worker crash loop (BentoML restarts a worker whose startup failed), if the log shows one."""
    if log.count("Application startup failed") < repeats:
        return None
    errors = [line.strip() for line in log.splitlines()
              if line[:1].isalpha() and ("Error: " in line or "Exception: " in line)
              and not line.startswith("Error: [")]
    return errors[-1][:1000] if errors else "Application startup failed"


# --------------------------------------------------------------------------------------------------
# serving for humans: in the background (a stack service, stopped by `mlcycle down`)
# --------------------------------------------------------------------------------------------------


def serve_in_background(settings: Settings, bento_tag: str, port: int | None = None):
    """(Re)start the bento as a stack service (pid file + log under <home>/run/), wait until it is ready.

    A model server this stack started before is stopped first (it may serve another bento).
    """
    from mlcycle.tasks import stack

    cfg = settings.serving
    stack.stop_service(settings, SERVICE_NAME)
    port = port if port is not None else cfg.port
    port = port or free_port(cfg.host)
    check_port_free(cfg.host, port)
    argv = [sys.executable, "-m", "bentoml", "serve", bento_tag, "--host", cfg.host, "--port", str(port),
            "--do-not-track"]
    try:
        return stack.start_service(settings, SERVICE_NAME, argv, url=f"http://{cfg.host}:{port}",
                                   health_url=f"http://{cfg.host}:{port}/readyz",
                                   timeout=cfg.readiness_timeout_seconds,
                                   env=bentoml_env(settings, bento_tag=bento_tag))
    except stack.StackError as exc:
        raise ServeFailed(str(exc)) from None
