"""Benchmark: a soak test. The service under steady load at 70% of its measured capacity, with a blue/green
rollout in the middle: no failed request, memory flat, every answered request in the inference log.

Two model versions are trained and packaged exactly as ``mlcycle package`` does (the helpers of
tests/support/rollout.py, as benchmarks/rollout.py uses them), in a temporary home. Then, on 127.0.0.1:

1. **v1 goes live** behind the stable endpoint (``tasks.rollout.orchestrate.rollout``, process target, nginx);
2. **capacity**: wrk (benchmarks/serving.py's runner) at increasing connections against the stable URL's
   ``/predict``, single-row requests (the best req/s of a run without errors or non-2xx), and the soak's
   own client offered twice that with as many requests in flight as wrk's largest run; capacity = the
   lower of the two (on 2 cores the Python client, a connection per request, competes with the service);
3. **soak**: an open-loop load generator (a separate process, asyncio + aiohttp) sends requests at
   ``--load`` x capacity (default 70%) for ``--minutes``, on a fixed schedule (a slow answer does not slow
   the sending), recording each request's status, latency and ``request_id``; in flight at most
   ``--max-in-flight`` (beyond: counted as failed, never queued without bound);
4. **rollout at half time**: v2 replaces v1 blue/green under that load (canary, switch, drain, graceful
   stop of v1, which flushes its inference log);
5. RSS of each serving process tree (``bentoml serve`` and its workers) every ``--sample-seconds``;
6. afterwards v2 is stopped gracefully (its log flushed) and the inference log is read back from the store:
   every request answered 200 must be there, by ``request_id``.

Prints a table (target and achieved rate, requests, failed, p50/p99, RSS start/end per version, log records
found/expected) and exits 1 if any request failed or any record is missing. ``--json FILE`` writes the
figures. Nothing is left running (also on Ctrl-C): the endpoint and both versions are stopped by pid.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--load 0.7] [--json soak.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import Folders, offline_environment  # noqa: E402 - after the path insert

offline_environment()


# --------------------------------------------------------------------------------------------------
# the load generator (runs in its own process: its event loop never competes with the rollout)
# --------------------------------------------------------------------------------------------------

async def open_loop(url: str, body: bytes, rate: float, seconds: float, max_in_flight: int,
                    headers: dict[str, str]) -> list[dict]:
    """Send ``rate`` requests/s for ``seconds`` on a fixed schedule; one record per request."""
    import aiohttp

    records: list[dict] = []
    in_flight = 0
    timeout = aiohttp.ClientTimeout(total=30)
    # A new connection per request, as the stable endpoint closes them (rollout.endpoint_keepalive_seconds 0).
    connector = aiohttp.TCPConnector(force_close=True, limit=max_in_flight)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int, sent: float) -> None:
            nonlocal in_flight
            record = {"i": i, "t": round(sent, 4), "status": None, "request_id": None, "ms": None, "error": None,
                      "version": None}
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
                    record["status"] = response.status
                    if response.status == 200:
                        answer = json.loads(payload)
                        record["request_id"], record["version"] = answer["request_id"], answer["model_version"]
                    else:
                        record["error"] = payload[:200].decode(errors="replace")
            except Exception as exc:  # noqa: BLE001 - every failure is a record, never a crash
                record["error"] = f"{type(exc).__name__}: {exc}"[:200]
            record["ms"] = round((time.monotonic() - start - sent) * 1000, 2)
            in_flight -= 1
            records.append(record)

        start = time.monotonic()
        total = int(rate * seconds)
        tasks = []
        for i in range(total):
            due = i / rate
            delay = due - (time.monotonic() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= max_in_flight:  # bounded: shed at the client, counted as failed
                records.append({"i": i, "t": round(due, 4), "status": None, "request_id": None, "ms": None,
                                "error": f"client: {max_in_flight} requests already in flight", "version": None})
                continue
            in_flight += 1
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
    return sorted(records, key=lambda r: r["i"])


def load_generator(args) -> None:
    token = os.environ.get("MLCYCLE_API_TOKEN")  # inherited, never on the command line
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    records = asyncio.run(open_loop(args.url, Path(args.body).read_bytes(), args.rate, args.seconds,
                                    args.max_in_flight, headers))
    Path(args.out).write_text("\n".join(json.dumps(r) for r in records))


# --------------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------------



def tree_rss_mb(pid: int) -> float | None:
    """Resident memory of a process and all its descendants, MB (None when it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return round(total / 1e6, 1)


class RssSampler(threading.Thread):
    """Every ``interval`` s: the RSS of the live deployment's process tree, keyed by model version."""

    def __init__(self, store, interval: float) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.store, self.interval = store, interval
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self.pids: dict[str, int] = {}
        self._halt = threading.Event()
        self.started_at = time.monotonic()

    def sample(self) -> None:
        from mlcycle.tasks.rollout.orchestrate import read_current

        current = read_current(self.store)
        if current is not None and current.backend is not None and current.backend.pid:
            self.pids.setdefault(str(current.model_version), current.backend.pid)
        for version, pid in self.pids.items():
            rss = tree_rss_mb(pid)
            if rss:  # None: gone; 0: a stopped process not yet reaped
                self.samples.setdefault(version, []).append((round(time.monotonic() - self.started_at, 1), rss))

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def capacity(url: str, body: Path, work: Path, seconds: int, steps: list[int]) -> tuple[float, list[dict]]:
    """Best req/s of wrk runs at increasing connections that had no error and no non-2xx answer."""
    from benchmarks.serving import WRK_SCRIPT, run_wrk

    script = work / "post.lua"
    bearer = 'wrk.headers["Authorization"] = "Bearer " .. os.getenv("MLCYCLE_API_TOKEN")\n'  # read from the env
    script.write_text(WRK_SCRIPT + (bearer if os.environ.get("MLCYCLE_API_TOKEN") else ""))
    runs = []
    for connections in steps:
        r = run_wrk(url, body, connections, seconds, script, 1)
        runs.append({"connections": connections, **r})
        print(f"capacity: {connections} connections: {r}", flush=True)
    clean = [r["req_per_s"] for r in runs if r["non_2xx"] == 0 and r["socket_errors"] == 0]
    if not clean:
        raise SystemExit(f"no clean capacity run (every run had errors): {runs}")
    return max(clean), runs


def run_generator(url: str, body: Path, out: Path, rate: float, seconds: float, max_in_flight: int) -> subprocess.Popen:
    """The load generator (this script with ``--load-generator``) in its own process and session."""
    return subprocess.Popen([sys.executable, __file__, "--load-generator", "--url", url, "--body", str(body),
                             "--out", str(out), "--rate", str(rate), "--seconds", str(seconds),
                             "--max-in-flight", str(max_in_flight)], start_new_session=True)


def client_capacity(url: str, body: Path, work: Path, seconds: int, offered: float, connections: int) -> dict:
    """Answers/s the soak's own client gets: ``offered`` req/s (well above capacity) with at most
    ``connections`` in flight, for ``seconds``. On a 2-core machine the client shares the CPU with the
    service and opens a connection per request, so this is lower than what wrk gets; the soak's rate is
    a share of the lower of the two, so that 70% really leaves 30% headroom for this client."""
    out = work / "capacity-records.jsonl"
    generator = run_generator(url, body, out, offered, seconds, connections)
    if generator.wait(timeout=seconds + 120) != 0:
        raise SystemExit("the capacity run of the load generator failed")
    records = [json.loads(line) for line in out.read_text().splitlines() if line]
    ok = sum(r["status"] == 200 for r in records)
    refused = sum(r["status"] not in (None, 200) for r in records)
    result = {"connections": connections, "offered_per_s": offered, "req_per_s": round(ok / seconds, 1),
              "non_2xx": refused}
    print(f"capacity: soak client, {connections} in flight: {result}", flush=True)
    return result


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(records: list[dict], rate: float, seconds: float) -> dict:
    ok = [r for r in records if r["status"] == 200]
    failed = [r for r in records if r["status"] != 200]
    latencies = [r["ms"] for r in ok if r["ms"] is not None]
    span = max((r["t"] for r in records), default=0) or seconds
    return {"target_rate": round(rate, 1), "achieved_rate": round(len(records) / (span + 1 / rate), 1),
            "answered_rate": round(len(ok) / seconds, 1), "sent": len(records), "ok": len(ok),
            "failed": len(failed), "p50_ms": percentile(latencies, 0.50), "p99_ms": percentile(latencies, 0.99),
            "versions": {str(v): sum(1 for r in ok if r["version"] == v) for v in sorted({r["version"] for r in ok})},
            "failures": dict(Counter(f"{r['status'] or 'no answer'}: {(r['error'] or '')[:100]}"
                                     for r in failed).most_common(5)),
            "first_failure_s": min((r["t"] for r in failed), default=None)}


def main() -> int:  # noqa: PLR0915 - one linear story, top to bottom
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the steady load")
    parser.add_argument("--load", type=float, default=0.7, help="share of the measured capacity to send")
    parser.add_argument("--capacity-seconds", type=int, default=10, help="seconds per wrk capacity run")
    parser.add_argument("--capacity-connections", default="4,8,16,32")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="RSS sampling interval")
    parser.add_argument("--max-in-flight", type=int, default=256, help="load generator bound")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home (models, logs, records)")
    parser.add_argument("--load-generator", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--url", "--body", "--out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_generator:
        load_generator(args)
        return 0
    if not 0 < args.load <= 1 or args.minutes <= 0:
        parser.error("--load must be in (0, 1] and --minutes > 0")

    from mlcycle.tasks.inference_reader import read_inference_log
    from mlcycle.tasks.rollout.endpoint import endpoint_url
    from mlcycle.tasks.rollout.orchestrate import rollout, teardown
    from mlcycle.tasks.storage import LocalStore
    from tests.support.env import free_port
    from tests.support.rollout import build_rollout_models, rollout_settings

    root = Path(tempfile.mkdtemp(prefix="mlcycle-bench-soak-"))
    work = root / "soak"
    work.mkdir()
    began = time.monotonic()
    models = build_rollout_models(Folders(root).mktemp("rollout-models"))
    settings = rollout_settings(models.home, endpoint_port=free_port())
    store = LocalStore(settings.store_root)
    print(f"two versions packaged in {time.monotonic() - began:.0f}s: v1 {models.v1.tag}, v2 {models.v2.tag}",
          flush=True)
    body = work / "request.json"
    body.write_text(json.dumps(models.request))
    url = f"{endpoint_url(settings)}/predict"
    seconds = args.minutes * 60
    results: dict = {"machine": f"{os.cpu_count()} cores", "minutes": args.minutes, "load": args.load}
    sampler = generator = None
    try:
        rollout(settings, store, bento_tag=models.v1.tag, target="process")
        cap, runs = capacity(url, body, work, args.capacity_seconds,
                             [int(c) for c in args.capacity_connections.split(",")])
        client = client_capacity(url, body, work, args.capacity_seconds, offered=2 * cap,
                                 connections=max(int(c) for c in args.capacity_connections.split(",")))
        wrk_cap, cap = cap, min(cap, client["req_per_s"])
        results["capacity"] = {"req_per_s": cap, "wrk_req_per_s": wrk_cap, "runs": runs, "client": client}
        rate = round(cap * args.load, 1)
        print(f"capacity {cap:.0f} req/s (wrk {wrk_cap:.0f}, soak client {client['req_per_s']:.0f}); soak at "
              f"{rate:.0f} req/s for {args.minutes:g} min", flush=True)
        sampler = RssSampler(store, args.sample_seconds)
        sampler.sample()
        sampler.start()
        out = work / "records.jsonl"
        generator = run_generator(url, body, out, rate, seconds, args.max_in_flight)
        time.sleep(seconds / 2)
        t = time.monotonic()
        record = rollout(settings, store, bento_tag=models.v2.tag, target="process")
        results["rollout"] = {"at_s": round(seconds / 2), "total_s": round(time.monotonic() - t, 1),
                              "switch_s": record.timings.switch_seconds, "drain_s": record.timings.drain_seconds}
        print(f"rollout v1 -> v2 under load: {results['rollout']}", flush=True)
        code = generator.wait(timeout=seconds + 180)
        generator = None
        if code != 0:
            raise SystemExit(f"the load generator exited with code {code}")
        sampler.sample()
        sampler.stop()
        teardown(settings)  # stops v2 gracefully: its inference log is flushed
        records = [json.loads(line) for line in out.read_text().splitlines() if line]
        results["soak"] = summarize(records, rate, seconds)
        logged = read_inference_log(store)
        logged_ids = set(logged["request_id"]) if len(logged) else set()
        expected = {r["request_id"] for r in records if r["status"] == 200}
        results["inference_log"] = {"expected": len(expected), "found": len(expected & logged_ids),
                                    "missing": sorted(expected - logged_ids)[:20]}
        results["rss_mb"] = {f"v{v}": {"start": s[0][1], "end": s[-1][1], "max": max(x for _, x in s),
                                       "samples": len(s)} for v, s in sampler.samples.items()}
    finally:
        try:
            if generator is not None and generator.poll() is None:
                generator.kill()
            if sampler is not None:
                sampler.stop()
        finally:
            teardown(settings)  # whatever happened above: nothing is left running

    s, log = results["soak"], results["inference_log"]
    print()
    print(f"soak: {args.minutes:g} min at {args.load:.0%} of capacity ({cap:.0f} req/s through the stable endpoint: "
          f"the lower of wrk's {wrk_cap:.0f} and the soak client's {results['capacity']['client']['req_per_s']:.0f}), "
          f"rollout v1 -> v2 at {results['rollout']['at_s']} s; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| target rate | achieved rate | sent | failed | p50 | p99 | answered by | inference log found / expected |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {s['target_rate']:.0f}/s | {s['achieved_rate']:.0f}/s | {s['sent']:,} | {s['failed']} | "
          f"{s['p50_ms']} ms | {s['p99_ms']} ms | "
          + ", ".join(f"v{v}: {n:,}" for v, n in s["versions"].items())
          + f" | {log['found']:,} / {log['expected']:,} |")
    print("| version | RSS start | RSS end | RSS max | samples |")
    print("|---|---|---|---|---|")
    for version, r in results["rss_mb"].items():
        print(f"| {version} | {r['start']} MB | {r['end']} MB | {r['max']} MB | {r['samples']} |")
    if s["failures"]:
        print(f"failed requests, from {s['first_failure_s']} s into the soak, by answer: {s['failures']}")
    if log["missing"]:
        print(f"missing from the inference log (first 20): {log['missing']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.keep:
        print(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    ok = s["failed"] == 0 and log["found"] == log["expected"]
    print("PASS: no failed request, every answered request logged" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
