"""Secure aggregation's cost per round beside plain FedAvg of the same vectors: bytes per site, CPU seconds.

    python benchmarks/secagg_cost.py                      # N = 10 and 100, 30,000 floats, 10% drop-outs row
    python benchmarks/secagg_cost.py --sizes 10 --length 20554 --repeats 1

All N sites and the coordinator run in this one process, one after another, through the transport-free state
machines of pfeddc.common.secagg (no gRPC): CPU seconds are time.process_time around each site's and the
coordinator's calls, so they are the protocol's own work, the same on a machine whose sites run in parallel.
Bytes are each message's payload plus about two bytes of protobuf tag and length per field, as a wire layer
would carry them; every site also downloads the new global (4 bytes a float) in both modes.

Floor (plain FedAvg, the same work minus secure aggregation): each site weights its clipped vector and sends
it as float32; the coordinator decodes the N vectors and sums them weighted in float64.
"secagg, signed (mTLS)": every advert and check signed by the site's client certificate and checked by the
coordinator and by every site (common/secagg/identity.py). "secagg, 10% drop" rows: a tenth of the sites share
keys and then vanish before sending their input, the costliest case for the coordinator (it rebuilds their mask
keys and every survivor's mask shared with them).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cryptography
import numpy as np
from cryptography.hazmat.primitives import serialization

from pfeddc.client.secagg_site import SecAggSite
from pfeddc.common.secagg import field
from pfeddc.common.secagg.field import FieldParams
from pfeddc.common.secagg.identity import Identity, Verifier
from pfeddc.common.secagg.keys import RoundId
from pfeddc.common.secagg.protocol import (
    AdvertiseKeys,
    ChecksPassed,
    KeysAnnounced,
    MaskedInput,
    RoundConfig,
    SealedBundle,
    ShareKeys,
    SharesChecked,
    SharesDelivered,
    Signed,
    UnmaskRequest,
    UnmaskResponse,
    encode_share,
)
from pfeddc.server.ops.certs import create_ca, issue
from pfeddc.server.round.secagg_coordinator import SecAggCoordinator

TAG = 2  # protobuf tag + length, per field
T = TypeVar("T")


def s_(text: str) -> int:
    return TAG + len(text.encode())


def b_(data: bytes) -> int:
    return TAG + len(data)


def size_bundle(b: SealedBundle) -> int:
    return TAG + s_(b.sender) + s_(b.recipient) + b_(b.ciphertext) + sum(b_(d) + TAG for d in b.digests.values())


def size(msg: object, params: FieldParams) -> int:
    if isinstance(msg, AdvertiseKeys):
        return s_(msg.site_id) + b_(msg.keys.mask) + b_(msg.keys.enc) + signed_size(msg.signed)
    if isinstance(msg, KeysAnnounced):
        return sum(TAG + s_(u) + b_(k.mask) + b_(k.enc) + signed_size(msg.signed.get(u, Signed()))
                   for u, k in msg.keys.items())
    if isinstance(msg, ShareKeys):
        return s_(msg.site_id) + sum(size_bundle(b) for b in msg.bundles)
    if isinstance(msg, SharesDelivered):
        return s_(msg.recipient) + sum(s_(u) for u in msg.senders) + sum(size_bundle(b) for b in msg.bundles)
    if isinstance(msg, SharesChecked):
        return s_(msg.site_id) + sum(TAG + s_(c.accused) + s_(c.reason) + b_(c.evidence) for c in msg.complaints) \
            + (b_(msg.signature) if msg.signature else 0)
    if isinstance(msg, ChecksPassed):
        return sum(s_(u) for u in msg.checked) + sum(TAG + s_(u) + b_(a) for u, a in msg.attestations.items())
    if isinstance(msg, MaskedInput):
        return s_(msg.site_id) + b_(field.to_bytes(msg.masked, params))
    if isinstance(msg, UnmaskRequest):
        return sum(s_(u) for u in (*msg.survivors, *msg.dropped))
    if isinstance(msg, UnmaskResponse):
        return s_(msg.site_id) + sum(TAG + s_(r.dealer) + TAG + b_(encode_share(r.share)) for r in msg.shares)
    raise TypeError(type(msg))


@dataclass
class Cost:
    up: dict[str, int]
    down: dict[str, int]
    site_cpu: dict[str, float]
    coordinator_cpu: float = 0.0


def timed(cost: Cost, who: str | None, call: Callable[[], T]) -> T:
    start = time.process_time()
    out = call()
    spent = time.process_time() - start
    if who is None:
        cost.coordinator_cpu += spent
    else:
        cost.site_cpu[who] = cost.site_cpu.get(who, 0.0) + spent
    return out


def signed_size(signed: Signed) -> int:
    return (b_(signed.credential) if signed.credential else 0) + (b_(signed.signature) if signed.signature else 0)


def identities(ids: tuple[str, ...]) -> tuple[dict[str, Identity], Verifier]:
    """A federation CA and a client certificate per site, as pfeddc-certs issues them (not timed)."""
    ca_key, ca_cert = create_ca()
    out = {}
    for u in ids:
        key, cert = issue(ca_key, ca_cert, u)
        out[u] = Identity(cert.public_bytes(serialization.Encoding.DER), key)
    return out, Verifier((ca_cert,))


def secagg_round(n: int, length: int, drop: int, rng: np.random.Generator, signed: bool = False) -> Cost:
    ids = tuple(f"site-{i:03d}" for i in range(n))
    own, verifier = identities(ids) if signed else ({}, None)
    params = FieldParams(max_sites=max(n, 10))
    cfg = RoundConfig(RoundId("bench", 1), ids, n // 2 + 1, length, params)
    xs = {u: rng.uniform(-0.05, 0.05, length).astype(np.float32) for u in ids}
    cost = Cost({u: 0 for u in ids}, {u: 4 * length for u in ids}, {})  # everyone downloads the new global

    def up(u: str, msg: object) -> None:
        cost.up[u] += size(msg, params)

    def down(u: str, msg: object) -> None:
        cost.down[u] += size(msg, params)

    sites = {u: timed(cost, u, lambda u=u: SecAggSite(u, cfg, identity=own.get(u), verifier=verifier))  # type: ignore[misc]
             for u in ids}
    coord = SecAggCoordinator(cfg, verifier)
    for u in ids:
        msg = timed(cost, u, sites[u].advertise)
        up(u, msg)
        timed(cost, None, lambda m=msg: coord.receive_advertise(m))  # type: ignore[misc]
    announced = timed(cost, None, coord.announce)
    for u in ids:
        down(u, announced)
        shares = timed(cost, u, lambda u=u: sites[u].share_keys(announced))  # type: ignore[misc]
        up(u, shares)
        timed(cost, None, lambda m=shares: coord.receive_shares(m))  # type: ignore[misc]
    delivered = timed(cost, None, coord.deliver)
    senders = ids[drop:]
    for u in senders:
        down(u, delivered[u])
        checked = timed(cost, u, lambda u=u: sites[u].check_shares(delivered[u]))  # type: ignore[misc]
        up(u, checked)
        timed(cost, None, lambda m=checked: coord.receive_check(m))  # type: ignore[misc]
    passed = timed(cost, None, coord.passed)
    for u in senders:
        down(u, passed)
        masked = timed(cost, u, lambda u=u: sites[u].masked_input(passed, xs[u], 0.5))  # type: ignore[misc]
        up(u, masked)
        timed(cost, None, lambda m=masked: coord.receive_masked(m))  # type: ignore[misc]
    request = timed(cost, None, coord.unmask_request)
    for u in senders:
        down(u, request)
        response = timed(cost, u, lambda u=u: sites[u].unmask(request))  # type: ignore[misc]
        up(u, response)
        timed(cost, None, lambda m=response: coord.receive_unmask(m))  # type: ignore[misc]
    result = timed(cost, None, coord.finish)
    plain = np.sum([xs[u].astype(np.float64) * 0.5 for u in senders], axis=0)
    assert np.abs(result.total - plain).max() <= result.error_bound, "the unmasked sum is off"
    for u in ids[:drop]:  # gone: count only the sites that finished the round
        cost.up.pop(u), cost.down.pop(u), cost.site_cpu.pop(u)
    return cost


def plain_round(n: int, length: int, rng: np.random.Generator) -> Cost:
    ids = tuple(f"site-{i:03d}" for i in range(n))
    xs = {u: rng.uniform(-0.05, 0.05, length).astype(np.float32) for u in ids}
    cost = Cost({}, {u: 4 * length for u in ids}, {})
    payloads = {}
    for u in ids:
        payloads[u] = timed(cost, u, lambda u=u: (xs[u].astype(np.float64) * 0.5).astype(np.float32).tobytes())  # type: ignore[misc]
        cost.up[u] = s_(u) + b_(payloads[u])

    def aggregate() -> np.ndarray:
        total = np.zeros(length)
        for u in ids:
            total += np.frombuffer(payloads[u], dtype=np.float32).astype(np.float64)
        return total

    timed(cost, None, aggregate)
    return cost


def hardware() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return (f"{model}, {os.cpu_count()} cores (shared with other jobs), Linux {platform.release()}, "
            f"Python {platform.python_version()}, numpy {np.__version__}, cryptography {cryptography.__version__}")


def summary(costs: list[Cost]) -> tuple[float, float, float, float, float]:
    """Medians over repeats: bytes up, bytes down per site (mean over sites), site CPU mean and max, coordinator."""
    med = statistics.median
    return (med(statistics.mean(c.up.values()) for c in costs), med(statistics.mean(c.down.values()) for c in costs),
            med(statistics.mean(c.site_cpu.values()) for c in costs), med(max(c.site_cpu.values()) for c in costs),
            med(c.coordinator_cpu for c in costs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100])
    p.add_argument("--length", type=int, default=30_000, help="floats per site's vector (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--drop-fraction", type=float, default=0.1)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    print("# Secure aggregation cost per round (benchmarks/secagg_cost.py)\n")
    print(f"Hardware: {hardware()}\n")
    print(f"Vector: {args.length} floats per site; threshold t = N // 2 + 1; field 2**32, clip range "
          f"{FieldParams().clip_range}; all sites in one process, no gRPC. Medians of {args.repeats} rounds.\n")
    print("| N | mode | bytes up/site | bytes down/site | bytes/site vs plain | site CPU-s mean | site CPU-s max "
          "| coordinator CPU-s | added s/round (site max + coordinator) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    notes = []
    for n in args.sizes:
        plain = summary([plain_round(n, args.length, rng) for _ in range(args.repeats)])
        drop = max(1, round(args.drop_fraction * n))
        rows = [("plain FedAvg (floor)", plain), ("secagg", summary([secagg_round(n, args.length, 0, rng)
                                                                        for _ in range(args.repeats)])),
                (f"secagg, {drop} dropped", summary([secagg_round(n, args.length, drop, rng)
                                                     for _ in range(args.repeats)])),
                ("secagg, signed (mTLS)", summary([secagg_round(n, args.length, 0, rng, signed=True)
                                                   for _ in range(args.repeats)]))]
        for mode, (up, down, cpu, cpu_max, coord) in rows:
            ratio = (up + down) / (plain[0] + plain[1])
            added = (cpu_max - plain[3]) + (coord - plain[4])
            print(f"| {n} | {mode} | {up:,.0f} | {down:,.0f} | {ratio:.2f}x | {cpu:.4f} | {cpu_max:.4f} | "
                  f"{coord:.4f} | {added:+.3f} |")
            if mode.startswith("secagg"):
                notes.append(f"- N={n}, {mode}: {ratio:.2f}x the bytes of plain FedAvg per site, {added:+.2f} s of CPU "
                             f"on a round's critical path (issue 21's goal: at most 2x and +1 s)")
    print("\n" + "\n".join(notes))
    print("- Not in these figures: secure mode's four extra request/response exchanges per round (latency), "
          "gRPC framing, and Flower's SecAgg+ beside it (to come with the coordinator stage, in "
          "benchmarks/coordinator.py)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
