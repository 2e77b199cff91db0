"""protobuf <-> domain types for secure aggregation (TaskReply.secure, SecureAggregate): common/wire.py's sibling.

The domain side is `common.secagg.exchange` and the protocol dataclasses of `common.secagg.protocol`; every
conversion checks what it can without the round's context (lengths of keys and digests, a share's encoding)
and raises ValueError naming the field, which the coordinator answers INVALID_ARGUMENT.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from .messages import Metrics
from .proto import federation_pb2 as pb
from .secagg.exchange import Contribution, SecureAnswer, SecureSettings, SecureStep, StageMessage, Status
from .secagg.field import FieldParams
from .secagg.keys import RoundId
from .secagg.protocol import (
    AdvertiseKeys,
    ChecksPassed,
    Complaint,
    KeysAnnounced,
    PublicKeys,
    RevealedShare,
    SealedBundle,
    ShareKeys,
    ShareKind,
    SharesChecked,
    SharesDelivered,
    Signed,
    UnmaskRequest,
    UnmaskResponse,
    decode_share,
    encode_share,
)

_KINDS = {ShareKind.SELF_SEED: pb.SecAggRevealedShare.SELF_SEED, ShareKind.MASK_KEY: pb.SecAggRevealedShare.MASK_KEY}
_KIND_OF = {v: k for k, v in _KINDS.items()}
_STATUS = {Status.PENDING: pb.SecAggReply.PENDING, Status.NEXT: pb.SecAggReply.NEXT, Status.DONE: pb.SecAggReply.DONE,
           Status.ABANDONED: pb.SecAggReply.ABANDONED}
KEY_BYTES = 32
DIGEST_BYTES = 32
MAX_REASON_CHARS = 300
MAX_CERTIFICATE_BYTES = 4096
MAX_SIGNATURE_BYTES = 80  # DER ECDSA P-256: at most 72
UNSIGNED = Signed()
P = TypeVar("P")
_WIRE = "_wire"  # a bundle the coordinator received keeps a copy of its message here (relayed as it came)


class _StageParts:
    """Reply parts every recipient of a stage gets alike (the announced keys, the attestations), built once per
    stage object and copied into each reply by protobuf, not rebuilt per recipient: N x N conversions a round at N
    sites otherwise (issue 31). Keyed by the object's identity, which the entry keeps alive while it is held; the
    stage objects are frozen and their mappings never written after they are made, so an entry cannot go stale."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._built: OrderedDict[int, tuple[object, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source: object, build: Callable[[], P]) -> P:
        with self._lock:
            hit = self._built.get(id(source))
            if hit is not None and hit[0] is source:
                return hit[1]
        part = build()
        with self._lock:
            self._built[id(source)] = (source, part)
            while len(self._built) > self._size:
                self._built.popitem(last=False)
        return part


_STAGE_PARTS = _StageParts()


# ----- the task's settings
def settings_to_proto(s: SecureSettings, out: pb.SecureRound) -> None:
    out.run_id = s.run_id
    out.attempt = s.attempt
    out.threshold = s.threshold
    out.length = s.length
    out.sampled.extend(s.sampled)
    out.clip_range = s.field.clip_range
    out.max_sites = s.field.max_sites
    out.modulus_bits = s.field.modulus_bits
    out.weight = s.weight
    out.clip_norm = s.clip_norm
    out.noise_std = s.noise_std
    out.clipped_tensors.extend(s.clipped_tensors)
    out.signed = s.signed


def settings_from_proto(m: pb.SecureRound) -> SecureSettings:
    return SecureSettings(m.run_id, m.attempt, tuple(m.sampled), m.threshold, m.length,
                          FieldParams(m.clip_range, m.max_sites, m.modulus_bits), m.weight, m.clip_norm, m.noise_std,
                          tuple(m.clipped_tensors), m.signed)


# ----- one stage's message (client -> coordinator)
def _keys_to_proto(k: PublicKeys, signed: Signed = UNSIGNED) -> pb.SecAggKeys:
    return pb.SecAggKeys(mask_public=k.mask, enc_public=k.enc, certificate=signed.credential,
                         signature=signed.signature)


