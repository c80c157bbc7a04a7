"""A deployment attempt for people: the markdown table the rollout flow publishes as a Prefect artifact."""

from __future__ import annotations

from mlcycle.tasks.records.rollout import Deployment


def render_deployment(record: Deployment) -> str:
    """The attempt as markdown (the flow's artifact)."""
    t = record.timings
    rows = [("status", record.status if record.status != "failed" else f"FAILED at {record.failed_stage}"),
            ("model", f"{record.model_name} v{record.model_version}"), ("target", record.target),
            ("bento", f"`{record.bento_tag}`"), ("image", f"`{record.image}`" if record.image else "-"),
            ("stable endpoint", record.endpoint_url), ("backend", record.backend.url if record.backend else "-"),
            ("previous deployment", record.previous_id or "-")]
    if record.canary:
        c = record.canary
        rows.append(("canary", f"{c.rows} rows, max abs diff {c.max_abs_diff:.2g} (tolerance {c.tolerance:g}); "
                               f"p95 {c.latency_p95_ms:.1f} ms (budget {c.latency_budget_ms:.0f} ms)"))
    rows += [(name.replace("_", " "), f"{value:.2f} s") for name, value in t.model_dump().items() if value is not None]
    if record.reason:
        rows.append(("reason", record.reason))
    rows += [("note", n) for n in record.notes]
    table = "\n".join(f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows)
    return f"# {record.kind} {record.id}: {record.status}\n\n| what | value |\n|---|---|\n{table}\n"


# --------------------------------------------------------------------------------------------------
# Prefect task: a thin wrapper (flows/rollout.py)
# --------------------------------------------------------------------------------------------------

from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402


@task(name="deployment-report", cache_policy=NO_CACHE)
def deployment_report_task(record: Deployment) -> None:
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(key="deployment", markdown=render_deployment(record),
                             description=record.summary()[:250])
