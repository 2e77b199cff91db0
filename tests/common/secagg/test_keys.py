from __future__ import annotations

import pytest

from pfeddc.common.secagg import keys
from pfeddc.common.secagg.keys import RoundId, SiteKeys


def test_keys_pairwise_seed_and_pair_key_agree_on_both_sides_and_differ_from_each_other() -> None:
    a, b, rid = SiteKeys.generate(), SiteKeys.generate(), RoundId("fed", 3)
    seed = keys.pairwise_seed(a.mask, b.mask_public, rid, "a", "b")
    assert seed == keys.pairwise_seed(b.mask, a.mask_public, rid, "b", "a") and len(seed) == 32
    key = keys.pair_key(a.enc, b.enc_public, rid, "a", "b")
    assert key == keys.pair_key(b.enc, a.enc_public, rid, "b", "a") and key != seed


def test_keys_seeds_never_repeat_across_rounds_attempts_federations_or_pairs() -> None:
    """Even with the same key pairs reused (a site should not, but the derivation must not depend on it)."""
    a, b = SiteKeys.generate(), SiteKeys.generate()
    contexts = [(RoundId("fed", 1), "a", "b"), (RoundId("fed", 2), "a", "b"), (RoundId("fed", 1, attempt=1), "a", "b"),
                (RoundId("other", 1), "a", "b"), (RoundId("fed", 1), "a", "c"), (RoundId("fe", 1), "da", "b")]
    seeds = {keys.pairwise_seed(a.mask, b.mask_public, rid, x, y) for rid, x, y in contexts}
    assert len(seeds) == len(contexts)


def test_keys_generate_fresh_pairs_every_call() -> None:
    first, second = SiteKeys.generate(), SiteKeys.generate()
    assert len({first.mask_public, first.enc_public, second.mask_public, second.enc_public}) == 4


def test_keys_sealed_bundle_opens_only_unaltered_for_its_sender_recipient_and_round() -> None:
    a, b, rid = SiteKeys.generate(), SiteKeys.generate(), RoundId("fed", 3)
    key = keys.pair_key(a.enc, b.enc_public, rid, "a", "b")
    sealed = keys.seal(key, b"shares", rid, "a", "b")
    assert keys.open_sealed(key, sealed, rid, "a", "b") == b"shares"
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    attempts = [(tampered, rid, "a", "b"), (sealed, RoundId("fed", 4), "a", "b"), (sealed, rid, "b", "a"),
                (sealed[:5], rid, "a", "b")]
    for data, r, sender, recipient in attempts:
        with pytest.raises(keys.TamperedBundleError, match="failed authentication") as e:
            keys.open_sealed(key, data, r, sender, recipient)
        assert e.value.sender == sender


def test_keys_reconstructed_mask_key_derives_the_same_seeds() -> None:
    a, b, rid = SiteKeys.generate(), SiteKeys.generate(), RoundId("fed", 3)
    again = keys.private_key(a.mask_private())
    assert keys.public_bytes(again) == a.mask_public
    assert keys.pairwise_seed(again, b.mask_public, rid, "a", "b") == keys.pairwise_seed(a.mask, b.mask_public, rid,
                                                                                          "a", "b")
