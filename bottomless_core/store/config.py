"""Where a bucket is and how to reach it: the settings of a store, without its client.

``StorageConfig`` for S3 (endpoint, region, credentials from LIBSQL_BOTTOMLESS_AWS_*, retries,
timeouts, server-side encryption); a ``file:`` endpoint names a directory instead
(``file_root``). Nothing here imports boto3.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

FILE_SCHEME = "file:"
DEFAULT_ENDPOINT = "http://localhost:9000"
DEFAULT_BUCKET = "bottomless"
DEFAULT_REGION = "us-east-1"
# botocore "standard" retries: exponential backoff (jittered, up to 20 s) on throttling, 5xx
# and connection errors; 5 attempts ride out a server restart without hanging a user for long.
MAX_ATTEMPTS = 5


SSE_ALGORITHMS = {"aes256": "AES256", "aws:kms": "aws:kms"}


@dataclass(frozen=True)
class ServerSideEncryption:
    """S3 server-side encryption asked for on every upload (``--sse``): the provider keeps
    the objects encrypted at rest; it reads them back in clear for anyone the bucket lets
    read. ``aws:kms`` may name the KMS key (else the bucket's default key)."""

    algorithm: str  # "AES256" or "aws:kms"
    kms_key_id: str | None = None

    @classmethod
    def parse(cls, algorithm: str | None, kms_key_id: str | None = None,
              names: tuple[str, str] = ("--sse", "--sse-kms-key-id"),
              ) -> ServerSideEncryption | None:
        """``names``: what the two values are called where they were given (a config file
        names its keys)."""
        sse, kms = names
        if not algorithm:
            if kms_key_id:
                raise ConfigError(f"{kms} needs {sse} aws:kms")
            return None
        name = SSE_ALGORITHMS.get(algorithm.strip().lower())
        if name is None:
            raise ConfigError(f"{sse} {algorithm!r}: use AES256 or aws:kms")
        if kms_key_id and name != "aws:kms":
            raise ConfigError(f"{kms} needs {sse} aws:kms, not AES256")
        return cls(name, kms_key_id or None)

    def request_args(self) -> dict[str, str]:
        args = {"ServerSideEncryption": self.algorithm}
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args


@dataclass(frozen=True)
class StorageConfig:
    """Where the bucket is and how to sign requests (None = boto3's default chain)."""

    endpoint: str | None = DEFAULT_ENDPOINT
    bucket: str = DEFAULT_BUCKET
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    max_attempts: int = MAX_ATTEMPTS
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    sse: ServerSideEncryption | None = None

    @classmethod
    def from_env(cls, endpoint: str | None, bucket: str, env: dict[str, str] | None = None,
                 sse: ServerSideEncryption | None = None) -> StorageConfig:
        """Credentials and region from the seed's LIBSQL_BOTTOMLESS_AWS_* variables, if set."""
        env = dict(os.environ if env is None else env)
        return cls(
            endpoint=endpoint or None,
            bucket=bucket,
            region=env.get("LIBSQL_BOTTOMLESS_AWS_DEFAULT_REGION") or env.get("AWS_DEFAULT_REGION")
            or env.get("AWS_REGION") or DEFAULT_REGION,
            access_key_id=env.get("LIBSQL_BOTTOMLESS_AWS_ACCESS_KEY_ID"),
            secret_access_key=env.get("LIBSQL_BOTTOMLESS_AWS_SECRET_ACCESS_KEY"),
            session_token=env.get("LIBSQL_BOTTOMLESS_AWS_SESSION_TOKEN"),
            max_attempts=1 + _int_env(env, "LIBSQL_BOTTOMLESS_S3_MAX_RETRIES",
                                      MAX_ATTEMPTS - 1),
            sse=sse,
        )


def _int_env(env: dict[str, str], name: str, default: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return max(0, int(value))
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {value!r}") from None


def file_root(endpoint: str | None) -> Path | None:
    """The directory named by a ``file:`` endpoint (``file:///abs/dir``, ``file:rel/dir``,
    relative to the working directory), or None for any other endpoint."""
    if not endpoint or endpoint[:len(FILE_SCHEME)].lower() != FILE_SCHEME:
        return None
    rest = endpoint[len(FILE_SCHEME):]
    if rest.startswith("//"):
        parts = urllib.parse.urlsplit(endpoint)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"endpoint {endpoint!r}: a file: endpoint names a local "
                              "directory (file:///var/backups/bottomless), not a host")
        path = urllib.parse.unquote(parts.path)
    else:
        path = urllib.parse.unquote(rest)
    if not path:
        raise ConfigError(f"endpoint {endpoint!r} names no directory "
                          "(e.g. file:///var/backups/bottomless)")
    return Path(os.path.abspath(path))


_DEFAULT_PORTS = {"http": 80, "https": 443}


def same_place(endpoint: str | None) -> str | None:
    """The endpoint as two spellings of one place compare equal: scheme and host in lower
    case, the default port spelled out, no trailing slash; a ``file:`` endpoint as its
    directory's URI. None (AWS S3) stays None; what is no URL stays as it is."""
    if endpoint is None:
        return None
    root = file_root(endpoint)
    if root is not None:
        return root.as_uri()
    parts = urllib.parse.urlsplit(endpoint.strip())
    scheme = parts.scheme.lower()
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is no number: compared as written
        return endpoint
    if not scheme or host is None:
        return endpoint
    port = port or _DEFAULT_PORTS.get(scheme)
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}{f':{port}' if port else ''}{parts.path.rstrip('/')}"
