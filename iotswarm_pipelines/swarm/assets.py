"""The swarm's asset: its report, declared so the UI shows it (group, kinds, owners, plots).

No function materializes it: the swarm job's ``swarm_report`` op logs a materialization of it at
the end of every run, with the report's numbers as metadata.
"""

import dagster as dg

from iotswarm_pipelines.labels import OWNERS

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
