"""``mlcycle train`` and ``mlcycle models ...``: training runs and the model registry from the shell.

Exit 0 on success (a challenger the gate refused is a successful run: it is registered, with its
reasons), 1 when the work failed (no data, a tampered artifact, no previous champion), 2 for bad usage
or configuration. :func:`outcome_lines` and :func:`metric_line` also describe the demo's training.
"""

from __future__ import annotations

import typer

from mlcycle.flows.cli.common import JSON_OPT, UsageFailure, check_dates, emit, prepare_flows, read_settings

commands = typer.Typer()
registry = typer.Typer(add_completion=False, no_args_is_help=True, help="The model registry: versions and aliases.")
commands.add_typer(registry, name="models")


def _store_and_name():
    from mlcycle.tasks.registry.versions import model_name
    from mlcycle.tasks.storage import open_store

    settings = read_settings()
    return open_store(settings), model_name(settings)


def _ref(value: str):
    if value in ("champion", "previous") or (value.isascii() and value.isdigit() and int(value) >= 1):
        return value
    raise UsageFailure(f"VERSION must be a version number (1, 2, ...), 'champion' or 'previous', got {value!r}")


def metric_line(metrics) -> str:
    """A version's test metrics on one line, its task's own (also the demo's champion line)."""

    def f(x):
        return "n/a" if x is None else f"{x:.4f}"
    if metrics.task == "binary":
        return (f"roc_auc {f(metrics.roc_auc)}  pr_auc {f(metrics.pr_auc)}  log_loss {f(metrics.log_loss)}  "
                f"brier {f(metrics.brier)}  f1 {f(metrics.f1)}  recall {f(metrics.recall)} "
                f"(threshold {metrics.threshold}, {metrics.rows} test rows)")
    values = "  ".join(f"{name} {f(value)}" for name, value in metrics.values().items())
    return f"{values} ({metrics.task}, {metrics.rows} test rows)"


def outcome_lines(outcome) -> str:
    """The human summary of a training run (also used by `mlcycle demo`)."""
    verdict = (f"PROMOTED to champion (previous: {f'v{outcome.previous}' if outcome.previous else 'none'})"
               if outcome.promoted else
               f"registered, NOT promoted (champion stays {f'v{outcome.champion}' if outcome.champion else 'none'})")
    lines = [f"{outcome.name} v{outcome.version} ({outcome.family}): {verdict}",
             f"window: {outcome.window}; test {outcome.test_window}",
             f"test:   {metric_line(outcome.metrics)}",
             f"gate:   {outcome.decision.summary}"]
    if outcome.note:
        lines.append(f"note:   {outcome.note}")
    lines.append(f"report: {outcome.report_uri}")
    return "\n".join(lines)


@commands.command()
def train(
    ctx: typer.Context,
    days: int = typer.Option(None, "--days", min=1, help="the last N validated days (default: training.window_days)"),
    end: str = typer.Option(None, "--end", help="last day of the window YYYY-MM-DD (default: latest validated)"),
    family: str = typer.Option(None, "--family", help="a model family of training.families"),
    n_iter: int = typer.Option(None, "--n-iter", min=1, help="search budget: candidates sampled"),
    seed: int = typer.Option(None, "--seed", help="random seed (default: training.seed)"),
    as_json: bool = JSON_OPT,
) -> None:
    """Train a challenger, gate it against the champion, register it, promote it if it passes."""
    from mlcycle.tasks.features import resolve_family

    settings = read_settings()
    check_dates(end)  # a malformed --end is a usage error (exit 2)
    resolve_family(settings, family)  # an unknown family is a usage error (ConfigError) before any flow starts
    prepare_flows(ctx, settings)
    from mlcycle.flows.train import train_flow

    outcome = train_flow(days=days, end=end, family=family, n_iter=n_iter, seed=seed)
    emit(as_json, outcome.model_dump(mode="json"), outcome_lines(outcome))


