"""One real SeaweedFS S3 server per test session (credentials enforced), a bucket per test."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import bottomless_core.restore
from bottomless_cli.main import cli
from bottomless_core.store.config import StorageConfig
from bottomless_core.store.s3 import S3Store
from bottomless_dev.seaweed import SeaweedServer
from tests.libsql_check import CrossCheck

EXEMPT = "libsql_exempt"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{EXEMPT}(reason, encrypted=False): the restores of this test are not "
        "cross-checked with libSQL's rules (tests/libsql_restore.py); say why. encrypted=True: "
        "only restores of buckets holding age objects are not, the others still are")


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


@pytest.fixture(autouse=True)
def _libsql_reads_it_too(request: pytest.FixtureRequest,
                         monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every restore a test makes in this process (CliRunner commands included) is done again
    with libSQL's rules from the raw bucket, and must give the same rows (tests/libsql_check.py).
    A test marked ``libsql_exempt(reason)`` is not checked; ``libsql_exempt(reason,
    encrypted=True)``: only its restores of buckets holding age objects are not."""
    marker = request.node.get_closest_marker(EXEMPT)
    if marker is not None:
        assert marker.args and marker.args[0], f"{EXEMPT} needs a reason"
    encrypted_ok = marker is not None and marker.kwargs.get("encrypted", False)
    if marker is not None and not encrypted_ok:
        yield
        return
    s3 = request.getfixturevalue("s3") if "s3" in request.fixturenames else None
    original = bottomless_core.restore.restore
    check = CrossCheck(request.node.nodeid, s3, original)
    for name, module in list(sys.modules.items()):
        if name.startswith(("bottomless_", "tests.")) and module is not None:
            for attr, value in list(vars(module).items()):
                if value is original:
                    monkeypatch.setattr(module, attr, check)
    yield
    problems = [o.line() for o in check.problems()]
    if check.encrypted and not encrypted_ok:
        problems.append(f"restored encrypted buckets ({'; '.join(check.encrypted)}): mark the "
                        f"test {EXEMPT}('encrypted: ...', encrypted=True)")
    if problems:
        pytest.fail(f"libSQL's restore rules disagree with ours ({len(problems)}):\n  "
                    + "\n  ".join(problems), pytrace=False)


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
