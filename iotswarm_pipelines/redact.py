"""Keep credentials out of text that leaves the process (alert messages, JSON log lines).

Two kinds of secret can reach an error message or a log record: a password inside a URL
(``oracle://user:secret@host``, a SQLAlchemy or broker URL) and the value of a credential
variable (``IOTSWARM_MQTT_PASSWORD`` and the like) quoted back by a driver. Both are masked.
"""

import os
import re
from collections.abc import Mapping

from iotswarm_pipelines import errors

MASK = "***"
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY")
URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]*(?=@)")
MIN_SECRET_LENGTH = 4
"""Shorter values would mask ordinary words (a test's password ``pw``)."""


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of the credential variables set now, longest first (so none is half-masked)."""
    environ = os.environ if environ is None else environ
    values = {
        value
        for name, value in environ.items()
        if SECRET_NAME.search(name.upper()) and len(value) >= MIN_SECRET_LENGTH
    }
    return sorted(values, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with URL passwords and credential variables' values replaced by ``***``."""
    text = URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    for value in secret_values(environ):
        text = text.replace(value, MASK)
    return text


def first_line(text: str) -> str:
    """The first non-blank line, redacted: a cause for one line of an alert, no stack trace."""
    return redact(errors.first_line(text))
