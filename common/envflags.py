"""`PFEDDC_<TOOL>_*` environment defaults for every flag of every tool, and `--version`.

The variables are derived from the argparse definitions themselves (pfeddc-server's `--round-timeout` <->
`PFEDDC_SERVER_ROUND_TIMEOUT`), so a flag and its variable can never drift apart; a flag given on the command
line wins over its variable. Containers set their configuration as environment (a Kubernetes ConfigMap with
`envFrom`) without repeating any flag in their arguments.

Each tool has its own prefix (TOOL_PREFIXES): with the coordinator's `PFEDDC_SERVER_TLS_CERT` exported in a
shell, `pfeddc-server status` does not present the coordinator's certificate. A `PFEDDC_*` variable that no
tool reads (a misspelling, or the shared `PFEDDC_<FLAG>` names of earlier versions) stops the tool with exit 2
and the name it probably meant, instead of being ignored.
"""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Iterable, Mapping
from importlib import metadata

ENV_PREFIX = "PFEDDC_"
# The prefix of each tool's variables, by the program name of its parser (sub-commands share their tool's
# prefix, except `pfeddc-server status`, which talks to a coordinator as an admin, not as one).
TOOL_PREFIXES = {
    "pfeddc-server status": "PFEDDC_STATUS_",
    "pfeddc-server": "PFEDDC_SERVER_",
    "pfeddc-client": "PFEDDC_CLIENT_",
    "pfeddc-sim": "PFEDDC_SIM_",
    "pfeddc-partition": "PFEDDC_PARTITION_",
    "pfeddc-certs": "PFEDDC_CERTS_",
}
# PFEDDC_* variables that are not flags (build scripts, data locations, tests): never refused.
OTHER_VARIABLES = frozenset({"PFEDDC_FASHION_DIR", "PFEDDC_SCREENSHOT", "PFEDDC_IMAGES", "PFEDDC_IMAGE_WORK",
                             "PFEDDC_DEFAULT_BASE"})
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_SKIP = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def package_version() -> str:
    try:
        return metadata.version("pfeddc")
    except metadata.PackageNotFoundError:  # running from a bare source tree
        return "0+unknown"


def tool_prefix(prog: str) -> str:
    """The variable prefix of the tool whose parser has this program name."""
    for name, prefix in TOOL_PREFIXES.items():
        if prog == name or prog.startswith(name + " "):
            return prefix
    raise ValueError(f"no environment prefix for the program {prog!r}: add it to envflags.TOOL_PREFIXES")


def env_name(action: argparse.Action, prefix: str) -> str | None:
    """<PREFIX><LONG_FLAG> for an option (the first long option string), None for positionals."""
    longs = [s for s in action.option_strings if s.startswith("--")]
    return prefix + longs[0][2:].replace("-", "_").upper() if longs else None


def env_names(parser: argparse.ArgumentParser) -> set[str]:
    """Every variable this parser reads."""
    prefix = tool_prefix(parser.prog)
    names = {env_name(a, prefix) for a in parser._actions if not isinstance(a, _SKIP)}
    return {n for n in names if n}


def _check_unknown(parser: argparse.ArgumentParser, env: Mapping[str, str], known: set[str]) -> None:
    """Refuse a PFEDDC_* variable that no tool reads, or one of this tool's prefix that names no flag."""
    prefix = tool_prefix(parser.prog)
    others = tuple(p for p in TOOL_PREFIXES.values() if p != prefix)
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in known or name in OTHER_VARIABLES:
            continue
        if name.startswith(prefix):
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else f" (`{parser.prog} --help` names each variable)"
            parser.error(f"{name} is set but {parser.prog} has no such variable{hint}")
        if name.startswith(others):
            continue  # another tool's
        meant = prefix + name.removeprefix(ENV_PREFIX)
        hint = f"; for {parser.prog} it is {meant}" if meant in known else ""
        parser.error(f"{name} is set but no pfeddc tool reads it: each tool reads its own prefix "
                     f"({', '.join(sorted(set(TOOL_PREFIXES.values())))}){hint}")


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")


def apply_env_defaults(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None,
                       siblings: Iterable[argparse.ArgumentParser] = ()) -> None:
    """Make each set PFEDDC_<TOOL>_<FLAG> variable the default of its flag, and name the variable in the help.

    Values are checked like command-line values (type, choices) with an error naming the variable.
    `siblings`: the other sub-commands of the same tool (same prefix), whose variables are not misspellings.
    """
    env = os.environ if environ is None else environ
    prefix = tool_prefix(parser.prog)
    _check_unknown(parser, env, env_names(parser).union(*(env_names(s) for s in siblings)))
    for action in parser._actions:
        name = env_name(action, prefix)
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
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        parser.error(f"{name}={raw!r}: {exc}")
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        parser.error(f"{name}={raw!r}: invalid choice (choose from {choices})")
    return value
