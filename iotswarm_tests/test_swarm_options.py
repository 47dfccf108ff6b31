"""The swarm's options model: the launchpad, the command lines and the engine agree with it."""

from __future__ import annotations

import argparse

import pytest

from iotswarm_pipelines.swarm import options
from iotswarm_pipelines.swarm.cli import _parser
from iotswarm_pipelines.swarm.jobs import swarm_job
from iotswarm_pipelines.swarm.mqtt.settings import MqttConfigError, MqttSettings
from iotswarm_pipelines.swarm.options import (
    Arg,
    BrokerOptions,
    SwarmConfigError,
    SwarmOptions,
)
from iotswarm_pipelines.swarm.resources import MqttResource


def test_the_launchpad_shows_every_run_option_with_its_default_and_description():
    ops = swarm_job.run_config_schema.config_type.fields["ops"].config_type
    fields = ops.fields["plan_swarm"].config_type.fields["config"].config_type.fields
    assert set(fields) == set(SwarmOptions.model_fields)
    for name, model_field in SwarmOptions.model_fields.items():
        assert fields[name].description == model_field.description, name
        assert fields[name].default_value == model_field.default, name


def test_the_mqtt_resource_is_the_broker_options():
    # plus the file a command hands the password over by (SECURITY.md), never a flag of its own
    assert set(MqttResource.model_fields) == set(BrokerOptions.model_fields) | {"password_file"}
    assert MqttResource().host == options.BROKER.host


def test_engine_defaults_come_from_the_model():
    settings = MqttSettings()
    for name in ("qos", "protocol", "connect_rate", "max_publish_rate"):
        assert getattr(settings, name) == getattr(options.RUN, name), name
    for name in ("host", "port", "keepalive", "clean_session"):
        assert getattr(settings, name) == getattr(options.BROKER, name), name
    assert MqttResource().settings() == settings


def test_iot_swarm_help_shows_the_models_defaults():
    text = " ".join(_parser().format_help().split())
    assert "(default: 200.0)" in text  # connect_rate
    assert "--connections {per-device,shared}" in text
    assert "--stop-file" not in text and "--password " not in text


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--connections", "per-device"], {"connections": "per_device"}),
        (["--connections", "per_device"], {"connections": "per_device"}),
        (["--sites", "ALIC1,BALRD", "--sites", "CHIMN"], {"sites": ["ALIC1", "BALRD", "CHIMN"]}),
        (["--qos", "0", "--delay-start"], {"qos": 0, "delay_start": True}),
    ],
)
def test_command_line_values_come_back_as_the_model_spells_them(argv, expected):
    values = options.parsed_values(_parser().parse_args(argv), SwarmOptions)
    assert {k: values[k] for k in expected} == expected


def test_a_second_command_tree_renames_and_redefaults_options():
    """What an old tool's command tree needs: other flags, a positional, other defaults."""
    parser = argparse.ArgumentParser()
    renames = {
        "table": Arg(flags=("TABLE",)),
        "device_type": Arg(default="basic"),
        "host": Arg(flags=("--endpoint",), kwargs={"required": True}),
        "cert_file": Arg(flags=("--cert-path",)),
    }
    only = {"table", "device_type", "sleep_time", "host", "cert_file"}
    options.add_arguments(parser, SwarmOptions, only=only, args=renames)
    options.add_arguments(parser, BrokerOptions, only=only, args=renames)
    args = parser.parse_args(
        ["LEVEL1_PRECIP_1MIN", "--endpoint", "iot.example", "--cert-path", "c"]
    )
    assert options.parsed_values(args, SwarmOptions) == {
        "table": "LEVEL1_PRECIP_1MIN",
        "device_type": "basic",
        "sleep_time": 60.0,
    }
    assert options.parsed_values(args, BrokerOptions) == {"host": "iot.example", "cert_file": "c"}
    assert "(default: basic)" in parser.format_help()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"qos": 2}, "qos 2 is not supported: use 0 or 1"),
        ({"connect_rate": -1}, "connect_rate must be at least 0, got -1"),
        ({"mode": "rewind"}, "mode 'rewind' is unknown: use one of latest, loop, replay"),
        ({"max_sites": 0}, "max_sites must be at least 1, got 0"),
    ],
)
def test_each_rule_says_what_is_wrong_in_one_line(values, message):
    with pytest.raises(SwarmConfigError, match=f"^{message}$"):
        options.check(SwarmOptions(**values), SwarmOptions)


def test_the_engine_checks_the_same_rules():
    with pytest.raises(MqttConfigError, match=r"^connect_rate must be at least 0, got -1$"):
        MqttSettings(connect_rate=-1).validate()
    with pytest.raises(MqttConfigError, match=r"^MQTT port 0 is out of range 1-65535$"):
        MqttSettings(port=0).validate()
