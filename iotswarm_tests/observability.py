"""What the alert-rule and dashboard tests share: Prometheus' tools and the metric names.

The names the rules and the dashboard may use are ``data/metric_names.txt``, a copy of
docs/metrics.md's tables (name and type). A query may also use a histogram's
``_bucket``/``_sum``/``_count`` series, which the exposition derives from its name.
"""

import re
import shutil
from pathlib import Path

from iotswarm_tests.services import unavailable

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


def prometheus_tool(name: str) -> str:
    """promtool or amtool (Debian's prometheus, prometheus-alertmanager); required under CI."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (Debian: apt-get install prometheus)")
    return str(path)
