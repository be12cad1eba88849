"""The one place that knows every backend and wrapper: the store for ``-e ENDPOINT -b BUCKET``.

A ``file:`` endpoint is a directory (store/files.py), anything else S3 (store/s3.py, whose
boto3 is imported only then); ``open_store`` puts the age layer (store/age.py) on top.
"""

from __future__ import annotations

from collections.abc import Callable

from ..agekeys import AgeKeys
from ..errors import ConfigError
from .base import ObjectStore
from .config import ServerSideEncryption, StorageConfig, file_root


def open_backend(endpoint: str | None, bucket: str, env: dict[str, str] | None = None, *,
                 sse: ServerSideEncryption | None = None,
                 s3: Callable[[StorageConfig], ObjectStore] | None = None) -> ObjectStore:
    """A FileStore for ``file:`` endpoints, else S3 (credentials from ``env``, default
    os.environ). ``sse``: S3 server-side encryption for every upload (refused for a
    directory). ``s3`` replaces the S3 class (tests)."""
    root = file_root(endpoint)
    if root is not None:
        if sse is not None:
            raise ConfigError(f"--sse {sse.algorithm} is S3 server-side encryption; endpoint "
                              f"{endpoint} is a local directory (use --age-recipient to "
                              "encrypt the backup itself)")
        from .files import FileStore

        return FileStore(root, bucket)
    if s3 is None:
        from .s3 import S3Store

        s3 = S3Store
    return s3(StorageConfig.from_env(endpoint, bucket, env, sse))


def open_store(endpoint: str | None, bucket: str, env: dict[str, str] | None = None, *,
               sse: ServerSideEncryption | None = None, keys: AgeKeys | None = None,
               s3: Callable[[StorageConfig], ObjectStore] | None = None) -> ObjectStore:
    """The backend behind the age layer: with ``keys`` it encrypts and decrypts, without
    them it still tells an encrypted object from a plain one (one clear error)."""
    from .age import with_age

    return with_age(open_backend(endpoint, bucket, env, sse=sse, s3=s3), keys)
