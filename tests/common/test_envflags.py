"""PFEDDC_<TOOL>_* environment defaults come from the argparse definitions of every tool; command-line flags win;
another tool's variables are not read, and a variable no tool reads stops the tool."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pfeddc.client.app import run_parser
from pfeddc.common.envflags import apply_env_defaults, env_name, env_names, tool_prefix
from pfeddc.server.app import build_parser


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pfeddc-server")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--log-format", choices=["json", "console"], default="console")
    p.add_argument("--allow-download", action="store_true")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    return p


def test_env_sets_defaults_and_flags_win() -> None:
    p = parser()
    apply_env_defaults(p, {"PFEDDC_SERVER_ROUNDS": "7", "PFEDDC_SERVER_STATE_DIR": "/s",
                           "PFEDDC_SERVER_ALLOW_DOWNLOAD": "yes", "PFEDDC_SERVER_PROGRESS": "0"})
    args = p.parse_args([])  # --state-dir is no longer required: the environment gives it
    assert (args.rounds, args.state_dir, args.allow_download, args.progress) == (7, Path("/s"), True, False)
    assert p.parse_args(["--rounds", "3"]).rounds == 3
    assert "[env PFEDDC_SERVER_ROUNDS]" in p.format_help()


@pytest.mark.parametrize(("env", "message"), [
    ({"PFEDDC_SERVER_ROUNDS": "many"}, "PFEDDC_SERVER_ROUNDS='many'"),
    ({"PFEDDC_SERVER_LOG_FORMAT": "xml"}, "invalid choice"),
    ({"PFEDDC_SERVER_ALLOW_DOWNLOAD": "maybe"}, "true/false"),
    # a misspelling of this tool's variable, with the name it probably meant
    ({"PFEDDC_SERVER_ROUND": "3"}, "PFEDDC_SERVER_ROUND is set but pfeddc-server has no such variable (did you "
                                   "mean PFEDDC_SERVER_ROUNDS?)"),
    # the shared names of earlier versions, with this tool's name for it
    ({"PFEDDC_ROUNDS": "3"}, "PFEDDC_ROUNDS is set but no pfeddc tool reads it"),
    ({"PFEDDC_ROUNDS": "3"}, "for pfeddc-server it is PFEDDC_SERVER_ROUNDS"),
    ({"PFEDDC_SERVR_ROUNDS": "3"}, "PFEDDC_SERVR_ROUNDS is set but no pfeddc tool reads it"),
])
def test_bad_env_values_name_the_variable(env: dict[str, str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        apply_env_defaults(parser(), env)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_every_flag_of_the_tools_has_a_variable() -> None:
    from pfeddc.client.sim.app import build_parser as sim_parser
    from pfeddc.client.sim.partition_app import build_parser as partition_parser
    from pfeddc.server.ops.status_cli import build_parser as status_parser

    for tool in (build_parser(), run_parser(), sim_parser(), partition_parser(), status_parser()):
        prefix = tool_prefix(tool.prog)
        names = [env_name(a, prefix) for a in tool._actions if a.option_strings and a.dest not in ("help", "version")]
        assert names and all(n and n.startswith(prefix) for n in names)
        assert len(set(names)) == len(names)
    assert "PFEDDC_CLIENT_TOKEN_FILE" in env_names(run_parser())
    assert "PFEDDC_STATUS_TLS_CERT" in env_names(status_parser())


def test_another_tools_variables_are_neither_read_nor_refused() -> None:
    """The coordinator's certificate exported in a shell is not the status CLI's (it once made it exit 3)."""
    from pfeddc.server.ops.status_cli import build_parser as status_parser

    env = {"PFEDDC_SERVER_TLS_CERT": "/etc/pfeddc/coordinator.pem", "PFEDDC_CLIENT_SERVER": "h:1",
           "PFEDDC_FASHION_DIR": "/data"}
    p = status_parser()
    apply_env_defaults(p, env)
    assert p.parse_args([]).tls_cert is None


def test_a_sub_command_accepts_its_siblings_variables() -> None:
    """A client container's environment (the daemon's variables) also serves `pfeddc-client evaluate`."""
    from pfeddc.client.app import offline_parser

    p = offline_parser("evaluate", env=False)
    apply_env_defaults(p, {"PFEDDC_CLIENT_SERVER": "h:1", "PFEDDC_CLIENT_DATA": "/d"}, siblings=[run_parser(False)])
    assert p.parse_args([]).data == Path("/d")