def _keys_from_proto(m: pb.SecAggKeys) -> PublicKeys:
    if len(m.mask_public) != KEY_BYTES or len(m.enc_public) != KEY_BYTES:
        raise ValueError(f"public keys must be {KEY_BYTES} bytes each")
    if len(m.certificate) > MAX_CERTIFICATE_BYTES or len(m.signature) > MAX_SIGNATURE_BYTES:
        raise ValueError(f"a certificate is at most {MAX_CERTIFICATE_BYTES} bytes, a signature "
                         f"{MAX_SIGNATURE_BYTES}")
    return PublicKeys(m.mask_public, m.enc_public)


def _signed_from_proto(m: pb.SecAggKeys) -> Signed:
    return Signed(m.certificate, m.signature)


def _bundle_to_proto(b: SealedBundle) -> pb.SecAggBundle:
    received = getattr(b, _WIRE, None)
    if received is not None:  # relayed as it came (its unknown fields dropped when it was read)
        return received
    return pb.SecAggBundle(sender=b.sender, recipient=b.recipient, ciphertext=b.ciphertext,
                           self_seed_digest=b.digests[ShareKind.SELF_SEED],
                           mask_key_digest=b.digests[ShareKind.MASK_KEY])


def _bundle_from_proto(m: pb.SecAggBundle, relayed: bool = False) -> SealedBundle:
    """`relayed` (the coordinator reading a site's shares): the bundle keeps `m`, which its recipient is sent as
    it is; `m` must then be detached from the request (step_from_proto copies the site's shares once: a
    sub-message of the request would keep the whole request's memory alive, and follow any change to it)."""
    if len(m.self_seed_digest) != DIGEST_BYTES or len(m.mask_key_digest) != DIGEST_BYTES:
        raise ValueError(f"share digests must be {DIGEST_BYTES} bytes each")
    bundle = SealedBundle(m.sender, m.recipient, m.ciphertext,
                          {ShareKind.SELF_SEED: m.self_seed_digest, ShareKind.MASK_KEY: m.mask_key_digest})
    if relayed:
        object.__setattr__(bundle, _WIRE, m)  # not a field: equality and the protocol never see it
    return bundle


def step_to_proto(step: SecureStep) -> pb.SecAggRequest:
    out = pb.SecAggRequest(client_id=step.client_id, round=step.round, attempt=step.attempt,
                           max_wait_s=step.max_wait_s, run_id=step.run_id, change_norms=step.change_norms,
                           next_task_wait_s=step.next_task_wait_s)
    msg = step.message
    if isinstance(msg, AdvertiseKeys):
        out.keys.CopyFrom(_keys_to_proto(msg.keys, msg.signed))
    elif isinstance(msg, ShareKeys):
        out.shares.bundles.extend(_bundle_to_proto(b) for b in msg.bundles)
    elif isinstance(msg, SharesChecked):
        out.check.SetInParent()
        out.check.signature = msg.signature
        out.check.complaints.extend(pb.SecAggComplaint(accused=c.accused, reason=c.reason[:MAX_REASON_CHARS],
                                                       evidence=c.evidence) for c in msg.complaints)
    elif isinstance(msg, Contribution):
        out.masked.masked = msg.masked
        out.masked.num_examples = msg.num_examples
        out.masked.metrics.CopyFrom(metrics_to_proto(msg.metrics))
    elif isinstance(msg, UnmaskResponse):
        out.reveal.shares.extend(pb.SecAggRevealedShare(dealer=r.dealer, kind=_KINDS[r.kind],
                                                        share=encode_share(r.share)) for r in msg.shares)
    return out


