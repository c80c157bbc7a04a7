"""The one configuration model of mlcycle: typed, read once at the edge, errors naming the key.

``dataset.py`` holds the dataset declaration (the one place the columns are declared), ``problem.py``
what its task implies (metrics, directions, estimators, category values), ``sections.py``
every stage's section, ``loader.py`` the :class:`Settings` model and where its values come from
(keyword arguments > ``MLCYCLE_*`` > secret files > mlcycle.yaml > defaults).

Every stage imports settings from here (``from mlcycle.tasks.settings import Settings, get_settings``):
this face re-exports the public names of the three modules, which import one another directly.
"""

from mlcycle.tasks.settings.base import ConfigError, Section
from mlcycle.tasks.settings.dataset import CategoryValue, DatasetSpec, FeatureSpec
from mlcycle.tasks.settings.loader import (
    CONFIG_ENV,
    DEFAULT_CONFIG_FILE,
    DEFAULT_SECRETS_DIR,
    SECRET_FIELDS,
    SECRETS_DIR_ENV,
    Settings,
    config_path,
    get_settings,
    load_settings,
)
from mlcycle.tasks.settings.monitoring import DriftSettings
from mlcycle.tasks.settings.sections import (
    DaskSettings,
    DemoSettings,
    DriftEvent,
    GateSettings,
    GcSettings,
    InferenceLogSettings,
    IngestSettings,
    LeakageSettings,
    ModelFamily,
    MonitorSettings,
    ParamSpace,
    RetriesSettings,
    RetryPolicy,
    RolloutSettings,
    ServingSettings,
    SimulatorSettings,
    TrainingSettings,
    ValidationSettings,
)

__all__ = [
    "CONFIG_ENV", "DEFAULT_CONFIG_FILE", "DEFAULT_SECRETS_DIR",
    "SECRET_FIELDS", "SECRETS_DIR_ENV", "CategoryValue", "ConfigError", "DaskSettings", "DatasetSpec",
    "DemoSettings", "DriftEvent", "DriftSettings", "FeatureSpec", "GateSettings",
    "InferenceLogSettings", "IngestSettings", "LeakageSettings", "GcSettings", "ModelFamily", "MonitorSettings",
    "ParamSpace",
    "RetriesSettings", "RetryPolicy", "RolloutSettings", "Section", "ServingSettings", "Settings",
    "SimulatorSettings", "TrainingSettings", "ValidationSettings", "config_path", "get_settings",
    "load_settings",
]
