"""The MQTT engine of the device swarm: many paho clients on one event loop per shard process.

Import from the modules: ``types`` (value types, no MQTT machinery), ``settings`` (broker
settings and checks), ``engine`` (``run_shard``), ``verifier``, ``loop``, ``rate``, ``tls``.
This package itself imports nothing, so a module that needs a type never loads the engine.
"""
