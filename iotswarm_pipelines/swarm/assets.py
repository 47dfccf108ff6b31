"""The swarm's asset: its report, declared so the UI shows it (group, kinds, owners, plots).

No function materializes it: the swarm job's ``swarm_report`` op logs a materialization of it at
the end of every run, with the report's numbers as metadata, and the result of its delivery
check (which fails when messages were lost at QoS 1).
"""

import dagster as dg

from iotswarm_pipelines.labels import OWNERS
from iotswarm_pipelines.swarm.report import DELIVERY_CHECK, delivery

GROUP = "device_swarm"

swarm_report_asset = dg.AssetSpec(
    key=["swarm", "report"],
    group_name=GROUP,
    kinds={"mqtt", "report"},
    owners=OWNERS,
    description=(
        "The delivery report of each swarm run (swarm_job or iot-swarm): simulated COSMOS "
        "dataloggers publishing over MQTT to the broker. Numbers per run (sent, delivered, lost, "
        "msgs/s, latency p50/p95/p99) are plotted across runs; the summary holds the charts. It "
        "lands in the run's metadata and the session folder, not in a store."
    ),
)


@dg.asset_check(
    asset=swarm_report_asset.key,
    name=DELIVERY_CHECK,
    description="Fails when the latest swarm run lost messages at QoS 1 (or the broker never "
    "acknowledged some). Each swarm run evaluates it as it reports; Execute re-reads the latest.",
)
def swarm_delivery(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    event = context.instance.get_latest_materialization_event(swarm_report_asset.key)
    materialization = event.asset_materialization if event else None
    if materialization is None:
        return dg.AssetCheckResult(passed=True, description="no swarm has reported yet")
    values = {k: v.value for k, v in materialization.metadata.items()}
    passed, text = delivery(int(values.get("qos", 1)), int(values["failed"]), values.get("lost"))
    return dg.AssetCheckResult(passed=passed, description=text)
