"""S3 for its three users (payload objects, watermark state, swarm sessions): how to connect,
how a location is written and how a failure reads, in one place and without Dagster.

The Dagster side configures a connection as a dagster-aws ``S3Resource``; an adapter takes its
settings as an ``S3Connection``, which accepts that resource (or any object with its fields)
as it is.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Literal
from urllib.parse import urlsplit

import boto3
import botocore.handlers
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

S3_ENV = {
    "region_name": "AWS_REGION",
    "endpoint_url": "LIVECOSMOS_S3_ENDPOINT_URL",
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
}
"""The production connection's settings and the environment variables holding them."""


class S3Connection(BaseModel):
    """Where and as whom to connect: the fields of dagster-aws ``S3Resource`` a client uses.

    Unset values fall back to boto3's own lookup (environment, profile, instance role).
    """

    model_config = ConfigDict(from_attributes=True)

    region_name: str | None = None
    endpoint_url: str | None = None
    profile_name: str | None = None
    use_ssl: bool = True
    verify: bool | None = None
    use_unsigned_session: bool = False
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = Field(default=None, repr=False)
    aws_session_token: str | None = Field(default=None, repr=False)

    @classmethod
    def from_environment(cls) -> S3Connection:
        """The production connection (``S3_ENV``) with the values set in the environment now."""
        values = {field: os.environ[name] for field, name in S3_ENV.items() if os.environ.get(name)}
        return cls.model_validate(values)


def connect(
    connection: S3Connection,
    *,
    max_pool_connections: int = 10,
    retry_mode: Literal["standard", "adaptive"] = "standard",
    max_attempts: int = 8,
    connect_timeout: float = 5,
    read_timeout: float = 30,
) -> Any:
    """A boto3 S3 client for ``connection``, with our connection pool and retries.

    Built here rather than by ``S3Resource.get_client`` because that does not let us set the
    connection pool size or botocore's "standard"/"adaptive" retries (throttling such as
    SlowDown, 5xx and connection errors, with exponential backoff). Every S3 user connects
    through it, so they all connect the same way.
    """
    config = Config(
        max_pool_connections=max_pool_connections,
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        # Path-style works for every S3-compatible server behind a custom endpoint.
        s3={"addressing_style": "path"} if connection.endpoint_url else None,
        signature_version=UNSIGNED if connection.use_unsigned_session else None,
    )
    session = boto3.session.Session(profile_name=connection.profile_name)
    s3 = session.client(
        "s3",
        region_name=connection.region_name,
        endpoint_url=connection.endpoint_url,
        use_ssl=connection.use_ssl,
        verify=connection.verify,
        aws_access_key_id=connection.aws_access_key_id,
        aws_secret_access_key=connection.aws_secret_access_key,
        aws_session_token=connection.aws_session_token,
        config=config,
    )
    # Objects are small: waiting for "100 Continue" before each body would add a whole round
    # trip per object, halving throughput on a distant link.
    s3.meta.events.unregister("before-call.s3", botocore.handlers.add_expect_header)
    return s3


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; ValueError otherwise."""
    parts = urlsplit(uri.strip())
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("must look like s3://bucket/prefix (for example s3://my-bucket/state)")
    return parts.netloc, parts.path.strip("/")


def describe_error(exc: BaseException) -> str:
    """One clean line for a failed write or read: the S3 error code and message, or a file
    error's errno name; never credentials."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        attempts = meta.get("RetryAttempts", 0) + 1
        text = (
            f"{error.get('Code', 'Error')} (HTTP {meta.get('HTTPStatusCode', '?')}) after "
            f"{attempts} attempt(s): {error.get('Message', '')}"
        ).rstrip(": ")
    elif isinstance(exc, OSError) and exc.errno is not None and exc.errno in errno.errorcode:
        # ENOSPC, EACCES, EROFS...: the symbolic name is what an operator searches for.
        text = f"{errno.errorcode[exc.errno]}: {exc.strerror}"
        if exc.filename:
            text += f": {exc.filename}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())
