"""One TLS context per swarm, loaded once: 20,000 connections do not re-read certificate files."""

from __future__ import annotations

import os
import ssl


def _readable(path: str, what: str, error: type[Exception]) -> None:
    if not os.path.isfile(path):
        raise error(f"TLS {what} {path!r} does not exist: give the path of a PEM file")
    if not os.access(path, os.R_OK):
        raise error(f"TLS {what} {path!r} is not readable: check its permissions")


def build_ssl_context(
    *,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    insecure: bool,
    alpn: tuple[str, ...],
    error: type[Exception],
) -> ssl.SSLContext:
    """A client context: server certificate and host name checked unless `insecure` says not.

    ALPN `x-amzn-mqtt-ca` lets AWS IoT Core accept MQTT on port 443; SNI is always the host.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file:
        _readable(ca_file, "CA file", error)
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError as err:
            raise error(
                f"TLS CA file {ca_file!r} is not a PEM certificate ({err.reason})"
            ) from None
    if cert_file or key_file:
        if not cert_file:
            raise error("TLS key file given without a client certificate: set cert_file too")
        _readable(cert_file, "client certificate", error)
        if key_file:
            _readable(key_file, "client key", error)
        try:
            context.load_cert_chain(certfile=cert_file, keyfile=key_file)
        except ssl.SSLError as err:
            raise error(
                f"TLS client certificate {cert_file!r} / key {key_file!r} do not load "
                f"({err.reason or err}): they must be PEM files of a matching pair"
            ) from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context
