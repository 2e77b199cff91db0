"""A site's side of one secure-aggregation round: a state machine fed the coordinator's messages in order.

The site keeps its two private keys and its self-mask seed to itself; they leave only as Shamir shares, encrypted
to other sites. It checks everything the coordinator relays (the round, its own keys, the thresholds, each
bundle's authentication and digests) and refuses to reveal, for any site, shares of both its self-mask seed and
its mask key. The vector it masks is its own business: clip the change and weight it before calling
`masked_input` (the coordinator cannot check either under the masks).
"""

from __future__ import annotations

import os
import random

import numpy as np

from ..common.secagg import shamir
from ..common.secagg.field import quantise
from ..common.secagg.identity import Identity, PeerCheck, SignatureError, keys_digest
from ..common.secagg.keys import SEED_BYTES, SiteKeys, TamperedBundleError, pair_key, pairwise_seed, seal
from ..common.secagg.masking import mask
from ..common.secagg.protocol import (
    AdvertiseKeys,
    ChecksPassed,
    Complaint,
    KeysAnnounced,
    MaskedInput,
    PeerRefused,
    ProtocolError,
    PublicKeys,
    RevealedShare,
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
    encode_share,
    open_bundle,
    share_digest,
)

Held = dict[ShareKind, shamir.Share]


