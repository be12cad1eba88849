"""#9: no credential ever reaches the output, not even botocore's --debug request logs."""

from __future__ import annotations

import http.server
import io
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import boto3
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from click.testing import CliRunner

import bottomless_cli.commands.ls
from bottomless_cli.logs import setup_daemon_logging
from bottomless_cli.main import cli
from bottomless_cli.redact import RedactFilter, Redactor, install, redact

ROOT = Path(__file__).resolve().parent.parent
AKID = "AKIDEXAMPLE123"
SECRET = "secretvalue123456"
TOKEN = "tokenvalue987654"
SIGNATURE = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
# A real session token's shape: base64, so "/", "+" and "=" that URLs percent-encode.
STS_TOKEN = "FwoGZXIvYXdzEJr//////////wEaDHUx+8Zq3nRtu9t1vCKCAX=="
CREDS_ENV = {"AWS_ACCESS_KEY_ID": AKID, "AWS_SECRET_ACCESS_KEY": SECRET,
             "AWS_SESSION_TOKEN": TOKEN}

# What botocore.endpoint logs ("Sending http request: %s"), word for word but the values.
SENDING = (
    "Sending http request: <AWSPreparedRequest stream_output=False, method=HEAD, "
    "url=http://127.0.0.1:9000/bkt, headers={'User-Agent': b'Boto3/1.43.11 md/Botocore#1.43.11', "
    "'X-Amz-Date': b'20240501T080000Z', "
    f"'X-Amz-Security-Token': b'{STS_TOKEN}', "
    "'X-Amz-Content-SHA256': b'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', "
    "'Authorization': b'AWS4-HMAC-SHA256 Credential=ASIAQEXAMPLE/20240501/us-east-1/s3/"
    "aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token, "
    f"Signature={SIGNATURE}', 'amz-sdk-invocation-id': b'8c96fa38', "
    "'amz-sdk-request': b'attempt=1'}>"
)
# botocore.auth: the canonical request, then the signature on a line of its own.
CANONICAL = ("CanonicalRequest:\nHEAD\n/bkt\n\nhost:127.0.0.1:9000\n"
             "x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
             f"\nx-amz-date:20240501T080000Z\nx-amz-security-token:{STS_TOKEN}\n\n"
             "host;x-amz-content-sha256;x-amz-date;x-amz-security-token\nUNSIGNED-PAYLOAD")
SIGNATURE_LINE = f"Signature:\n{SIGNATURE}"
PRESIGNED = (
    "https://bkt.s3.amazonaws.com/db/meta?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=ASIAQEXAMPLE%2F20240501%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20240501T080000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    "&X-Amz-Security-Token=FwoGZXIvYXdzEJr%2F%2F%2F%2F%2F%2F%2F%2F%2F%2FwEaDHUx%2B8Zq3nRtu9t1vCKCAX%3D%3D"
    f"&X-Amz-Signature={SIGNATURE}"
)
PRESIGNED_V2 = ("https://bkt.s3.amazonaws.com/db/meta?AWSAccessKeyId=ASIAQEXAMPLE"
                "&Signature=qJ8bV%2Bx5%2F0sYpK%3D&Expires=1714550400"
                "&x-amz-security-token=FwoGZXIvYXdzEJr%2F%2FwEaDHUx")
LEAKS = ("ASIAQEXAMPLE", "FwoGZXIvYXdz", SIGNATURE, "qJ8bV")


