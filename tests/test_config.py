"""replicate --config: validation of the TOML file (pure, no server)."""

from __future__ import annotations

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
    ("[[databases]]\npath = 'a.db'\n[[databases]]\npath = 'b/a.db'\n", "same bucket"),
    ("[[databases\n", "not valid TOML"),
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
    assert "not both" in out.stderr


def test_namespace_gives_the_name_libsql_finds(tmp_path: Path) -> None:
    """libSQL's readers only address names starting with ns- (issue 15)."""
    path = _write(tmp_path, "[[databases]]\npath = 'a.db'\nnamespace = 'tenant1'\n"
                            "[[databases]]\npath = 'b.db'\n")
    a, b = load_config(path)
    assert a.db_name == "ns-tenant1" and b.db_name == "b.db"
