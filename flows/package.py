"""The packaging flow: the champion (or a given version) becomes a bento that has proven it serves.

``package`` (deployment ``package/<project>-on-demand``; also run after every promotion)::

    import-model ─▶ build-bento ─▶ test-serve ─▶ package-report
    (registry,      (`bentoml build`,  (`bentoml serve` on a free port, /readyz, canary rows of the
     sha256-         pinned serving     test window equal to the in-process pipeline within
     verified, into  requirements,      serving.canary_tolerance, single-row latency within
     the BentoML     tag and labels     serving.latency_budget_ms; any failure fails the flow with
     model store)    carry the version) its reason, so nothing downstream -- rollout -- runs)

Tasks pass small typed records (``PackagedModel``, ``BentoRef``, ``ServingCheck``), never models.
"""

from __future__ import annotations

import re

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mlcycle.tasks.records.serving import BentoRef, PackagedModel, PackageOutcome, ServingCheck
from mlcycle.tasks.retry import retrying
from mlcycle.tasks.serving.client import verify_serving_task
from mlcycle.tasks.serving.packaging import build_bento_task, import_model_task
from mlcycle.tasks.settings import get_settings


@flow(name="package", log_prints=True)
def package_flow(version: int | None = None) -> PackageOutcome:
    """Package a registry version (default: the champion) as a bento, and test-serve it.

    Args:
        version: the registry version to package; defaults to the current champion.
    """
    settings = get_settings()
    model = retrying(import_model_task, settings.retries.packaging)(settings, version or "champion")
    bento = build_bento_task(settings, model)
    check = verify_serving_task(settings, bento)
    outcome = PackageOutcome(model_name=model.name, model_version=model.version, model_sha256=model.model_sha256,
                             bento_model_tag=model.tag, bento_tag=bento.tag, bento_path=bento.path,
                             built=bento.built, check=check)
    package_report_task(model, bento, check)
    get_run_logger().info("%s v%d packaged as %s; test-serving passed (canaries max |diff| %.2g, p95 %.1f ms)",
                          model.name, model.version, bento.tag,
                          max(check.canary.max_abs_diff_predict, check.canary.max_abs_diff_batch), check.latency.p95_ms)
    return outcome


@task(name="package-report", cache_policy=NO_CACHE)
def package_report_task(model: PackagedModel, bento: BentoRef, check: ServingCheck) -> None:
    """The bento and its test-serving evidence, in the Prefect UI."""
    from prefect.artifacts import create_markdown_artifact

    c, lat = check.canary, check.latency
    markdown = "\n".join([
        f"# {model.name} v{model.version} packaged: `{bento.tag}`", "",
        "| what | value |", "|---|---|",
        f"| BentoML model | `{model.tag}` ({'imported' if model.imported else 'already in the store'}) |",
        f"| model sha256 | `{model.model_sha256}` |",
        f"| bento | `{bento.tag}` ({'built' if bento.built else 'reused'}, {bento.seconds:.1f} s) |",
        f"| ready after | {check.ready_seconds:.1f} s |",
        f"| canaries | {c.rows} rows of the test window {c.test_window}: max abs diff /predict "
        f"{c.max_abs_diff_predict:.2g}, "
        f"/predict_batch {c.max_abs_diff_batch:.2g} (tolerance {c.tolerance:g}), labels agree: {c.labels_agree} |",
        f"| latency | single-row /predict p50 {lat.p50_ms:.1f} ms, p95 {lat.p95_ms:.1f} ms "
        f"(budget {lat.budget_ms:.0f} ms, {lat.requests} requests) |",
    ])
    slug = re.sub(r"[^a-z0-9-]+", "-", model.name.lower()).strip("-")
    create_markdown_artifact(key=f"{slug}-package", markdown=markdown,
                             description=f"{model.name} v{model.version} -> {bento.tag}: test-serving passed")
