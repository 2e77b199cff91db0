from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from pfeddc.client.secagg_site import SecAggSite
from pfeddc.common.secagg import field, keys, shamir
from pfeddc.common.secagg.field import FieldParams
from pfeddc.common.secagg.keys import RoundId
from pfeddc.common.secagg.protocol import (
    AccusationError,
    AggregateResult,
    ChecksPassed,
    Complaint,
    InconsistentSiteError,
    ProtocolError,
    RoundConfig,
    ShareKeys,
    ShareKind,
    SharesChecked,
    SharesDelivered,
    Stage,
    TooFewSitesError,
    UnmaskRequest,
    UnmaskResponse,
    decode_share,
    encode_share,
    share_digest,
)
from pfeddc.server.round.secagg_coordinator import SecAggCoordinator

FIELD = FieldParams(clip_range=2.0, max_sites=16)
LENGTH = 40
Deliver = Callable[[dict[str, SharesDelivered]], dict[str, SharesDelivered]]
Check = Callable[[SharesChecked], SharesChecked]


class Round:
    """N sites and a coordinator on one thread; each stage's drop-outs simply never answer."""

    def __init__(self, n: int, t: int, round_no: int = 5) -> None:
        self.ids = tuple(f"site-{i:02d}" for i in range(n))
        self.cfg = RoundConfig(RoundId("fed-test", round_no), self.ids, t, LENGTH, FIELD)
        self.sites = {u: SecAggSite(u, self.cfg, share_rng=random.Random(i)) for i, u in enumerate(self.ids)}
        self.coord = SecAggCoordinator(self.cfg)
        rng = np.random.default_rng(n * 100 + t)
        self.xs = {u: rng.uniform(-2.0, 2.0, LENGTH) for u in self.ids}
        self.weights = {u: float(w) for u, w in zip(self.ids, rng.uniform(0.1, 1.0, n), strict=True)}

    def seed(self, u: str) -> int:
        return self.ids.index(u) + 1000

    def run(self, drop: dict[Stage, set[str]] | None = None,
            on_shares: Callable[[ShareKeys], ShareKeys] | None = None, on_deliver: Deliver | None = None,
            on_response: Callable[[UnmaskResponse], UnmaskResponse] | None = None,
            on_check: Check | None = None) -> AggregateResult:
        drop, alive = drop or {}, set(self.ids)
        alive -= drop.get(Stage.ADVERTISE, set())
        for u in sorted(alive):
            self.coord.receive_advertise(self.sites[u].advertise())
        announced = self.coord.announce()
        alive -= drop.get(Stage.SHARE_KEYS, set())
        for u in sorted(alive):
            msg = self.sites[u].share_keys(announced)
            self.coord.receive_shares(on_shares(msg) if on_shares else msg)
        delivered = self.coord.deliver()
        if on_deliver:
            delivered = on_deliver(delivered)
        alive -= drop.get(Stage.CHECK_SHARES, set())
        for u in sorted(alive):
            checked = self.sites[u].check_shares(delivered[u])
            self.coord.receive_check(on_check(checked) if on_check else checked)
        passed = self.coord.passed()
        alive -= drop.get(Stage.MASKED_INPUT, set())
        for u in sorted(alive):
            self.coord.receive_masked(self.sites[u].masked_input(passed, self.xs[u], self.weights[u],
                                                                 np.random.default_rng(self.seed(u))))
        request = self.coord.unmask_request()
        alive -= drop.get(Stage.UNMASK, set())
        for u in sorted(alive & set(request.survivors)):
            response = self.sites[u].unmask(request)
            self.coord.receive_unmask(on_response(response) if on_response else response)
        return self.coord.finish()

    def check(self, result: AggregateResult, survivors: set[str]) -> None:
        """Exactly the sum of the survivors' quantised inputs, and the float weighted sum within the bound."""
        assert set(result.survivors) == survivors
        q = np.zeros(LENGTH, dtype=np.uint64)
        for u in sorted(survivors):
            q = field.add(q, field.quantise(self.xs[u] * self.weights[u], FIELD, np.random.default_rng(self.seed(u))),
                          FIELD)
        assert np.array_equal(result.total, field.dequantise_sum(q, FIELD, len(survivors)))
        plain = np.sum([self.xs[u] * self.weights[u] for u in survivors], axis=0)
        assert np.abs(result.total - plain).max() <= result.error_bound == field.sum_error_bound(FIELD, len(survivors))


