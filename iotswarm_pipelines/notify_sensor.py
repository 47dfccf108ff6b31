"""The run-failure sensor: every failed run of this code location, told by email and webhook.

Off by default: without ``IOTSWARM_ALERT_SMTP_HOST`` or ``IOTSWARM_ALERT_WEBHOOK_URL`` in the
code location's environment it starts stopped, and a tick started by hand skips saying what to
set. With either set it starts running (docs/alerts.md). The channels are read at each tick, so
a fixed variable takes effect without a reload.
"""

import dagster as dg
from dagster._utils.error import SerializableErrorInfo

from iotswarm_pipelines import notify
from iotswarm_pipelines.export.assets import TABLE_TAG
from iotswarm_pipelines.swarm.ops import SWARM_TAG

PARTITION_TAG = "dagster/partition"
TABLE_PARTITION_TAG = "dagster/partition/table"


def subject(tags: dict[str, str], job: str) -> str:
    """What the run was about: its table (tag or partition), its swarm, else its job."""
    table = tags.get(TABLE_TAG) or tags.get(TABLE_PARTITION_TAG)
    if not table and tags.get(PARTITION_TAG, "").startswith("LEVEL"):
        table = tags[PARTITION_TAG]
    if table:
        return f"table {table}"
    if swarm := tags.get(SWARM_TAG):
        return f"swarm {swarm}"
    return f"job {job}"


def cause(error: SerializableErrorInfo) -> str:
    """The user's error under Dagster's wrappers, without its class prefix (as live-cosmos
    prints it)."""
    while error.cause is not None and "DagsterExecution" in (error.cls_name or ""):
        error = error.cause
    line = notify.first_line(error.message)
    return line.removeprefix(f"{error.cls_name}: ").split(f".{error.cls_name}: ")[-1]


def failure_notice(context: dg.RunFailureSensorContext) -> notify.FailureNotice:
    run = context.dagster_run
    causes = [
        cause(event.step_failure_data.error)
        for event in context.get_step_failure_events()
        if event.step_failure_data.error is not None
    ]
    text = causes[0] if causes else context.failure_event.message or ""
    return notify.notice(run.job_name, run.run_id, subject(dict(run.tags), run.job_name), text)


def _default_status() -> dg.DefaultSensorStatus:
    """Running when a channel is set; a variable set wrongly counts as set, so every tick shows
    its error instead of the sensor staying silently off."""
    try:
        configured = notify.NotifySettings.from_environ().configured
    except notify.NotifyConfigError:
        configured = True
    return dg.DefaultSensorStatus.RUNNING if configured else dg.DefaultSensorStatus.STOPPED


@dg.run_failure_sensor(
    name="notify_on_run_failure",
    description="Email and/or webhook for every failed run (IOTSWARM_ALERT_* variables, "
    "docs/alerts.md); off until one is set.",
    default_status=_default_status(),
    minimum_interval_seconds=30,
)
def notify_on_run_failure(context: dg.RunFailureSensorContext) -> dg.SkipReason | None:
    settings = notify.NotifySettings.from_environ()
    if not settings.configured:
        return dg.SkipReason(notify.UNCONFIGURED)
    item = failure_notice(context)
    used = notify.send(settings, item)
    context.log.info(f"told {' and '.join(used)}: {item.headline}")
    return None
