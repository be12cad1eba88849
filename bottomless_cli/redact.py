"""Masks credentials in everything the CLI logs or prints: botocore's --debug output included.

botocore's debug logs show request headers (a dict repr with bytes values), the canonical
request, the signature and presigned URLs. RedactFilter rewrites each record's final text so
that the session token, the Authorization header, Credential= / Signature= values and the
literal key id, secret and token known from the environment all read ``***``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

MASK = "***"
SECRET_ENV_VARS = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "LIBSQL_BOTTOMLESS_AWS_ACCESS_KEY_ID", "LIBSQL_BOTTOMLESS_AWS_SECRET_ACCESS_KEY",
    "LIBSQL_BOTTOMLESS_AWS_SESSION_TOKEN",
    "LIBSQL_BOTTOMLESS_AGE_IDENTITY", "LIBSQL_BOTTOMLESS_ENCRYPTION_KEY",
)
MIN_SECRET_LENGTH = 4  # shorter "secrets" would mask ordinary words all over the output

_HEADERS = (r"x-amz-security-token|x-amz-credential|x-amz-signature|authorization|"
            r"secretaccesskey|sessiontoken|token|accesskeyid|aws_secret_access_key|"
            r"aws_session_token|aws_security_token")
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # user:password in a URL (an endpoint given as http://KEY:SECRET@host)
    (re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/\s@:'\"]+:[^/\s@'\"]+@", re.IGNORECASE),
     rf"\g<scheme>{MASK}@"),
    # an age secret key (an --age-identity), wherever it shows up
    (re.compile(r"AGE-SECRET-KEY-1[0-9A-Za-z]+"), MASK),
    # dict / JSON reprs: 'X-Amz-Security-Token': b'FwoG...', "SessionToken": "..."
    (re.compile(rf"""(?P<key>(?P<kq>['"])(?:{_HEADERS})(?P=kq)\s*:\s*b?)(?P<q>['"])"""
                r"""(?:\\.|(?!(?P=q)).)*(?P=q)""", re.IGNORECASE),
     rf"\g<key>\g<q>{MASK}\g<q>"),
    # header lines: "x-amz-security-token:FwoG..." (canonical request), "Authorization: AWS4..."
    (re.compile(r"\b(?P<key>x-amz-security-token|x-amz-credential|x-amz-signature|authorization)"
                r"""(?P<sep>[ \t]*:[ \t]*)(?!\*\*\*)[^\r\n'"\\]+""", re.IGNORECASE),
     rf"\g<key>\g<sep>{MASK}"),
    # query strings and the Authorization value: X-Amz-Signature=..., Credential=AKID/...
    (re.compile(r"\b(?P<key>(?:x-amz-)?(?:signature|credential|security-token)|awsaccesskeyid|"
                r"""aws_(?:secret_access_key|session_token|security_token))(?P<sep>[ \t]*=[ \t]*)"""
                r"""(?!\*\*\*)[^,&\s'"<>\\]+""", re.IGNORECASE),
     rf"\g<key>\g<sep>{MASK}"),
    # botocore.auth logs "Signature:\n<hex>"
    (re.compile(r"\b(?P<key>signature\s*:\s*)[0-9a-f]{16,}", re.IGNORECASE), rf"\g<key>{MASK}"),
    # STS / IMDS responses: <SecretAccessKey>...</SecretAccessKey>
    (re.compile(r"<(?P<tag>SecretAccessKey|SessionToken|AccessKeyId)>[^<]*</(?P=tag)>"),
     rf"<\g<tag>>{MASK}</\g<tag>>"),
)


class Redactor:
    """Text in, the same text with every credential replaced by ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        variants: set[str] = set()
        for secret in secrets:
            if len(secret) < MIN_SECRET_LENGTH:
                continue
            # as is, URL-encoded (presigned URLs) and as repr() escapes it
            variants.update({secret, quote(secret, safe=""), quote(secret), quote_plus(secret),
                             repr(secret)[1:-1]})
        self._literals = (re.compile("|".join(re.escape(v) for v in
                                              sorted(variants, key=len, reverse=True)))
                          if variants else None)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Redactor:
        """Knows the key id, secret and token of the AWS_* and LIBSQL_BOTTOMLESS_AWS_* vars."""
        env = os.environ if env is None else env
        return cls(env[name] for name in SECRET_ENV_VARS if env.get(name))

    def __call__(self, text: str) -> str:
        if self._literals is not None:
            text = self._literals.sub(MASK, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


class RedactFilter(logging.Filter):
    """A handler filter: formats each record's message, traceback and stack, then masks them.

    Put it on handlers, not loggers: a logger's filters do not see records of its children
    (botocore.auth, botocore.endpoint, ...), a handler's filters see every record it emits.
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor.from_env()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad %-args: logging would print them raw in handleError
            message = f"{record.msg} (unformattable log arguments: {record.args!r})"
        record.msg, record.args = self.redactor(message), ()
        if record.exc_info and record.exc_info[0] is not None:
            # Formatted here, so that no handler renders the raw exception later (RichHandler
            # would draw it from exc_info, unmasked).
            if not record.exc_text:
                record.exc_text = _FORMATTER.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        return True


_FORMATTER = logging.Formatter()


def install(handlers: Iterable[logging.Handler] | None = None,
            redactor: Redactor | None = None) -> RedactFilter:
    """Put one RedactFilter on each handler (default: the root logger's), replacing older ones."""
    redact_filter = RedactFilter(redactor)
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactFilter)]:
            handler.removeFilter(old)
        handler.addFilter(redact_filter)
    return redact_filter


def redact(text: str) -> str:
    """``text`` with every credential masked (secrets known from the environment now)."""
    return Redactor.from_env()(text)
