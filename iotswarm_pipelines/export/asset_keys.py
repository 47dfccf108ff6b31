"""The export's asset keys, apart from the assets, so checks and assets can both name them.

``health_<TABLE>`` is one asset per table that carries that table's checks: only the health job
materializes it, so a check result stays on it until that table's checks run again (an export of
one table cannot reset or hide another table's results). See checks.py for why.

Why one segment, and not ``cosmos/health/<TABLE>`` as before: the Catalog's list (all assets,
or a group's List tab) gives the name column about a third of the table and cuts a longer name in
the middle. Measured in Chromium with Dagster 1.13: about 287 px for the name in a window 1400 px
wide and 246 px at 1280 (66 px less beside a kind tag, hence none).
``cosmos / health / LEVEL1_PRECIP_RAINE_1MIN`` needs 312 px and
``health / LEVEL1_PRECIP_RAINE_1MIN`` 247 px; ``health_LEVEL1_PRECIP_RAINE_1MIN`` needs 242 px, so
every table's name reads whole at both widths, and the asset graph, which shows a key's last
segment, still says it is health.
"""

import dagster as dg

from iotswarm_pipelines.cosmos import catalogue

LIVE_EXPORT_KEY = dg.AssetKey(["cosmos", "live_export"])
HISTORY_EXPORT_KEY = dg.AssetKey(["cosmos", "history_export"])


def health_key(table: catalogue.Table) -> dg.AssetKey:
    """``health_LEVEL1_SOILMET_30MIN``: the table in the database's spelling."""
    return dg.AssetKey(f"health_{table.name}")


HEALTH_TABLES = {health_key(table): table for table in catalogue.TABLES.values()}
"""The table each health asset stands for."""
