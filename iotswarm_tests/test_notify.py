"""The run-failure sensor tells a real SMTP server (aiosmtpd) and a real HTTP server.

A real run fails on a temporary instance; the sensor is evaluated on its failure event as the
daemon would, and the mail and the webhook's JSON are read back from the servers.
"""

import email
import email.policy
import http.server
import json
import logging
import socket
import threading
from collections.abc import Iterator

import dagster as dg
import pytest
from aiosmtpd.controller import Controller

from iotswarm_pipelines import notify
from iotswarm_pipelines.export.assets import TABLE_TAG
from iotswarm_pipelines.notify_sensor import _default_status, notify_on_run_failure, subject
from iotswarm_pipelines.swarm.ops import SWARM_TAG
from iotswarm_tests.services import free_port

CANARY = "canary-Pa55word-7f3e"
TABLE = "LEVEL1_SOILMET_30MIN"


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        return "250 OK"


# aiosmtpd logs each connection's end from its own thread, which may outlive the test that
# opened it: into a later test's captured stderr (or a closed stream, "--- Logging error ---").
logging.getLogger("mail.log").disabled = True


@pytest.fixture
def smtp_inbox(monkeypatch) -> Iterator[_Inbox]:
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    monkeypatch.setenv(notify.SMTP_HOST, "127.0.0.1")
    monkeypatch.setenv(notify.SMTP_PORT, str(controller.port))
    monkeypatch.setenv(notify.SMTP_TO, "ops@example.org, duty@example.org")
    monkeypatch.setenv(notify.SMTP_FROM, "iotswarm@example.org")
    yield inbox
    controller.stop()


@pytest.fixture
def webhook(monkeypatch) -> Iterator[list[dict]]:
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, **json.loads(body)})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(notify.WEBHOOK_URL, f"http://127.0.0.1:{server.server_port}/hook/s3cr3t")
    yield received
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_channels(monkeypatch):
    for name in (notify.SMTP_HOST, notify.WEBHOOK_URL, notify.TIMEOUT, notify.DAGSTER_URL):
        monkeypatch.delenv(name, raising=False)


@dg.op
def read_cosmos_rows() -> None:
    # A driver quoting the URL (with its password) and a credential variable's value back.
    raise ValueError(
        f"cannot reach oracle://cosmos:{CANARY}@db.example/COSMOS: ORA-12541 (token {CANARY})\n"
        "second line of detail"
    )


@dg.job
def failing_export_job() -> None:
    read_cosmos_rows()


def _evaluate(tags: dict[str, str]) -> tuple[dg.SkipReason | None, str]:
    """Fail a real run with ``tags``, then evaluate the sensor on its failure event."""
    with dg.instance_for_test() as instance:
        result = failing_export_job.execute_in_process(
            instance=instance, raise_on_error=False, tags=tags
        )
        assert not result.success
        context = dg.build_run_status_sensor_context(
            sensor_name=notify_on_run_failure.name,
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(),
        ).for_run_failure()
        return notify_on_run_failure(context), result.run_id


def test_a_failed_run_is_mailed_and_posted_naming_table_and_cause(
    no_channels, smtp_inbox, webhook, monkeypatch
):
    monkeypatch.setenv("IOTSWARM_MQTT_PASSWORD", CANARY)
    monkeypatch.setenv(notify.DAGSTER_URL, "http://dagster.example:3000/")
    skipped, run_id = _evaluate({TABLE_TAG: TABLE})
    assert skipped is None

    [mail] = smtp_inbox.messages
    headline = (
        f"iotswarm: failing_export_job failed (table {TABLE}): cannot reach "
        "oracle://cosmos:***@db.example/COSMOS: ORA-12541 (token ***)"
    )
    assert mail["Subject"] == headline
    assert mail["To"] == "ops@example.org, duty@example.org"
    body = mail.get_content()
    assert f"Run:    {run_id}" in body
    assert f"Log:    http://dagster.example:3000/runs/{run_id}" in body

    [posted] = webhook
    assert posted["path"] == "/hook/s3cr3t"
    assert posted["job"] == "failing_export_job"
    assert posted["subject"] == f"table {TABLE}"
    assert posted["run_id"] == run_id
    assert posted["text"] == headline
    for text in (str(mail), json.dumps(posted)):
        assert CANARY not in text
        assert "second line" not in text
        assert "Traceback" not in text


