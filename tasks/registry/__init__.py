"""The model registry, kept in the object store: versions, their lineage, and the champion alias.

Layout::

    models/<name>/versions/<n>.claim           exclusive claim of version number n (create_exclusive)
    models/<name>/<n>/model.joblib             the fitted scikit-learn Pipeline (preprocessing + estimator)
    models/<name>/<n>/reference_profile.json   the training data's profile, for the drift monitor
    models/<name>/<n>/evaluation.json          challenger vs champion, bootstrap, gate decision
    models/<name>/<n>/report.md                the same, for humans; plots/*.png beside it
    models/<name>/<n>/test_predictions.parquet the challenger's test-window scores (id, y, score)
    models/<name>/<n>/metadata.json            ModelVersion: params, metrics, gate, lineage, every sha256
    models/<name>/versions/<n>.json            the seal: version + sha256 of metadata.json and model.joblib
    models/<name>/aliases/champion.json        AliasPointer: champion and previous, in one object
    models/<name>/aliases/history/<ts>.json    every alias move, with its reason
    models/<name>/staging/<token>/...          a candidate before registration (not a version)

The modules: ``versions.py`` (claim, write, seal, and every verified read, through the champion pointer
too), ``aliases.py`` (moving the champion: promote, rollback; it imports versions, never the reverse),
``lineage.py`` (the code and library versions a model was trained with), ``report.py`` (the markdown
report). The records are in ``tasks/records/registry.py``.

Secrets never enter metadata: lineage records the data, the code commit and library versions only.
"""
