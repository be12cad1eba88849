"""The bottomless-cli group: global options and the one place errors become exit codes."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from bottomless_core import __version__
from bottomless_core.agekeys import AgeKeys, encryption_key_refused
from bottomless_core.errors import BottomlessError, Interrupted
from bottomless_core.store.config import DEFAULT_BUCKET, DEFAULT_ENDPOINT, ServerSideEncryption
from bottomless_core.tempfiles import remove_all_owned

from .commands import (
    agekeygen,
    copy,
    create,
    databases,
    ls,
    replicate,
    restore,
    rm,
    snapshot,
    status,
    verify,
)
from .context import App, reader_gone
from .redact import install as install_redaction
from .redact import redact


class _Group(click.Group):
    """Turns every library error into one line on stderr and a non-zero exit, and takes the
    global options after the command too (``ls -d app.db``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(self, ctx, args))

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except BottomlessError as exc:
            _fail(ctx, str(exc), exc.exit_code)
        except BrokenPipeError:
            reader_gone()
        except KeyboardInterrupt:
            remove_all_owned()
            _fail(ctx, "interrupted", 130)
        except Interrupted as exc:
            remove_all_owned()
            _fail(ctx, f"stopped by {exc.signal_name}", 128 + exc.signum)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug: still one line, the traceback with --debug
            _fail(ctx, f"unexpected {type(exc).__name__}: {exc}", 1)
        return None


def _option_names(params: list[click.Parameter]) -> dict[str, click.Option]:
    return {name: p for p in params if isinstance(p, click.Option)
            for name in (*p.opts, *p.secondary_opts)}


def _takes_value(option: click.Option | None, token: str) -> bool:
    """Does ``token`` (an option, without ``=VALUE`` or an attached short value) take the
    next token as its value?"""
    return (option is not None and not option.is_flag and option.nargs != 0
            and "=" not in token and not (len(token) > 2 and token[1] != "-"))


def _lookup(names: dict[str, click.Option], token: str) -> click.Option | None:
    """The option a token names: ``--name``, ``--name=VALUE``, ``-x`` or ``-xVALUE``."""
    if token.startswith("--"):
        return names.get(token.split("=", 1)[0])
    return names.get(token[:2])


def hoist_global_options(group: click.Group, ctx: click.Context, args: list[str]) -> list[str]:
    """Move the group's options given after the command name (and not the command's own)
    in front of it, where click looks for them: ``ls -d app.db`` is ``-d app.db ls``."""
    names = _option_names(group.params)
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        i += 2 if _takes_value(_lookup(names, args[i]), args[i]) else 1
    command = group.get_command(ctx, args[i]) if i < len(args) else None
    if command is None:
        return args
    own = _option_names(command.params)
    before, after, j = list(args[:i]), [args[i]], i + 1
    while j < len(args):
        token = args[j]
        if token == "--":
            after.extend(args[j:])
            break
        mine = _lookup(own, token) if token.startswith("-") else None
        theirs = _lookup(names, token) if token.startswith("-") and mine is None else None
        width = 2 if _takes_value(mine or theirs, token) else 1
        missing = j + width > len(args)  # (no value: left for click to report)
        (before if theirs is not None and not missing else after).extend(args[j:j + width])
        j += width
    return before + after


class _WholeEnvvar(click.Option):
    """A repeatable option whose variable is one value, not split on whitespace (crypto.py
    splits it: a path may hold spaces, a key file's text is several lines). ``keep_empty``:
    a variable set to "" is that value (refused for a recipient), not unset."""

    def __init__(self, *args: Any, keep_empty: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep_empty = keep_empty

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        if self.keep_empty and isinstance(self.envvar, str) and self.envvar in os.environ:
            return os.environ[self.envvar]
        return super().resolve_envvar_value(ctx)

    def value_from_envvar(self, ctx: click.Context) -> Any:
        value = self.resolve_envvar_value(ctx)
        return None if value is None else (value,)


def _fail(ctx: click.Context, message: str, code: int) -> None:
    app = ctx.find_object(App)
    if app is not None and app.debug:
        click.echo(redact(traceback.format_exc()), err=True, nl=False)
    click.echo(f"error: {redact(message)}", err=True)
    ctx.exit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-e", "--endpoint", envvar="LIBSQL_BOTTOMLESS_ENDPOINT", default=DEFAULT_ENDPOINT,
              show_default=True, show_envvar=True,
              help="S3 endpoint URL, or file:///DIR to keep the bucket as the directory "
                   "DIR/BUCKET.")