def _no_leak(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, text
    assert not re.search(r"Signature=[0-9a-fA-F%]", text), text


def test_botocore_request_headers_dict_with_bytes() -> None:
    masked = Redactor()(SENDING)  # no known secrets: the patterns alone
    _no_leak(masked)
    assert "'X-Amz-Security-Token': b'***'" in masked
    assert "'Authorization': b'***'" in masked
    # what is not a credential stays readable
    assert "'X-Amz-Date': b'20240501T080000Z'" in masked
    assert "url=http://127.0.0.1:9000/bkt" in masked
    assert "'amz-sdk-request': b'attempt=1'" in masked


def test_str_dict_repr_and_header_lines() -> None:
    text = ("{'x-amz-security-token': '" + STS_TOKEN + "', \"Authorization\": \"AWS4-HMAC-SHA256 "
            f"Credential=ASIAQEXAMPLE/x, Signature={SIGNATURE}\"}}\n"
            f"Authorization: AWS ASIAQEXAMPLE:{SIGNATURE}\n")
    masked = Redactor()(text)
    _no_leak(masked)
    assert "'x-amz-security-token': '***'" in masked
    assert "Authorization: ***" in masked


def test_canonical_request_and_signature() -> None:
    masked = Redactor()(CANONICAL)
    _no_leak(masked)
    assert "x-amz-security-token:***\n" in masked
    assert "x-amz-date:20240501T080000Z" in masked
    masked = Redactor()(SIGNATURE_LINE)
    assert masked == "Signature:\n***"


def test_presigned_urls() -> None:
    masked = Redactor()(PRESIGNED)
    _no_leak(masked)
    assert "X-Amz-Credential=***&X-Amz-Date=20240501T080000Z" in masked
    assert "X-Amz-Security-Token=***&X-Amz-Signature=***" in masked
    assert masked.endswith("X-Amz-Signature=***")
    masked = Redactor()(PRESIGNED_V2)
    _no_leak(masked)
    assert "AWSAccessKeyId=***&Signature=***&Expires=1714550400&x-amz-security-token=***" \
        in masked


@pytest.mark.parametrize("version", ["s3v4", "s3"])
def test_presigned_url_from_boto3(version: str) -> None:
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id=AKID,
                          aws_secret_access_key=SECRET, aws_session_token=STS_TOKEN,
                          config=Config(signature_version=version))
    url = client.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "k"})
    assert "ignature=" in url and "FwoGZXIvYXdz" in url
    redactor = Redactor([AKID, SECRET, STS_TOKEN])
    for masked in (Redactor()(url), redactor(url), redactor(f"GET {url!r}")):
        assert AKID not in masked and "FwoGZXIvYXdz" not in masked
        assert not re.search(r"Signature=[^*]", masked), masked
        assert "Signature=***" in masked


def test_known_secrets_anywhere() -> None:
    redactor = Redactor.from_env({**CREDS_ENV, "LIBSQL_BOTTOMLESS_AWS_SECRET_ACCESS_KEY":
                                  "otherSecret/with+chars=", "AWS_REGION": "us-east-1"})
    text = (f"key {AKID} secret={SECRET}, b'{TOKEN}' and otherSecret%2Fwith%2Bchars%3D and "
            "otherSecret/with+chars= in us-east-1")
    masked = redactor(text)
    for leak in (AKID, SECRET, TOKEN, "otherSecret"):
        assert leak not in masked, masked
    assert masked.endswith("in us-east-1")
    assert Redactor.from_env({"AWS_SECRET_ACCESS_KEY": "abc"})("abc abcd") == "abc abcd"


def test_user_and_password_in_an_endpoint_url() -> None:
    masked = redact("error: cannot reach S3 endpoint http://AKID:se%2Fcret@127.0.0.1:1: refused")
    assert masked == "error: cannot reach S3 endpoint http://***@127.0.0.1:1: refused"
    assert redact("file:///var/backups s3://bucket/key") == "file:///var/backups s3://bucket/key"


def test_sts_and_json_credentials() -> None:
    xml = (f"<Credentials><AccessKeyId>{AKID}</AccessKeyId><SecretAccessKey>{SECRET}"
           f"</SecretAccessKey><SessionToken>{TOKEN}</SessionToken><Expiration>2024</Expiration>")
    json = f'{{"AccessKeyId": "{AKID}", "SecretAccessKey": "{SECRET}", "Token": "{TOKEN}"}}'
    for text in (xml, json):
        masked = Redactor()(text)
        for leak in (AKID, SECRET, TOKEN):
            assert leak not in masked, masked
    assert "<Expiration>2024</Expiration>" in Redactor()(xml)


def test_masking_is_idempotent() -> None:
    redactor = Redactor([AKID, SECRET, STS_TOKEN])
    for text in (SENDING, CANONICAL, PRESIGNED, SIGNATURE_LINE):
        once = redactor(text)
        assert redactor(once) == once


