"""Test-only fault hook for the faults suite: freeze a process right after it stored a chosen key.

Loaded by Python at start-up when this folder is on PYTHONPATH (tests/faults/test_killed_runs.py puts
it there for the Prefect worker it starts, whose flow-run processes inherit the environment). With
``MLCYCLE_FAULTS_PAUSE_AFTER_KEY`` (a regex) set, the first store write whose key matches completes,
then the process writes the key to ``MLCYCLE_FAULTS_PAUSED_MARKER`` and sleeps, so the test can
SIGKILL it at exactly that point of its output. Without the variable this file does nothing.
"""

import os

_PATTERN = os.environ.get("MLCYCLE_FAULTS_PAUSE_AFTER_KEY")

if _PATTERN:
    import re
    import time
    from pathlib import Path

    def _install() -> None:
        import mlcycle.tasks.storage as storage

        def pausing(original):
            def write(self, key, payload):
                info = original(self, key, payload)
                if re.search(_PATTERN, key):
                    Path(os.environ["MLCYCLE_FAULTS_PAUSED_MARKER"]).write_text(key)
                    time.sleep(600)  # until the test kills this process
                return info
            return write

        for cls in (storage.LocalStore, storage.MinioStore):
            cls.put_bytes = pausing(cls.put_bytes)
            cls.put_file = pausing(cls.put_file)

    from contextlib import suppress

    with suppress(ImportError):  # not a process of this project
        _install()