@registry.command("list")
def models_list(as_json: bool = JSON_OPT) -> None:
    """Every version, newest first, with its test metrics, gate verdict and aliases."""
    from mlcycle.tasks.registry.versions import list_versions

    store, name = _store_and_name()
    versions = list_versions(store, name)

    def line(v) -> str:
        if v.status != "ok":
            return f"v{v.version:<4} {v.status}  {' '.join(v.aliases)}"
        metrics = "  ".join(f"{k} {'n/a' if x is None else f'{x:.4f}'}" for k, x in v.metrics.items())
        return (f"v{v.version:<4} {v.created_at:%Y-%m-%d %H:%M}  {v.family:<24} {metrics}  gate {v.gate:<8} "
                f"{' '.join(v.aliases)}")

    emit(as_json, {"name": name, "versions": [v.model_dump(mode="json") for v in versions]},
         "\n".join(line(v) for v in versions) or f"model {name!r} has no versions yet (run `mlcycle train`)")


@registry.command("show")
def models_show(version: str = typer.Argument(..., help="a version number, 'champion' or 'previous'"),
                as_json: bool = JSON_OPT) -> None:
    """One version's metadata: params, metrics, gate decision with reasons, lineage (verified)."""
    from mlcycle.tasks.registry.versions import load_metadata

    store, name = _store_and_name()
    meta = load_metadata(store, name, _ref(version))
    lines = [f"{name} v{meta.version}  {meta.family} ({meta.estimator}, {meta.task})  "
             f"created {meta.created_at:%Y-%m-%d %H:%M:%S} UTC",
             f"params: {meta.params}",
             f"test:   {metric_line(meta.metrics)}",
             f"gate:   {meta.gate.summary}"]
    lines += [f"  {'pass' if r.passed else 'FAIL'}  {r.rule}: {r.detail}" for r in meta.gate.rules]
    if meta.calibration is not None:
        from mlcycle.tasks.registry.report import calibration_line

        lines.append(f"calib:  {calibration_line(meta.calibration)}")
    lin = meta.lineage
    lines += [f"data:   {lin.window}; {len(lin.partitions)} partitions "
              f"({lin.partitions[0].date}..{lin.partitions[-1].date}), {sum(p.rows for p in lin.partitions)} rows",
              f"code:   {lin.code_version}{' (uncommitted changes)' if lin.code_dirty else ''}; python {lin.python}; "
              + ", ".join(f"{k} {v}" for k, v in sorted(lin.libraries.items())),
              f"model:  {store.uri(meta.artifacts['model.joblib'].key)} sha256 {meta.model_sha256}"]
    emit(as_json, meta.model_dump(mode="json"), "\n".join(lines))


@registry.command("promote")
def models_promote(version: str = typer.Argument(..., help="the version number to make champion"),
                   reason: str = typer.Option("promoted by hand", "--reason", help="recorded in the alias history"),
                   as_json: bool = JSON_OPT) -> None:
    """Make VERSION the champion (the current champion becomes previous); its files are verified first."""
    from mlcycle.tasks.registry.aliases import promote

    if not (version.isascii() and version.isdigit() and int(version) >= 1):
        raise UsageFailure(f"VERSION must be a version number, got {version!r}")
    store, name = _store_and_name()
    pointer = promote(store, name, int(version), reason=reason)
    emit(as_json, pointer.model_dump(mode="json"), _pointer_line(name, pointer))


@registry.command("rollback")
def models_rollback(reason: str = typer.Option("rolled back by hand", "--reason", help="recorded in the history"),
                    as_json: bool = JSON_OPT) -> None:
    """Champion back to the previous one (the demoted champion becomes previous)."""
    from mlcycle.tasks.registry.aliases import rollback

    store, name = _store_and_name()
    pointer = rollback(store, name, reason=reason)
    emit(as_json, pointer.model_dump(mode="json"), _pointer_line(name, pointer))


def _pointer_line(name: str, pointer) -> str:
    previous = f"v{pointer.previous.version}" if pointer.previous else "none"
    return f"{name}: champion v{pointer.version}, previous {previous} ({pointer.reason})"