@pytest.mark.parametrize("n", range(3, 11))
def test_protocol_unmasked_sum_equals_the_plain_sum(n: int) -> None:
    r = Round(n, n // 2 + 1)
    result = r.run()
    r.check(result, set(r.ids))
    assert result.dropped == () and result.excluded == {}


@pytest.mark.parametrize("stage", [Stage.ADVERTISE, Stage.SHARE_KEYS, Stage.CHECK_SHARES, Stage.MASKED_INPUT,
                                   Stage.UNMASK])
def test_protocol_completes_with_n_minus_t_drop_outs_at_any_stage(stage: Stage) -> None:
    r = Round(7, 4)
    gone = {"site-01", "site-04", "site-06"}
    result = r.run({stage: gone})
    r.check(result, set(r.ids) if stage == Stage.UNMASK else set(r.ids) - gone)
    assert set(result.dropped) == (gone if stage in (Stage.CHECK_SHARES, Stage.MASKED_INPUT) else set())


def test_protocol_completes_with_drop_outs_spread_over_every_stage() -> None:
    r = Round(10, 6)
    drop = {Stage.ADVERTISE: {"site-09"}, Stage.SHARE_KEYS: {"site-00"}, Stage.MASKED_INPUT: {"site-05"},
            Stage.UNMASK: {"site-02"}}
    result = r.run(drop)
    r.check(result, set(r.ids) - {"site-09", "site-00", "site-05"})
    assert result.dropped == ("site-05",)


@pytest.mark.parametrize("stage", [Stage.ADVERTISE, Stage.SHARE_KEYS, Stage.CHECK_SHARES, Stage.MASKED_INPUT,
                                   Stage.UNMASK])
def test_protocol_fewer_than_t_sites_refuse_to_unmask(stage: Stage) -> None:
    r = Round(7, 4)
    with pytest.raises(TooFewSitesError, match="at least 4 sites .* only 3 remain; refusing to unmask") as e:
        r.run({stage: {"site-00", "site-02", "site-03", "site-05"}})
    assert e.value.stage == (Stage.UNMASK if stage == Stage.UNMASK else stage)
    assert r.coord.stage == Stage.DONE


def _flip_bundle(dealer: str, recipient: str) -> Callable[[ShareKeys], ShareKeys]:
    """The dealer itself sends `recipient` a bundle whose ciphertext does not authenticate."""
    def hook(msg: ShareKeys) -> ShareKeys:
        if msg.site_id != dealer:
            return msg
        return replace(msg, bundles=tuple(replace(b, ciphertext=b.ciphertext[:-1] + bytes([b.ciphertext[-1] ^ 1]))
                                          if b.recipient == recipient else b for b in msg.bundles))
    return hook


def _accuse(r: Round, accuser: str, accused: tuple[str, ...], evidence: bytes | None = None) -> Check:
    """`accuser` complains about every site in `accused` whatever its bundles held, with its own encryption key
    as evidence unless `evidence` says otherwise."""
    key = r.sites[accuser]._keys.enc_private() if evidence is None else evidence

    def hook(msg: SharesChecked) -> SharesChecked:
        if msg.site_id != accuser:
            return msg
        return replace(msg, complaints=tuple(Complaint(a, "made up", key) for a in accused))
    return hook


def test_protocol_a_dealer_of_a_bad_bundle_is_convicted_on_its_victims_evidence() -> None:
    r = Round(6, 4)
    with pytest.raises(AccusationError) as e:
        r.run(on_shares=_flip_bundle("site-03", "site-01"))
    assert set(e.value.guilty) == {"site-03"}
    assert "site-01" in e.value.guilty["site-03"] and "failed authentication" in e.value.guilty["site-03"]
    assert r.coord.stage == Stage.DONE and r.coord._masked == {}  # ended before any input was sent


@pytest.mark.parametrize("accused", [("site-03",), ("site-00", "site-02", "site-03", "site-04", "site-05")])
def test_protocol_a_false_accuser_is_the_one_convicted_and_frames_no_one(accused: tuple[str, ...]) -> None:
    r = Round(6, 4)
    with pytest.raises(AccusationError, match="falsely") as e:
        r.run(on_check=_accuse(r, "site-01", accused))
    assert set(e.value.guilty) == {"site-01"}


def test_protocol_an_accusation_with_another_key_as_evidence_convicts_the_accuser() -> None:
    r = Round(5, 3)
    other = keys.SiteKeys.generate().enc_private()
    with pytest.raises(AccusationError) as e:
        r.run(on_check=_accuse(r, "site-01", ("site-02",), other))
    assert e.value.guilty == {"site-01": "accused 'site-02' with a key other than the one it advertised"}


def test_protocol_a_site_that_complained_never_sends_an_input() -> None:
    r = Round(5, 3)
    for u in r.ids:
        r.coord.receive_advertise(r.sites[u].advertise())
    announced = r.coord.announce()
    for u in r.ids:
        r.coord.receive_shares(_flip_bundle("site-02", "site-00")(r.sites[u].share_keys(announced)))
    delivered = r.coord.deliver()
    checked = r.sites["site-00"].check_shares(delivered["site-00"])
    assert [c.accused for c in checked.complaints] == ["site-02"]
    with pytest.raises(ProtocolError, match="complained"):
        r.sites["site-00"].masked_input(ChecksPassed(r.ids), r.xs["site-00"])


def test_protocol_a_holder_revealing_a_forged_share_is_named_and_ignored() -> None:
    r = Round(7, 4)

    def forge(response: UnmaskResponse) -> UnmaskResponse:
        if response.site_id != "site-02":
            return response
        first = response.shares[0]
        forged = replace(first, share=replace(first.share, ys=(first.share.ys[0] ^ 1, *first.share.ys[1:])))
        return replace(response, shares=(forged, *response.shares[1:]))

    result = r.run(on_response=forge)
    assert "never sent" in result.excluded["site-02"]
    r.check(result, set(r.ids))


def test_protocol_a_dealer_of_inconsistent_shares_is_named() -> None:
    """A dealer whose shares match the digests it published but lie on no one polynomial."""
    r = Round(7, 4)
    dealer, victim = "site-03", "site-05"

    def corrupt(msg: ShareKeys) -> ShareKeys:
        if msg.site_id != dealer:
            return msg
        own, rid = r.sites[dealer]._keys, r.cfg.rid
        key = keys.pair_key(own.enc, r.coord.keys[victim].enc, rid, dealer, victim)
        bundles = []
        for b in msg.bundles:
            if b.recipient == victim:
                seed_share, rest = decode_share(keys.open_sealed(key, b.ciphertext, rid, dealer, victim))
                bad = replace(seed_share, ys=(seed_share.ys[0] ^ 1, *seed_share.ys[1:]))
                plain = encode_share(bad) + rest
                forged = share_digest(rid, ShareKind.SELF_SEED, dealer, victim, bad)
                digests = {**b.digests, ShareKind.SELF_SEED: forged}
                b = replace(b, ciphertext=keys.seal(key, plain, rid, dealer, victim), digests=digests)
            bundles.append(b)
        return replace(msg, bundles=tuple(bundles))

    with pytest.raises(InconsistentSiteError, match="site-03") as e:
        r.run(on_shares=corrupt)
    assert e.value.site_id == dealer


def test_protocol_site_never_reveals_both_secrets_of_one_site() -> None:
    r = Round(5, 3)
    for u in r.ids:
        r.coord.receive_advertise(r.sites[u].advertise())
    announced = r.coord.announce()
    for u in r.ids:
        r.coord.receive_shares(r.sites[u].share_keys(announced))
    delivered = r.coord.deliver()
    site = r.sites["site-00"]
    site.check_shares(delivered["site-00"])
    site.masked_input(ChecksPassed(r.ids), r.xs["site-00"])
    for bad in (UnmaskRequest(r.ids, ("site-04",)), UnmaskRequest(r.ids[:4], ())):
        with pytest.raises(ProtocolError, match="split"):
            site.unmask(bad)
        site.stage = Stage.UNMASK  # the refusal consumed the stage; retry the next lie
    with pytest.raises(TooFewSitesError):
        site.unmask(UnmaskRequest(r.ids[:2], r.ids[2:]))
    site.stage = Stage.UNMASK
    response = site.unmask(UnmaskRequest(r.ids[:3], r.ids[3:]))
    assert {(s.dealer, s.kind) for s in response.shares} == {
        *((u, ShareKind.SELF_SEED) for u in r.ids[:3]), *((d, ShareKind.MASK_KEY) for d in r.ids[3:])}
    with pytest.raises(ProtocolError, match="stage"):
        site.unmask(UnmaskRequest(r.ids[:3], r.ids[3:]))


def test_protocol_masks_never_repeat_across_rounds() -> None:
    inputs = []
    for round_no in (5, 6, 6):  # the repeated round is a restart: fresh keys, fresh masks
        r = Round(3, 2, round_no)
        for u in r.ids:
            r.coord.receive_advertise(r.sites[u].advertise())
        announced = r.coord.announce()
        for u in r.ids:
            r.coord.receive_shares(r.sites[u].share_keys(announced))
        delivered = r.coord.deliver()
        r.sites["site-00"].check_shares(delivered["site-00"])
        inputs.append(r.sites["site-00"].masked_input(ChecksPassed(r.ids), r.xs["site-00"], 1.0,
                                                      np.random.default_rng(0)).masked)
    for i in range(3):
        for j in range(i):
            assert np.mean(inputs[i] == inputs[j]) < 0.1


def test_protocol_coordinator_refuses_messages_out_of_turn_or_from_strangers() -> None:
    r = Round(3, 2)
    with pytest.raises(ProtocolError) as e:
        r.coord.receive_shares(ShareKeys("site-00", ()))
    assert e.value.site_id == "site-00"
    msg = r.sites["site-00"].advertise()
    r.coord.receive_advertise(msg)
    with pytest.raises(ProtocolError, match="not expected"):
        r.coord.receive_advertise(msg)
    with pytest.raises(ProtocolError, match="repeated public key"):
        r.coord.receive_advertise(replace(msg, site_id="site-01"))
    with pytest.raises(ValueError, match="more than half"):
        RoundConfig(RoundId("f", 1), ("a", "b", "c", "d"), 2, 10)
    assert shamir.PRIME == 2**127 - 1


def test_protocol_a_bundle_without_two_shares_convicts_its_dealer() -> None:
    r = Round(5, 3)

    def short(msg: ShareKeys) -> ShareKeys:
        if msg.site_id != "site-01":
            return msg
        own, rid = r.sites["site-01"]._keys, r.cfg.rid
        key = keys.pair_key(own.enc, r.coord.keys["site-02"].enc, rid, "site-01", "site-02")
        return replace(msg, bundles=tuple(replace(b, ciphertext=keys.seal(key, b"\0" * 3, rid, "site-01", "site-02"))
                                          if b.recipient == "site-02" else b for b in msg.bundles))

    with pytest.raises(AccusationError, match="does not hold two shares") as e:
        r.run(on_shares=short)
    assert set(e.value.guilty) == {"site-01"}


@pytest.mark.parametrize("lie", ["duplicate", "unasked kind", "another holder's x"])
def test_protocol_a_holder_revealing_what_was_not_asked_is_refused_by_name(lie: str) -> None:
    r = Round(5, 3)

    def alter(response: UnmaskResponse) -> UnmaskResponse:
        if response.site_id != "site-02":
            return response
        first = response.shares[0]
        bad = {"duplicate": first, "unasked kind": replace(first, kind=ShareKind.MASK_KEY),
               "another holder's x": replace(first, share=replace(first.share, x=first.share.x + 1))}[lie]
        rest = response.shares if lie == "duplicate" else response.shares[1:]
        return replace(response, shares=(bad, *rest))

    with pytest.raises(ProtocolError, match="not asked") as e:
        r.run(on_response=alter)
    assert e.value.site_id == "site-02"
