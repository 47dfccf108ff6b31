"""Tell someone a run failed: an email over SMTP and a JSON POST to a webhook (no Dagster here).

Both channels are configured by environment variables and are off until one is set, so a
laptop never mails anyone; ``notify_sensor`` is the Dagster shell that calls ``send``. The
message names the job, the table or swarm and the one-line cause, never a stack trace or a
secret (``redact``). Every network call has a bounded timeout, so a dead relay cannot hang the
sensor daemon.
"""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage

from iotswarm_pipelines.redact import first_line, redact
from iotswarm_pipelines.secret_files import SecretFileError, read_secret

PREFIX = "IOTSWARM_ALERT_"
SMTP_HOST = PREFIX + "SMTP_HOST"
SMTP_PORT = PREFIX + "SMTP_PORT"
SMTP_FROM = PREFIX + "SMTP_FROM"
SMTP_TO = PREFIX + "SMTP_TO"
SMTP_USER = PREFIX + "SMTP_USER"
SMTP_PASSWORD = PREFIX + "SMTP_PASSWORD"
SMTP_PASSWORD_FILE = PREFIX + "SMTP_PASSWORD_FILE"
SMTP_STARTTLS = PREFIX + "SMTP_STARTTLS"
WEBHOOK_URL = PREFIX + "WEBHOOK_URL"
DAGSTER_URL = PREFIX + "DAGSTER_URL"
TIMEOUT = PREFIX + "TIMEOUT_SECONDS"
DEFAULT_TIMEOUT_SECONDS = 10.0
UNCONFIGURED = f"run-failure notices are off: set {SMTP_HOST} (and {SMTP_TO}) or {WEBHOOK_URL}"


class NotifyConfigError(ValueError):
    """A notify variable is set but unusable; the message names it and how to fix it."""


class NotifyError(RuntimeError):
    """A channel could not deliver; one line naming the channel and the cause."""


@dataclass(frozen=True)
class FailureNotice:
    """What one failed run's notice says."""

    job: str
    run_id: str
    subject: str
    """``table LEVEL1_SOILMET_30MIN``, ``swarm soak-1`` or ``job swarm_job`` (what failed)."""
    cause: str
    run_url: str | None = None

    @property
    def headline(self) -> str:
        return f"iotswarm: {self.job} failed ({self.subject}): {self.cause}"

    def as_json(self) -> dict[str, str | None]:
        """The webhook body; ``text`` makes Slack- and Teams-style incoming webhooks show it."""
        return {
            "status": "FAILURE",
            "job": self.job,
            "run_id": self.run_id,
            "subject": self.subject,
            "cause": self.cause,
            "run_url": self.run_url,
            "text": self.headline,
        }


def notice(
    job: str, run_id: str, subject: str, cause: str, environ: Mapping[str, str] | None = None
) -> FailureNotice:
    """A notice with its cause cut to a redacted first line and the run's UI link if known."""
    environ = os.environ if environ is None else environ
    base = environ.get(DAGSTER_URL, "").rstrip("/")
    return FailureNotice(
        job=job,
        run_id=run_id,
        subject=subject,
        cause=first_line(cause) or "the run failed; see its Dagster log",
        run_url=f"{base}/runs/{run_id}" if base else None,
    )


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    sender: str
    recipients: list[str]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False


@dataclass(frozen=True)
class NotifySettings:
    """The channels the environment configures (``None``: that channel is off)."""

    smtp: Smtp | None
    webhook_url: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT_SECONDS

    @property
    def configured(self) -> bool:
        return self.smtp is not None or self.webhook_url is not None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> NotifySettings:
        environ = os.environ if environ is None else environ
        webhook = environ.get(WEBHOOK_URL) or None
        if webhook and not webhook.startswith(("http://", "https://")):
            raise NotifyConfigError(f"{WEBHOOK_URL} must be an http:// or https:// URL")
        return cls(
            smtp=_smtp(environ),
            webhook_url=webhook,
            timeout=_number(environ, TIMEOUT, DEFAULT_TIMEOUT_SECONDS),
        )


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name)
    try:
        value = float(text) if text else default
    except ValueError:
        raise NotifyConfigError(f"{name}={text!r} is not a number") from None
    if value <= 0:
        raise NotifyConfigError(f"{name} must be above 0")
    return value


def _smtp(environ: Mapping[str, str]) -> Smtp | None:
    host = environ.get(SMTP_HOST)
    if not host:
        return None
    recipients = [a.strip() for a in environ.get(SMTP_TO, "").split(",") if a.strip()]
    if not recipients:
        raise NotifyConfigError(f"{SMTP_HOST} is set but {SMTP_TO} is not (comma-separated)")
    password = environ.get(SMTP_PASSWORD) or None
    if password_file := environ.get(SMTP_PASSWORD_FILE):
        try:
            password = read_secret(password_file, SMTP_PASSWORD_FILE)
        except SecretFileError as exc:
            raise NotifyConfigError(str(exc)) from None
    return Smtp(
        host=host,
        port=int(_number(environ, SMTP_PORT, 25)),
        sender=environ.get(SMTP_FROM) or f"iotswarm@{host}",
        recipients=recipients,
        user=environ.get(SMTP_USER) or None,
        password=password,
        starttls=environ.get(SMTP_STARTTLS, "").lower() in ("1", "true", "yes"),
    )


def email(settings: Smtp, item: FailureNotice) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = item.headline[:200]
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    lines = [
        f"Job:    {item.job}",
        f"What:   {item.subject}",
        f"Run:    {item.run_id}",
        f"Cause:  {item.cause}",
    ]
    if item.run_url:
        lines.append(f"Log:    {item.run_url}")
    message.set_content("\n".join(lines) + "\n")
    return message


def send_email(settings: Smtp, item: FailureNotice, timeout: float) -> None:
    with smtplib.SMTP(settings.host, settings.port, timeout=timeout) as client:
        if settings.starttls:
            client.starttls(context=ssl.create_default_context())
        if settings.user:
            client.login(settings.user, settings.password or "")
        client.send_message(email(settings, item))


def post_webhook(url: str, item: FailureNotice, timeout: float) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(item.as_json()).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


def send(settings: NotifySettings, item: FailureNotice) -> list[str]:
    """Deliver on every configured channel: the channels used. One failing does not stop the
    other; then ``NotifyError`` names each that failed (the URL's credentials masked)."""
    used, failures = [], []
    if settings.smtp is not None:
        try:
            send_email(settings.smtp, item, settings.timeout)
            used.append("email")
        except (OSError, smtplib.SMTPException) as exc:
            where = f"{settings.smtp.host}:{settings.smtp.port}"
            failures.append(f"email via {where}: {first_line(str(exc)) or type(exc).__name__}")
    if settings.webhook_url is not None:
        try:
            post_webhook(settings.webhook_url, item, settings.timeout)
            used.append("webhook")
        except (OSError, urllib.error.URLError) as exc:
            cause = first_line(str(exc)) or type(exc).__name__
            failures.append(f"webhook {_safe_url(settings.webhook_url)}: {cause}")
    if failures:
        raise NotifyError("could not send the run-failure notice: " + "; ".join(failures))
    return used


def _safe_url(url: str) -> str:
    """Scheme, host and port only: a webhook's path often is its secret (Slack, Teams)."""
    parsed = urllib.parse.urlsplit(url)
    port = f":{parsed.port}" if parsed.port else ""
    return redact(f"{parsed.scheme}://{parsed.hostname}{port}")
