"""Signed secure rounds (mTLS): a relaying coordinator cannot swap a site's keys, nor tell sites to send their
inputs while fewer than the threshold attested that their shares checked."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization

from pfeddc.client.secagg_site import SecAggSite
from pfeddc.common.secagg.field import FieldParams
from pfeddc.common.secagg.identity import Identity, Verifier
from pfeddc.common.secagg.keys import RoundId, SiteKeys
from pfeddc.common.secagg.protocol import (
    ChecksPassed,
    KeysAnnounced,
    ProtocolError,
    PublicKeys,
    RoundConfig,
)
from pfeddc.server.ops.certs import create_ca, issue
from pfeddc.server.round.secagg_coordinator import SecAggCoordinator

IDS = ("site-0", "site-1", "site-2", "site-3")
CFG = RoundConfig(RoundId("fed-signed", 3), IDS, 3, 16, FieldParams(clip_range=2.0, max_sites=8))


def identity_for(ca: tuple[object, object], name: str) -> Identity:
    key, cert = issue(ca[0], ca[1], name)  # type: ignore[arg-type]
    return Identity(cert.public_bytes(serialization.Encoding.DER), key)


@pytest.fixture(scope="module")
def federation() -> tuple[dict[str, Identity], Verifier]:
    ca = create_ca()
    return {u: identity_for(ca, u) for u in IDS}, Verifier((ca[1],))


def sites(federation: tuple[dict[str, Identity], Verifier]) -> dict[str, SecAggSite]:
    ids, verifier = federation
    return {u: SecAggSite(u, CFG, random.Random(i), ids[u], verifier) for i, u in enumerate(IDS)}


def test_signed_round_sums_as_an_unsigned_one(federation: tuple[dict[str, Identity], Verifier]) -> None:
    s = sites(federation)
    coord = SecAggCoordinator(CFG, federation[1])
    for u in IDS:
        coord.receive_advertise(s[u].advertise())
    announced = coord.announce()
    assert set(announced.signed) == set(IDS) and all(x.signature for x in announced.signed.values())
    for u in IDS:
        coord.receive_shares(s[u].share_keys(announced))
    delivered = coord.deliver()
    for u in IDS:
        coord.receive_check(s[u].check_shares(delivered[u]))
    passed = coord.passed()
    assert set(passed.attestations) == set(IDS)
    xs = {u: np.full(16, 0.25 * i) for i, u in enumerate(IDS)}
    for u in IDS:
        coord.receive_masked(s[u].masked_input(passed, xs[u], 1.0, np.random.default_rng(0)))
    request = coord.unmask_request()
    for u in IDS:
        coord.receive_unmask(s[u].unmask(request))
    result = coord.finish()
    assert np.abs(result.total - sum(xs.values())).max() <= result.error_bound


def test_a_swapped_advert_is_refused_by_every_site(federation: tuple[dict[str, Identity], Verifier]) -> None:
    """The coordinator replaces site-2's mask key with its own (to learn site-2's pairwise masks)."""
    s = sites(federation)
    adverts = {u: s[u].advertise() for u in IDS}
    mine = SiteKeys.generate()
    swapped = {**{u: a.keys for u, a in adverts.items()}, "site-2": PublicKeys(mine.mask_public,
                                                                               adverts["site-2"].keys.enc)}
    announced = KeysAnnounced(CFG.rid, swapped, {u: a.signed for u, a in adverts.items()})
    with pytest.raises(ProtocolError, match="keys of 'site-2' are not signed by it.*does not verify"):
        s["site-0"].share_keys(announced)
    unsigned = KeysAnnounced(CFG.rid, {u: a.keys for u, a in adverts.items()})  # signatures withheld
    with pytest.raises(ProtocolError, match="not signed by it"):
        s["site-1"].share_keys(unsigned)


def test_a_certificate_for_another_site_or_from_another_ca_does_not_pass(
        federation: tuple[dict[str, Identity], Verifier]) -> None:
    ids, verifier = federation
    coord = SecAggCoordinator(CFG, verifier)
    site = SecAggSite("site-0", CFG, identity=ids["site-1"])  # signs as site-1
    with pytest.raises(ProtocolError, match=r"'site-0' signed with a certificate for \['site-1'\]") as e:
        coord.receive_advertise(site.advertise())
    assert e.value.site_id == "site-0"
    stranger = identity_for(create_ca("another CA"), "site-0")
    with pytest.raises(ProtocolError, match="CA did not issue"):
        coord.receive_advertise(SecAggSite("site-0", CFG, identity=stranger).advertise())
    with pytest.raises(ProtocolError, match="no readable certificate"):
        coord.receive_advertise(SecAggSite("site-0", CFG).advertise())  # unsigned


def test_no_input_without_the_thresholds_attestations(federation: tuple[dict[str, Identity], Verifier]) -> None:
    """A coordinator that says 'checks passed' for sites that never attested (say, they complained and revealed
    their keys) gets no input: t attestations are needed, and t > n / 2 leaves fewer than t complainers."""
    s = sites(federation)
    coord = SecAggCoordinator(CFG, federation[1])
    for u in IDS:
        coord.receive_advertise(s[u].advertise())
    announced = coord.announce()
    for u in IDS:
        coord.receive_shares(s[u].share_keys(announced))
    delivered = coord.deliver()
    checks = {u: s[u].check_shares(delivered[u]) for u in IDS}
    forged = ChecksPassed(IDS, {u: checks[u].signature for u in ("site-0", "site-1")})  # two attest, t = 3
    with pytest.raises(ProtocolError, match="did not attest"):
        s["site-0"].masked_input(forged, np.zeros(16))
    other_run = replace(checks["site-2"], signature=federation[0]["site-2"].sign("check", RoundId("x", 1),
                                                                                b"site-2"))
    replayed = ChecksPassed(IDS, {**forged.attestations, "site-2": other_run.signature,
                                  "site-3": checks["site-3"].signature})
    with pytest.raises(ProtocolError, match="'site-2' did not attest"):
        s["site-1"].masked_input(replayed, np.zeros(16))


def test_certificates_and_signatures_are_bounded_where_they_enter() -> None:
    """Without mTLS nothing checks them, yet they are relayed to every site: a site's junk is bounded at the wire."""
    from pfeddc.common import wire_secure
    from pfeddc.common.proto import federation_pb2 as pb

    keys = SiteKeys.generate()
    ok = pb.SecAggRequest(client_id="site-0", keys=pb.SecAggKeys(mask_public=keys.mask_public,
                                                                 enc_public=keys.enc_public, certificate=b"c" * 4096))
    assert wire_secure.step_from_proto(ok).message.signed.certificate == b"c" * 4096  # type: ignore[union-attr]
    for field, size in (("certificate", 4097), ("signature", 81)):
        bad = pb.SecAggRequest()
        bad.CopyFrom(ok)
        setattr(bad.keys, field, b"x" * size)
        with pytest.raises(ValueError, match="at most"):
            wire_secure.step_from_proto(bad)
    check = pb.SecAggRequest(client_id="site-0", check=pb.SecAggCheck(signature=b"s" * 81))
    with pytest.raises(ValueError, match="at most"):
        wire_secure.step_from_proto(check)
