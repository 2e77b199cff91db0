"""A site's pinned peer keys: how it checks its peers' secure-aggregation signatures without client certificates.

Each peer's signing key as this site first checked it (or as its operator listed it in advance from the peer's
`pfeddc-client signing-key`), kept in state_dir/peer_keys.json ({site id: 66 hex digits}). A pinned peer must
sign with its pinned key, whatever the coordinator relays or says about the round; an unpinned one signs with the
key it presents, which is then pinned. The file is read afresh for every secure round (an operator's edit counts
from the next round) and new pins are merged into what is on disk then (common/secagg/identity.py says why).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..common import serde
from ..common.ids import client_id_problem
from ..common.logs import Event, get_logger
from ..common.secagg.identity import SignatureError, signing_key_problem, verify_with
from ..common.secagg.keys import RoundId

MAX_PINNED_PEERS = 200_000  # the coordinator's largest registry (MAX_CLIENTS_LIMIT): about 18 MB of pins
log = get_logger("client")


def read_pins(path: Path) -> dict[str, bytes]:
    """The pins in `path` (none when it is missing); ValueError naming the file when it is not a pins file."""
    if not path.exists():
        return {}
    try:
        pins = json.loads(path.read_text())
        if not isinstance(pins, dict) or not all(isinstance(v, str) for v in pins.values()):
            raise ValueError("not a JSON object of site ids to signing keys")
        keys = {}
        for site, text in pins.items():
            try:
                keys[str(site)] = bytes.fromhex(text)
            except ValueError:
                raise ValueError(f"{site!r}: {text[:20]!r} is not hex digits") from None
            problem = client_id_problem(site) or signing_key_problem(keys[site])
            if problem:
                raise ValueError(f"{site!r}: {problem}")
    except ValueError as e:
        raise ValueError(f"{path}: {e}; fix it or remove the line (a peer not listed is pinned again when first "
                         "seen)") from e
    return keys


class PinnedKeys:
    """The pins of one secure round (`check` pins what it saw first; `remember` saves those)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pins = read_pins(path)
        self._new: dict[str, bytes] = {}

    def knows(self, site_id: str) -> bool:
        return site_id in self._pins

    def check(self, site_id: str, credential: bytes, signature: bytes, label: str, rid: RoundId,
              *parts: bytes) -> None:
        pinned = self._pins.get(site_id)
        if pinned is not None and credential != pinned:
            raise SignatureError(f"{site_id!r} signed with a key other than the one pinned for it in {self.path} "
                                 f"(pinned {pinned.hex()[:16]}..., presented {credential.hex()[:16]}...): the "
                                 "coordinator relayed another key, or a peer of that id came back with a new one "
                                 "(then its operator says so, and you remove its line)")
        verify_with(site_id, credential, signature, label, rid, parts)
        if pinned is None and not client_id_problem(site_id) and len(self._pins) < MAX_PINNED_PEERS:
            self._pins[site_id] = self._new[site_id] = credential

    def remember(self) -> None:
        """Merge the pins made since the last call into the file as it is now (atomically); a failure to write is
        logged, not raised: the round's outcome stands, and the peers are pinned again when next seen."""
        if not self._new:
            return
        try:
            on_disk = read_pins(self.path)
            merged = {**on_disk, **{k: v for k, v in self._new.items() if k not in on_disk}}
            serde.atomic_write(self.path, json.dumps({k: v.hex() for k, v in merged.items()}, indent=1,
                                                     sort_keys=True).encode())
            self._new = {}
        except (OSError, ValueError) as e:
            log.warning(Event.PEER_KEYS_UNSAVED, path=str(self.path), error=str(e),
                        advice="free the disk, or fix or remove the file: the peers are pinned again when next seen")
