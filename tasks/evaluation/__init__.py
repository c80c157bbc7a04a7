"""Evaluation of a challenger: its metrics on the test window (``metrics.py``: overall, per slice, the
paired bootstrap of the improvement over the champion, permutation importance), the promotion gate
(``gate.py``: every rule with what it observed and what it required) and the report's plots (``plots.py``).

The records these produce (``Metrics``, ``ModelScores``, ``BootstrapResult``, ``GateDecision``, ...) are in
``tasks/records/evaluation.py``.
"""
