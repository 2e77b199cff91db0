"""What a client id may be, in one place: the coordinator, its gate and `pfeddc-certs` check the same rule.

An id names a folder on disk (pfeddc-certs), a certificate's common name, a key of tokens.json and of the
checkpoint's registry, and shows up in logs and errors: letters, digits, '.', '_' and '-', starting with a
letter or digit, at most 128 characters. No ':' (so `admin:<name>` identities can never be client ids), no
'/' (so `--client-id ../x` cannot leave the credentials folder), and never echoed whole when it is wrong.
"""

from __future__ import annotations

import re

MAX_CLIENT_ID_CHARS = 128
CLIENT_ID_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_CLIENT_ID_CHARS - 1}}}")  # fullmatch only
# How much of an offending id an error may quote.
SHOWN_CHARS = 40


def shown(client_id: str) -> str:
    """`client_id` as an error may quote it: repr'd, cut to SHOWN_CHARS with the full length named."""
    if len(client_id) <= SHOWN_CHARS:
        return repr(client_id)
    return f"{client_id[:SHOWN_CHARS]!r}... ({len(client_id)} characters)"


def client_id_problem(client_id: str) -> str | None:
    """Why `client_id` is not a valid client id, or None when it is."""
    if len(client_id) > MAX_CLIENT_ID_CHARS:
        return f"client_id of {len(client_id)} characters is longer than {MAX_CLIENT_ID_CHARS}"
    if not CLIENT_ID_PATTERN.fullmatch(client_id):
        return (f"client_id {shown(client_id)} must be 1-{MAX_CLIENT_ID_CHARS} letters, digits, '.', '_' or '-', "
                "starting with a letter or digit")
    return None
