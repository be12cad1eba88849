"""Click options made from the core's setting declarations (bottomless_core/settings.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from bottomless_core.settings import SPECS, Spec, parse_setting, specs

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class _Setting(click.ParamType):
    """A command-line value checked by the setting's own parse (the config file's too)."""

    def __init__(self, name: str, spec: Spec) -> None:
        self.setting, self.spec = name, spec
        self.name = name.replace("_", "-")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None,
                ) -> Any:
        if not isinstance(value, str):
            return value  # a default, already a value
        try:
            return parse_setting(self.setting, value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def setting_option(name: str, daemon_note: bool = False) -> Decorator:
    """The option ``--NAME-WITH-DASHES`` of one setting."""
    spec = SPECS[name]
    default = dict((n, d) for n, d, _ in specs())[name]
    flag = "--" + name.replace("_", "-")
    help = spec.help
    if daemon_note and spec.daemon_only:
        help = f"Daemon: {help[0].lower()}{help[1:]}" if help[:1].isupper() else f"Daemon: {help}"
    if spec.flag:
        return click.option(flag, name, is_flag=True, default=default, envvar=spec.envvar,
                            show_envvar=spec.envvar is not None, help=help)
    shown = spec.shown if spec.shown is not None else default
    return click.option(flag, name, type=_Setting(name, spec),
                        default=shown if default is not None else None,
                        show_default=default is not None, envvar=spec.envvar,
                        show_envvar=spec.envvar is not None,
                        metavar=_metavar(spec, default), help=help)


def setting_options(daemon_note: bool = True) -> Decorator:
    """Every setting's option, in declaration order (``replicate``)."""
    def apply(f: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(list(SPECS)):
            f = setting_option(name, daemon_note)(f)
        return f

    return apply


def _metavar(spec: Spec, default: Any) -> str:
    if spec.metavar is not None:
        return spec.metavar
    if isinstance(default, int):
        return "INTEGER"
    if isinstance(default, float):
        return "FLOAT"
    return "TEXT"
