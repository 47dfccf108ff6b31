"""Campbell's MQTT command-and-control API, as a simulated CR1000X answers it.

Sans-IO and Dagster-free: `logger` holds one device's simulated state (files, settings,
Public variables, constants), `protocol` turns an incoming command into the actions to take
(publishes, a restart, a download, a historic read) and `historic` builds historicData
payloads. The engine (`swarm.mqtt.commands`) performs the actions on the device's own
connection and the shard's event loop.
"""
