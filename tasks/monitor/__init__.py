"""Monitoring: drift and live performance of the serving version over a window, and the retraining trigger.

The monitoring flow (``flows/monitor.py``) reads as::

    window -> champion + reference profile -> inference log of the window (+ labels)
           -> drift decision (tasks.drift) + performance check -> report (store + artifacts)
           -> trigger decision (guard rails) -> run_deployment(train) without waiting

* ``window.py``: the window, its rows and columns, and the evaluation (whole, or fanned out per feature);
* ``performance.py``: the live-performance check, the task's metric on the labelled rows, direction-aware;
* ``trigger.py``: the trigger ledger and its guard rails, the start of a training (or why it could not
  start), the decisions kept;
* ``report.py``: the feature table, the markdown artifact and the HTML report (a Jinja2 template,
  ``templates/report.html.j2``, with matplotlib figures).

The records they pass are in ``tasks/records/monitoring.py``. Nothing is imported here.
"""
