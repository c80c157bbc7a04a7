"""Screenshots of a running stack's Prefect UI for the README: ``docs/img/*.png``.

Starts nothing but a headless Chromium (Debian's ``/usr/bin/chromium``, a throw-away profile, no network
beyond 127.0.0.1): the stack must already run and hold data, e.g. after ``make demo``. Usage::

    .venv/bin/python docs/screenshots.py [--ui http://127.0.0.1:4200] [--out docs/img]

How it waits for the single-page app: Chromium runs with a DevTools port; for each page the script
navigates, then polls the rendered text (``document.body.innerText``) until every text that proves the
data is on screen has appeared (a deployment name, an artifact key, a drifted feature), waits for the
network to go quiet, and only then captures. A page that never shows its texts fails the script, naming
the page and the missing texts, instead of saving a blank or half-loaded picture.

Which runs are shown is found through the Prefect API: the newest training run that recorded a gate
decision, and the newest monitor run whose drift started a training (else the newest monitor run).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--hide-scrollbars", "--mute-audio", "--remote-debugging-port=0",
                  "--remote-allow-origins=*"]


class ScreenshotError(RuntimeError):
    """The UI, the API or Chromium did not give what a screenshot needs; the message says which."""


@dataclass
class Page:
    file: str             # under the output folder
    path: str             # UI route, e.g. /deployments
    must_show: list[str]  # texts that prove the data rendered
    height: int = 900
    width: int | None = None  # default: --width
    click: str | None = None  # a tab to open first (its exact label), once the page shows its label


# --------------------------------------------------------------------------------------------------
# what to show: found through the Prefect API
# --------------------------------------------------------------------------------------------------


def find_pages(api_url: str) -> list[Page]:
    """The pages to capture, with the runs and artifacts of the stack's data."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        def newest(like: str, limit: int = 50) -> list:
            return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_=like)),
                                         sort=ArtifactSort.CREATED_DESC, limit=limit)

        gates = newest("%-gate-decision")
        decisions = newest("monitoring-decision")
        drift_tables = newest("monitoring-drift")
        if not gates or not decisions or not drift_tables:
            raise ScreenshotError(f"the server at {api_url} holds no gate decision or drift report yet: "
                                  "run the pipeline first (make demo)")
        gate = gates[0]
        triggered = [a for a in decisions if "**Trigger:** triggered" in str(a.data)]
        decision = (triggered or decisions)[0]
        drift = next((a for a in drift_tables if a.flow_run_id == decision.flow_run_id), drift_tables[0])
        drifted = [row["feature"] for row in _table(drift.data) if row.get("drifted")]
        train_run = client.read_flow_run(gate.flow_run_id)

    return [
        Page("deployments.png", "/deployments", ["daily", "hourly", "on-demand", "range", "revalidate", "rollback"]),
        Page("train-run-artifacts.png", f"/runs/flow-run/{train_run.id}",
             [train_run.name, gate.key, gate.key.replace("-gate-decision", "-comparison")], height=1000,
             click="Artifacts"),
        Page("gate-decision.png", f"/artifacts/artifact/{gate.id}", [gate.key, "Decision:"], height=1100),
        Page("monitor-decision.png", f"/artifacts/artifact/{decision.id}",
             ["monitoring-decision", "Trigger:", *drifted[:1]], height=760),
        Page("drift-report.png", f"/artifacts/artifact/{drift.id}", ["monitoring-drift", *drifted[:2]], height=800,
             width=1920),
        Page("artifacts.png", "/artifacts", ["monitoring-decision", "monitoring-drift", gate.key], height=1000),
    ]


def _table(data) -> list[dict]:
    rows = json.loads(data) if isinstance(data, str) else data
    return rows if isinstance(rows, list) else []


# --------------------------------------------------------------------------------------------------
# Chromium over the DevTools protocol
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def chromium(binary: str, width: int, height: int, timeout: float = 30.0) -> Iterator[str]:
    """A headless Chromium in a new temporary profile; yields the page target's DevTools websocket URL."""
    with tempfile.TemporaryDirectory(prefix="mlcycle-chromium-") as profile:
        argv = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                "about:blank"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + timeout
            while not (port_file.is_file() and port_file.read_text().strip()):
                if proc.poll() is not None:
                    raise ScreenshotError(f"{binary} exited with code {proc.returncode}: "
                                          f"{proc.stderr.read().decode(errors='replace')[-800:]}")
                if time.monotonic() > deadline:
                    raise ScreenshotError(f"{binary} opened no DevTools port within {timeout:.0f}s")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            pages = [t for t in targets if t.get("type") == "page"]
            if not pages:
                raise ScreenshotError(f"{binary} has no page target: {targets}")
            yield pages[0]["webSocketDebuggerUrl"]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the browser and its helpers: our own session only
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


