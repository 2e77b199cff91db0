"""The coordinator's side of one secure-aggregation round: it routes, counts, checks, and learns only the sum.

The caller (the coordinator's secure-aggregation stage) feeds it each site's message as it arrives and closes
each stage when its deadline passes; whoever has not answered by then has dropped out. Every check that can
blame a site names it: a message out of turn (ProtocolError.site_id), a bundle another site could not open or
verify (a complaint, judged on the accuser's evidence: AccusationError convicts the accused or the false accuser,
and the round restarts without them before any input is sent), a revealed share that differs from the digest its
dealer committed to (the revealer is excluded from reconstruction), a dealer whose shares do not reconstruct what
it committed to (InconsistentSiteError: restart the round without it).
"""

from __future__ import annotations

import numpy as np

from ...common.secagg import shamir
from ...common.secagg.field import dequantise_sum, sum_error_bound
from ...common.secagg.identity import PeerCheck, SignatureError, keys_digest
from ...common.secagg.keys import pairwise_seed, private_key, public_bytes
from ...common.secagg.masking import unmask
from ...common.secagg.protocol import (
    AccusationError,
    AdvertiseKeys,
    AggregateResult,
    ChecksPassed,
    InconsistentSiteError,
    KeysAnnounced,
    MaskedInput,
    ProtocolError,
    PublicKeys,
    RoundConfig,
    SealedBundle,
    ShareKeys,
    ShareKind,
    SharesChecked,
    SharesDelivered,
    Signed,
    Stage,
    TooFewSitesError,
    UnmaskRequest,
    UnmaskResponse,
    share_digest,
    verdict,
)


