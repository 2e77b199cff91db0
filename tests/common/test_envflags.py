"""PFEDDC_* environment defaults come from the argparse definitions of every tool; command-line flags win."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pfeddc.client.app import run_parser
from pfeddc.common.envflags import apply_env_defaults, env_name
from pfeddc.server.app import build_parser


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tool")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--log-format", choices=["json", "console"], default="console")
    p.add_argument("--allow-download", action="store_true")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    return p


def test_env_sets_defaults_and_flags_win() -> None:
    p = parser()
    apply_env_defaults(p, {"PFEDDC_ROUNDS": "7", "PFEDDC_STATE_DIR": "/s", "PFEDDC_ALLOW_DOWNLOAD": "yes",
                           "PFEDDC_PROGRESS": "0"})
    args = p.parse_args([])  # --state-dir is no longer required: the environment gives it
    assert (args.rounds, args.state_dir, args.allow_download, args.progress) == (7, Path("/s"), True, False)
    assert p.parse_args(["--rounds", "3"]).rounds == 3
    assert "[env PFEDDC_ROUNDS]" in p.format_help()


@pytest.mark.parametrize(("env", "message"), [({"PFEDDC_ROUNDS": "many"}, "PFEDDC_ROUNDS='many'"),
                                              ({"PFEDDC_LOG_FORMAT": "xml"}, "invalid choice"),
                                              ({"PFEDDC_ALLOW_DOWNLOAD": "maybe"}, "true/false")])
def test_bad_env_values_name_the_variable(env: dict[str, str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        apply_env_defaults(parser(), env)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_every_flag_of_the_tools_has_a_variable() -> None:
    from pfeddc.client.sim.app import build_parser as sim_parser
    from pfeddc.client.sim.partition_app import build_parser as partition_parser
    from pfeddc.server.status_cli import build_parser as status_parser

    for tool in (build_parser(), run_parser(), sim_parser(), partition_parser(), status_parser()):
        names = [env_name(a) for a in tool._actions if a.option_strings and a.dest not in ("help", "version")]
        assert names and all(n and n.startswith("PFEDDC_") for n in names)
        assert len(set(names)) == len(names)
    assert env_name(next(a for a in run_parser()._actions if a.dest == "token")) == "PFEDDC_TOKEN"
