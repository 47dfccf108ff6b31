"""Prometheus metrics of the swarm and the export (``docs/metrics.md`` lists every name).

Dagster-free, on the official ``prometheus_client``: ``swarm`` keeps one shard's metrics in its
own registry (so shards in one process never mix), ``export`` builds the registries a live
export run and a reconciliation push, and ``exposition`` serves a registry on ``/metrics`` and
pushes it to a Pushgateway without ever failing the run it reports on.
"""
