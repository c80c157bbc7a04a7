"""Rollout: blue/green deployments of a packaged model behind one stable URL, with automatic rollback.

``orchestrate`` runs an attempt (resolve, build, start, ready, canary, switch, retire the previous one) on
a target of ``targets`` (a local ``bentoml serve`` process, or a container of an ``images`` image) and
switches the stable endpoint of ``endpoint`` (nginx); ``report`` renders an attempt for the Prefect UI.
The records are in tasks/records/rollout.py. Nothing is imported here.
"""
