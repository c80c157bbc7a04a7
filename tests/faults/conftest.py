"""Fixtures of the faults suite; the fault injection itself is in tests/support/faults.py."""

from __future__ import annotations

import pytest

from tests.support.faults import CLEAN_DAY, Outage, flow_settings, store_fingerprint


@pytest.fixture
def outages(request):
    """Every :class:`Outage` made in a test is restored at its end, whatever happened."""
    made: list[Outage] = []

    def make(settings) -> Outage:
        server = request.getfixturevalue("s3_running") if settings.store == "minio" else None
        outage = Outage(settings, server)
        made.append(outage)
        return outage

    yield make
    for outage in made:
        outage.restore()


@pytest.fixture(scope="session")
def clean_ingest(prefect_harness, tmp_path_factory):
    """The store a fault-free ingest of CLEAN_DAY leaves (fingerprint): what every recovery must reach."""
    from mlcycle.flows.ingest import ingest_flow
    from mlcycle.tasks.storage import open_store

    with flow_settings(tmp_path_factory.mktemp("clean-ingest") / "home") as settings:
        assert ingest_flow(date=CLEAN_DAY, return_state=True).is_completed()
        return store_fingerprint(open_store(settings))
