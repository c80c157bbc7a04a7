"""Benchmark: what a rollout costs. Image build (cold and with the base image cached), image size,
start-to-ready of a candidate (container and process), and the switch of the stable endpoint under traffic.

Two model versions are trained and packaged exactly as ``mlcycle package`` does (the helpers of
tests/support/rollout.py), in a temporary home. Then, with the real Docker engine:

* **base image, cold**: infra/base-image.sh (debootstrap + docker import) under a fresh tag;
* **serving image, base cached**: the v1 bento on that base, nothing else cached (the builder's cache
  is keyed by the parent image, which is new): wheelhouse on the host + ``docker build``;
* **serving image, v2**: the second bento on the same base: the virtualenv layers are cached;
* **start-to-ready**: ``--starts`` candidates per target, from "start" to ``/readyz`` answering 200;
* **switch**: ``--switches`` full rollouts per target, alternating v1/v2, with a client sending
  ``/predict`` through the stable URL all along: reload -> new backend answering, drain, failed requests.

Everything it starts is stopped, and the images and base tag it built are removed (``--keep`` keeps
them). Figures go to stdout (and ``--json FILE``); benchmarks/README.md has the latest run.

    .venv/bin/python benchmarks/rollout.py [--starts 3] [--switches 4] [--targets docker,process]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import Folders, offline_environment  # noqa: E402 - after the path insert

offline_environment()




def start_to_ready(settings, target_name: str, record_like, n: int) -> list[float]:
    """Start ``n`` candidates of ``record_like`` one after the other; seconds from start to /readyz 200."""
    from mlcycle.tasks.rollout.targets import make_target
    from mlcycle.tasks.serving.process import free_port

    target = make_target(settings, target_name)
    seconds = []
    for i in range(n):
        record = record_like.model_copy(update={"id": f"bench{i}{target_name[:1]}"}, deep=True)
        started = time.monotonic()
        backend = target.start(record, free_port())
        try:
            target.wait_ready(backend, 300)
            seconds.append(round(time.monotonic() - started, 2))
        finally:
            target.stop(backend, 10)
    return seconds


def switches(settings, store, models, target_name: str, n: int) -> list[dict]:
    """``n`` rollouts alternating v2/v1 under continuous traffic through the stable URL."""
    from mlcycle.tasks.rollout.endpoint import endpoint_url
    from mlcycle.tasks.rollout.orchestrate import rollout
    from tests.support.rollout import traffic

    rollout(settings, store, bento_tag=models.v1.tag, target=target_name)
    results = []
    for i in range(n):
        bento, old, new = (models.v2, 1, 2) if i % 2 == 0 else (models.v1, 2, 1)
        with traffic(endpoint_url(settings), models.request) as client:
            time.sleep(1.0)
            record = rollout(settings, store, bento_tag=bento.tag, target=target_name)
            time.sleep(1.0)
        results.append({"switch_s": record.timings.switch_seconds, "drain_s": record.timings.drain_seconds,
                        "start_to_ready_s": record.timings.start_to_ready_seconds,
                        "total_s": record.timings.total_seconds, "requests": len(client.versions),
                        "failed": len(client.failures),
                        "switched": _switched(client, old, new, record.live_since.timestamp())})
    return results


def _switched(client, old, new, cut: float) -> bool:
    """Answers started with ``old`` and every request sent after the switch was answered by ``new``."""
    after = [v for v, t in zip(client.versions, client.sent_at, strict=True) if t >= cut]
    return client.versions[:1] == [old] and bool(after) and set(after) == {new}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--switches", type=int, default=4)
    parser.add_argument("--targets", default="docker,process")
    parser.add_argument("--keep", action="store_true", help="keep the images and the base tag it built")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    targets = [t for t in args.targets.split(",") if t]

    from docker.errors import ImageNotFound

    from mlcycle.tasks.records.rollout import Deployment
    from mlcycle.tasks.rollout import images
    from mlcycle.tasks.rollout.orchestrate import teardown
    from mlcycle.tasks.storage import LocalStore
    from tests.support.env import free_port
    from tests.support.rollout import build_rollout_models, rollout_settings

    root = Path(tempfile.mkdtemp(prefix="mlcycle-bench-rollout-"))
    stamp = time.strftime("%Y%m%d%H%M%S")
    began = time.time()
    results: dict = {"machine": f"{os.cpu_count()} cores", "storage_driver": None}
    models = build_rollout_models(Folders(root).mktemp("rollout-models"))
    settings = rollout_settings(models.home, endpoint_port=free_port(), wheelhouse_dir=root / "wheelhouse",
                         base_image=f"local/python-base:bench-{stamp}", image_name="mlcycle-bench")
    store = LocalStore(settings.store_root)
    try:
        images.ensure_engine(settings)
        with contextlib.closing(images.docker_client()) as client:
            results["storage_driver"] = client.info().get("Driver")
        if "docker" in targets:
            base = images.ensure_base_image(settings)
            v1 = images.build_serving_image(settings, models.v1.tag)
            v2 = images.build_serving_image(settings, models.v2.tag)
            results["image"] = {
                "base_cold_s": base.seconds, "base_mb": round(images.image_info(base.tag)["Size"] / 1e6),
                "wheelhouse_s": v1.wheelhouse_seconds, "v1_build_base_cached_s": v1.build_seconds,
                "cold_total_s": round(base.seconds + v1.wheelhouse_seconds + v1.build_seconds, 1),
                "v2_build_deps_cached_s": v2.build_seconds, "size_mb": round(v1.size_bytes / 1e6)}
            print("image:", json.dumps(results["image"]), flush=True)
        like = Deployment(id="bench", target="process", bento_tag=models.v1.tag, model_name=models.v1.model_name,
                          model_version="1", endpoint_url="-", requested_at=dt.datetime.now(dt.UTC))
        for target in targets:
            sample = like.model_copy(update={"target": target,
                                             "image": images.image_tag(settings, models.v1.tag) if target == "docker"
                                             else None})
            ready = start_to_ready(settings, target, sample, args.starts)
            runs = switches(settings, store, models, target, args.switches)
            teardown(settings)
            results[target] = {
                "start_to_ready_s": ready, "start_to_ready_median_s": statistics.median(ready),
                "switch_median_s": statistics.median(r["switch_s"] for r in runs),
                "switch_max_s": max(r["switch_s"] for r in runs),
                "drain_median_s": statistics.median(r["drain_s"] for r in runs),
                "rollout_total_median_s": statistics.median(r["total_s"] for r in runs),
                "requests_during_rollouts": sum(r["requests"] for r in runs),
                "failed_requests": sum(r["failed"] for r in runs),
                "all_switched": all(r["switched"] for r in runs), "runs": runs}
            print(f"{target}:", json.dumps({k: v for k, v in results[target].items() if k != "runs"}), flush=True)
    finally:
        teardown(settings)
        if not args.keep:
            with contextlib.closing(images.docker_client()) as client:
                for image in client.images.list(name="mlcycle-bench"):
                    for tag in image.tags:
                        client.images.remove(tag, force=True)
                with contextlib.suppress(ImageNotFound):
                    client.images.remove(settings.rollout.base_image, force=True)
                for image in client.images.list(filters={"dangling": True}):  # this run's build stages only
                    if image.attrs.get("Created", "") >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(began)):
                        with contextlib.suppress(Exception):
                            client.images.remove(image.id, force=True)
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
