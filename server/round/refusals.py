"""Who refused whom in one secure attempt.

A site that finds a peer's signed keys or attestation wrong (a key other than the one it pinned for that peer, or
a bad signature) leaves the attempt and says whom it refused (ReportFailure PEER_REFUSED). It cannot prove it:
pins live on the site. So one report blames nobody (a hostile member could frame anyone), while a peer refused by
more than half of the other sampled sites is blamed when the attempt fails, and left out of the retry like a
convicted site (for --client-ttl): a member whose key its peers do not accept (one that came back under an id
they pinned with another key) cannot stop every round.
"""

from __future__ import annotations

from collections.abc import Iterable


class Refusals:
    def __init__(self, sampled: Iterable[str]) -> None:
        self._sampled = frozenset(sampled)
        self._by: dict[str, set[str]] = {}  # refused peer -> the sites that refused it

    def record(self, site: str, peer: str) -> bool:
        """`site` refused `peer`; False (nothing kept) when either is not sampled, or they are the same."""
        if site == peer or not {site, peer} <= self._sampled:
            return False
        self._by.setdefault(peer, set()).add(site)
        return True

    def blamed(self) -> dict[str, str]:
        """Each peer refused by more than half of the other sampled sites, with why."""
        others = len(self._sampled) - 1
        return {peer: f"refused by {len(by)} of the other {others} sampled sites ({', '.join(sorted(by))}): its "
                      "signed keys did not check against their pins"
                for peer, by in sorted(self._by.items()) if 2 * len(by) > others}
