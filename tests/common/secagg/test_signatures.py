"""Signed secure rounds: a relaying coordinator cannot swap a site's keys, nor tell sites to send their inputs
while fewer than the threshold attested that their shares checked. With client certificates (mTLS) against the
federation's CA; without, against the keys the sites bound at Join, each pinned by every site when first seen."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization

from pfeddc.client.peer_keys import PinnedKeys
from pfeddc.client.secagg_site import SecAggSite
from pfeddc.common.secagg.field import FieldParams
from pfeddc.common.secagg.identity import (
    PUBLIC_KEY_BYTES,
    BoundKeys,
    Identity,
    PeerCheck,
    Verifier,
    signing_key_problem,
)
from pfeddc.common.secagg.keys import RoundId, SiteKeys
from pfeddc.common.secagg.protocol import (
    ChecksPassed,
    KeysAnnounced,
    ProtocolError,
    PublicKeys,
    RoundConfig,
    Signed,
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


def sums_as_unsigned(s: dict[str, SecAggSite], coord: SecAggCoordinator, announced: KeysAnnounced) -> set[str]:
    """Run the round from its announced keys to the sum (asserting it is the sites' sum); the sites whose
    attestations the coordinator collected."""
    for u in IDS:
        coord.receive_shares(s[u].share_keys(announced))
    delivered = coord.deliver()
    for u in IDS:
        coord.receive_check(s[u].check_shares(delivered[u]))
    passed = coord.passed()
    xs = {u: np.full(16, 0.25 * i) for i, u in enumerate(IDS)}
    for u in IDS:
        coord.receive_masked(s[u].masked_input(passed, xs[u], 1.0, np.random.default_rng(0)))
    request = coord.unmask_request()
    for u in IDS:
        coord.receive_unmask(s[u].unmask(request))
    result = coord.finish()
    assert np.abs(result.total - sum(xs.values())).max() <= result.error_bound
    return set(passed.attestations)


def test_signed_round_sums_as_an_unsigned_one(federation: tuple[dict[str, Identity], Verifier]) -> None:
    s = sites(federation)
    coord = SecAggCoordinator(CFG, federation[1])
    for u in IDS:
        coord.receive_advertise(s[u].advertise())
    announced = coord.announce()
    assert set(announced.signed) == set(IDS) and all(x.signature for x in announced.signed.values())
    assert sums_as_unsigned(s, coord, announced) == set(IDS)


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
    assert wire_secure.step_from_proto(ok).message.signed.credential == b"c" * 4096  # type: ignore[union-attr]
    for field, size in (("certificate", 4097), ("signature", 81)):
        bad = pb.SecAggRequest()
        bad.CopyFrom(ok)
        setattr(bad.keys, field, b"x" * size)
        with pytest.raises(ValueError, match="at most"):
            wire_secure.step_from_proto(bad)
    check = pb.SecAggRequest(client_id="site-0", check=pb.SecAggCheck(signature=b"s" * 81))
    with pytest.raises(ValueError, match="at most"):
        wire_secure.step_from_proto(check)


# ----- without client certificates: keys bound at Join, pinned by each site when first seen

def bound_round(rid: RoundId, ids: dict[str, Identity], pins: Mapping[str, PeerCheck], everyone_signs: bool = True
                ) -> tuple[dict[str, SecAggSite], SecAggCoordinator, KeysAnnounced]:
    cfg = replace(CFG, rid=rid)
    s = {u: SecAggSite(u, cfg, random.Random(i), ids[u], pins[u], everyone_signs) for i, u in enumerate(IDS)}
    coord = SecAggCoordinator(cfg, BoundKeys({u: ids[u].credential for u in IDS}))
    for u in IDS:
        coord.receive_advertise(s[u].advertise())
    return s, coord, coord.announce()


def test_join_bound_keys_sign_a_round_and_each_site_pins_its_peers(tmp_path: Path) -> None:
    ids = {u: Identity.generate() for u in IDS}
    pins = {u: PinnedKeys(tmp_path / u / "peer_keys.json") for u in IDS}
    s, coord, announced = bound_round(RoundId("fed-bound", 1), ids, pins)
    assert coord.signed and all(announced.signed[u].credential == ids[u].credential for u in IDS)
    assert sums_as_unsigned(s, coord, announced) == set(IDS)
    for u in IDS:
        pins[u].remember()
    written = json.loads((tmp_path / "site-0" / "peer_keys.json").read_text())
    assert written == {u: ids[u].credential.hex() for u in IDS}
    assert PinnedKeys(tmp_path / "site-0" / "peer_keys.json").knows("site-3")  # a restarted site keeps them


def test_a_coordinator_cannot_swap_a_pinned_peers_key_even_by_calling_the_round_unsigned(tmp_path: Path) -> None:
    """Round 1 pins every peer. In round 2 the coordinator presents its own key for site-2 (validly signed by
    that key), or strips site-2's signature and says the round is unsigned: every site refuses both."""
    ids = {u: Identity.generate() for u in IDS}
    pins = {u: PinnedKeys(tmp_path / u / "peer_keys.json") for u in IDS}
    s, _coord, announced = bound_round(RoundId("fed-bound", 1), ids, pins)
    s["site-0"].share_keys(announced)  # pins site-0's peers
    rid = RoundId("fed-bound", 2)
    s, _coord, announced = bound_round(rid, ids, pins)
    impostor = Identity.generate()
    keys = announced.keys["site-2"]
    forged = Signed(impostor.credential, impostor.sign("advert", rid, b"site-2", keys.mask, keys.enc))
    with pytest.raises(ProtocolError, match=r"'site-2' signed with a key other than the one pinned for it in .*site-0"):
        s["site-0"].share_keys(replace(announced, signed={**announced.signed, "site-2": forged}))
    unsigning = SecAggSite("site-0", replace(CFG, rid=rid), identity=ids["site-0"], verifier=pins["site-0"],
                           everyone_signs=False)
    own = unsigning.advertise()
    unsigned = KeysAnnounced(rid, {**announced.keys, "site-0": own.keys},
                             {**{u: x for u, x in announced.signed.items() if u != "site-2"}, "site-0": own.signed})
    with pytest.raises(ProtocolError, match="'site-2' are not signed by it"):
        unsigning.share_keys(unsigned)


def test_an_unpinned_peer_signs_when_the_round_says_so_and_a_stranger_key_is_pinned_on_first_sight(
        tmp_path: Path) -> None:
    """Trust on first use, stated: a peer never seen before is taken with the key the coordinator relays (signed
    by it); unsigned, only when the coordinator says the round is unsigned (an older coordinator), and a peer that
    signs anyway is checked and pinned."""
    ids = {u: Identity.generate() for u in IDS}
    pins = {u: PinnedKeys(tmp_path / u / "peer_keys.json") for u in IDS}
    rid = RoundId("fed-bound", 1)
    s, _coord, announced = bound_round(rid, ids, pins)
    stripped = replace(announced, signed={u: x for u, x in announced.signed.items() if u != "site-3"})
    with pytest.raises(ProtocolError, match="'site-3' are not signed by it.*presented no signing key"):
        s["site-0"].share_keys(stripped)
    older = SecAggSite("site-1", replace(CFG, rid=rid), random.Random(1), ids["site-1"], pins["site-1"],
                       everyone_signs=False)
    own = older.advertise()
    older.share_keys(replace(stripped, keys={**stripped.keys, "site-1": own.keys},  # an older coordinator's round
                             signed={**stripped.signed, "site-1": own.signed}))
    assert not pins["site-1"].knows("site-3") and pins["site-1"].knows("site-2")


def test_the_coordinator_holds_each_site_to_the_key_it_bound() -> None:
    ids = {u: Identity.generate() for u in IDS}
    coord = SecAggCoordinator(CFG, BoundKeys({**{u: ids[u].credential for u in IDS}, "site-3": b""}))
    assert not coord.signed  # site-3 bound no key (a record from an older checkpoint): the round is not signed
    with pytest.raises(ProtocolError, match="'site-0' signed with a key other than the one it bound at Join"):
        coord.receive_advertise(SecAggSite("site-0", CFG, identity=Identity.generate()).advertise())
    with pytest.raises(ProtocolError, match="'site-0' sent no signature"):
        coord.receive_advertise(SecAggSite("site-0", CFG).advertise())
    with pytest.raises(ProtocolError, match="'site-1' signed with a key other"):
        coord.receive_advertise(SecAggSite("site-1", CFG, identity=ids["site-0"]).advertise())  # another's key
    certified = identity_for(create_ca(), "site-0")
    with pytest.raises(ProtocolError, match="client certificate, but this coordinator checks the key"):
        coord.receive_advertise(SecAggSite("site-0", CFG, identity=certified).advertise())
    coord.receive_advertise(SecAggSite("site-0", CFG, identity=ids["site-0"]).advertise())
    junk = SecAggSite("site-3", CFG, identity=Identity.generate()).advertise()
    with pytest.raises(ProtocolError, match="'site-3''s advert signature does not verify"):  # what its peers check
        coord.receive_advertise(replace(junk, signed=Signed(junk.signed.credential, b"\x30" * 70)))
    coord.receive_advertise(SecAggSite("site-3", CFG).advertise())  # unsigned, as it bound none


def test_a_signing_key_is_made_once_and_kept_and_bad_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "state" / "signing_key.pem"
    first = Identity.kept_at(path)
    assert path.stat().st_mode & 0o777 == 0o600 and Identity.kept_at(path).credential == first.credential
    assert signing_key_problem(first.credential) is None and len(first.credential) == PUBLIC_KEY_BYTES
    assert "33 bytes" in str(signing_key_problem(b"\x02" * 5))
    assert signing_key_problem(b"\x05" + b"\x01" * 32) == "the signing key is not a point of P-256"
    path.write_text("not a key")
    with pytest.raises(ValueError):
        Identity.kept_at(path)
    pins = tmp_path / "peer_keys.json"
    for junk in ("[1, 2]", '{"site-0": "zz"}', '{"site-0": "02"}', "{"):
        pins.write_text(junk)
        with pytest.raises(ValueError, match="peer_keys.json.*fix it or remove the line"):
            PinnedKeys(pins)


def test_an_attestation_holds_for_its_own_key_set_only() -> None:
    """A coordinator that ran a run id twice (fresh keys each time) cannot pass off a site's attestation from the
    first as one from the second: the check signs the announced keys."""
    ids = {u: Identity.generate() for u in IDS}
    pins: dict[str, PeerCheck] = {u: BoundKeys({v: ids[v].credential for v in IDS}) for u in IDS}
    rid = RoundId("fed-reused", 4)
    first, coord, announced = bound_round(rid, ids, pins)
    for u in IDS:
        coord.receive_shares(first[u].share_keys(announced))
    delivered = coord.deliver()
    old = {u: first[u].check_shares(delivered[u]).signature for u in IDS}
    again, coord, announced = bound_round(rid, ids, pins)  # the same run id, every site's keys fresh
    for u in IDS:
        coord.receive_shares(again[u].share_keys(announced))
    delivered = coord.deliver()
    new = {u: again[u].check_shares(delivered[u]).signature for u in ("site-0", "site-1")}
    with pytest.raises(ProtocolError, match="'site-2' did not attest"):
        again["site-0"].masked_input(ChecksPassed(IDS[:3], {**new, "site-2": old["site-2"]}), np.zeros(16))


def test_pins_written_by_hand_are_read_as_keys_and_a_listed_peer_must_sign(tmp_path: Path) -> None:
    """An operator's peer_keys.json (hex in any case, bytes spaced out) pins those peers before the first round:
    such a peer must sign even in a round its coordinator calls unsigned."""
    ids = {u: Identity.generate() for u in IDS}
    path = tmp_path / "peer_keys.json"
    path.write_text(json.dumps({"site-1": ids["site-1"].credential.hex().upper(),
                                "site-2": " ".join(f"{b:02x}" for b in ids["site-2"].credential)}))
    pins = PinnedKeys(path)
    assert pins.knows("site-1") and pins.knows("site-2") and not pins.knows("site-3")
    rid = RoundId("fed-listed", 1)
    site = SecAggSite("site-0", replace(CFG, rid=rid), identity=ids["site-0"], verifier=pins, everyone_signs=False)
    own = site.advertise()
    others = {u: SecAggSite(u, replace(CFG, rid=rid), identity=ids[u]).advertise() for u in IDS[1:]}
    keys = {"site-0": own.keys, **{u: a.keys for u, a in others.items()}}
    signed = {"site-0": own.signed, **{u: a.signed for u, a in others.items()}}
    with pytest.raises(ProtocolError, match="'site-1' are not signed by it"):
        site.share_keys(KeysAnnounced(rid, keys, {u: x for u, x in signed.items() if u != "site-1"}))
    site = SecAggSite("site-0", replace(CFG, rid=rid), identity=ids["site-0"], verifier=pins, everyone_signs=False)
    own = site.advertise()
    site.share_keys(KeysAnnounced(rid, {**keys, "site-0": own.keys}, {**signed, "site-0": own.signed}))


def test_new_pins_merge_into_the_file_as_it_is_now_and_a_failed_write_is_only_logged(tmp_path: Path) -> None:
    ids = {u: Identity.generate() for u in IDS}
    path = tmp_path / "site-0" / "peer_keys.json"
    pins = PinnedKeys(path)
    rid = RoundId("fed-merge", 1)
    for u in ("site-1", "site-2"):
        advert = SecAggSite(u, replace(CFG, rid=rid), identity=ids[u]).advertise()
        pins.check(u, advert.signed.credential, advert.signed.signature, "advert", rid, u.encode(), advert.keys.mask,
                   advert.keys.enc)
    listed = Identity.generate().credential.hex()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"site-1": listed, "site-9": listed}))  # an operator's edit while the round ran
    pins.remember()
    assert json.loads(path.read_text()) == {"site-1": listed, "site-9": listed,
                                            "site-2": ids["site-2"].credential.hex()}
    blocked = PinnedKeys(tmp_path / "a-file" / "peer_keys.json")
    (tmp_path / "a-file").write_text("not a directory")
    advert = SecAggSite("site-3", replace(CFG, rid=rid), identity=ids["site-3"]).advertise()
    blocked.check("site-3", advert.signed.credential, advert.signed.signature, "advert", rid, b"site-3",
                  advert.keys.mask, advert.keys.enc)
    blocked.remember()  # logged (peer_keys_unsaved), not raised: the round's outcome stands
    assert blocked.knows("site-3")


def test_a_damaged_signing_key_file_is_named() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "signing_key.pem"
        key = Identity.generate().key
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.BestAvailableEncryption(b"secret")))
        with pytest.raises(ValueError, match=r"signing_key.pem: not an unencrypted P-256 signing key"):
            Identity.kept_at(path)
        path.write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
        with pytest.raises(ValueError, match=r"signing_key.pem: not an unencrypted P-256 signing key"):
            Identity.kept_at(path)