@pytest.fixture
def stream_handler() -> Iterator[tuple[logging.Handler, io.StringIO]]:
    """A handler on the root logger (as basicConfig makes one) that writes to a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level, botocore_level = root.level, logging.getLogger("botocore").level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logging.getLogger("botocore").setLevel(logging.DEBUG)
    try:
        yield handler, buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        logging.getLogger("botocore").setLevel(botocore_level)


def test_filter_on_handler_sees_child_loggers(
        stream_handler: tuple[logging.Handler, io.StringIO]) -> None:
    handler, buffer = stream_handler
    install([handler], Redactor([AKID, SECRET, TOKEN]))
    install([handler], Redactor([AKID, SECRET, TOKEN]))  # again: still one filter
    assert sum(isinstance(f, RedactFilter) for f in handler.filters) == 1
    request = AWSRequest(method="HEAD", url="http://127.0.0.1:9000/bkt", headers={
        "X-Amz-Security-Token": TOKEN.encode(),
        "Authorization": f"AWS4-HMAC-SHA256 Credential={AKID}/20240501/us-east-1/s3/"
                         f"aws4_request, SignedHeaders=host, Signature={SIGNATURE}".encode(),
    }).prepare()
    logging.getLogger("botocore.endpoint").debug("Sending http request: %s", request)
    logging.getLogger("botocore.auth").debug("Signature:\n%s", SIGNATURE)
    logging.getLogger("botocore.auth").debug("CanonicalRequest:\n%s", CANONICAL)
    logging.getLogger("urllib3.connectionpool").debug('"GET %s HTTP/1.1" 200 0', PRESIGNED)
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        logging.getLogger("bottomless.cli").exception("boom %s", TOKEN)
    logging.getLogger("bottomless.cli").warning("bad args %s %s", TOKEN)  # unformattable
    out = buffer.getvalue()
    for leak in (AKID, SECRET, TOKEN, *LEAKS):
        assert leak not in out, out
    assert "b'***'" in out and "Signature:\n***" in out
    assert "boom ***" in out and "RuntimeError: failed with ***" in out
    assert "Traceback (most recent call last)" in out
    assert "unformattable log arguments" in out


def test_daemon_logging_handler_has_the_filter() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level,
             {n: logging.getLogger(n).level for n in ("botocore", "boto3", "s3transfer",
                                                      "urllib3")})
    try:
        setup_daemon_logging(debug=True)
        (handler,) = root.handlers
        assert any(isinstance(f, RedactFilter) for f in handler.filters)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)


def test_debug_traceback_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(text: str) -> None:
        raise RuntimeError(f"leaky {SECRET} {TOKEN}")
    monkeypatch.setattr(bottomless_cli.commands.ls, "parse_older_than", boom)
    result = CliRunner().invoke(cli, ["--debug", "-e", "http://127.0.0.1:9", "--db-name", "x",
                                      "ls", "--older-than", "1d"], env=CREDS_ENV)
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: leaky *** ***" in result.stderr
    assert result.stderr.splitlines()[-1] == "error: unexpected RuntimeError: leaky *** ***"
    assert SECRET not in result.output and TOKEN not in result.output


# --- end to end: real botocore debug output from the CLI ----------------------------------

class _S3Denies(http.server.BaseHTTPRequestHandler):
    """Answers every request as S3 does a bad signature: 403 and an XML error body."""

    requests: ClassVar[list[dict[str, str]]] = []

    def _deny(self) -> None:
        type(self).requests.append(dict(self.headers))
        body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                b"<Message>Access Denied</Message></Error>")
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _deny

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def denying_s3() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _S3Denies)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _S3Denies.requests = []
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_debug_output_of_a_real_request(denying_s3: int, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "LIBSQL_BOTTOMLESS_"))}
    env.update(CREDS_ENV, LIBSQL_BOTTOMLESS_S3_MAX_RETRIES="0", AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    proc = subprocess.run(
        [sys.executable, "-m", "bottomless_cli.main", "--debug", "-e",
         f"http://127.0.0.1:{denying_s3}", "-b", "bkt", "--db-name", "x", "ls"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert proc.stderr.splitlines()[-1].startswith("error: S3 refused the credentials"), out
    # the request really was signed with these credentials, and botocore logged it
    assert _S3Denies.requests and _S3Denies.requests[0]["X-Amz-Security-Token"] == TOKEN
    assert "botocore.endpoint: Sending http request" in out
    for leak in (SECRET, TOKEN, AKID):
        assert leak not in out
    assert not re.search(r"Signature=[0-9a-fA-F]", out)
    assert not re.search(r"Signature:\s*[0-9a-f]{64}", out)
    assert "'X-Amz-Security-Token': b'***'" in out
    assert "'Authorization': b'***'" in out
    assert "x-amz-security-token:***" in out
