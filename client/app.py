"""`pfeddc-client` (placeholder until the client daemon lands)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("pfeddc-client: not built yet", file=sys.stderr)
    return 1
