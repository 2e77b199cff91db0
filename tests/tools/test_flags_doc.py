"""docs/flags.md is what the tools' parsers declare: a flag added, renamed or re-documented in its one
declaration and not in the reference fails here (run `python -m tools.flags`)."""

from __future__ import annotations

from tools import flags


def test_flags_reference_is_written_from_the_parsers() -> None:
    assert flags.main(["--check"]) == 0


def test_every_flag_of_every_tool_is_in_the_reference() -> None:
    text = flags.render()
    for _tool, parser in flags.parsers():
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option not in ("--help", "--version"):
                    assert f"`{option}`" in text, option
