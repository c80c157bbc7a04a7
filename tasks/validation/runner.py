"""Run the suite on one batch through a Great Expectations Checkpoint, and find its Data Docs page.

Contract of :func:`validate_frame`: whatever is *in* the frame (missing or extra columns, strings in a
numeric column, nulls, out-of-range values, zero rows), the answer is a ``ValidationReport``
(``tasks/records/data.py``) with failed expectations that name the column and the problem, never an
exception. An expectation that raised inside Great Expectations is reported as failed, with the
exception's message. Exceptions are left for broken installations and programming errors.

Each call builds its own ephemeral GX context (nothing on disk but the optional Data Docs folder, no
``gx/`` directory, analytics off; GX 1.24 ships no telemetry client and never reaches the network
here). Great Expectations is imported inside the functions: importing it costs 3-4 s, which flows that
only load this module must not pay.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from mlcycle.tasks.records.data import ValidationReport
from mlcycle.tasks.settings import DatasetSpec
from mlcycle.tasks.validation.phrasing import expectation_outcome, json_safe
from mlcycle.tasks.validation.suite import build_expectations, suite_hash

if TYPE_CHECKING:
    import pandas as pd

DATASOURCE_NAME = "mlcycle"
DOCS_SITE_NAME = "mlcycle_batches"
RESULT_FORMATS = ("BOOLEAN_ONLY", "BASIC", "SUMMARY", "COMPLETE")


def validate_frame(
    df: pd.DataFrame,
    spec: DatasetSpec,
    *,
    result_format: str = "SUMMARY",
    docs_dir: Path | None = None,
    batch_name: str = "batch",
) -> ValidationReport:
    """Validate one batch through a GX Checkpoint; build Data Docs into ``docs_dir`` if given.

    ``result_format`` is GX's: ``SUMMARY`` (pipelines: counts and up to 20 offending values),
    ``COMPLETE`` lists every offending row and is ~40x slower on a failing 1M-row batch. ``batch_name``
    (e.g. the partition date) is the run name shown in Data Docs and in the page's path. A
    ``docs_dir`` should hold one batch's site: its index.html lists only this run, because the
    context (and its store of results) lives only for this call.
    """
    if result_format not in RESULT_FORMATS:
        raise ValueError(f"result_format must be one of {RESULT_FORMATS}, got {result_format!r}")
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    expectations = build_expectations(spec)
    context = _ephemeral_context(docs_dir)
    asset = context.data_sources.add_pandas(DATASOURCE_NAME).add_dataframe_asset(spec.name)
    batch_definition = asset.add_batch_definition_whole_dataframe(batch_name)
    suite = context.suites.add(gx.ExpectationSuite(name=spec.name, expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{spec.name}_batch", data=batch_definition, suite=suite)
    )
    actions = []
    if docs_dir is not None:
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE_NAME]))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{spec.name}_checkpoint",
            validation_definitions=[definition],
            actions=actions,
            # The index "query" is a string listing every offending row index; nobody reads it here.
            result_format={"result_format": result_format, "return_unexpected_index_query": False},
        )
    )
    run_id = RunIdentifier(run_name=batch_name, run_time=dt.datetime.now(dt.UTC))
    try:
        checkpoint_result = checkpoint.run(batch_parameters={"dataframe": df}, run_id=run_id)
    finally:
        _forget_batch(context)
    ((result_key, validation_result),) = checkpoint_result.run_results.items()

    order = {e.id: i for i, e in enumerate(suite.expectations)}
    gx_results = sorted(validation_result.results, key=lambda r: order.get(r.expectation_config.id, 0))
    present = {str(c) for c in df.columns}
    outcomes = [expectation_outcome(r, present) for r in gx_results]
    failed = [o for o in outcomes if not o.success]

    docs_index = None
    if docs_dir is not None:
        docs_index = _docs_page(context, result_key, docs_dir)
    return ValidationReport(
        success=bool(validation_result.success),
        suite_name=spec.name,
        suite_hash=suite_hash(spec),
        evaluated=len(outcomes),
        failed=failed,
        results=outcomes,
        result_json=json_safe(validation_result.to_json_dict()),
        docs_dir=None if docs_dir is None else Path(docs_dir).resolve(),
        docs_index=docs_index,
    )


def _ephemeral_context(docs_dir: Path | None) -> Any:
    """An in-memory context; its only filesystem site (if any) writes to ``docs_dir``."""
    import great_expectations as gx

    sites = {}
    if docs_dir is not None:
        docs_dir = Path(docs_dir).resolve()
        docs_dir.mkdir(parents=True, exist_ok=True)
        sites[DOCS_SITE_NAME] = {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "show_how_to_buttons": False},
        }
    return gx.get_context(mode="ephemeral", project_config=_context_config(sites))


def _context_config(sites: dict) -> Any:
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    return DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )


def _forget_batch(context: Any) -> None:
    """Drop the batch's data source from the context once the run is over, so the frame can be freed.

    ``get_context`` makes the new context GX's process-wide "current" one, referenced until another
    context replaces it, and through its data source it holds this batch's frame: in a long-lived worker
    that would be one whole frame per process. Deleting the data source (the public
    ``context.data_sources.delete``) lets the frame go while the context stays current, so a run still
    going in another thread that asks the current context whether it is a cloud one still gets an answer.
    """
    context.data_sources.delete(DATASOURCE_NAME)


def _docs_page(context: Any, result_key: Any, docs_dir: Path) -> str:
    """The validation page's path relative to ``docs_dir`` (falls back to index.html)."""
    root = Path(docs_dir).resolve()
    for site in context.get_docs_sites_urls(resource_identifier=result_key, site_name=DOCS_SITE_NAME):
        url = site.get("site_url")
        if url:
            page = Path(unquote(urlparse(url).path))
            if page.is_file() and page.is_relative_to(root):
                return page.relative_to(root).as_posix()
    return "index.html"
