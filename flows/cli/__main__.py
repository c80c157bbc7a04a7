"""``python -m mlcycle.flows.cli``: the ``mlcycle`` console script without the installed entry point."""

from mlcycle.flows.cli import console

console()
