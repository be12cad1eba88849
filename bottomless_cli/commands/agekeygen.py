"""bottomless-cli age-keygen: an age key pair for --age-recipient / --age-identity, as the
`age-keygen` of the age project writes it (no other tool needed)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import click
from pyrage import x25519

from bottomless_core.agekeys import load_identities
from bottomless_core.errors import BottomlessError, ConfigError

KEY_FILE_MODE = 0o600  # the secret key: readable by its owner only, as age-keygen makes it


@click.command("age-keygen")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the key file here (mode 0600; an existing file is never "
                   "overwritten) and print the public key; default: the key file on stdout.")
@click.option("-y", "public_of", type=click.Path(path_type=Path, dir_okay=False),
              metavar="KEYFILE", help="Print the public keys of this key file instead.")
def age_keygen(output: Path | None, public_of: Path | None) -> None:
    """Generate an age X25519 key (the format age-keygen writes and age reads).

    The key file holds the secret key: give it to --age-identity (restore, verify, snapshot)
    and keep it away from the bucket's credentials. The public key (age1...) it prints is
    what --age-recipient takes (replicate).

    \b
    Examples:
      bottomless-cli age-keygen -o /etc/bottomless/age-key.txt   # prints age1...
      bottomless-cli age-keygen -y /etc/bottomless/age-key.txt
    """
    if public_of is not None:
        if output is not None:
            raise ConfigError("give either -o/--output or -y, not both")
        for identity in load_identities([str(public_of)]):
            click.echo(str(identity.to_public()))
        return
    identity = x25519.Identity.generate()
    public = str(identity.to_public())
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f"# created: {created}\n# public key: {public}\n{identity}\n"
    if output is None:
        click.echo(text, nl=False)
        return
    _write_new(output, text)
    click.echo(public)


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 and ``text``; never over an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    except FileExistsError:
        raise ConfigError(f"{path}: exists; not overwriting a key file (remove it first, "
                          "or choose another path)") from None
    except OSError as exc:
        raise BottomlessError(f"{path}: cannot create the key file ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise BottomlessError(f"{path}: cannot write the key file ({exc.strerror})") from None
