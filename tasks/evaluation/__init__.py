"""Evaluation of a challenger, per task: its metrics on the test window (``metrics.py``: overall, per slice,
their weighted forms, permutation importance), the paired bootstrap of the improvement over the champion
(``bootstrap.py``), the promotion gate (``gate.py``: every rule with what it observed and what it required,
the leakage guard included) and the report's plots (``plots.py``).

The records these produce (``Metrics``, ``ModelScores``, ``BootstrapResult``, ``GateDecision``, ...) are in
``tasks/records/evaluation.py``.
"""
