"""The secure-aggregation messages on the wire: what the coordinator relays, and the reveal's next task."""

from __future__ import annotations

import numpy as np
import pytest

from pfeddc.common import serde, wire, wire_secure
from pfeddc.common.messages import Action, Task
from pfeddc.common.proto import federation_pb2 as pb
from pfeddc.common.secagg.exchange import SecureAnswer, SecureStep, Status
from pfeddc.common.secagg.keys import RoundId
from pfeddc.common.secagg.protocol import KeysAnnounced, PublicKeys, SharesDelivered, Signed, UnmaskResponse

RID = RoundId("fed", 3)
UNKNOWN_FIELD = bytes([0x98, 0x06, 0x01])  # field 99, varint 1: nothing this protocol defines


def bundle_bytes(sender: str, recipient: str) -> bytes:
    return pb.SecAggBundle(sender=sender, recipient=recipient, ciphertext=b"c" * 48, self_seed_digest=b"s" * 32,
                           mask_key_digest=b"m" * 32).SerializeToString()


def test_relayed_bundles_are_the_senders_bytes_without_fields_a_site_added() -> None:
    """The coordinator relays each bundle as it was read (not rebuilt per recipient), and nothing a hostile site
    appends to it (an unknown field) rides along to its recipient."""
    request = pb.SecAggRequest(client_id="site-a", round=3)
    for recipient in ("site-b", "site-c"):
        request.shares.bundles.add().MergeFromString(bundle_bytes("site-a", recipient) + UNKNOWN_FIELD)
    received = pb.SecAggRequest.FromString(request.SerializeToString())
    step = wire_secure.step_from_proto(received)
    bundles = step.message.bundles  # type: ignore[union-attr]
    kept = getattr(bundles[0], "_wire")  # noqa: B009  # the message the coordinator relays
    assert isinstance(kept, pb.SecAggBundle) and kept.SerializeToString() == bundle_bytes("site-a", "site-b")
    received.shares.bundles[0].ciphertext = b"changed"  # a copy: nothing done to the request after it reaches it
    assert kept.ciphertext == b"c" * 48 and bundles[0].ciphertext == b"c" * 48
    reply = wire_secure.answer_to_proto(SecureAnswer(Status.NEXT, SharesDelivered("site-b", ("site-a",),
                                                                                    bundles[:1])))
    assert reply.shares.bundles[0].SerializeToString() == bundle_bytes("site-a", "site-b")
    back = wire_secure.answer_from_proto(pb.SecAggReply.FromString(reply.SerializeToString()), RID, "site-b")
    assert back.next == SharesDelivered("site-b", ("site-a",), bundles[:1])


def test_announced_keys_are_built_once_per_stage_and_never_served_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every recipient gets the same keys message; a later stage object (new keys) gets its own, never the
    cached one of an earlier stage."""
    def announced(mask: bytes) -> KeysAnnounced:
        return KeysAnnounced(RID, {s: PublicKeys(mask, bytes([i]) * 32) for i, s in enumerate(("a", "b"))},
                             {"a": Signed(b"cert", b"sig"), "b": Signed()})

    first, second = announced(b"1" * 32), announced(b"2" * 32)
    built: list[KeysAnnounced] = []
    build = wire_secure._announced_to_proto

    def counted(n: KeysAnnounced) -> pb.SecAggKeysAnnounced:
        built.append(n)
        return build(n)

    monkeypatch.setattr(wire_secure, "_announced_to_proto", counted)
    replies = [wire_secure.answer_to_proto(SecureAnswer(Status.NEXT, n)) for n in (first, first, second)]
    assert [n is first for n in built] == [True, False]  # once per stage object, whatever the recipients
    assert replies[0] == replies[1] and replies[0] != replies[2]
    for reply, n in zip(replies, (first, first, second), strict=True):
        assert wire_secure.answer_from_proto(reply, RID, "a").next == n
    replies[0].keys.keys["a"].mask_public = b"x" * 32  # a reply edited after the fact leaves the next one alone
    assert wire_secure.answer_to_proto(SecureAnswer(Status.NEXT, first)).keys.keys["a"].mask_public == b"1" * 32


def test_the_reveal_asks_for_and_carries_the_next_task() -> None:
    step = SecureStep("site-a", 3, 0, UnmaskResponse("site-a", ()), max_wait_s=30, next_task_wait_s=30)
    assert wire_secure.step_from_proto(wire_secure.step_to_proto(step)).next_task_wait_s == 30
    payload = serde.encode({"text.global": np.ones((2, 4), np.float32)})
    task = Task(Action.WAIT, round=4, total_rounds=9, payload=payload, sha256=serde.sha256(payload),
                retry_after_s=1.0)
    for following in (task, None):
        reply = wire.secure_answer_to_proto(SecureAnswer(Status.DONE), following)
        back = wire.secure_answer_from_proto(pb.SecAggReply.FromString(reply.SerializeToString()), RID, "site-a")
        assert back == (SecureAnswer(Status.DONE), following)
