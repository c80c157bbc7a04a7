"""Benchmark: the mlcycle BentoML service vs a minimal Starlette app serving the same pipeline, same run.

One champion is trained on simulated validated days with the configured family (``mlcycle.yaml``:
hist_gradient_boosting, 200 boosting iterations; a small search budget), registered, promoted and
packaged exactly as ``mlcycle package`` does (BentoML model store + ``bentoml build``). Then, in the same
run, against 127.0.0.1 with wrk (Debian package), ``--connections`` connections, 2 threads, fixed durations:

* **(a) mlcycle service**: ``bentoml serve`` of the bento (``--workers`` processes): typed validation,
  adaptive batching, inference log written to the local store;
* **(b) plain app**: a minimal Starlette app on uvicorn (1 process) that loads the same registry
  joblib file, parses the JSON, builds a DataFrame and calls ``predict_proba`` per request;
* **(c) batch**: the mlcycle service's ``/predict_batch`` with 1,000-row column-oriented requests;
  **(d)** the plain app with the same 1,000 rows as records, for reference.
* with ``--bentoml-batching``, **(e)/(f)**: the same model behind BentoML's own adaptive batching
  (``@bentoml.api(batchable=True, max_batch_size=1000, max_latency_ms=...)``, 20 ms and 5,000 ms) in
  place of mlcycle's scorer: the design alternative the service's batching was measured against.

Every request is a real row of the model's test window. Prints req/s, rows/s, p50, p99, non-2xx and
socket errors for each; ``--json`` writes them too. Nothing is left running: both servers are stopped
by pid at the end (also on Ctrl-C).

    .venv/bin/python benchmarks/serving.py [--duration 15] [--connections 32] [--workers 1]
                                           [--family hist_gradient_boosting] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import offline_environment, simulated_champion  # noqa: E402 - after the path insert

offline_environment()

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("MLCYCLE_API_TOKEN")  -- read here, never written into the script or argv
if token and token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end
local f = io.open(os.getenv("BODY_FILE"), "r")
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


# --------------------------------------------------------------------------------------------------
# the champion, packaged
# --------------------------------------------------------------------------------------------------


def prepare(home: Path, family: str, workers: int):
    """Train + register + promote a champion on 10 simulated days, then import it and build its bento."""
    from mlcycle.tasks.registry.aliases import promote
    from mlcycle.tasks.serving.packaging import build_bento, import_model
    from mlcycle.tasks.settings import load_settings

    settings = load_settings(home=home, training={"family": family, "n_iter": 2, "n_jobs": 1},
                             serving={"workers": workers})
    store, version = simulated_champion(settings)
    promote(store, version.name, version.version, reason="serving benchmark")
    model = import_model(store, settings)
    return settings, store, model, build_bento(settings, model)


def request_bodies(settings, store, model, work: Path) -> tuple[Path, Path, Path]:
    """(single-row /predict body, 1,000-row /predict_batch body, 1,000-row records body) from the test window."""
    from mlcycle.tasks.serving.client import canary_rows, columns_payload, records_payload

    frame, _ = canary_rows(store, settings, model.name, model.version, 1000)
    features = json.loads((Path(model.path) / "served_model.json").read_text())["features"]
    records = records_payload(frame, settings.dataset, features)
    one, batch, many = work / "one.json", work / "batch.json", work / "records.json"
    one.write_text(json.dumps({"records": records[:1]}))
    batch.write_text(json.dumps({"columns": columns_payload(records, features, settings.dataset.id_column)}))
    many.write_text(json.dumps({"records": records}))
    return one, batch, many


# --------------------------------------------------------------------------------------------------
# (b) the plain app
# --------------------------------------------------------------------------------------------------


def plain_app(home: Path):
    """A minimal Starlette app: JSON -> DataFrame -> predict_proba, per request, the same verified joblib."""
    import pandas as pd
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from threadpoolctl import threadpool_limits

    from mlcycle.tasks.registry.versions import load_model, model_name
    from mlcycle.tasks.settings import load_settings
    from mlcycle.tasks.storage import LocalStore

    settings = load_settings(home=home)
    loaded = load_model(LocalStore(settings.store_root), model_name(settings), "champion")
    features, threshold = [c.name for c in loaded.metadata.features], loaded.metadata.threshold
    threadpool_limits(settings.serving.model_threads)  # the same OpenMP/BLAS threads as the service

    async def predict(request):
        records = (await request.json())["records"]
        frame = pd.DataFrame.from_records(records, columns=features)
        scores = loaded.pipeline.predict_proba(frame)[:, 1]
        return JSONResponse({"model_version": loaded.version, "predictions": [
            {"probability": float(p), "label": int(p >= threshold)} for p in scores]})

    return Starlette(routes=[Route("/predict", predict, methods=["POST"])])


def serve_plain(home: Path, port: int) -> None:
    import uvicorn

    uvicorn.run(plain_app(home), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start_plain(home: Path, port: int, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, __file__, "--plain-app", "--home", str(home), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_http(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with code {process.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


# --------------------------------------------------------------------------------------------------
# (e)/(f) the same model behind BentoML's own adaptive batching (generated into the work folder)
# --------------------------------------------------------------------------------------------------

BENTOML_BATCHING_SERVICE = """
import os, sys, uuid
sys.path.insert(0, {root!r})
from pathlib import Path
import bentoml, pandas as pd
from mlcycle.bentos.runtime import load_pipeline, serving_context
from mlcycle.tasks.predictions import Prediction
from mlcycle.tasks.schema import build_schema