def step_from_proto(m: pb.SecAggRequest) -> SecureStep:
    """The step a request carries (a masked vector stays bytes: the open round's field reads it)."""
    site = m.client_id
    which = m.WhichOneof("message")
    message: StageMessage | None = None
    if which == "shares":  # its bundles are relayed as they came, without anything a site added (this changes `m`)
        m.shares.DiscardUnknownFields()
    if which == "keys":
        message = AdvertiseKeys(site, _keys_from_proto(m.keys), _signed_from_proto(m.keys))
    elif which == "shares":
        kept = pb.SecAggShares()
        kept.CopyFrom(m.shares)  # one copy of the site's bundles, detached from the request (not one per bundle)
        message = ShareKeys(site, tuple(_bundle_from_proto(b, relayed=True) for b in kept.bundles))
    elif which == "check":
        if any(len(c.evidence) != KEY_BYTES for c in m.check.complaints):
            raise ValueError(f"a complaint's evidence must be a {KEY_BYTES}-byte key")
        if len(m.check.signature) > MAX_SIGNATURE_BYTES:
            raise ValueError(f"a signature is at most {MAX_SIGNATURE_BYTES} bytes")
        message = SharesChecked(site, tuple(Complaint(c.accused, c.reason[:MAX_REASON_CHARS], c.evidence)
                                            for c in m.check.complaints), m.check.signature)
    elif which == "masked":
        message = Contribution(m.masked.masked, m.masked.num_examples, metrics_from_proto(m.masked.metrics))
    elif which == "reveal":
        shares = []
        for r in m.reveal.shares:
            kind = _KIND_OF.get(r.kind)
            if kind is None:
                raise ValueError(f"a revealed share of {r.dealer!r} has no kind")
            share, tail = decode_share(r.share)
            if tail:
                raise ValueError(f"a revealed share of {r.dealer!r} carries trailing bytes")
            shares.append(RevealedShare(r.dealer, kind, share))
        message = UnmaskResponse(site, tuple(shares))
    return SecureStep(site, m.round, m.attempt, message, m.max_wait_s, m.run_id, dict(m.change_norms),
                      m.next_task_wait_s)


# ----- the coordinator's answer
def answer_to_proto(a: SecureAnswer) -> pb.SecAggReply:
    out = pb.SecAggReply(status=_STATUS[a.status], reason=a.reason, tensor_clips=a.tensor_clips)
    n = a.next
    if isinstance(n, KeysAnnounced):
        out.keys.CopyFrom(_STAGE_PARTS.get(n, lambda: _announced_to_proto(n)))
    elif isinstance(n, SharesDelivered):
        out.shares.senders.extend(n.senders)
        out.shares.bundles.extend(_bundle_to_proto(b) for b in n.bundles)
    elif isinstance(n, ChecksPassed):
        out.passed.CopyFrom(_STAGE_PARTS.get(n, lambda: _passed_to_proto(n)))
    elif isinstance(n, UnmaskRequest):
        out.unmask.survivors.extend(n.survivors)
        out.unmask.dropped.extend(n.dropped)
    return out


def _announced_to_proto(n: KeysAnnounced) -> pb.SecAggKeysAnnounced:
    out = pb.SecAggKeysAnnounced()
    for site, keys in n.keys.items():
        out.keys[site].CopyFrom(_keys_to_proto(keys, n.signed.get(site, UNSIGNED)))
    return out


def _passed_to_proto(n: ChecksPassed) -> pb.SecAggChecksPassed:
    out = pb.SecAggChecksPassed(checked=n.checked)
    for site, signature in n.attestations.items():
        out.attestations[site] = signature
    return out


def answer_from_proto(m: pb.SecAggReply, rid: RoundId, recipient: str) -> SecureAnswer:
    status = next((s for s, v in _STATUS.items() if v == m.status), None)
    if status is None:
        raise ValueError(f"the coordinator sent an unknown secure-aggregation status {m.status}")
    which = m.WhichOneof("next")
    n: KeysAnnounced | SharesDelivered | ChecksPassed | UnmaskRequest | None = None
    if which == "keys":
        n = KeysAnnounced(rid, {site: _keys_from_proto(k) for site, k in m.keys.keys.items()},
                          {site: _signed_from_proto(k) for site, k in m.keys.keys.items()})
    elif which == "shares":
        n = SharesDelivered(recipient, tuple(m.shares.senders), tuple(_bundle_from_proto(b) for b in m.shares.bundles))
    elif which == "passed":
        n = ChecksPassed(tuple(m.passed.checked), dict(m.passed.attestations))
    elif which == "unmask":
        n = UnmaskRequest(tuple(m.unmask.survivors), tuple(m.unmask.dropped))
    return SecureAnswer(status, n, m.reason, dict(m.tensor_clips))


def metrics_to_proto(metrics: Metrics) -> pb.Metrics:  # here, not in wire.py: wire.py imports this module
    return pb.Metrics(**{name: getattr(metrics, name) for name in Metrics.names()})


def metrics_from_proto(msg: pb.Metrics) -> Metrics:
    return Metrics(**{name: getattr(msg, name) for name in Metrics.names()})
