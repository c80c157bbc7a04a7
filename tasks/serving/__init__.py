"""Packaging and test-serving: a registry version becomes a bento that has proven itself.

The path (plain functions; ``flows/package.py`` wires their ``@task`` wrappers)::

    packaging.import_model   registry version (sha256-verified) -> a BentoML model
    packaging.build_bento    `bentoml build` of the serving bento (pinned requirements, no Prefect)
    process.start_serving    `bentoml serve <bento>` on a free port, in its own process group
    process.wait_ready       until /readyz answers 200 (or the process dies, or the time is up)
    client.check_running     canaries of the model's test window + the latency budget, against a server
    client.verify_serving    test-serving: start + wait + check + stop

``client.check_running`` is also the rollout's canary check (tasks/rollout/orchestrate.py). The service
(bentos/) never imports this package. Nothing is imported here.
"""
