"""Every environment variable the project reads, with its default and meaning, in one list.

The code reads each where it is used (``settings``, ``resources``, ``executors``, ``notify``...);
this list is what ``docs/environment.md`` is generated from (``python -m
iotswarm_pipelines.option_docs``), and a test fails when the code names a variable it lacks.
``option`` names the swarm broker option a production variable sets, for the option tables.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    meaning: str
    option: str | None = None


DEPLOYMENT = "deployment"
SOURCE = "COSMOS source"
EXPORT = "live export (prod)"
SWARM = "MQTT swarm (prod)"
ALERTS = "run-failure notices (docs/alerts.md)"

VARIABLES: dict[str, tuple[Variable, ...]] = {
    DEPLOYMENT: (
        Variable(
            "IOTSWARM_DEPLOYMENT",
            "`local`",
            "`local`: embedded defaults; `prod`: Oracle, S3 and a real broker from the variables "
            "below",
        ),
        Variable(
            "IOTSWARM_DATA_DIR",
            "`./.demo`",
            "folder of the embedded defaults (sample database, objects, state, swarm sessions)",
        ),
        Variable(
            "DAGSTER_HOME",
            "`./.dagster_home` (make targets)",
            "Dagster instance; the commands record their runs there when it is set",
        ),
        Variable(
            "IOTSWARM_EXECUTOR",
            "`multiprocess`",
            "how steps run: `multiprocess`, `celery` or `k8s` (docs/scaling-out.md)",
        ),
        Variable(
            "IOTSWARM_CELERY_BROKER",
            "`redis://127.0.0.1:6379/0`",
            "Celery broker URL; read when a run starts, so a password in it never reaches the UI",
        ),
        Variable("IOTSWARM_CELERY_BACKEND", "the broker", "Celery result backend URL"),
        Variable(
            "IOTSWARM_CELERY_QUEUE",
            "`dagster`",
            "queue the steps go to and the workers listen on (one per environment sharing a "
            "broker)",
        ),
        Variable(
            "IOTSWARM_IO_URI",
            "none",
            "`s3://bucket/prefix` (prod): step outputs as S3 objects, so steps run on hosts that "
            "share no disk",
        ),
        Variable(
            "IOTSWARM_PUSHGATEWAY",
            "none",
            "Pushgateway (`http://host:9091`) that swarm shards, export runs and reconciliations "
            "push their metrics to, where no option or config file names one (docs/metrics.md)",
        ),
        Variable("IOTSWARM_LOG_FORMAT", "text", "`json`: the commands' stderr as JSON lines"),
    ),
    SOURCE: (
        Variable(
            "COSMOS_DB_URL",
            "(prod, required)",
            "SQLAlchemy URL of the COSMOS database; read through `dg.EnvVar`, never logged",
        ),
        Variable(
            "COSMOS_DB_URL_FILE",
            "none",
            "a file holding `COSMOS_DB_URL` (a mounted secret); wins over the variable",
        ),
        Variable(
            "IOTSWARM_SOURCE_URL",
            "the sample database",
            "`iot-swarm`'s source URL without `--source`, so a password stays off the command "
            "line; taken out of the environment before any shard starts",
        ),
    ),
    EXPORT: (
        Variable("LIVECOSMOS_BUCKET", "(required)", "bucket of the payload objects"),
        Variable("LIVECOSMOS_BUCKET_PREFIX", "`fdri/cosmos_swarm`", "key prefix of the objects"),
        Variable(
            "LIVECOSMOS_S3_ENDPOINT_URL",
            "AWS",
            "MinIO, LocalStack or another S3-compatible server (path-style addressing)",
        ),
        Variable(
            "LIVECOSMOS_STATE_DIR", "`~/.local/state/livecosmos`", "folder of the state files"
        ),
        Variable(
            "LIVECOSMOS_STATE_URI",
            "none",
            "`s3://bucket/prefix`: the state as S3 objects instead of files; not together with "
            "`LIVECOSMOS_STATE_DIR`",
        ),
        Variable("AWS_REGION", "boto3's", "region of the S3 connection"),
        Variable("AWS_ACCESS_KEY_ID", "boto3's (a role)", "S3 access key"),
        Variable("AWS_SECRET_ACCESS_KEY", "boto3's (a role)", "S3 secret key"),
        Variable("AWS_SESSION_TOKEN", "none", "S3 session token of temporary credentials"),
    ),
    SWARM: (
        Variable("IOTSWARM_MQTT_HOST", "(required)", "broker host", "host"),
        Variable("IOTSWARM_MQTT_PORT", "`8883`", "broker port", "port"),
        Variable("IOTSWARM_MQTT_TLS", "`true`", "connect with TLS", "tls"),
        Variable("IOTSWARM_MQTT_ALPN", "none", "ALPN protocols, comma-separated", "alpn"),
        Variable("IOTSWARM_MQTT_BROKERS", "none", "brokers taken round robin by shard", "brokers"),
        Variable(
            "IOTSWARM_MQTT_SOURCE_ADDRESSES",
            "none",
            "local addresses the shards connect from (read on each worker host; also locally)",
            "source_addresses",
        ),
        Variable("IOTSWARM_MQTT_USERNAME", "none", "broker username", "username"),
        Variable(
            "IOTSWARM_MQTT_PASSWORD",
            "none",
            "broker password (also `iot-swarm`'s, taken out of its environment)",
            "password",
        ),
        Variable("IOTSWARM_MQTT_PASSWORD_FILE", "none", "a file holding the password instead"),
        Variable("IOTSWARM_MQTT_CA_FILE", "none", "CA bundle (PEM) to trust", "ca_file"),
        Variable("IOTSWARM_MQTT_CERT_FILE", "none", "client certificate", "cert_file"),
        Variable("IOTSWARM_MQTT_KEY_FILE", "none", "client private key", "key_file"),
        Variable(
            "IOTSWARM_SESSIONS_URI",
            "`<IOTSWARM_DATA_DIR>/swarm_sessions`",
            "folder or `s3://bucket/prefix` of swarm sessions and reports; `sessions_dir` takes "
            "its place for one run",
        ),
    ),
    ALERTS: (
        Variable("IOTSWARM_ALERT_SMTP_HOST", "none", "SMTP relay; setting it turns email on"),
        Variable("IOTSWARM_ALERT_SMTP_PORT", "`25`", "its port"),
        Variable(
            "IOTSWARM_ALERT_SMTP_TO", "(required with the host)", "recipients, comma-separated"
        ),
        Variable("IOTSWARM_ALERT_SMTP_FROM", "`iotswarm@HOST`", "sender"),
        Variable("IOTSWARM_ALERT_SMTP_USER", "none", "log in as this user"),
        Variable("IOTSWARM_ALERT_SMTP_PASSWORD", "none", "its password"),
        Variable("IOTSWARM_ALERT_SMTP_PASSWORD_FILE", "none", "a file holding it (wins over it)"),
        Variable("IOTSWARM_ALERT_SMTP_STARTTLS", "off", "`true`: STARTTLS before logging in"),
        Variable(
            "IOTSWARM_ALERT_WEBHOOK_URL",
            "none",
            "POST a JSON object here; setting it turns the webhook on",
        ),
        Variable(
            "IOTSWARM_ALERT_DAGSTER_URL", "none", "the UI's address, so a notice links to the run"
        ),
        Variable("IOTSWARM_ALERT_TIMEOUT_SECONDS", "`10`", "each connection's timeout"),
    ),
}

BY_OPTION = {v.option: v.name for group in VARIABLES.values() for v in group if v.option}
"""Broker option -> the production variable that sets it."""
