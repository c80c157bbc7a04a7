"""The names two projects on one stack must not share, each derived from ``project_name`` unless set.

Several declarations may share one Prefect server, one worker machine and one store (issue 13). What is
global in such a stack gets the project in its name, by one rule each, so nothing needs renaming when a
second project arrives:

* **store keys**: under ``<store_prefix>/`` (``Settings.store_scope``: the project name by default);
* **model names**: ``training.model_name``, by default from the dataset (``registry.versions.model_name``);
* **deployments**: ``<flow>/<project>-<role>``, for example ``train/mlcycle-on-demand``. prefect.yaml names
  them ``{{ $MLCYCLE_PROJECT_NAME }}-<role>`` and `mlcycle up` deploys with that variable set from the
  settings; the flows that start another deployment (a promotion starts the rollout, a warranted
  retraining starts the training) read the same names from ``rollout.deployment`` and
  ``monitor.train_deployment``, which default to these;
* **the work pool**: ``<project>-process``, so one project's worker (with that project's environment and
  config) never picks up another project's runs; and each deployment carries the tag ``project:<project>``;
* **bentos**: ``serving.bento_name``, by default ``<project>-model`` (``mlcycle-model`` for the default project),
  so one BentoML store holds several projects' bentos apart;
* **ports**: `mlcycle serve`'s ``serving.port`` (3000 for the default project, else 5 above the endpoint's) and
  the stable endpoint's ``rollout.endpoint_port``, by default 3080 for the default project and
  otherwise a port in 10080-32070 (below Linux's ephemeral range) chosen by a CRC-32 of the name: stable
  for a project across machines and sessions, and two projects collide with probability 1/2,200. A
  collision is not silent: the second endpoint cannot bind its port, and its rollout fails naming
  ``rollout.endpoint_port``; set it explicitly then.

The Prefect server's and the object store's ports are the stack's, not a project's, and stay shared.
"""

from __future__ import annotations

import re
import zlib

DEFAULT_PROJECT = "mlcycle"
DEFAULT_ENDPOINT_PORT = 3080
DEFAULT_SERVE_PORT = 3000
PROJECT_ENV = "MLCYCLE_PROJECT_NAME"  # what prefect.yaml's deployment and work pool names are templated on
_PORT_BASE, _PORT_STEP, _PORT_SLOTS = 10080, 10, 2200  # 10080 .. 32070, each ending in 0


def deployment_name(project: str, flow: str, role: str) -> str:
    """The full name of one of the project's deployments: ``<flow>/<project>-<role>``."""
    return f"{flow}/{project}-{role}"


def work_pool_name(project: str) -> str:
    return f"{project}-process"


def endpoint_port(project: str) -> int:
    """The stable endpoint's default port for ``project``: 3080 for the default project, else from its name."""
    if project == DEFAULT_PROJECT:
        return DEFAULT_ENDPOINT_PORT
    return _PORT_BASE + _PORT_STEP * (zlib.crc32(project.encode()) % _PORT_SLOTS)


def derived_names(project: str) -> list[tuple[str, str, str | int]]:
    """(section, key, value) of each setting whose unset value (None) is derived from the project."""
    return [("rollout", "deployment", deployment_name(project, "rollout", "on-demand")),
            ("monitor", "train_deployment", deployment_name(project, "train", "on-demand")),
            ("rollout", "endpoint_port", endpoint_port(project)),
            ("serving", "port", serve_port(project)),
            ("serving", "bento_name", bento_name(project))]


def serve_port(project: str) -> int:
    """`mlcycle serve`'s default port: 3000 for the default project, else 5 above its endpoint's (ports ending in
    5 never meet another project's derived endpoint port, which ends in 0)."""
    return DEFAULT_SERVE_PORT if project == DEFAULT_PROJECT else endpoint_port(project) + 5


def bento_name(project: str) -> str:
    """The project's bento name, ``<project>-model`` in BentoML's alphabet (lower case, ``[a-z0-9._-]``)."""
    slug = re.sub(r"[^a-z0-9._-]", "-", project.lower())
    return f"{slug if slug[:1].isalnum() else 'p' + slug}-model"


def project_tag(project: str) -> str:
    """The tag every deployment of ``project`` carries (prefect.yaml), and so every run they start: how
    ``mlcycle status`` finds this project's schedules on a server that holds several projects'."""
    return f"project:{project}"