class SecAggSite:
    def __init__(self, site_id: str, config: RoundConfig, share_rng: random.Random | None = None,
                 identity: Identity | None = None, verifier: PeerCheck | None = None,
                 everyone_signs: bool = True) -> None:
        """`identity`: sign this site's advert and check; `verifier`: check the peers' adverts and attestations
        (identity.py), every peer's when `everyone_signs` (the round says so), else those it `knows` (a CA's
        sites, pinned keys) and those that signed: a coordinator's word never unpins a peer."""
        if site_id not in config.sampled:
            raise ProtocolError(f"site {site_id!r} is not sampled this round", site_id)
        self.site_id = site_id
        self.config = config
        self.stage = Stage.ADVERTISE
        self._keys = SiteKeys.generate()
        self._self_seed = os.urandom(SEED_BYTES)
        self._share_rng = share_rng  # None: Shamir coefficients from the OS (tests pass a seeded one)
        self._peers: dict[str, PublicKeys] = {}  # U1
        self._held: dict[str, Held] = {}  # dealer -> my shares of its secrets
        self._pair_keys: dict[str, bytes] = {}  # peer -> the AES-GCM key of our bundles
        self._masked_with: frozenset[str] = frozenset()  # U2
        self._complained = False  # its encryption key went out as evidence: it must never send an input now
        self._identity = identity
        self._verifier = verifier
        self._everyone_signs = everyone_signs
        self._credentials: dict[str, bytes] = {}  # peer -> the credential its checked advert was signed with
        self._announced = b""  # keys_digest of the announced keys: every check of this run signs it

    def _enter(self, expected: Stage, then: Stage) -> None:
        if self.stage != expected:
            raise ProtocolError(f"site {self.site_id!r} is at stage {self.stage}, not {expected}")
        self.stage = then

    def advertise(self) -> AdvertiseKeys:
        self._enter(Stage.ADVERTISE, Stage.SHARE_KEYS)
        keys = PublicKeys(self._keys.mask_public, self._keys.enc_public)
        signed = Signed()
        if self._identity is not None:
            signed = Signed(self._identity.credential, self._identity.sign(
                "advert", self.config.rid, self.site_id.encode(), keys.mask, keys.enc))
        return AdvertiseKeys(self.site_id, keys, signed)

    def _check_signatures(self, announced: KeysAnnounced) -> None:
        """Every announced advert signed by its site (each this site requires a signature of)."""
        if self._verifier is None:
            return
        for peer, keys in announced.keys.items():
            signed = announced.signed.get(peer, Signed())
            if not (self._everyone_signs or self._verifier.knows(peer) or signed.signature):
                continue  # an older coordinator's round, and a peer never seen that signs nothing
            try:
                self._verifier.check(peer, signed.credential, signed.signature, "advert", self.config.rid,
                                     peer.encode(), keys.mask, keys.enc)
            except SignatureError as e:
                raise PeerRefused(f"the announced keys of {peer!r} are not signed by it: {e}", peer) from e
            self._credentials[peer] = signed.credential

    def share_keys(self, announced: KeysAnnounced) -> ShareKeys:
        self._enter(Stage.SHARE_KEYS, Stage.CHECK_SHARES)
        cfg = self.config
        keys = announced.keys
        if announced.rid != cfg.rid:
            raise ProtocolError(f"keys announced for {announced.rid}, this round is {cfg.rid}")
        if keys.get(self.site_id) != PublicKeys(self._keys.mask_public, self._keys.enc_public):
            raise ProtocolError(f"the announced keys of {self.site_id!r} are not the ones it advertised")
        if not set(keys) <= set(cfg.sampled) or len({k.mask for k in keys.values()} | {k.enc for k in keys.values()}) \
                != 2 * len(keys):
            raise ProtocolError("the announced keys name an unsampled site or repeat a key")
        if len(keys) < cfg.threshold:
            raise TooFewSitesError(Stage.SHARE_KEYS, len(keys), cfg.threshold)
        self._check_signatures(announced)
        self._peers = dict(keys)
        self._announced = keys_digest(keys)
        holders = sorted(keys)
        dealt = {kind: shamir.share(secret, len(holders), cfg.threshold, self._share_rng) for kind, secret in
                 ((ShareKind.SELF_SEED, self._self_seed), (ShareKind.MASK_KEY, self._keys.mask_private()))}
        bundles = []
        for i, holder in enumerate(holders):
            mine = {kind: shares[i] for kind, shares in dealt.items()}
            if holder == self.site_id:
                self._held[holder] = mine
                continue
            plain = encode_share(mine[ShareKind.SELF_SEED]) + encode_share(mine[ShareKind.MASK_KEY])
            key = self._pair_keys[holder] = pair_key(self._keys.enc, keys[holder].enc, cfg.rid, self.site_id, holder)
            digests = {kind: share_digest(cfg.rid, kind, self.site_id, holder, s) for kind, s in mine.items()}
            bundles.append(SealedBundle(self.site_id, holder, seal(key, plain, cfg.rid, self.site_id, holder), digests))
        return ShareKeys(self.site_id, tuple(bundles))

    def check_shares(self, delivered: SharesDelivered) -> SharesChecked:
        """Open and check the bundles addressed to this site; a complaint carries this run's encryption private
        key as evidence (the coordinator opens the accused's bundle with it), after which the site sends no input
        this attempt."""
        self._enter(Stage.CHECK_SHARES, Stage.MASKED_INPUT)
        cfg = self.config
        senders = set(delivered.senders)
        if delivered.recipient != self.site_id or self.site_id not in senders or not senders <= set(self._peers):
            raise ProtocolError("the delivered shares are not this site's, or name a site that advertised no keys")
        if len(senders) < cfg.threshold:
            raise TooFewSitesError(Stage.CHECK_SHARES, len(senders), cfg.threshold)
        by_sender = {b.sender: b for b in delivered.bundles if b.recipient == self.site_id}
        own_x = sorted(self._peers).index(self.site_id) + 1
        complaints = []
        for dealer in sorted(senders - {self.site_id}):
            try:
                if dealer not in by_sender:
                    raise ValueError("no bundle from it was delivered")
                self._held[dealer] = open_bundle(self._pair_keys[dealer], by_sender[dealer], cfg.rid, self.site_id,
                                                 own_x)
            except (TamperedBundleError, ValueError) as e:
                complaints.append(Complaint(dealer, str(e), self._keys.enc_private()))
        self._masked_with = frozenset(senders)
        self._complained = bool(complaints)
        signature = b""
        if self._identity is not None:
            signature = self._identity.sign("check", cfg.rid, self.site_id.encode(), self._announced,
                                            *(c.accused.encode() for c in complaints))
        return SharesChecked(self.site_id, tuple(complaints), signature)

    def masked_input(self, passed: ChecksPassed, vector: np.ndarray, weight: float = 1.0,
                     rng: np.random.Generator | None = None) -> MaskedInput:
        """The site's vector times its weight (0 < weight <= 1), quantised and masked."""
        self._enter(Stage.MASKED_INPUT, Stage.UNMASK)
        cfg = self.config
        if self._complained:
            raise ProtocolError("this site complained (its encryption key went out as evidence): it sends no input "
                                "in this attempt")
        checked = set(passed.checked)
        if self.site_id not in checked or not checked <= self._masked_with or len(checked) < cfg.threshold:
            raise ProtocolError("the sites that checked their shares must include this one, be among those it "
                                f"masks with, and number at least {cfg.threshold}")
        if self._verifier is not None:
            for peer in sorted(checked & set(self._credentials)):  # every checked peer whose advert was signed
                try:
                    self._verifier.check(peer, self._credentials[peer], passed.attestations.get(peer, b""),
                                         "check", cfg.rid, peer.encode(), self._announced)
                except SignatureError as e:
                    raise PeerRefused(f"{peer!r} did not attest that its shares checked: {e}", peer) from e
        if not 0 < weight <= 1 or np.asarray(vector).size != cfg.length:
            raise ProtocolError(f"need 0 < weight <= 1 and {cfg.length} elements, got {weight}, "
                                f"{np.asarray(vector).size}")
        seeds = {v: pairwise_seed(self._keys.mask, self._peers[v].mask, cfg.rid, self.site_id, v)
                 for v in self._masked_with - {self.site_id}}
        q = quantise(np.asarray(vector, dtype=np.float64) * weight, cfg.field, rng or np.random.default_rng())
        return MaskedInput(self.site_id, mask(q, self.site_id, self._self_seed, seeds, cfg.field))

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Shares of b_u for each survivor u and of the mask key of each dropped site; never both for one site."""
        self._enter(Stage.UNMASK, Stage.DONE)
        survivors = set(request.survivors)
        dropped = set(request.dropped)
        if survivors & dropped or survivors | dropped != self._masked_with or self.site_id not in survivors:
            raise ProtocolError("the unmask request must split the sites this one masked with into survivors and "
                                "dropped, this site among the survivors")
        if len(survivors) < self.config.threshold:
            raise TooFewSitesError(Stage.UNMASK, len(survivors), self.config.threshold)
        out = [RevealedShare(u, ShareKind.SELF_SEED, self._held[u][ShareKind.SELF_SEED])
               for u in sorted(survivors) if u in self._held]
        out += [RevealedShare(d, ShareKind.MASK_KEY, self._held[d][ShareKind.MASK_KEY])
                for d in sorted(dropped) if d in self._held]
        return UnmaskResponse(self.site_id, tuple(out))
