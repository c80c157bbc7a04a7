"""The rollout flow: a test-served bento goes live behind the stable endpoint, blue/green.

``rollout`` (deployments ``rollout/<project>-on-demand``, which every promotion starts, and
``rollout/<project>-rollback``)::

    [package (subflow), unless a bento or image is given] ─▶ rollout ─▶ deployment-report
                                                               │ build image (docker) · start candidate ·
                                                               │ /readyz · canary + latency · switch the
                                                               │ endpoint · drain · stop the previous one
                                                               └ any failure: the previous deployment keeps
                                                                 serving, the attempt is recorded, the run fails

With ``rollback=True`` the deployment that was live before the current one is rolled out again.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from mlcycle.tasks.records.rollout import Deployment
from mlcycle.tasks.rollout.orchestrate import RolloutFailed, rollback_task, rollout_task
from mlcycle.tasks.rollout.report import deployment_report_task
from mlcycle.tasks.settings import get_settings
from mlcycle.tasks.storage import UnsafeKey, check_segment


def check_bento_tag(tag: str) -> str:
    """A bento tag ``name:version`` whose parts are safe path segments (the BentoML store is a folder).

    Refuses ``../``, absolute paths, a missing version, control and non-ASCII characters before anything
    touches the BentoML store or the deployment records, naming the value.
    """
    name, sep, version = tag.partition(":") if isinstance(tag, str) else ("", "", "")
    if not sep:
        raise UnsafeKey(f"bento tag {tag!r} must be name:version (as `mlcycle package` prints it)")
    check_segment(name, f"bento name in tag {tag!r}")
    check_segment(version, f"bento version in tag {tag!r}")
    return tag


@flow(name="rollout", log_prints=True)
def rollout_flow(bento_tag: str | None = None, version: int | None = None, target: str | None = None,
                 image: str | None = None, rollback: bool = False) -> Deployment:
    """Roll out a model version (packaged and test-served first), a given bento or image, or roll back.

    Args:
        bento_tag: an already packaged bento (name:version); skips packaging.
        version: the registry version to package and roll out; defaults to the champion.
        target: ``process`` or ``docker``; defaults to ``rollout.target`` in mlcycle.yaml.
        image: (docker) an already built serving image to roll out.
        rollback: return to the deployment that was live before the current one.
    """
    if bento_tag is not None:
        check_bento_tag(bento_tag)
    settings = get_settings()
    run_id = str(flow_run.id) if flow_run.id else None
    try:
        if rollback:
            record = rollback_task(settings, run_id)
        else:
            if bento_tag is None and image is None:
                from mlcycle.flows.package import package_flow

                bento_tag = package_flow(version=version).bento_tag
            record = rollout_task(settings, bento_tag, image, target or settings.rollout.target, run_id)
    except RolloutFailed as exc:
        deployment_report_task(exc.record)
        raise
    deployment_report_task(record)
    get_run_logger().info("live: %s", record.summary())
    return record
