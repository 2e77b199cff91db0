"""docs/flags.md, written from the tools' own argument parsers: every flag's name, environment variable,
default and help come from where the flag is declared, never copied by hand.

    python -m tools.flags            # rewrite docs/flags.md
    python -m tools.flags --check    # exit 1 when docs/flags.md is not what the parsers say (tests run it)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "flags.md"


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    from pfeddc.client.app import offline_parser, run_parser
    from pfeddc.client.sim.app import build_parser as sim_parser
    from pfeddc.server.app import build_parser as server_parser
    from pfeddc.server.ops.status_cli import build_parser as status_parser

    return [("pfeddc-server", server_parser()), ("pfeddc-server status", status_parser()),
            ("pfeddc-client", run_parser()), ("pfeddc-client predict", offline_parser("predict")),
            ("pfeddc-client evaluate", offline_parser("evaluate")),
            ("pfeddc-client signing-key", offline_parser("signing-key")), ("pfeddc-sim", sim_parser())]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    lines = ["# Every flag", "",
             "Written by `python -m tools.flags` from each tool's parser (the flag's one declaration); "
             "`--help` prints the same. Every flag also reads the environment variable in brackets; the "
             "command line wins.", ""]
    for tool, parser in parsers():
        lines += [f"## {tool}", "", "| flag | default | what it does |", "|---|---|---|"]
        for action in parser._actions:
            longs = [o for o in action.option_strings if o.startswith("--")]
            if not longs or action.help == argparse.SUPPRESS or longs[0] in ("--help", "--version"):
                continue
            help_text = (action.help or "") % {"default": action.default} if action.help else ""
            default = "" if action.default in (None, argparse.SUPPRESS) else f"`{action.default}`"
            lines.append(f"| `{'`, `'.join(longs)}` | {default} | {_cell(help_text)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare instead of writing")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is not what the parsers say: run python -m tools.flags", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