class DevTools:
    """The few DevTools-protocol commands needed, over one websocket (synchronous)."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self._ws = connect(ws_url, max_size=None, open_timeout=10)
        self._ids = itertools.count(1)
        self.requests_in_flight: dict[str, float] = {}  # request id -> when it started (monotonic)

    def close(self) -> None:
        self._ws.close()

    def call(self, method: str, timeout: float = 30.0, **params) -> dict:
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == call_id:
                if "error" in message:
                    raise ScreenshotError(f"DevTools {method} failed: {message['error']}")
                return message.get("result", {})
            self._track(message)

    def drain_events(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._track(json.loads(self._ws.recv(timeout=left)))
            except TimeoutError:
                return

    def _track(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests_in_flight[params["requestId"]] = time.monotonic()
        elif method in ("Network.loadingFinished", "Network.loadingFailed"):
            self.requests_in_flight.pop(params["requestId"], None)

    def loading(self, stream_after: float = 3.0) -> int:
        """Requests still loading, leaving out long-lived ones (event streams, long polls)."""
        now = time.monotonic()
        return sum(now - started < stream_after for started in self.requests_in_flight.values())

    def click(self, label: str) -> bool:
        """Click the first button, tab or link whose text is exactly ``label``; False if none is shown yet."""
        script = ("(() => { const el = [...document.querySelectorAll('button, a, [role=tab], .p-tab')]"
                  f".find(e => e.innerText && e.innerText.trim() === {json.dumps(label)});"
                  " if (!el) return false; el.click(); return true; })()")
        return bool(self.call("Runtime.evaluate", expression=script, returnByValue=True)
                    .get("result", {}).get("value"))

    def text(self) -> str:
        result = self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
                           returnByValue=True)
        return str(result.get("result", {}).get("value", ""))


def capture(devtools: DevTools, url: str, page: Page, width: int, timeout: float) -> bytes:
    """Navigate, wait until the page shows its texts and the network is quiet, return a PNG."""
    devtools.call("Emulation.setDeviceMetricsOverride", width=page.width or width, height=page.height,
                  deviceScaleFactor=1,
                  mobile=False)
    devtools.requests_in_flight.clear()
    devtools.call("Page.navigate", url=url)
    deadline = time.monotonic() + timeout
    missing = page.must_show
    clicked = page.click is None
    while time.monotonic() < deadline:
        devtools.drain_events(0.5)
        if not clicked:
            clicked = devtools.click(page.click)
            continue
        text = devtools.text()
        missing = [t for t in page.must_show if t not in text]
        if not missing and not devtools.loading():
            devtools.drain_events(1.5)  # let charts and markdown finish laying out
            if not devtools.loading():
                shot = devtools.call("Page.captureScreenshot", format="png")
                return base64.b64decode(shot["data"])
    seen = " ".join(devtools.text().split())[:600]
    raise ScreenshotError(f"{url} did not show {missing} within {timeout:.0f}s "
                          f"({devtools.loading()} requests still loading); it shows: {seen!r}")


def take_screenshots(ui: str, out: Path, binary: str, width: int, timeout: float) -> list[Path]:
    ui = ui.rstrip("/")
    try:
        httpx.get(f"{ui}/api/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise ScreenshotError(f"no Prefect server answers at {ui} ({exc}); start the stack first (make demo)") from exc
    pages = find_pages(f"{ui}/api")
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    with chromium(binary, width, 900) as ws_url:
        devtools = DevTools(ws_url)
        try:
            devtools.call("Page.enable")
            devtools.call("Network.enable")
            for page in pages:
                png = capture(devtools, f"{ui}{page.path}", page, width, timeout)
                path = out / page.file
                path.write_bytes(png)
                saved.append(path)
                print(f"{path}  <- {ui}{page.path}")
        finally:
            devtools.close()
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ui", default="http://127.0.0.1:4200", help="the Prefect UI of a running stack")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "img")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--width", type=int, default=1440)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per page")
    args = parser.parse_args(argv)
    try:
        take_screenshots(args.ui, args.out, args.chromium, args.width, args.timeout)
    except ScreenshotError as exc:
        print(f"screenshots: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
