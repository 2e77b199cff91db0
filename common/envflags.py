"""`PFEDDC_*` environment defaults for every flag of every tool, and `--version`.

The variables are derived from the argparse definitions themselves (`--round-timeout` <-> `PFEDDC_ROUND_TIMEOUT`),
so a flag and its variable can never drift apart; a flag given on the command line wins over its variable.
Containers set their configuration as environment (a Kubernetes ConfigMap with `envFrom`) without repeating
any flag in their arguments.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from importlib import metadata

ENV_PREFIX = "PFEDDC_"
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}
_SKIP = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def package_version() -> str:
    try:
        return metadata.version("pfeddc")
    except metadata.PackageNotFoundError:  # running from a bare source tree
        return "0+unknown"


def env_name(action: argparse.Action) -> str | None:
    """PFEDDC_<LONG_FLAG> for an option (the first long option string), None for positionals."""
    longs = [s for s in action.option_strings if s.startswith("--")]
    return ENV_PREFIX + longs[0][2:].replace("-", "_").upper() if longs else None


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")


def apply_env_defaults(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> None:
    """Make each set PFEDDC_<FLAG> variable the default of its flag, and name the variable in the help.

    Values are checked like command-line values (type, choices) with an error naming the variable.
    """
    env = os.environ if environ is None else environ
    for action in parser._actions:
        name = env_name(action)
        if name is None or isinstance(action, _SKIP):
            continue
        action.help = f"{action.help or ''} [env {name}]".strip()
        if name not in env:
            continue
        raw = env[name]
        if isinstance(action, argparse._StoreConstAction | argparse.BooleanOptionalAction):
            value = raw.strip().lower()
            if value not in _TRUE | _FALSE:
                parser.error(f"{name}={raw!r}: expected one of true/false, 1/0, yes/no, on/off")
            truth = value in _TRUE
            const = action.const if isinstance(action, argparse._StoreConstAction) else True
            action.default = const if truth else (not const if isinstance(const, bool) else None)
        elif isinstance(action, argparse._AppendAction):
            action.default = [_convert(parser, action, name, v) for v in raw.split(",") if v]
        else:
            action.default = _convert(parser, action, name, raw)
        action.required = False


def _convert(parser: argparse.ArgumentParser, action: argparse.Action, name: str, raw: str) -> object:
    try:
        value = action.type(raw) if callable(action.type) else raw
    except (TypeError, ValueError) as exc:
        parser.error(f"{name}={raw!r}: {exc}")
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        parser.error(f"{name}={raw!r}: invalid choice (choose from {choices})")
    return value
