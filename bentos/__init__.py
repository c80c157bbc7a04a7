"""The BentoML service and its runtime: what serving imports (no Prefect, no Great Expectations)."""
