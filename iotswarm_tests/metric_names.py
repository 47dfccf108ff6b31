"""The metric names the rules and the dashboard may use: ``data/metric_names.txt``.

That list copies docs/metrics.md's tables (name and type). A query may also use a histogram's
``_bucket``/``_sum``/``_count`` series, which the exposition derives from its name.
"""

import re
from pathlib import Path

NAMES_FILE = Path(__file__).parent / "data" / "metric_names.txt"
METRIC = re.compile(r"\biotswarm_[a-z0-9_]+")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def metric_types() -> dict[str, str]:
    lines = NAMES_FILE.read_text().splitlines()
    return dict(line.split() for line in lines if line.strip() and not line.startswith("#"))


def undocumented(expr: str) -> set[str]:
    """The metric names in a PromQL expression that the list does not hold."""
    types = metric_types()
    unknown = set()
    for name in METRIC.findall(expr):
        if name in types:
            continue
        base = next((name.removesuffix(s) for s in HISTOGRAM_SERIES if name.endswith(s)), "")
        if types.get(base) != "histogram":
            unknown.add(name)
    return unknown
