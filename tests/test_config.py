"""replicate --config: validation of the TOML file (pure, no server)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from bottomless_core.codec import Codec
from bottomless_core.config import load_config
from bottomless_core.errors import ConfigError
from tests.conftest import Cli


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bottomless.toml"
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, '''
bucket = "backups"
interval = 0.5
[[databases]]
path = "app.db"
[[databases]]
path = "/srv/audit.db"
db_name = "audit"
bucket = "audit-bucket"
compression = "gzip"
checkpoint_pages = 5000
''')
    a, b = load_config(path, {"endpoint": "http://127.0.0.1:1"})
    assert a.path == tmp_path / "app.db" and a.db_name == "app.db"
    assert a.bucket == "backups" and a.settings.interval == 0.5
    assert a.endpoint == "http://127.0.0.1:1"
    assert b.path == Path("/srv/audit.db") and b.db_name == "audit"
    assert b.bucket == "audit-bucket" and b.settings.compression is Codec.GZIP
    assert b.settings.checkpoint_pages == 5000


@pytest.mark.parametrize(("text", "message"), [
    ("bucket = 'x'\n", "needs at least one"),
    ("[[databases]]\ndb_name = 'x'\n", "has no path"),
    ("[[databases]]\npath = 'a.db'\nbuckett = 'x'\n", "unknown key 'buckett'"),
    ("intervall = 1\n[[databases]]\npath = 'a.db'\n", "unknown key 'intervall'"),
    ("[[databases]]\npath = 'a.db'\ninterval = -1\n", "interval: -1 must be at least 0.05"),
    ("[[databases]]\npath = 'a.db'\ncompression = 'lz4'\n", "unknown compression"),
    ("[[databases]]\npath = 'a.db'\n[[databases]]\npath = 'b/a.db'\n",
     r"entries 1 \(.*a.db\) and 2 \(.*b/a.db\) both back up to the name 'a.db'"),
    ("[[databases\n", "not valid TOML"),
    # every bad value names its key (and where it is)
    ("interval = 'fast'\n[[databases]]\npath = 'a.db'\n",
     "top level: interval: 'fast' is not a number"),
    ("[[databases]]\npaht = 'a.db'\n", "unknown key 'paht' at"),
    ("[[databases]]\npath = 3\n", "entry 1: path: 3 is not a string"),
    ("[[databases]]\npath = ''\n", "entry 1: path: empty"),
    ("bucket = 4\n[[databases]]\npath = 'a.db'\n", "top level: bucket: 4 is not a string"),
    ("[[databases]]\npath = 'a.db'\nendpoint = 5\n", "entry 1: endpoint: 5 is not a string"),
    ("[[databases]]\npath = 'a.db'\nmetrics_addr = '127.0.0.1:9'\n",
     "'metrics_addr' at .*entry 1: .* at the top level"),
    ("[[databases]]\npath = 'a.db'\nendpoint = 'file://host/x'\n", "entry 1: endpoint"),
    ("[[databases]]\npath = 'a.db'\nsse = 'des'\n", "entry 1: sse 'des': use AES256"),
    ("sse_kms_key_id = 'k'\n[[databases]]\npath = 'a.db'\n",
     "entry 1: sse_kms_key_id needs sse aws:kms"),
])
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")


def test_config_and_database_are_exclusive(run: Cli, tmp_path: Path) -> None:
    path = _write(tmp_path, "[[databases]]\npath = 'a.db'\n")
    out = run("-d", str(tmp_path / "a.db"), "replicate", "--config", str(path), code=2)
    assert "not -d/--database and --config" in out.stderr


def test_namespace_gives_the_name_libsql_finds(tmp_path: Path) -> None:
    """libSQL's readers only address names starting with ns- (issue 15)."""
    path = _write(tmp_path, "[[databases]]\npath = 'a.db'\nnamespace = 'tenant1'\n"
                            "[[databases]]\npath = 'b.db'\n")
    a, b = load_config(path)
    assert a.db_name == "ns-tenant1" and b.db_name == "b.db"


@pytest.mark.parametrize(("one", "other"), [
    ("http://127.0.0.1:18333", "http://127.0.0.1:18333/"),
    ("HTTP://127.0.0.1:80", "http://127.0.0.1"),
    ("https://S3.example.com/", "https://s3.example.com:443"),
    ("file:backups", "file:./backups/"),
])
def test_one_server_spelled_two_ways_is_one_name(tmp_path: Path, one: str, other: str) -> None:
    """Issue 16: a trailing slash made two entries write one name, each 'starting cleanly'
    over the other; both entries are named."""
    path = _write(tmp_path, f"[[databases]]\npath = 'a.db'\nendpoint = '{one}'\n"
                            f"[[databases]]\npath = 'b/a.db'\nendpoint = '{other}'\n")
    with pytest.raises(ConfigError, match=r"entries 1 \(.*a.db\) and 2 \(.*b/a.db\)"):
        load_config(path)


def test_other_servers_and_names_are_not_twins(tmp_path: Path) -> None:
    path = _write(tmp_path, "[[databases]]\npath = 'a.db'\nendpoint = 'http://127.0.0.1:1'\n"
                            "[[databases]]\npath = 'b/a.db'\nendpoint = 'http://127.0.0.1:2'\n"
                            "[[databases]]\npath = 'c/a.db'\nendpoint = 'http://127.0.0.1:1'\n"
                            "db_name = 'c'\n")
    assert [d.db_name for d in load_config(path)] == ["a.db", "a.db", "c"]


def test_one_file_twice_is_refused_at_once(run: Cli, tmp_path: Path) -> None:
    """Issue 16: listed under two names (or through a symlink), the daemon waited 30 s for
    its own lock, then said another replicator held it."""
    sqlite3.connect(tmp_path / "a.db").execute("PRAGMA journal_mode=WAL").fetchone()
    (tmp_path / "link.db").symlink_to(tmp_path / "a.db")
    path = _write(tmp_path, "[[databases]]\npath = 'a.db'\n"
                            "[[databases]]\npath = 'link.db'\ndb_name = 'other'\n")
    started = time.monotonic()
    out = run("replicate", "--config", str(path), code=2)
    assert time.monotonic() - started < 10
    assert "entries 1" in out.stderr and "are the same database file" in out.stderr
