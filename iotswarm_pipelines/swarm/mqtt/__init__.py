"""The MQTT engine of the device swarm: many paho clients on one event loop per shard process."""

from iotswarm_pipelines.swarm.mqtt.engine import run_shard
from iotswarm_pipelines.swarm.mqtt.settings import (
    BrokerError,
    BrokerRefusedError,
    BrokerUnreachableError,
    MqttConfigError,
    MqttSettings,
    check_broker,
)
from iotswarm_pipelines.swarm.mqtt.values import DeviceStream, Message, Schedule, ShardResult

__all__ = [
    "BrokerError",
    "BrokerRefusedError",
    "BrokerUnreachableError",
    "DeviceStream",
    "Message",
    "MqttConfigError",
    "MqttSettings",
    "Schedule",
    "ShardResult",
    "check_broker",
    "run_shard",
]
