"""One real SeaweedFS S3 server per test session (credentials enforced), a bucket per test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bottomless_cli.main import cli
from bottomless_core.store.config import StorageConfig
from bottomless_core.store.s3 import S3Store
from bottomless_dev.seaweed import SeaweedServer


@pytest.fixture(scope="session")
def s3() -> Iterator[SeaweedServer]:
    with SeaweedServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _drop_new_buckets(request: pytest.FixtureRequest) -> Iterator[None]:
    """Remove the buckets a test created: SeaweedFS gives each bucket its own volumes, and a
    server holding a few hundred buckets refuses writes (InternalError) once they run out."""
    if "s3" not in request.fixturenames:
        yield
        return
    s3: SeaweedServer = request.getfixturevalue("s3")
    before = set(_bucket_names(s3))
    yield
    for name in set(_bucket_names(s3)) - before:
        _drop_bucket(s3, name)


def _bucket_names(s3: SeaweedServer) -> list[str]:
    client = storage_for(s3, "unused")._client
    return [b["Name"] for b in client.list_buckets().get("Buckets", [])]


def _drop_bucket(s3: SeaweedServer, name: str) -> None:
    storage = storage_for(s3, name)
    storage.delete_many(obj.key for obj in storage.list_objects(""))
    storage._client.delete_bucket(Bucket=name)


@pytest.fixture
def bucket(s3: SeaweedServer) -> str:
    name = f"t-{secrets.token_hex(6)}"
    storage_for(s3, name).create_bucket()
    return name


def storage_for(s3: SeaweedServer, bucket: str) -> S3Store:
    return S3Store(StorageConfig(s3.endpoint, bucket, "us-east-1", s3.access_key, s3.secret_key))


@pytest.fixture
def storage(s3: SeaweedServer, bucket: str) -> S3Store:
    return storage_for(s3, bucket)


@dataclass
class Cli:
    """Runs bottomless-cli in-process with the test server's endpoint and credentials."""

    env: dict[str, str]
    cwd: Path

    def __call__(self, *args: str, code: int = 0, env: dict[str, str | None] | None = None,
                 ) -> Result:
        runner = CliRunner()
        result = runner.invoke(cli, list(args), env={**self.env, **(env or {})},
                               catch_exceptions=False)
        assert result.exit_code == code, (
            f"exit {result.exit_code} != {code} for {args}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result


@pytest.fixture
def run(s3: SeaweedServer, bucket: str, tmp_path: Path) -> Cli:
    env = {**s3.env(), "LIBSQL_BOTTOMLESS_BUCKET": bucket}
    return Cli(env, tmp_path)