def test_unconfigured_it_skips_saying_what_to_set_and_starts_stopped(no_channels):
    skipped, _ = _evaluate({TABLE_TAG: TABLE})
    assert isinstance(skipped, dg.SkipReason)
    assert skipped.skip_message == notify.UNCONFIGURED
    assert _default_status() == dg.DefaultSensorStatus.STOPPED


def test_configured_it_starts_running(no_channels, monkeypatch):
    monkeypatch.setenv(notify.WEBHOOK_URL, "http://127.0.0.1:9/hook")
    assert _default_status() == dg.DefaultSensorStatus.RUNNING
    monkeypatch.setenv(notify.WEBHOOK_URL, "ftp://wrong")  # a mistake shows on every tick
    assert _default_status() == dg.DefaultSensorStatus.RUNNING


def test_a_dead_relay_fails_in_bounded_time_and_the_webhook_still_goes(
    no_channels, webhook, monkeypatch
):
    """A relay that accepts and never greets: the timeout ends the wait, named in one line."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setenv(notify.SMTP_HOST, "127.0.0.1")
        monkeypatch.setenv(notify.SMTP_PORT, str(silent.getsockname()[1]))
        monkeypatch.setenv(notify.SMTP_TO, "ops@example.org")
        monkeypatch.setenv(notify.TIMEOUT, "0.5")
        with pytest.raises(notify.NotifyError) as raised:
            _evaluate({SWARM_TAG: "soak-1"})
    message = str(raised.value)
    assert message.startswith("could not send the run-failure notice: email via 127.0.0.1:")
    assert "timed out" in message
    assert "\n" not in message
    [posted] = webhook
    assert posted["subject"] == "swarm soak-1"


def test_a_refused_webhook_names_its_host_not_its_secret_path(no_channels, monkeypatch):
    monkeypatch.setenv(notify.WEBHOOK_URL, f"http://127.0.0.1:{free_port()}/hook/s3cr3t")
    with pytest.raises(notify.NotifyError) as raised:
        _evaluate({TABLE_TAG: TABLE})
    assert "webhook http://127.0.0.1:" in str(raised.value)
    assert "s3cr3t" not in str(raised.value)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({TABLE_TAG: TABLE}, f"table {TABLE}"),
        ({"dagster/partition": TABLE}, f"table {TABLE}"),
        (
            {"dagster/partition": f"2024-06-01|{TABLE}", "dagster/partition/table": TABLE},
            f"table {TABLE}",
        ),
        ({SWARM_TAG: "soak-1"}, "swarm soak-1"),
        ({}, "job swarm_job"),
    ],
)
def test_the_subject_comes_from_the_run_tags(tags, expected):
    assert subject(tags, "swarm_job") == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({notify.SMTP_HOST: "relay"}, "IOTSWARM_ALERT_SMTP_TO is not"),
        ({notify.WEBHOOK_URL: "hooks.example/x"}, "must be an http:// or https:// URL"),
        ({notify.WEBHOOK_URL: "http://h", notify.TIMEOUT: "soon"}, "'soon' is not a number"),
        (
            {notify.SMTP_HOST: "r", notify.SMTP_TO: "a@b", notify.SMTP_PASSWORD_FILE: "/nope"},
            "cannot read the IOTSWARM_ALERT_SMTP_PASSWORD_FILE file /nope",
        ),
    ],
)
def test_a_wrong_variable_is_one_clear_error(environ, message):
    with pytest.raises(notify.NotifyConfigError, match=message):
        notify.NotifySettings.from_environ(environ)
