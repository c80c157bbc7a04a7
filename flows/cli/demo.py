"""``mlcycle demo``: run the ``demo`` flow (flows/demo.py), then say where to look.

The flow's steps show as its log lines on stderr (and in the Prefect UI); the summary goes to stdout:
what was ingested, trained and rolled out, an example request, each monitor decision, the store, the UI
and what was left running (`make down` stops it).
"""

from __future__ import annotations

import logging
import os

import typer

from mlcycle.flows.cli.common import JSON_OPT, emit, prepare_flows, read_settings, run_with_progress
from mlcycle.flows.cli.models import metric_line, outcome_lines

commands = typer.Typer()


@commands.command()
def demo(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """The main job on embedded defaults: the whole life cycle, then where to look."""
    from mlcycle.tasks import stack
    from mlcycle.tasks.storage import open_store

    settings = read_settings()
    prepare_flows(ctx, settings, console=logging.INFO)  # the demo shows its steps as the flow's log lines
    from mlcycle.flows.demo import demo_flow
    from mlcycle.tasks.serving.client import curl_example, example_request

    summary = run_with_progress(demo_flow, show=not as_json)
    store = open_store(settings)
    info = {**summary.model_dump(mode="json"), "store": store.description,
            "prefect_ui": os.environ.get("PREFECT_API_URL", "").removesuffix("/api") or None,
            "background": [s.__dict__ for s in stack.services(settings)]}
    if not as_json:
        typer.echo("\n== 5/5 where to look", err=True)

    training, champion, serving = summary.training.training, summary.training.champion, summary.serving
    training_text = outcome_lines(training)
    if champion is not None:
        training_text += (f"\nchampion: {training.name} v{champion.version} ({champion.family}): "
                          f"{metric_line(champion.metrics)}")
    example = example_request(store, settings, training.name, int(serving.model_version))
    info["example"] = example
    lines = [
        f"ingest:    {summary.ingested}",
        f"training:  {training_text}",
        f"serving:   {serving.url}  (model v{serving.model_version}, bento {serving.bento})",
        f"           {curl_example(serving.url, example, bearer=settings.api_token is not None)}",
    ]
    for step in summary.monitoring:
        lines.append(f"monitor:   {step.label}: {step.drift} -> trigger {step.trigger}")
    lines.append(f"store:     {store.description}  (raw/ validated/ quarantine/ validation/ models/ "
                 "inference/ reports/monitoring/ deployments/)")
    if info["prefect_ui"]:
        lines.append(f"Prefect UI: {info['prefect_ui']}  (deployments, flow runs, artifacts: validation, gate "
                     "decision, drift report)")
    if info["background"]:
        lines.append("left running: " + ", ".join(f"{s['name']} (pid {s['pid']})" for s in info["background"])
                     + "; stop them with `make down`")
    emit(as_json, info, "\n".join(lines))
