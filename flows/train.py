"""The training flow: train a challenger, gate it against the champion, register it, maybe promote it.

``train`` (deployment ``train/<project>-on-demand``, no schedule: run from the UI, from CI, and by the monitoring
flow)::

    select-window ─▶ train-challenger ─▶ score-champion ─▶ gate ─▶ register-model ─▶ promote-model?
    (validated      (load, time split,   (same test rows,   (rules    (new version,     (only if the
     partitions)     search, test         paired bootstrap,  with      never reused)     gate passed and
                     scores, profile)     ROC/calibration)   reasons)                    the champion is
                                                                                         unchanged)
                                                           ─▶ training-report (Prefect artifacts)

Tasks pass partition references, staged object keys and small typed records (``TrainingWindow``,
``Candidate``, ``Comparison``, ``GateDecision``, ``ModelVersion``), never DataFrames or models. Every
version is registered, promoted or not: a refused challenger is evidence too.
"""

from __future__ import annotations

import re

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from mlcycle.tasks.evaluation.gate import gate_task
from mlcycle.tasks.records.evaluation import GateDecision
from mlcycle.tasks.records.registry import AliasPointer, EvaluationReport, ModelVersion
from mlcycle.tasks.records.training import TrainingOutcome
from mlcycle.tasks.registry.aliases import ChampionChanged, promote_task
from mlcycle.tasks.registry.registration import register_task
from mlcycle.tasks.registry.report import render_report
from mlcycle.tasks.registry.versions import load_evaluation, read_alias
from mlcycle.tasks.retry import retrying
from mlcycle.tasks.settings import get_settings
from mlcycle.tasks.sources import parse_date
from mlcycle.tasks.storage import browse_uri, open_store
from mlcycle.tasks.training.challenger import compare_task, select_window_task, train_challenger_task


@task(name="request-rollout", cache_policy=NO_CACHE)
def request_rollout_task(settings, name: str, version: int) -> str | None:
    """Chain promotion -> package -> rollout: start the rollout deployment for the new champion.

    Chaining lives in flow code (not an automation) so it also works where no automation service runs
    (ephemeral servers, tests); the run is not awaited. Without a deployed rollout, nothing starts.
    """
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(settings.rollout.deployment)
        except ObjectNotFound:
            get_run_logger().info("no %s deployment on this server: roll out with `mlcycle rollout`",
                                  settings.rollout.deployment)
            return None
    run = run_deployment(settings.rollout.deployment, parameters={"version": version}, timeout=0,
                         idempotency_key=f"rollout-{name}-v{version}", tags=["mlcycle", "after-promotion"])
    get_run_logger().info("promotion of %s v%d: started rollout run %s", name, version, run.name)
    return str(run.id)


@flow(name="train", log_prints=True)
def train_flow(days: int | None = None, end: str | None = None, family: str | None = None,
               n_iter: int | None = None, seed: int | None = None, reason: str | None = None) -> TrainingOutcome:
    """Train, evaluate and gate a challenger on the last validated days; register it; promote it if it wins.

    Args:
        days: how many of the latest validated days to use; defaults to ``training.window_days``.
        end: last date of the window (YYYY-MM-DD); defaults to the latest validated date.
        family: a model family of ``training.families``; defaults to ``training.family``.
        n_iter: candidates the hyper-parameter search samples; defaults to ``training.n_iter``.
        seed: defaults to ``training.seed``; the same seed and data give the same model.
        reason: why this training was started (the monitoring flow passes its trigger's reason); logged.
    """
    settings = get_settings()
    if reason:
        get_run_logger().info("training requested: %s", reason)
    run_id = str(flow_run.id) if flow_run.id else None

    window = retrying(select_window_task, settings.retries.training)(
        settings, days or settings.training.window_days, parse_date(end) if end else None)
    candidate = retrying(train_challenger_task, settings.retries.training)(settings, window, family, n_iter, seed)
    comparison = retrying(compare_task, settings.retries.training)(settings, candidate)
    decision = gate_task(settings.gate, candidate, comparison)
    version = retrying(register_task, settings.retries.training)(settings, candidate, comparison, decision, run_id)

    pointer, note = None, ""
    if decision.promote:
        try:
            pointer = retrying(promote_task, settings.retries.training)(
                settings, version.name, version.version, f"gate passed in training run {run_id}",
                decision.champion_version)
        except ChampionChanged as exc:
            note = str(exc)
    outcome = _outcome(version, pointer, decision, note, candidate, settings)
    report_task(settings, version, outcome)
    if pointer is not None and settings.rollout.after_promotion:
        request_rollout_task(settings, version.name, version.version)
    get_run_logger().info("%s v%d: %s", version.name, version.version, decision.summary)
    return outcome


def _outcome(version: ModelVersion, pointer: AliasPointer | None, decision: GateDecision, note: str, candidate,
             settings) -> TrainingOutcome:
    store = open_store(settings)
    current = pointer or read_alias(store, version.name)
    test = candidate.split.test
    return TrainingOutcome(
        name=version.name, version=version.version, family=version.family, promoted=pointer is not None,
        champion=current.version if current else None,
        previous=current.previous.version if current and current.previous else None,
        decision=decision, metrics=version.metrics, window=candidate.window.requested,
        test_window=f"{test.first_day}..{test.last_day}", note=note,
        report_uri=browse_uri(store, version.artifacts["report.md"].key),
    )


@task(name="training-report", cache_policy=NO_CACHE)
def report_task(settings, version: ModelVersion, outcome: TrainingOutcome) -> None:
    """The decision (markdown, plots linked) and the challenger-vs-champion table, in the Prefect UI."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    store = open_store(settings)
    report: EvaluationReport = load_evaluation(store, version.name, version.version)
    links = {rel: browse_uri(store, version.artifacts[rel].key) for rel in report.plots}
    slug = re.sub(r"[^a-z0-9-]+", "-", version.name.lower()).strip("-")
    markdown = render_report(report, links)
    if outcome.note:
        markdown += f"\n**Note**: {outcome.note}\n"
    create_markdown_artifact(key=f"{slug}-gate-decision", markdown=markdown,
                             description=f"{version.name} v{version.version}: {outcome.decision.summary[:200]}")
    create_table_artifact(key=f"{slug}-comparison", table=report.comparison,
                          description=f"{version.name} v{version.version} vs champion "
                                      f"{report.champion_version or '(none)'}, per metric and slice")
