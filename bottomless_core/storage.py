"""The one place that talks to S3: the boto3 implementation of ``objectstore.ObjectStore``.

Everything above this module deals in keys and bytes; every boto/botocore failure leaves it as
a StorageError (or NotFoundError) with one readable line that never carries a secret.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from .errors import (
    BucketNotFoundError,
    ConfigError,
    NotFoundError,
    PreconditionFailedError,
    StorageError,
)
from .objectstore import ObjectInfo

__all__ = ["DEFAULT_BUCKET", "DEFAULT_ENDPOINT", "ObjectInfo", "ServerSideEncryption", "Storage",
           "StorageConfig"]

DEFAULT_ENDPOINT = "http://localhost:9000"
DEFAULT_BUCKET = "bottomless"
DEFAULT_REGION = "us-east-1"
# botocore "standard" retries: exponential backoff (jittered, up to 20 s) on throttling, 5xx
# and connection errors; 5 attempts ride out a server restart without hanging a user for long.
MAX_ATTEMPTS = 5
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys per request
DOWNLOAD_CHUNK = 1 << 20
# Multipart: 8 MiB parts, 4 in flight -> at most ~32 MiB buffered for a streaming upload (an
# encrypted snapshot has no length: s3transfer reads its parts into memory, by default up to
# 10 of them, which the cap below keeps at the 4 being sent).
TRANSFER = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=8 << 20,
                          max_concurrency=4, use_threads=True)
TRANSFER.max_in_memory_upload_chunks = 4  # s3transfer's setting; boto3's __init__ lacks it

_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden",
               "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed", "403"}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
_PRECONDITION_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_UNAVAILABLE_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "Throttling",
                      "ThrottlingException", "RequestTimeout", "500", "502", "503", "504"}


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
              ) -> ServerSideEncryption | None:
        if not algorithm:
            if kms_key_id:
                raise ConfigError("--sse-kms-key-id needs --sse aws:kms")
            return None
        name = SSE_ALGORITHMS.get(algorithm.strip().lower())
        if name is None:
            raise ConfigError(f"--sse {algorithm!r}: use AES256 or aws:kms")
        if kms_key_id and name != "aws:kms":
            raise ConfigError("--sse-kms-key-id needs --sse aws:kms, not AES256")
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


class _Body:
    """A streaming object body whose read() raises only our errors."""

    def __init__(self, storage: Storage, key: str, body: Any) -> None:
        self._storage, self._key, self._body = storage, key, body

    def read(self, size: int = -1, /) -> bytes:
        with self._storage._errors(f"reading {self._key}"):
            return bytes(self._body.read(None if size < 0 else size))


class Storage:
    """list / get / put / delete over one S3 bucket (an ``ObjectStore``)."""

    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.bucket = config.bucket
        botocfg = Config(
            s3={"addressing_style": "path" if config.endpoint else "auto"},
            retries={"max_attempts": config.max_attempts, "mode": "standard"},
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            # Flexible checksums are not implemented by every S3-compatible server.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=16,
        )
        try:
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=config.endpoint,
                region_name=config.region or DEFAULT_REGION,
                aws_access_key_id=config.access_key_id,
                aws_secret_access_key=config.secret_access_key,
                aws_session_token=config.session_token,
                config=botocfg,
            )
        except botocore.exceptions.ProfileNotFound as exc:
            raise StorageError(f"AWS profile {exc.kwargs.get('profile', '')!r} not found "
                               "(AWS_PROFILE / ~/.aws/config)") from None
        except ValueError as exc:  # e.g. an endpoint URL that is not a URL
            raise StorageError(f"bad S3 configuration: {exc}") from None

    # --- error translation ------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        where = self.where
        try:
            yield
        except botocore.exceptions.NoCredentialsError:
            raise StorageError("no S3 credentials found: set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY (or LIBSQL_BOTTOMLESS_AWS_*)") from None
        except (botocore.exceptions.EndpointConnectionError,
                botocore.exceptions.ConnectTimeoutError,
                botocore.exceptions.ConnectionClosedError) as exc:
            raise StorageError(f"cannot reach S3 endpoint {where}: "
                               f"{type(exc).__name__}") from None
        except botocore.exceptions.ReadTimeoutError:
            raise StorageError(f"S3 endpoint {where} timed out during {what}") from None
        except botocore.exceptions.ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", "")) or str(
                exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))
            if code == "NoSuchBucket":
                raise self._missing_bucket() from None
            if code in _AUTH_CODES:
                raise StorageError(f"S3 refused the credentials for bucket {self.bucket!r} "
                                   f"at {where} ({code})") from None
            if code in _NOT_FOUND_CODES:
                raise NotFoundError(f"{what}: no such object") from None
            if code in _PRECONDITION_CODES:
                raise PreconditionFailedError(f"{what}: the object changed meanwhile "
                                              f"({code})") from None
            if code in _UNAVAILABLE_CODES:
                raise StorageError(f"S3 endpoint {where} kept failing ({code}) during {what}, "
                                   f"{self.config.max_attempts} attempts") from None
            raise StorageError(f"S3 error during {what}: {code}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise StorageError(f"S3 request failed during {what}: {type(exc).__name__}") from None

    # --- bucket -----------------------------------------------------------------------------

    @property
    def where(self) -> str:
        """The endpoint, as error messages name it."""
        return self.config.endpoint or "AWS S3"

    def _missing_bucket(self) -> BucketNotFoundError:
        return BucketNotFoundError(f"bucket {self.bucket!r} does not exist at {self.where}")

    def check_bucket(self) -> None:
        """Fail early, with a clear message, if the bucket is missing or not ours to use."""
        try:
            with self._errors(f"checking bucket {self.bucket!r}"):
                self._client.head_bucket(Bucket=self.bucket)
        except NotFoundError:
            raise self._missing_bucket() from None

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (an explicit choice: a typo must not create one)."""
        try:
            self.check_bucket()
        except BucketNotFoundError:
            self.create_bucket()

    def create_bucket(self) -> None:
        with self._errors(f"creating bucket {self.bucket!r}"):
            try:
                self._client.create_bucket(Bucket=self.bucket)
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in (
                        "BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    # --- listing ----------------------------------------------------------------------------

    def _pages(self, prefix: str, delimiter: str | None, start_after: str | None,
               ) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if start_after:
            kwargs["StartAfter"] = start_after
        with self._errors(f"listing {prefix!r}"):
            yield from self._client.get_paginator("list_objects_v2").paginate(**kwargs)

    def list_objects(self, prefix: str, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, in key order."""
        for page in self._pages(prefix, None, start_after):
            for obj in page.get("Contents", []):
                yield ObjectInfo(obj["Key"], obj.get("Size", 0), obj.get("LastModified"))

    def list_prefixes(self, prefix: str, delimiter: str = "/") -> Iterator[str]:
        """The common prefixes one level below ``prefix`` (one per generation), in key order."""
        for page in self._pages(prefix, delimiter, None):
            for cp in page.get("CommonPrefixes", []):
                yield cp["Prefix"]

    # --- objects ----------------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        try:
            with self._errors(f"reading {key}"):
                r = self._client.head_object(Bucket=self.bucket, Key=key)
        except NotFoundError:
            return None
        return ObjectInfo(key, r.get("ContentLength", 0), r.get("LastModified"),
                          dict(r.get("Metadata", {})))

    def get(self, key: str) -> bytes:
        with self._errors(f"reading {key}"):
            return self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def get_optional(self, key: str) -> bytes | None:
        try:
            return self.get(key)
        except NotFoundError:
            return None

    def download(self, key: str, sink: Callable[[bytes], None]) -> int:
        """Stream an object into ``sink`` chunk by chunk; return its size."""
        total = 0
        with self._errors(f"reading {key}"):
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
            for chunk in body.iter_chunks(DOWNLOAD_CHUNK):
                total += len(chunk)
                sink(chunk)
        return total

    @contextlib.contextmanager
    def open_object(self, key: str) -> Iterator[_Body]:
        """An object as a readable stream (``read(n)``), every failure mapped as for get."""
        with self._errors(f"reading {key}"):
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
        try:
            yield _Body(self, key, body)
        finally:
            body.close()

    def get_with_metadata(self, key: str) -> tuple[bytes, dict[str, str], str] | None:
        """An object's bytes, user metadata and ETag; None when it does not exist."""
        try:
            with self._errors(f"reading {key}"):
                r = self._client.get_object(Bucket=self.bucket, Key=key)
                return r["Body"].read(), dict(r.get("Metadata", {})), str(r.get("ETag", ""))
        except NotFoundError:
            return None

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None, *,
            if_match: str | None = None, if_none_match: bool = False) -> str:
        """Write a small object in one request; return its ETag. ``if_match`` / ``if_none_match``
        make it conditional (PreconditionFailedError when the condition does not hold)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": data,
                                  **self._sse_args()}
        if metadata:
            kwargs["Metadata"] = metadata
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        with self._errors(f"writing {key}"):
            return str(self._client.put_object(**kwargs).get("ETag", ""))

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def _sse_args(self) -> dict[str, str]:
        sse = self.config.sse
        return sse.request_args() if sse is not None else {}

    def stale_uploads(self, prefix: str) -> Iterator[tuple[str, str, datetime | None]]:
        """Unfinished multipart uploads under ``prefix``: (key, upload id, initiated)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        with self._errors(f"listing uploads under {prefix!r}"):
            for page in self._client.get_paginator("list_multipart_uploads").paginate(**kwargs):
                for up in page.get("Uploads", []):
                    yield up["Key"], up["UploadId"], up.get("Initiated")

    def abort_upload(self, key: str, upload_id: str) -> None:
        try:
            with self._errors(f"aborting the upload of {key}"):
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=key,
                                                    UploadId=upload_id)
        except NotFoundError:
            pass

    def upload(self, key: str, stream: IO[bytes], metadata: dict[str, str] | None = None,
               on_progress: Callable[[int], None] | None = None) -> None:
        """Write an object of any size from a readable stream (multipart when large)."""
        extra: dict[str, Any] = {"Metadata": metadata} if metadata else {}
        extra.update(self._sse_args())
        with self._errors(f"writing {key}"):
            self._client.upload_fileobj(stream, self.bucket, key, ExtraArgs=extra or None,
                                        Config=TRANSFER, Callback=on_progress)

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete keys in batches of 1000; return how many were deleted."""
        batch: list[str] = []
        deleted = 0

        def flush() -> int:
            with self._errors(f"deleting {len(batch)} objects"):
                r = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            errors = r.get("Errors", [])
            if errors:
                raise StorageError(f"S3 refused to delete {len(errors)} objects "
                                   f"(first: {errors[0].get('Key')}: {errors[0].get('Code')})")
            return len(batch)

        for key in keys:
            batch.append(key)
            if len(batch) == DELETE_BATCH:
                deleted += flush()
                batch = []
        if batch:
            deleted += flush()
        return deleted
