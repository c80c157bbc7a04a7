"""Training a challenger: the window of validated days, the time split, the search, the test scores.

The path of one training run (plain functions; the ``@task`` wrappers at the bottom of ``challenger.py``
are what ``flows/train.py`` calls)::

    select_window      the last N validated days (or an explicit range): PartitionRefs, never frames
                       (window.py)
    train_challenger   load those partitions (sha256-verified) -> time split and labels per task (window.py)
                       -> each feature alone against the target (leakage.py) -> hyper-parameter search on
                       the gate's primary metric (search.py) -> scores on the test window (overall and per
                       slice) -> permutation importance -> reference profile; stages model + predictions +
                       profile under models/<name>/staging/<token>/ and returns a typed Candidate
                       (challenger.py)
    compare_with_champion   the champion (sha256-verified) on the *same* test rows, the paired
                       bootstrap of the improvement, the task's plots (challenger.py)

The records passed between these steps (``TrainingWindow``, ``SplitSummary``, ``SearchSummary``,
``Candidate``, ``Comparison``) are in ``tasks/records/training.py``.
"""
