"""Every example an ``--help`` prints runs as printed on the demo data, and every help ends with
the command's exit codes.

The helps are those of ``live-cosmos`` (flat, ``send-live-data``, ``reconcile``), ``iot-swarm``
(the flat options and the old tool's command tree) and ``cosmos-sample``; their examples are
the lines starting with ``example: ``. Each runs, in the order the helps come, in a scratch copy
of the checkout after a small demo (as iotswarm_tests/test_readme_commands.py runs the README's
commands: the README's ``livecosmos.cfg``, a two-site sample database, the broker on
127.0.0.1:1883) and must exit 0, unless it is in ``NOT_RUN`` with why and what covers it.
"""

from __future__ import annotations

import argparse

import pytest

from iotswarm_pipelines.cosmos.sample import cli as sample_cli
from iotswarm_pipelines.export import cli as export_cli
from iotswarm_pipelines.export import reconcile_cli
from iotswarm_pipelines.swarm import cli as swarm_cli
from iotswarm_pipelines.swarm import old_commands
from iotswarm_tests.services import require_tcp
from iotswarm_tests.test_cli_help import _with_subcommands
from iotswarm_tests.test_readme_commands import _run, checkout  # noqa: F401 (fixture)

EXAMPLE = "example: "

NOT_RUN = {
    "iot-swarm cosmos --dsn HOST/COSMOS --user U list-sites LEVEL_1_SOILMET_30MIN": (
        "the cosmos group reads Oracle only, which cannot exist here",
        "test_compat_iotswarm.py (the same command against an Oracle stand-in)",
    ),
    "iot-swarm cosmos --dsn HOST/COSMOS --user U mqtt LEVEL_1_SOILMET_30MIN my-client "
    "--sleep-time 1800 --dry": (
        "the cosmos group reads Oracle only, which cannot exist here",
        "test_compat_iotswarm.py",
    ),
    "iot-swarm cosmos --dsn HOST/COSMOS --user U mqtt LEVEL_1_SOILMET_30MIN my-client "
    "--endpoint xxxx-ats.iot.eu-west-2.amazonaws.com --cert-path device.pem.crt "
    "--key-path private.pem.key --ca-cert-path AmazonRootCA1.pem": (
        "needs Oracle and AWS IoT Core",
        "test_compat_iotswarm.py and test_iot_core.py",
    ),
    "iot-swarm --config config.cfg test-mqtt my-client": (
        "connects to AWS IoT Core with the device's certificate",
        "test_compat_iotswarm.py (test-mqtt against a TLS broker)",
    ),
}


PARSERS = [
    sample_cli._parser(),
    export_cli._parser(),
    export_cli._send_live_data_parser(),
    reconcile_cli._parser(),
    swarm_cli._parser(),
    *_with_subcommands(old_commands.parser()),
]


def _examples(parser: argparse.ArgumentParser) -> list[str]:
    lines = parser.format_help().splitlines()
    return [line.removeprefix(EXAMPLE).strip() for line in lines if line.startswith(EXAMPLE)]


def _all_examples() -> list[str]:
    return list(dict.fromkeys(e for p in PARSERS for e in _examples(p)))


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.prog)
def test_every_help_ends_with_its_exit_codes(parser):
    text = parser.format_help()
    assert "\nexit codes: 0 " in text, f"{parser.prog} ends without its exit codes"
    last = " ".join(text[text.rindex("\nexit codes: ") :].split())  # the end, unwrapped
    for code in (" 0 ", ", 1 ", ", 2 "):
        assert code in last, f"{parser.prog}: {last!r}"
    assert "example: " not in last
    assert _examples(parser), f"{parser.prog} prints no example"


def test_examples_not_run_are_still_printed():
    stale = sorted(NOT_RUN.keys() - set(_all_examples()))
    assert not stale, f"NOT_RUN names examples no help prints any more: {stale}"


def test_every_help_example_runs_as_printed(checkout):  # noqa: F811
    require_tcp("Mosquitto", "127.0.0.1", 1883)  # where the swarm examples publish
    ran = []
    for example in _all_examples():
        if example not in NOT_RUN:
            _run(example, checkout)
            ran.append(example)
    assert len(ran) >= 10, ran
