"""Dates, times and durations from the user: strict ISO 8601 or a duration, never a guess."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import bottomless_cli.context
from bottomless_cli.main import cli
from bottomless_core.dates import parse_duration, parse_older_than, parse_utc_time
from bottomless_core.errors import ConfigError

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def _refused(func: object, text: str, *needles: str) -> str:
    with pytest.raises(ConfigError) as info:
        func(text)  # type: ignore[operator]
    message = str(info.value)
    assert repr(text) in message, message
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-05-01", _utc(2024, 5, 1)),
    ("2024-02-29", _utc(2024, 2, 29)),
    ("2024-05-01T08:00", _utc(2024, 5, 1, 8)),
    ("2024-05-01T08:00:00", _utc(2024, 5, 1, 8)),
    ("2024-05-01T08:07:09", _utc(2024, 5, 1, 8, 7, 9)),
    ("2024-05-01 08:00:00.123", _utc(2024, 5, 1, 8, 0, 0, 123000)),
    ("2024-05-01T08:00:00,5", _utc(2024, 5, 1, 8, 0, 0, 500000)),
    ("2024-05-01T08:00:00.123456789", _utc(2024, 5, 1, 8, 0, 0, 123456)),
    ("2024-05-01T08:00Z", _utc(2024, 5, 1, 8)),
    ("2024-05-01T08:00:00Z", _utc(2024, 5, 1, 8)),
    ("2024-05-01t08:00:00z", _utc(2024, 5, 1, 8)),
    ("2024-05-01T08:00:00+02:00", _utc(2024, 5, 1, 6)),
    ("2024-05-01T08:00+0200", _utc(2024, 5, 1, 6)),
    ("2024-05-01T08:00+02", _utc(2024, 5, 1, 6)),
    ("2024-05-01T08:00:00-0500", _utc(2024, 5, 1, 13)),
    ("2024-05-01 08:00:00.123-05:00", _utc(2024, 5, 1, 13, 0, 0, 123000)),
    ("2024-05-01T23:30-01:00", _utc(2024, 5, 2, 0, 30)),
    ("2024-05-01T00:30+01:00", _utc(2024, 4, 30, 23, 30)),
    ("2024-05-01T24:00", _utc(2024, 5, 2)),
    ("  2024-05-01T08:00Z\n", _utc(2024, 5, 1, 8)),
])
def test_utc_time_accepted(text: str, expected: datetime) -> None:
    when = parse_utc_time(text)
    assert when == expected
    assert when.tzinfo is UTC


@pytest.mark.parametrize("text", [
    "", "   ", "30", "1714550400", "2024", "2024-05", "20240501", "2024-W18", "2024-122",
    "2024-05-01T08", "2024-05-01T0800", "2024-05-01x08:00", "2024-05-01Z", "11:49",
    "11:49 PST", "2024-05-01T08:00 PST", "2024-05-01 08:00 CET", "2024-05-01T08:00UTC",
    "2024-05-01T08:00:00 +02:00", "yesterday", "now", "05/01/2024", "01.05.2024",
    "May 1 2024", "2024/05/01", "2024-5-1", "\u0662\u0660\u0662\u0664-05-01", "30d",
    "2024-05-01T08:00:00.", "2024-05-01T08:00:00+02:00:00",
])
def test_utc_time_refused(text: str) -> None:
    _refused(parse_utc_time, text, "ISO 8601", "2024-05-01T08:00:00Z")


@pytest.mark.parametrize("text", [
    "2024-13-01", "2024-02-30", "2023-02-29", "2024-05-01T25:00", "2024-05-01T08:60",
    "2024-05-01T23:59:60", "2024-05-01T08:00+25:00", "0001-01-01T00:00+05:00",
])
def test_utc_time_out_of_range(text: str) -> None:
    _refused(parse_utc_time, text, "cannot parse date/time")


@pytest.mark.parametrize(("text", "expected"), [
    ("30d", timedelta(days=30)),
    ("12h", timedelta(hours=12)),
    ("90m", timedelta(minutes=90)),
    ("45s", timedelta(seconds=45)),
    ("2w", timedelta(weeks=2)),
    ("1d12h", timedelta(hours=36)),
    ("1w2d3h4m5s", timedelta(days=9, hours=3, minutes=4, seconds=5)),
    ("0d1h", timedelta(hours=1)),
    (" 30d ", timedelta(days=30)),
])
def test_duration_accepted(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", [
    "", "30", "d", "30x", "30D", "1M", "1y", "1.5d", "-5d", "+5d", "30 d", "1d 12h", "12h1d",
    "1d1d", "P30D", "2024-05-01", "thirty days",
])
def test_duration_refused(text: str) -> None:
    _refused(parse_duration, text, "30d")


@pytest.mark.parametrize(("text", "needle"), [
    ("0d", "positive"), ("0h0m0s", "positive"), ("9999999999999d", "too long"),
    ("9" * 5000 + "d", "too long"),
])
def test_duration_not_positive_or_too_long(text: str, needle: str) -> None:
    _refused(parse_duration, text, needle)


@pytest.mark.parametrize(("text", "expected"), [
    ("30d", _utc(2024, 4, 10, 12)),
    ("12h", _utc(2024, 5, 10)),
    ("90m", _utc(2024, 5, 10, 10, 30)),
    ("45s", _utc(2024, 5, 10, 11, 59, 15)),
    ("2w", _utc(2024, 4, 26, 12)),
    ("1d12h", _utc(2024, 5, 9)),
    ("2024-05-01", _utc(2024, 5, 1)),
    ("2024-05-01T08:00:00Z", _utc(2024, 5, 1, 8)),
    ("2024-05-01 08:00:00.123+02:00", _utc(2024, 5, 1, 6, 0, 0, 123000)),
])
def test_older_than_accepted(text: str, expected: datetime) -> None:
    when = parse_older_than(text, NOW)
    assert when == expected
    assert when.tzinfo is UTC


def test_older_than_now() -> None:
    assert parse_older_than("1h", datetime(2024, 5, 10, 12)) == _utc(2024, 5, 10, 11)  # naive
    plus2 = datetime(2024, 5, 10, 14, tzinfo=timezone(timedelta(hours=2)))
    assert parse_older_than("1h", plus2) == _utc(2024, 5, 10, 11)
    before = datetime.now(UTC)
    when = parse_older_than("30d")
    assert before - timedelta(days=30) <= when <= datetime.now(UTC) - timedelta(days=30)


@pytest.mark.parametrize("text", [
    "", "30", "1714550400", "yesterday", "11:49 PST", "2024", "20240501", "30 days", "12h1d",
    "05/01/2024", "-30d",
])
def test_older_than_refused(text: str) -> None:
    message = _refused(lambda t: parse_older_than(t, NOW), text)
    assert ("ISO 8601 date/time such as 2024-05-01T08:00:00Z or a duration such as 30d or 12h"
            in message)


def test_older_than_bare_number_hint() -> None:
    assert "30d" in _refused(lambda t: parse_older_than(t, NOW), "30", "a number needs a unit")


@pytest.mark.parametrize(("text", "needle"), [
    ("0d", "positive"), ("99999999d", "before year 1"), ("2024-13-01", "month"),
])
def test_older_than_bad_values(text: str, needle: str) -> None:
    _refused(lambda t: parse_older_than(t, NOW), text, needle)


# --- the CLI: a bad date is one error line and exit 2, before any S3 request ---------------

@pytest.fixture
def no_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to build the S3 client fails the test (endpoint 127.0.0.1:9 is closed too)."""
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("S3 was used before the options were checked")
    monkeypatch.setattr(bottomless_cli.context, "S3Store", refuse)


