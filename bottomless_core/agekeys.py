"""age keys: who new data objects are encrypted to, and what decrypts the ones read.

Recipients are X25519 public keys (``age1...``) or files of them, as ``age-keygen`` prints them
and ``age -R`` reads them; identities are key files (``age-keygen -o key.txt``), a secret key
itself, or a whole key file's text. store/age.py does the encrypting and decrypting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyrage import x25519

from .errors import ConfigError

RECIPIENT_PREFIX = "age1"
IDENTITY_PREFIX = "AGE-SECRET-KEY-1"


def parse_recipients(values: Iterable[str], base: Path | None = None,
                     ) -> list[x25519.Recipient]:
    """Public keys (``age1...``), or files holding one per line (``#`` comments), as
    ``age-keygen`` prints them and ``age -R`` reads them. A value may list several, separated
    by commas or newlines (a path may contain spaces); an empty one is an error. Relative
    paths are relative to ``base`` when given (a config file's directory)."""
    out: list[x25519.Recipient] = []
    for value in values:
        items = recipient_items(value)
        if not items:
            raise ConfigError("empty age recipient (--age-recipient, "
                              "LIBSQL_BOTTOMLESS_AGE_RECIPIENT or age_recipient): give a "
                              "public key (age1...) or a file of them, or leave it out")
        for text in items:
            if text.startswith(RECIPIENT_PREFIX):
                out.append(_recipient(text, repr(text)))
                continue
            if is_secret_key(text):  # never echo it
                raise ConfigError("an age recipient is a secret key (an identity, for "
                                  "--age-identity); --age-recipient takes the public key "
                                  "(age1..., see age-keygen -y)")
            path = _path(text, base)
            try:
                lines = path.read_text().splitlines()
            except OSError as exc:
                raise ConfigError(f"age recipient {text!r}: neither a public key (age1...) nor "
                                  f"a readable file ({exc.strerror or exc})") from None
            keys = [(n, line.strip()) for n, line in enumerate(lines, 1)
                    if line.strip() and not line.strip().startswith("#")]
            if not keys:
                raise ConfigError(f"{path}: holds no age recipient (age1...)")
            for n, k in keys:
                if is_secret_key(k):  # never echo a secret key
                    raise ConfigError(f"{path} line {n} is a secret key (an identity, for "
                                      "--age-identity); --age-recipient takes the public key "
                                      "(age1..., see age-keygen -y)")
                out.append(_recipient(k, f"{path} line {n}"))
    return out


def recipient_items(value: str) -> list[str]:
    """The keys and files one recipient value names: split on commas and newlines (``#``
    lines skipped); a part made only of ``age1...`` words is split on spaces too."""
    if value.strip().upper().startswith(IDENTITY_PREFIX):  # a secret key: one item, never split
        return [value.strip()]
    out: list[str] = []
    for part in value.replace(",", "\n").splitlines():
        part = part.strip()
        if not part or part.startswith("#"):
            continue
        words = part.split()
        out.extend(words if all(w.startswith(RECIPIENT_PREFIX) for w in words) else [part])
    return out


def identity_items(value: str) -> list[str]:
    """The secret keys and files one identity value names, one a line: a path (spaces
    allowed), an ``AGE-SECRET-KEY-1...``, or a whole key file's text (``#`` lines skipped)."""
    return [line.strip() for line in value.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def is_secret_key(text: str) -> bool:
    return text.upper().startswith(IDENTITY_PREFIX)


def _path(text: str, base: Path | None) -> Path:
    path = Path(text).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


def _recipient(text: str, where: str) -> x25519.Recipient:
    try:
        return x25519.Recipient.from_str(text)
    except Exception:  # pyrage.RecipientError
        raise ConfigError(f"age recipient {where} is not an X25519 public key "
                          "(age1...)") from None


def load_identities(values: Iterable[str], base: Path | None = None,
                    ) -> list[x25519.Identity]:
    """Identity files (as ``age-keygen -o key.txt`` writes them), or a secret key itself
    (``AGE-SECRET-KEY-1...``, for containers that get it from a secret variable), or a whole
    key file's text; see ``identity_items``."""
    out: list[x25519.Identity] = []
    for value in values:
        for text in identity_items(value):
            if is_secret_key(text):
                out.append(_identity(text, "the secret key given"))
                continue
            path = _path(text, base)
            try:
                lines = path.read_text().splitlines()
            except OSError as exc:
                raise ConfigError(f"age identity file {str(path)!r}: cannot read it "
                                  f"({exc.strerror or exc})") from None
            keys = [line.strip() for line in lines
                    if line.strip() and not line.strip().startswith("#")]
            if not keys:
                raise ConfigError(f"age identity file {str(path)!r} holds no secret key "
                                  "(AGE-SECRET-KEY-1...)")
            out.extend(_identity(k, f"{path}") for k in keys)
    return out


def _identity(text: str, where: str) -> x25519.Identity:
    try:
        return x25519.Identity.from_str(text)
    except Exception:  # pyrage.IdentityError; never echo the key itself
        raise ConfigError(f"age identity in {where} is not an X25519 secret key "
                          "(AGE-SECRET-KEY-1...)") from None


@dataclass(frozen=True)
class AgeKeys:
    """Who new data objects are encrypted to, and what decrypts the ones read."""

    recipients: tuple[x25519.Recipient, ...] = ()
    identities: tuple[x25519.Identity, ...] = ()

    @classmethod
    def from_options(cls, recipients: Sequence[str] = (), identities: Sequence[str] = (),
                     recipients_base: Path | None = None, identities_base: Path | None = None,
                     ) -> AgeKeys:
        """``*_base``: the directory relative file paths are relative to (a config file's)."""
        return cls(tuple(parse_recipients(recipients, recipients_base)),
                   tuple(load_identities(identities, identities_base)))

    @property
    def encrypting(self) -> bool:
        return bool(self.recipients)


def encryption_key_refused() -> ConfigError:
    """libSQL's --encryption-key is a cipher inside the database file, not of the backup."""
    return ConfigError(
        "--encryption-key / LIBSQL_BOTTOMLESS_ENCRYPTION_KEY is libSQL's page-level encryption "
        "of the database file, which Python's sqlite3 cannot open, so this tool cannot back it "
        "up; to encrypt the backup itself use --age-recipient age1... (and --age-identity FILE "
        "to restore), or LIBSQL_BOTTOMLESS_AGE_RECIPIENT / LIBSQL_BOTTOMLESS_AGE_IDENTITY")
