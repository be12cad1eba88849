"""S3 through boto3: the one place that talks to S3 (an ``ObjectStore``).

Everything above this module deals in keys and bytes; every boto/botocore failure leaves it as
a StorageError (or NotFoundError) with one readable line that never carries a secret.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import IO, Any

import boto3
import botocore.exceptions
import botocore.parsers
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from ..errors import (
    BucketNotFoundError,
    NotFoundError,
    PreconditionFailedError,
    StorageError,
    UnreachableError,
)
from .base import ObjectInfo, ObjectStore, RequestCounter
from .config import DEFAULT_REGION, StorageConfig

DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys per request
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
# What any S3 server's ListObjectsV2 answer holds, and the gateway errors (a proxy in front of
# S3 that is failing: an outage, not a wrong endpoint) that carry no S3 error code.
_LISTING_FIELDS = {"IsTruncated", "KeyCount", "MaxKeys", "Name"}
_GATEWAY_STATUSES = {502, 503, 504}
_UNAVAILABLE_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "Throttling",
                      "ThrottlingException", "RequestTimeout", "500", "502", "503", "504"}


def _not_s3(response: dict[str, Any]) -> bool:
    """An error answer no S3 server gives to a listing: no S3 error code in its body (only
    the HTTP status), other than a gateway's 502/503/504, or a web page (botocore calls a
    200 page it cannot parse a 500)."""
    code = str(response.get("Error", {}).get("Code", ""))
    meta = response.get("ResponseMetadata", {})
    status = meta.get("HTTPStatusCode")
    html = meta.get("HTTPHeaders", {}).get("content-type", "").startswith("text/html")
    return ((not code or code.isdigit()) and status not in _GATEWAY_STATUSES
            and (status != 500 or html))


class _Body:
    """A streaming object body whose read() raises only our errors."""

    def __init__(self, storage: S3Store, key: str, body: Any) -> None:
        self._storage, self._key, self._body = storage, key, body

    def read(self, size: int = -1, /) -> bytes:
        with self._storage._errors(f"reading {self._key}"):
            return bytes(self._body.read(None if size < 0 else size))


class S3Store(ObjectStore):
    """list / get / put / delete over one S3 bucket."""

    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.bucket = config.bucket
        botocfg = Config(
            s3={"addressing_style": "path" if config.endpoint else "auto"},
            # (botocore's "max_attempts" counts retries; "total_max_attempts" the first try too)
            retries={"total_max_attempts": config.max_attempts, "mode": "standard"},
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
            raise UnreachableError(f"cannot reach S3 endpoint {where}: "
                                   f"{type(exc).__name__}") from None
        except botocore.exceptions.ReadTimeoutError:
            raise UnreachableError(f"S3 endpoint {where} timed out during {what}") from None
        except botocore.exceptions.HTTPClientError as exc:  # the connection failed mid-way
            raise UnreachableError(f"S3 endpoint {where}: the connection failed during {what} "
                                   f"({type(exc).__name__})") from None
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
                raise UnreachableError(f"S3 endpoint {where} kept failing ({code}) during "
                                       f"{what}, {self.config.max_attempts} attempts") from None
            raise StorageError(f"S3 error during {what}: {code}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise StorageError(f"S3 request failed during {what}: {type(exc).__name__}") from None

    # --- bucket -----------------------------------------------------------------------------

    @property
    def where(self) -> str:
        """The endpoint, as error messages name it."""
        return self.config.endpoint or "AWS S3"

    def _missing_bucket(self) -> BucketNotFoundError:
        return BucketNotFoundError(f"bucket {self.bucket!r} does not exist at {self.where} "
                                   "(create it, or replicate with --create-bucket)")

    def check_bucket(self) -> None:
        """Fail early, with a clear message, if the bucket is missing or not ours to use, or
        the endpoint is no S3 server. A listing rather than HEAD: every answer of an S3
        server to it, success or error, is an XML document naming what it is; a web page
        is not (HEAD has no body, and a web server's 404 looked like a missing bucket)."""
        what = f"checking bucket {self.bucket!r}"
        with self._errors(what):
            try:
                r = self._client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
            except botocore.exceptions.ClientError as exc:
                if _not_s3(exc.response):
                    raise self._not_s3(exc.response) from None
                raise
            except botocore.parsers.ResponseParserError:
                raise self._not_s3({}) from None
        if not _LISTING_FIELDS & set(r):
            raise self._not_s3(r)

    def _not_s3(self, response: dict[str, Any]) -> StorageError:
        meta = response.get("ResponseMetadata", {})
        kind = meta.get("HTTPHeaders", {}).get("content-type", "").split(";")[0]
        status = meta.get("HTTPStatusCode")
        if status == 500 and kind == "text/html":
            status = None  # (botocore's name for a page it could not read as XML)
        answer = ", ".join(x for x in (kind and f"a {kind} page", status and f"HTTP {status}")
                           if x)
        return StorageError(f"the endpoint {self.where} does not answer as S3"
                            f"{f' ({answer})' if answer else ''}: check -e / "
                            "LIBSQL_BOTTOMLESS_ENDPOINT (the S3 API's address and port)")

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

    def list_level(self, prefix: str) -> Iterator[str | ObjectInfo]:
        """Common prefixes and objects one level below ``prefix``, from one delimited listing
        (each page holds both, each in key order: merged)."""
        for page in self._pages(prefix, "/", None):
            prefixes = [cp["Prefix"] for cp in page.get("CommonPrefixes", [])]
            objects = [ObjectInfo(o["Key"], o.get("Size", 0), o.get("LastModified"))
                       for o in page.get("Contents", []) if o["Key"] != prefix]
            yield from heapq.merge(prefixes, objects,
                                   key=lambda e: e if isinstance(e, str) else e.key)

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

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        rng = f"bytes={start}-{start + length - 1}"
        try:
            with self._errors(f"reading {key}"):
                return self._client.get_object(Bucket=self.bucket, Key=key,
                                               Range=rng)["Body"].read()
        except StorageError as exc:
            if "InvalidRange" in str(exc):  # at or past the end of the object
                return b""
            raise

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

    def count_requests(self, counter: RequestCounter) -> bool:
        """Count every request the boto3 client sends, with its payload bytes (botocore's
        events: one hook before sending, one after the answer or the error)."""

        def operation(kwargs: dict[str, Any]) -> str:
            return str(kwargs.get("event_name", "")).rsplit(".", 1)[-1] or "unknown"

        def before_send(request: Any, **kwargs: Any) -> None:
            body = request.body
            size = len(body) if isinstance(body, bytes | bytearray) else int(
                request.headers.get("Content-Length", 0) or 0)
            counter.sent(operation(kwargs), size)

        def after_call(http_response: Any = None, **kwargs: Any) -> None:
            op = operation(kwargs)
            headers = getattr(http_response, "headers", None) or {}
            received = int(headers.get("Content-Length", 0) or 0) if op == "GetObject" else 0
            counter.answered(op, received)

        self._client.meta.events.register("before-send.s3", before_send)
        self._client.meta.events.register("after-call.s3", after_call)
        self._client.meta.events.register("after-call-error.s3", after_call)
        return True

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