def _cli(*args: str) -> Result:
    runner = CliRunner()
    return runner.invoke(cli, ["-e", "http://127.0.0.1:9", *args],
                         env={"LIBSQL_BOTTOMLESS_S3_MAX_RETRIES": "0",
                              "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
                              "AWS_SECRET_ACCESS_KEY": "x" * 40})


def _one_error_line(result: Result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]


@pytest.mark.usefixtures("no_s3")
def test_cli_ls_older_than_bare_number() -> None:
    line = _one_error_line(_cli("--db-name", "x", "ls", "--older-than", "30"), "'30'",
                           "ISO 8601", "30d")
    assert "a number needs a unit" in line


@pytest.mark.usefixtures("no_s3")
def test_cli_ls_newer_than_and_rm_older_than() -> None:
    _one_error_line(_cli("--db-name", "x", "ls", "--newer-than", "yesterday"), "'yesterday'")
    _one_error_line(_cli("--db-name", "x", "rm", "--older-than", "11:49 PST"), "'11:49 PST'")
    _one_error_line(_cli("--db-name", "x", "rm", "--older-than", "", "--dry-run"), "''")


@pytest.mark.usefixtures("no_s3")
def test_cli_restore_utc_time_with_zone_name(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    _one_error_line(_cli("-d", str(db), "restore", "--utc-time", "11:49 PST"), "'11:49 PST'",
                    "ISO 8601")
    _one_error_line(_cli("-d", str(db), "restore", "--utc-time", "30"), "'30'")
    assert not db.exists()


def test_cli_accepts_durations() -> None:
    """A duration gets past parsing: the next failure is the closed endpoint (exit 1)."""
    for args in (["ls", "--older-than", "30d"], ["ls", "--newer-than", "1d12h"],
                 ["rm", "--older-than", "2w", "--dry-run"]):
        result = _cli("--db-name", "x", *args)
        assert result.exit_code == 1, result.stderr
        assert "cannot reach S3 endpoint http://127.0.0.1:9" in result.stderr
