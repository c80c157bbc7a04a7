"""Great Expectations validation of one daily batch, against the suite generated from the dataset declaration.

``suite.py`` holds the suite as plain data with its hash, ``expectations.py`` the custom expectations,
``runner.py`` the checkpoint run and its Data Docs page, ``phrasing.py`` what each expectation expected
and observed, in words. Only ``expectations.py`` and the functions of ``runner.py`` import Great
Expectations (it costs 3-4 s), and they do so when a batch is validated, never when a module is loaded.
Nothing is imported here.
"""
