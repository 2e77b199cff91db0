"""One owner for every default: each tool's flags read theirs from the dataclass that holds them.

The client's from `ClientOptions` (client/options.py), the coordinator's from `FederationConfig`
(`CONFIG_DEFAULTS`), training settings from `TrainSettings`; pfeddc-sim passes the coordinator's and the
client's flags through and writes only the values that are its own.
"""

from __future__ import annotations

import argparse
import ast
import os
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from pfeddc.client.app import offline_parser, run_parser
from pfeddc.client.options import ClientOptions, options_from
from pfeddc.client.sim.app import build_parser as sim_parser
from pfeddc.common.cli import add_log_flags, add_prompt_flags, add_train_flags
from pfeddc.server.app import build_parser as server_parser
from pfeddc.server.round.config import FederationConfig

ROOT = Path(__file__).resolve().parents[1]
# pfeddc-sim's own choices where it runs the same flag differently, each for a reason.
SIM_OWN = {
    "rounds": "a comparison on one machine: shorter than a deployment",
    "round_timeout": "every client shares one machine's CPUs: rounds are slower",
    "device": "several clients on one machine: one GPU is not shared by default",
}


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("PFEDDC_")]:
        monkeypatch.delenv(name)


def _defaults(parser: argparse.ArgumentParser) -> dict[str, object]:
    return {a.dest: a.default for a in parser._actions if a.option_strings and a.dest != "help"}


def _written_defaults(path: Path) -> list[tuple[int, str]]:
    """(line, flag) of every add_argument call in `path` that writes its default as a literal."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            for kw in node.keywords:
                value = kw.value
                literal = (isinstance(value, ast.Constant) and value.value not in (None, False)) or (
                    isinstance(value, ast.Call) and all(isinstance(a, ast.Constant) for a in value.args))  # Path("x")
                if kw.arg == "default" and literal:
                    flag = next((a.value for a in node.args if isinstance(a, ast.Constant)), "?")
                    out.append((node.lineno, str(flag)))
    return out


def test_defaults_client_flags_are_the_client_options_defaults() -> None:
    parsers = [run_parser(), offline_parser("predict"), offline_parser("evaluate")]
    flagged = ClientOptions.flag_fields()
    for parser in parsers:
        for dest, default in _defaults(parser).items():
            if dest in flagged and flagged[dest].default is not MISSING:
                assert default == flagged[dest].default, f"{parser.prog} --{dest}: {default!r}"
    args = run_parser().parse_args(["--data", "d", "--server", "h:1"])
    assert options_from(args) == ClientOptions(Path("d"), "h:1")


def test_defaults_client_app_writes_none_of_the_daemons_itself() -> None:
    written = {flag for _, flag in _written_defaults(ROOT / "client" / "app.py")}
    assert written <= {"--format"}, f"client/app.py writes defaults of {written}: give them to ClientOptions"


def test_defaults_coordinator_writes_no_config_default_itself() -> None:
    names = {f.name.removesuffix("_s").removesuffix("_bytes") for f in fields(FederationConfig)
             if f.default is not MISSING}  # rounds has none: --rounds's default is the only one
    for path in (ROOT / "server" / "app.py", ROOT / "server" / "flags.py"):
        twice = [(line, flag) for line, flag in _written_defaults(path)
                 if flag.removeprefix("--").replace("-", "_").removesuffix("_mb") in names]
        assert not twice, f"{path.name} writes FederationConfig defaults again (use CONFIG_DEFAULTS): {twice}"


def test_defaults_sim_passes_the_coordinators_and_the_clients_through() -> None:
    shared = argparse.ArgumentParser()
    add_train_flags(shared)
    add_prompt_flags(shared)
    add_log_flags(shared)
    generated = set(_defaults(shared)) | {"version", "model"}  # model: common/backbones.py EMBEDDED_MODEL
    sim = _defaults(sim_parser())
    others = {**_defaults(run_parser()), **_defaults(server_parser())}
    for dest in sim.keys() & others.keys() - generated:
        if dest in SIM_OWN:
            assert sim[dest] != others[dest], f"--{dest} is the sim's own ({SIM_OWN[dest]}) but equals the tool's"
        else:
            assert sim[dest] is None, f"pfeddc-sim --{dest} writes {sim[dest]!r}: pass the tools' own default through"


# pfeddc-sim flags that share a tool's name but mean something else there.
SIM_MEANS_ELSE = {"data": "a folder of client folders: each client gets one of them as its --data"}


def _other_value(action: argparse.Action) -> list[str]:
    """The command-line words that set `action` to a value that is not its default."""
    flag = action.option_strings[0]
    if action.nargs == 0:
        return [flag] if not action.default else []
    if action.choices is not None:
        return [flag, str(next(c for c in action.choices if c != action.default))]
    if action.type is int:
        return [flag, str((action.default or 0) + 3)]
    if action.type is float:
        return [flag, str((action.default or 0.0) + 0.375)]
    return [flag, f"x-{action.dest}"]


def test_defaults_sim_forwards_every_flag_it_shares_with_a_tool(tmp_path: Path) -> None:
    """Each pfeddc-sim flag that is also a coordinator's or a client's flag reaches that tool's command line with
    the sim's value, as that tool's own parser reads it (or the tool defers to the one that does): a flag added
    to the sim and not forwarded fails here."""
    from pfeddc.client.sim.app import client_flags, server_flags

    sim, server, client = sim_parser(), server_parser(), run_parser()
    dests = {a.dest: a for a in sim._actions if a.option_strings and a.dest not in ("help", "version")}
    tool_dests = {a.dest for p in (server, client) for a in p._actions}
    shared = {d: a for d, a in dests.items() if d in tool_dests and d not in SIM_MEANS_ELSE}
    assert {"rounds", "seed", "fraction", "round_timeout", "secure_aggregation", "model", "device", "lr",
            "text_ctx", "classes"} <= shared.keys()  # the check sees what it must
    words = [w for a in shared.values() for w in _other_value(a)]
    args = sim.parse_args(["--data", str(tmp_path), *words])
    folder = tmp_path / "site-a"
    on_server = vars(server.parse_args(server_flags(args, "pfeddc", [folder], tmp_path / "out")))
    on_client = vars(client.parse_args(client_flags(args, folder, 1234, tmp_path / "out")))
    for dest in shared:
        seen = [tool[dest] for tool in (on_server, on_client) if dest in tool]
        # a tool either reads the sim's value or defers (None: a client's training settings are the coordinator's)
        assert getattr(args, dest) in seen and set(seen) <= {getattr(args, dest), None}, (dest, args, seen)


def test_defaults_every_client_option_field_is_a_flag_of_the_daemon() -> None:
    """A `ClientOptions` field with help is a flag of `pfeddc-client`: one added to the dataclass but to no
    parser would silently keep its default."""
    dests = {a.dest for a in run_parser()._actions}
    assert set(ClientOptions.flag_fields()) <= dests, set(ClientOptions.flag_fields()) - dests


def test_defaults_every_config_field_is_set_by_a_coordinator_flag() -> None:
    """Each `FederationConfig` field is one row's `config` (server/flags.py) or derived from several flags: a field
    added without a flag fails here, and so does a row naming a field that does not exist."""
    from pfeddc.server.flags import DERIVED_FIELDS, rows

    named = [row.config for row in rows() if row.config]
    config_fields = {f.name for f in fields(FederationConfig)}
    assert len(named) == len(set(named)) and set(named) <= config_fields, named
    assert config_fields - set(named) == DERIVED_FIELDS, config_fields - set(named) - DERIVED_FIELDS
    assert all(row.help.strip() for row in rows())
