"""Write docs/cli.md from the Click help texts, so the reference cannot drift.

    python -m bottomless_cli.docgen > docs/cli.md
"""

from __future__ import annotations

import click

from .main import cli

WIDTH = 100
HEADER = """# bottomless-cli reference

Generated from the commands' `--help` by `python -m bottomless_cli.docgen > docs/cli.md`;
`tests/test_docs.py` fails when this file and the help texts differ.

Every command exits 0 on success. Errors print one line starting with `error:` on stderr and
exit non-zero: 2 for bad input (options, dates, generation ids), 1 for everything else
(storage, corrupt backups, local database problems). `--debug` adds the traceback.
"""


def _help(command: click.Command, name: str, parent: click.Context | None) -> str:
    ctx = click.Context(command, info_name=name, parent=parent, terminal_width=WIDTH,
                        max_content_width=WIDTH)
    return ctx.get_help()


def render() -> str:
    root = click.Context(cli, info_name="bottomless-cli", terminal_width=WIDTH,
                         max_content_width=WIDTH, **cli.context_settings)
    parts = [HEADER, "## Global options\n", "```text", root.get_help(), "```\n"]
    for name in sorted(cli.commands):
        parts += [f"## {name}\n", "```text", _help(cli.commands[name], name, root), "```\n"]
    return "\n".join(parts)


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