@click.option("-b", "--bucket", envvar="LIBSQL_BOTTOMLESS_BUCKET", default=DEFAULT_BUCKET,
              show_default=True, show_envvar=True, help="Bucket holding the backups.")
@click.option("-d", "--database", type=click.Path(path_type=Path, dir_okay=False),
              help="Path of the local SQLite database.")
@click.option("--db-name", envvar="LIBSQL_BOTTOMLESS_DATABASE_ID", show_envvar=True,
              help="The database's name in the bucket (default: the file name of -d).")
@click.option("-n", "--namespace", help="sqld namespace: same as --db-name ns-NAMESPACE.")
@click.option("--age-recipient", "age_recipients", multiple=True, metavar="KEY|FILE",
              cls=_WholeEnvvar, keep_empty=True,
              envvar="LIBSQL_BOTTOMLESS_AGE_RECIPIENT", show_envvar=True,
              help="Encrypt new snapshots and WAL batches with age to this public key (age1...) "
                   "or the keys in this file; repeatable, or several separated by commas.")
@click.option("--age-identity", "age_identities", multiple=True, metavar="FILE|KEY",
              cls=_WholeEnvvar, envvar="LIBSQL_BOTTOMLESS_AGE_IDENTITY", show_envvar=True,
              help="age identity file (bottomless-cli age-keygen) that decrypts encrypted "
                   "objects when reading; repeatable. May also be the AGE-SECRET-KEY-1... "
                   "itself, or a whole key file's text (# lines are skipped).")
@click.option("--sse", metavar="AES256|aws:kms", envvar="LIBSQL_BOTTOMLESS_SSE",
              show_envvar=True, help="S3 server-side encryption asked for on every upload.")
@click.option("--sse-kms-key-id", metavar="ID", envvar="LIBSQL_BOTTOMLESS_SSE_KMS_KEY_ID",
              show_envvar=True, help="The KMS key for --sse aws:kms (default: the bucket's).")
@click.option("--encryption-key", metavar="KEY", envvar="LIBSQL_BOTTOMLESS_ENCRYPTION_KEY",
              show_envvar=True,
              help="libSQL's page-level database encryption: not supported (an error naming "
                   "the age options).")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(__version__, prog_name="bottomless-cli")
@click.pass_context
def cli(ctx: click.Context, endpoint: str, bucket: str, database: Path | None,
        db_name: str | None, namespace: str | None, age_recipients: tuple[str, ...],
        age_identities: tuple[str, ...], sse: str | None, sse_kms_key_id: str | None,
        encryption_key: str | None, debug: bool) -> None:
    """Back up SQLite databases to S3-compatible storage, in libSQL's bottomless layout.

    Credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID, profiles, ...) or from
    LIBSQL_BOTTOMLESS_AWS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY / _DEFAULT_REGION.

    With --age-recipient the snapshots and WAL batches are encrypted on this host (age, the
    format the `age` CLI reads); reading them needs --age-identity.
    """
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction()  # on the root handlers: botocore's --debug output shows credentials
    _stop_on_sigterm()
    if not debug:
        for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if namespace and not db_name:
        db_name = f"ns-{namespace}"
    app = App(endpoint=endpoint or None, bucket=bucket, database=database,
              db_name_option=db_name, debug=debug)
    ctx.obj = app
    if encryption_key:
        raise encryption_key_refused()
    app.age = AgeKeys.from_options(age_recipients, age_identities)
    app.sse = ServerSideEncryption.parse(sse, sse_kms_key_id)
    app.age_options, app.sse_options = (age_recipients, age_identities), (sse, sse_kms_key_id)


for _command in (ls.ls, databases.databases, restore.restore, verify.verify, rm.rm,
                 replicate.replicate, snapshot.snapshot, status.status, create.create,
                 copy.copy, agekeygen.age_keygen):
    cli.add_command(_command)


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C: ``finally`` blocks remove temporary files and boto3
    aborts an unfinished multipart upload. (The daemon installs its own handler.)"""

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, handler)


def main() -> None:
    try:
        code = cli.main(prog_name="bottomless-cli", standalone_mode=False)
    except click.ClickException as exc:  # a usage error: one line, like every other error
        if type(exc).__name__ == "NoArgsIsHelpError":  # no command given: the help itself
            click.echo(exc.format_message(), err=True)
        else:
            message = exc.format_message()
            if (isinstance(exc, click.NoSuchOption)
                    and exc.option_name in _option_names(cli.params)):
                message = f"option {exc.option_name} needs a value"  # (the last, alone)
            click.echo(f"error: {redact(message)} (see bottomless-cli -h)", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(1)
    except BrokenPipeError:  # while click printed help
        reader_gone()
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