MODEL = bentoml.models.BentoModel({model_tag!r})
SERVED, SETTINGS = serving_context(MODEL, Path({config!r}))
SCHEMA = build_schema(SERVED.dataset, SERVED.features, max_batch_rows=1000)
Record = SCHEMA.record


class Row(Prediction):
    request_id: str  # per batch: BentoML's batched call cannot see which request a row came from
    model_version: int


@bentoml.service(name="bentoml-batching", workers=1, logging={{"access": {{"enabled": False}}}},
                 tracing={{"excluded_urls": ["/predict"]}})
class BentoBatching:
    model = MODEL

    def __init__(self):
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
        self.pipeline = load_pipeline(Path(self.model.path_of("model.joblib")), SERVED.model_sha256)

    @bentoml.api(route="/predict", batchable=True, max_batch_size=1000, max_latency_ms={latency})
    def predict(self, records: list[Record]) -> list[Row]:
        frame = pd.DataFrame(SCHEMA.records_to_columns(records), columns=SERVED.features)
        scores = self.pipeline.predict_proba(frame)[:, 1]
        request_id = uuid.uuid4().hex
        return [Row(probability=p, label=int(p >= SERVED.threshold), request_id=request_id,
                    model_version=SERVED.version) for p in scores.tolist()]
"""


def start_bentoml_batching(settings, model, work: Path, latency: int, port: int):
    from mlcycle.tasks.serving.packaging import bentoml_env
    from mlcycle.tasks.serving.process import ServeProcess

    folder = work / f"bentoml-batching-{latency}"
    folder.mkdir()
    (folder / "bentoml_batching.py").write_text(BENTOML_BATCHING_SERVICE.format(
        root=str(ROOT), model_tag=model.tag, config=str(ROOT / "mlcycle.yaml"), latency=latency))
    log = folder / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "bentoml_batching:BentoBatching",
                                    "--host", "127.0.0.1", "--port", str(port), "--working-dir", str(folder)],
                                   stdout=out, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True,
                                   env=bentoml_env(settings, MLCYCLE_CONFIG=str(ROOT / "mlcycle.yaml")))
    return ServeProcess(bento_tag=f"bentoml-batching-{latency}", host="127.0.0.1", port=port, log_path=log,
                        process=process)


# --------------------------------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------------------------------


def run_wrk(url: str, body: Path, connections: int, duration: int, script: Path, rows: int) -> dict:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    result = subprocess.run([wrk, "-t2", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(script),
                             url], env={**os.environ, "BODY_FILE": str(body)}, capture_output=True, text=True,
                            timeout=duration + 60)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result for {url}: {result.stdout[-500:]} {result.stderr[-500:]}")
    requests, micros, non2xx, *errors, p50, p99 = (int(x) for x in line.split()[1:])
    seconds = micros / 1e6
    return {"requests": requests, "seconds": round(seconds, 2), "req_per_s": round(requests / seconds, 1),
            "rows_per_s": round(requests * rows / seconds, 1), "p50_ms": round(p50 / 1000, 1),
            "p99_ms": round(p99 / 1000, 1), "non_2xx": non2xx, "socket_errors": sum(errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per measured wrk run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unmeasured load before each run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="service worker processes")
    parser.add_argument("--family", default="hist_gradient_boosting")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--bentoml-batching", action="store_true",
                        help="also measure BentoML's own batchable API (max_latency_ms 20 and 5000)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home (model, bento, logs)")
    parser.add_argument("--plain-app", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_app:
        serve_plain(args.home, args.port)
        return

    import httpx

    from mlcycle.tasks.serving.process import free_port, start_serving, wait_ready

    home = Path(tempfile.mkdtemp(prefix="mlcycle-bench-serving-"))
    work = home / "bench"
    work.mkdir()
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    started = time.monotonic()
    settings, store, model, bento = prepare(home, args.family, args.workers)
    one, batch, many = request_bodies(settings, store, model, work)
    print(f"champion {model.name} v{model.version} ({args.family}) packaged as {bento.tag} "
          f"in {time.monotonic() - started:.0f}s", flush=True)

    service = plain = None
    results: dict[str, dict] = {}
    try:
        service = start_serving(settings, bento.tag, log_path=work / "service.log")
        wait_ready(service, settings.serving.readiness_timeout_seconds)
        plain_port = free_port()
        plain = start_plain(home, plain_port, work / "plain.log")
        plain_url = f"http://127.0.0.1:{plain_port}"
        wait_http(plain_url, plain)
        runs = [("(a) mlcycle service /predict, 1 row", f"{service.url}/predict", one, 1),
                ("(b) plain Starlette app /predict, 1 row", f"{plain_url}/predict", one, 1),
                ("(c) mlcycle service /predict_batch, 1,000 rows", f"{service.url}/predict_batch", batch, 1000),
                ("(d) plain Starlette app /predict, 1,000 rows", f"{plain_url}/predict", many, 1000)]
        for name, url, body, rows in runs:
            if args.warmup:
                run_wrk(url, body, args.connections, args.warmup, script, rows)
            results[name] = run_wrk(url, body, args.connections, args.duration, script, rows)
            print(f"{name}: {results[name]}", flush=True)
        if service is not None:
            scorer = httpx.get(f"{service.url}/metadata", timeout=10).json()["batching"]
            print(f"mlcycle scorer (answering worker): {scorer}", flush=True)
            service.stop()
            service = None
        if plain is not None:
            plain.terminate()
            plain.wait(15)
            plain = None
        for latency in (20, 5000) if args.bentoml_batching else ():
            alt = start_bentoml_batching(settings, model, work, latency, free_port())
            try:
                wait_ready(alt, settings.serving.readiness_timeout_seconds)
                name = f"({'e' if latency == 20 else 'f'}) BentoML batchable=True, max_latency_ms={latency}, 1 row"
                if args.warmup:
                    run_wrk(f"{alt.url}/predict", one, args.connections, args.warmup, script, 1)
                results[name] = run_wrk(f"{alt.url}/predict", one, args.connections, args.duration, script, 1)
                print(f"{name}: {results[name]}", flush=True)
            finally:
                alt.stop()
    finally:
        if service is not None:
            service.stop()
        if plain is not None and plain.poll() is None:
            plain.terminate()
            plain.wait(15)
    from mlcycle.tasks.inference_reader import read_inference_log

    logged = len(read_inference_log(store))
    a, b = results["(a) mlcycle service /predict, 1 row"], results["(b) plain Starlette app /predict, 1 row"]
    print()
    print(f"wrk -t2 -c{args.connections} -d{args.duration}s, {args.workers} service worker(s), "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print("| server | req/s | rows/s | p50 | p99 | non-2xx | socket errors |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['req_per_s']:,.0f} | {r['rows_per_s']:,.0f} | {r['p50_ms']:.1f} ms "
              f"| {r['p99_ms']:.1f} ms | {r['non_2xx']} | {r['socket_errors']} |")
    print(f"\nmlcycle service single-row throughput = {a['req_per_s'] / b['req_per_s']:.0%} of the plain app; "
          f"inference log holds {logged:,} rows")
    if args.json:
        args.json.write_text(json.dumps({"connections": args.connections, "duration": args.duration,
                                         "workers": args.workers, "family": args.family, "bento": bento.tag,
                                         "logged_rows": logged, "results": results}, indent=2))
    if args.keep:
        print(f"kept {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
