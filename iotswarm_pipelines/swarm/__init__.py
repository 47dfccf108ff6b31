"""The device swarm: devices, data modes, sessions, the Dagster job and the iot-swarm CLI."""
