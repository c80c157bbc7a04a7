"""What every part of the configuration model shares: the section base and the configuration error.

:class:`Section` is the base of every settings section (unknown keys are refused); :class:`ConfigError`
is what an inconsistent configuration raises, naming the offending key. Apart so that the dataset
declaration (dataset.py) and what its task implies (problem.py) can both use them without importing
each other's module.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """The configuration is inconsistent; the message names the offending key."""


class Section(BaseModel):
    """A settings section: a key it does not declare is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")
