"""The export's asset keys, apart from the assets, so checks and assets can both name them.

``cosmos/health/<TABLE>`` is one asset per table that only carries that table's checks: nothing
materializes it, so a check result stays on it until that table's checks run again (an export of
one table cannot reset or hide another table's results). See checks.py for why.
"""

import dagster as dg

from iotswarm_pipelines.cosmos import catalogue

LIVE_EXPORT_KEY = dg.AssetKey(["cosmos", "live_export"])
HISTORY_EXPORT_KEY = dg.AssetKey(["cosmos", "history_export"])


def health_key(table: catalogue.Table) -> dg.AssetKey:
    """``cosmos/health/LEVEL1_SOILMET_30MIN``: the table in the database's spelling."""
    return dg.AssetKey(["cosmos", "health", table.name])