class SecAggCoordinator:
    def __init__(self, config: RoundConfig, verifier: PeerCheck | None = None) -> None:
        """`verifier`: require every advert and check of each site it `knows` to be signed by that site (its client
        certificate, or the key it bound at Join: common/secagg/identity.py)."""
        self.config = config
        self._verifier = verifier
        self._signed: dict[str, Signed] = {}
        self._attestations: dict[str, bytes] = {}
        self._announced = b""  # keys_digest of the announced keys, which every check signs
        self.stage = Stage.ADVERTISE
        self.keys: dict[str, PublicKeys] = {}  # U1
        self._shares: dict[str, ShareKeys] = {}  # U2
        self._digests: dict[tuple[str, str], dict[ShareKind, bytes]] = {}  # (dealer, holder) -> committed digests
        self._checked: set[str] = set()  # sites that checked their bundles (stage 3)
        self.guilty: dict[str, str] = {}  # convicted by a judged complaint -> why
        self._masked: dict[str, np.ndarray] = {}
        self.excluded: dict[str, str] = {}
        self._survivors: tuple[str, ...] = ()
        self._dropped: tuple[str, ...] = ()
        self._revealed: dict[tuple[str, ShareKind], list[shamir.Share]] = {}
        self._responders: set[str] = set()

    def _expect(self, stage: Stage, site_id: str, allowed: set[str]) -> None:
        if self.stage != stage:
            raise ProtocolError(f"a {stage} message from {site_id!r} arrived at stage {self.stage}", site_id)
        if site_id not in allowed:
            raise ProtocolError(f"{site_id!r} is not expected at stage {stage}", site_id)

    def _close(self, have: int, then: Stage) -> None:
        if have < self.config.threshold:
            stage, self.stage = self.stage, Stage.DONE
            raise TooFewSitesError(stage, have, self.config.threshold)
        self.stage = then

    def receive_advertise(self, msg: AdvertiseKeys) -> None:
        self._expect(Stage.ADVERTISE, msg.site_id, set(self.config.sampled) - set(self.keys))
        seen = {k for pk in self.keys.values() for k in (pk.mask, pk.enc)}
        if msg.keys.mask == msg.keys.enc or {msg.keys.mask, msg.keys.enc} & seen:
            raise ProtocolError(f"{msg.site_id!r} advertised a repeated public key", msg.site_id)
        self._verify(msg.site_id, msg.signed, "advert", msg.site_id.encode(), msg.keys.mask, msg.keys.enc)
        self.keys[msg.site_id] = msg.keys
        self._signed[msg.site_id] = msg.signed

    @property
    def signed(self) -> bool:
        """Every advert and check of this run is signed by its site."""
        return self._verifier is not None and all(self._verifier.knows(u) for u in self.config.sampled)

    def _verify(self, site: str, signed: Signed, label: str, *parts: bytes) -> None:
        if self._verifier is None:
            return
        try:
            self._verifier.check(site, signed.credential, signed.signature, label, self.config.rid, *parts)
        except SignatureError as e:
            raise ProtocolError(str(e), site) from e

    def announce(self) -> KeysAnnounced:
        self._close(len(self.keys), Stage.SHARE_KEYS)
        self._announced = keys_digest(self.keys)
        return KeysAnnounced(self.config.rid, dict(self.keys), {u: self._signed[u] for u in self.keys})

    def receive_shares(self, msg: ShareKeys) -> None:
        self._expect(Stage.SHARE_KEYS, msg.site_id, set(self.keys) - set(self._shares))
        addressed = sorted(b.recipient for b in msg.bundles)
        if addressed != sorted(set(self.keys) - {msg.site_id}) or any(b.sender != msg.site_id for b in msg.bundles) \
                or any(set(b.digests) != set(ShareKind) for b in msg.bundles):
            raise ProtocolError(f"{msg.site_id!r} must send one bundle with both digests to each other site",
                                msg.site_id)
        self._shares[msg.site_id] = msg
        self._digests.update({(msg.site_id, b.recipient): b.digests for b in msg.bundles})

    def deliver(self) -> dict[str, SharesDelivered]:
        """Each sharing site's bundles from every other sharing site."""
        self._close(len(self._shares), Stage.CHECK_SHARES)
        senders = tuple(sorted(self._shares))
        addressed: dict[str, list[SealedBundle]] = {v: [] for v in senders}
        for u in senders:  # one pass over the N x (N - 1) bundles, in sender order (not one pass per recipient)
            for b in self._shares[u].bundles:
                if b.recipient in addressed:
                    addressed[b.recipient].append(b)
        return {v: SharesDelivered(v, senders, tuple(addressed[v])) for v in senders}

    def receive_check(self, msg: SharesChecked) -> None:
        """A site's verdict on its bundles: each complaint is judged at once on its evidence."""
        site = msg.site_id
        self._expect(Stage.CHECK_SHARES, site, set(self._shares) - self._checked)
        accused = [c.accused for c in msg.complaints]
        if len(set(accused)) != len(accused) or len(accused) >= len(self._shares):
            raise ProtocolError(f"{site!r} accused one site twice, or more sites than dealt it bundles", site)
        self._verify(site, Signed(self._signed[site].credential, msg.signature), "check", site.encode(),
                     self._announced, *(a.encode() for a in accused))
        self._checked.add(site)
        if not accused:
            self._attestations[site] = msg.signature
        x = sorted(self.keys).index(site) + 1
        for c in msg.complaints:
            if c.accused == site or c.accused not in self._shares:
                self.guilty.setdefault(site, f"accused {c.accused!r}, which dealt it no bundle this run")
                continue
            bundle = next((b for b in self._shares[c.accused].bundles if b.recipient == site), None)
            convicted, why = verdict(c, site, self.keys[site].enc, self.keys[c.accused].enc, bundle,
                                     self.config.rid, x)
            self.guilty.setdefault(convicted, why)

    def passed(self) -> ChecksPassed:
        """Close stage 3: a judged complaint ends the attempt (AccusationError), else the checked sites go on."""
        if self.guilty:
            self.stage = Stage.DONE
            raise AccusationError(self.guilty)
        self._close(len(self._checked), Stage.MASKED_INPUT)
        return ChecksPassed(tuple(sorted(self._checked)), dict(self._attestations))

    def receive_masked(self, msg: MaskedInput) -> None:
        self._expect(Stage.MASKED_INPUT, msg.site_id, self._checked - set(self._masked))
        y = np.asarray(msg.masked)
        f = self.config.field
        if y.shape != (self.config.length,) or y.dtype != np.uint64 or (y.size and int(y.max()) >= f.modulus):
            raise ProtocolError(f"{msg.site_id!r} sent a masked input that is not {self.config.length} elements "
                                f"below 2**{f.modulus_bits}", msg.site_id)
        self._masked[msg.site_id] = y

    def unmask_request(self) -> UnmaskRequest:
        """Survivors: sent an input; everyone else who shared keys is dropped."""
        self._survivors = tuple(sorted(set(self._masked) - set(self.excluded)))
        self._dropped = tuple(sorted(set(self._shares) - set(self._survivors)))
        self._close(len(self._survivors), Stage.UNMASK)
        return UnmaskRequest(self._survivors, self._dropped)

    def receive_unmask(self, msg: UnmaskResponse) -> None:
        holder = msg.site_id
        self._expect(Stage.UNMASK, holder, set(self._survivors) - self._responders)
        wanted = {**{u: ShareKind.SELF_SEED for u in self._survivors}, **{d: ShareKind.MASK_KEY for d in self._dropped}}
        own_x = sorted(self.keys).index(holder) + 1
        twice = len({r.dealer for r in msg.shares}) < len(msg.shares)  # (a count per share: N^3 a round)
        for r in msg.shares:
            if wanted.get(r.dealer) != r.kind or r.share.x != own_x or twice:
                raise ProtocolError(f"{holder!r} revealed a {r.kind} share of {r.dealer!r} that was not asked of it",
                                    holder)
        for r in msg.shares:
            committed = self._digests.get((r.dealer, holder), {}).get(r.kind)  # None: the holder is the dealer
            if committed is not None and share_digest(self.config.rid, r.kind, r.dealer, holder, r.share) != committed:
                self.excluded[holder] = f"revealed a share of {r.dealer!r} that its dealer never sent"
                return
        self._responders.add(holder)
        for r in msg.shares:
            self._revealed.setdefault((r.dealer, r.kind), []).append(r.share)

    def _secret(self, dealer: str, kind: ShareKind) -> bytes:
        shares = self._revealed.get((dealer, kind), [])
        try:
            if len(shares) < self.config.threshold:  # enough holders answered, too few could open its bundle
                raise shamir.InconsistentSharesError(f"only {len(shares)} of its shares were usable, threshold "
                                                     f"{self.config.threshold}")
            return shamir.reconstruct(shares, self.config.threshold)
        except shamir.InconsistentSharesError as e:
            self.stage = Stage.DONE
            raise InconsistentSiteError(dealer, f"its {kind} shares: {e}") from e

    def finish(self) -> AggregateResult:
        """The decoded sum of the survivors' vectors; the masks of everyone else removed."""
        if self.stage != Stage.UNMASK:
            raise ProtocolError(f"cannot finish at stage {self.stage}")
        self._close(len(self._responders), Stage.DONE)
        cfg = self.config
        f = self.config.field
        total = np.zeros(cfg.length, dtype=np.uint64)
        for u in self._survivors:
            total += self._masked[u]  # wraps mod 2**64, a multiple of M; unmask reduces
        self_seeds = [self._secret(u, ShareKind.SELF_SEED) for u in self._survivors]
        dangling = []
        for d in self._dropped:
            key = private_key(self._secret(d, ShareKind.MASK_KEY))
            if public_bytes(key) != self.keys[d].mask:
                raise InconsistentSiteError(d, "its mask-key shares reconstruct a key other than the one it advertised")
            dangling += [(v, d, pairwise_seed(key, self.keys[v].mask, cfg.rid, d, v)) for v in self._survivors]
        n = len(self._survivors)
        total_q = unmask(total, self_seeds, dangling, f)
        return AggregateResult(dequantise_sum(total_q, f, n), self._survivors, self._dropped, dict(self.excluded),
                               sum_error_bound(f, n))
