"""Scripted secure-aggregation sites over real gRPC, honest and hostile: the tests' and benchmarks/secure_attacks.py's.

Each site is a `Connection` of its own driving a `SecAggSite` (or `contribute`, for an honest one) with a fixed
numpy change (`delta_of`), so the committed global can be checked against the plain weighted FedAvg of what the
sites meant to send.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
import pytest

from pfeddc.client.connection import Backoff, Connection, global_tensors
from pfeddc.client.secagg_site import SecAggSite
from pfeddc.client.secure import SecureOutcome, change_vector, contribute
from pfeddc.common.messages import Action, Code, FailureReason, Metrics, Refused, Task
from pfeddc.common.secagg.exchange import Contribution, SecureSettings, SecureStep, Status, flatten, unflatten
from pfeddc.common.secagg.identity import PeerCheck, keys_digest
from pfeddc.common.secagg.keys import pairwise_seed
from pfeddc.common.secagg.masking import mask
from pfeddc.common.secagg.protocol import Complaint, MaskedInput, Stage
from pfeddc.common.spec import TensorSpec

FLAGS = ("--rounds", "1", "--min-clients", "4", "--method", "promptfl", "--text-ctx", "2", "--secure-aggregation",
         "--secagg-stage-timeout", "1.5", "--round-timeout", "4", "--max-examples-per-client", "1000")
METRICS = Metrics(train_loss=0.5, accuracy_before=0.1, accuracy_after=0.2, num_test_examples=5)
COUNTS = {"site-a": 100, "site-b": 300, "site-c": 200, "site-d": 400}
STAGES = ("train", "keys", "shares", "check", "garbage", "masked")  # where a site stops: before keys, after keys, ...


def connect(port: int, client_id: str) -> Connection:
    return Connection(f"127.0.0.1:{port}", client_id, backoff=Backoff(0.05, 0.2, 3), rpc_timeout_s=10)


def delta_of(client_id: str, spec: list[TensorSpec], scale: float = 0.05) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(sum(map(ord, client_id)))
    return {s.name: rng.normal(0, scale, s.shape).astype(np.float32) for s in spec}


def norms_of(client_id: str, spec: list[TensorSpec], settings: SecureSettings, times: float = 1.0) -> dict[str, float]:
    """What a site sends with its keys: its change norm of each tensor the coordinator bounds (x `times`: a liar)."""
    delta = delta_of(client_id, spec)
    return {k: times * float(np.linalg.norm(delta[k].astype(np.float64))) for k in settings.clipped_tensors}


def sampled(port: int) -> tuple[dict[str, Connection], list[TensorSpec], dict[str, Task], dict[str, np.ndarray]]:
    """Every site joined and handed the first round: connections, spec, tasks, the round's global."""
    conns = {c: connect(port, c) for c in COUNTS}
    spec = next(iter(conns.values())).federation().spec
    for c, conn in conns.items():
        conn.join(COUNTS[c], spec)
    tasks = {c: conn.task(wait_s=5) for c, conn in conns.items()}
    return conns, spec, tasks, global_tensors(tasks["site-a"])


def in_threads(work: dict[str, Callable[[], SecureOutcome]]) -> dict[str, SecureOutcome]:
    """Each site's work at once; a site whose work raised (a failed assertion in it) fails the test."""
    out: dict[str, SecureOutcome] = {}
    errors: dict[str, BaseException] = {}

    def run(client_id: str) -> None:
        try:
            out[client_id] = work[client_id]()
        except BaseException as exc:  # noqa: BLE001  # re-raised below, in the test's thread
            errors[client_id] = exc

    threads = [threading.Thread(target=run, args=(c,)) for c in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for client_id, exc in errors.items():
        raise AssertionError(f"{client_id}: {exc!r}") from exc
    assert set(out) == set(work), f"no outcome from {sorted(set(work) - set(out))}"
    return out


def honest(conn: Connection, task: Task, spec: list[TensorSpec],
           scale: Callable[[int], float] = lambda round_: 0.05, verifier: PeerCheck | None = None) -> SecureOutcome:
    """An honest site: contributes (its change `delta_of` at `scale(round)`), and after an abandoned attempt trains
    the retried one; its last outcome. `verifier`: how it checks its peers' signatures (none: it trusts the
    relay)."""
    outcome = SecureOutcome(False, "never sampled")
    for _ in range(20):
        if task.action == Action.FINISHED:
            return outcome
        if task.action == Action.TRAIN:
            assert task.secure is not None, task
            base = global_tensors(task)
            delta = delta_of(conn.client_id, spec, scale(task.round))
            update = {k: base[k] + delta[k] for k in base}
            outcome = contribute(conn, task.secure, task.round, base, update, spec, COUNTS[conn.client_id],
                                 verifier=verifier)
            if outcome.next_task is not None:  # asked for in the round's last call, as the daemon does
                task = outcome.next_task
                continue
        task = conn.task(wait_s=2)
    raise AssertionError(f"{conn.client_id}: no end after 20 tasks")


def vanish(conn: Connection, task: Task, spec: list[TensorSpec], stop_after: str) -> SecureOutcome:
    """A site that vanishes: it sends the stages up to `stop_after` and then nothing."""
    assert task.secure is not None
    s, rid = task.secure, task.secure.round_config(task.round).rid
    site = SecAggSite(conn.client_id, s.round_config(task.round), identity=conn.signing_key)

    clips: dict[str, float] = {}

    def send(message: object, norms: dict[str, float] | None = None) -> object:
        answer = conn.secure(SecureStep(conn.client_id, task.round, s.attempt, message,  # type: ignore[arg-type]
                                        change_norms=norms or {}), rid)
        while answer.status == Status.PENDING:
            answer = conn.secure(SecureStep(conn.client_id, task.round, s.attempt), rid)
        clips.update(answer.tensor_clips)
        return answer.next

    if stop_after == "train":
        return SecureOutcome(False, "silent")
    announced = send(site.advertise(), norms_of(conn.client_id, spec, s))
    if stop_after == "keys":
        return SecureOutcome(False, "silent")
    delivered = site.share_keys(announced)  # type: ignore[arg-type]
    delivered_to_me = send(delivered)
    if stop_after == "shares":
        return SecureOutcome(False, "silent")
    passed = send(site.check_shares(delivered_to_me))  # type: ignore[arg-type]
    if stop_after == "check":
        return SecureOutcome(False, "silent")
    base = global_tensors(task)
    vector = change_vector(base, {k: base[k] + v for k, v in delta_of(conn.client_id, spec).items()}, spec, s, clips)
    masked = site.masked_input(passed, vector, s.weight)  # type: ignore[arg-type]
    if stop_after == "garbage":  # a masked vector one element short, or infinite metrics: refused, nothing kept
        full = Contribution.of(masked, s.field, COUNTS[conn.client_id], METRICS)
        with pytest.raises(Refused) as refused:
            conn.secure(SecureStep(conn.client_id, task.round, s.attempt, replace(full, masked=full.masked[:-4])),
                        rid, wait_s=0)
        assert refused.value.code == Code.INVALID_ARGUMENT and "does not fit the round's field" in refused.value.message
        with pytest.raises(Refused, match="metric 'train_loss' is not finite"):
            conn.secure(SecureStep(conn.client_id, task.round, s.attempt,
                                   replace(full, metrics=replace(METRICS, train_loss=float("inf")))), rid, wait_s=0)
        return SecureOutcome(False, "refused")
    conn.secure(SecureStep(conn.client_id, task.round, s.attempt,
                           Contribution.of(masked, s.field, COUNTS[conn.client_id], METRICS)), rid, wait_s=0)
    return SecureOutcome(False, "silent after its masked input")


def hostile(conn: Connection, task: Task, spec: list[TensorSpec], attack: str) -> SecureOutcome:
    """A site with valid credentials that follows the protocol and lies once: `accuse` (it complains about every
    other site, with its own key as evidence), `deal` (it sends site-a a bundle that does not open, and site-a's
    complaint must convict it) or `range` (it masks values twice its clip range in every coordinate, far outside
    what its clip allows: nothing can tell under the masks, the unmasked sum's bounds must); `range-lie`: the same,
    its change norms reported a million times too large (to raise every site's per-tensor bound)."""
    assert task.secure is not None
    s, rid = task.secure, task.secure.round_config(task.round).rid
    site = SecAggSite(conn.client_id, s.round_config(task.round), identity=conn.signing_key)

    def send(message: object, norms: dict[str, float] | None = None) -> tuple[Status, object, str]:
        answer = conn.secure(SecureStep(conn.client_id, task.round, s.attempt, message,  # type: ignore[arg-type]
                                        change_norms=norms or {}), rid)
        while answer.status == Status.PENDING:
            answer = conn.secure(SecureStep(conn.client_id, task.round, s.attempt), rid)
        return answer.status, answer.next, answer.reason

    lie = 1e6 if attack == "range-lie" else 1.0
    _status, announced, _ = send(site.advertise(), norms_of(conn.client_id, spec, s, lie))
    shares = site.share_keys(announced)  # type: ignore[arg-type]
    if attack == "deal":
        shares = replace(shares, bundles=tuple(replace(b, ciphertext=b.ciphertext[:-1] + bytes([b.ciphertext[-1] ^ 1]))
                                               if b.recipient == "site-a" else b for b in shares.bundles))
    _status, delivered, _ = send(shares)
    checked = site.check_shares(delivered)  # type: ignore[arg-type]
    if attack == "accuse":
        key = site._keys.enc_private()
        accused = [u for u in sorted(COUNTS) if u != conn.client_id]
        checked = replace(checked, complaints=tuple(Complaint(u, "made up", key) for u in accused),
                          signature=conn.signing_key.sign("check", s.round_config(task.round).rid,
                                                          conn.client_id.encode(), keys_digest(site._peers),
                                                          *(u.encode() for u in accused)))
    status, passed, reason = send(checked)
    if not attack.startswith("range") or status != Status.NEXT:
        return SecureOutcome(status == Status.DONE, reason)
    cfg = s.round_config(task.round)
    f = cfg.field
    q = np.full(cfg.length, f.levels * 2 % f.modulus, np.uint64)
    seeds = {v: pairwise_seed(site._keys.mask, site._peers[v].mask, cfg.rid, site.site_id, v)
             for v in site._masked_with - {site.site_id}}
    site.stage = Stage.UNMASK
    forged = MaskedInput(site.site_id, mask(q, site.site_id, site._self_seed, seeds, f))
    status, request, reason = send(Contribution.of(forged, f, COUNTS[conn.client_id], METRICS))
    if status != Status.NEXT:
        return SecureOutcome(False, reason)
    status, _next, reason = send(site.unmask(request))  # type: ignore[arg-type]
    return SecureOutcome(status == Status.DONE, reason)


def false_refusal(conn: Connection, task: Task, spec: list[TensorSpec], peer: str = "site-a") -> SecureOutcome:
    """A site that says it refused `peer`'s key when nothing was wrong with it (it cannot be proved either way)."""
    assert task.secure is not None
    conn.report_failure(task.round, FailureReason.PEER_REFUSED, peer, task.secure.attempt)
    return SecureOutcome(False, f"reported refusing {peer}")


HONEST = ("site-a", "site-b", "site-c")
SiteWork = Callable[[Connection, Task, list[TensorSpec]], SecureOutcome]


def beside_three_honest(conns: dict[str, Connection], tasks: dict[str, Task], spec: list[TensorSpec],
                        site_d: SiteWork, verifiers: Mapping[str, PeerCheck] | None = None
                        ) -> dict[str, SecureOutcome]:
    """site-a, -b and -c honest (each checking its peers with `verifiers[c]`, if given) and site-d doing `site_d`
    (e.g. `partial(vanish, stop_after="keys")`), at once; each site's last outcome."""
    work: dict[str, Callable[[], SecureOutcome]] = {
        c: functools.partial(honest, conns[c], tasks[c], spec, verifier=(verifiers or {}).get(c)) for c in HONEST}
    work["site-d"] = functools.partial(site_d, conns["site-d"], tasks["site-d"], spec)
    return in_threads(work)


def expected_global(base: dict[str, np.ndarray], spec: list[TensorSpec], sites: list[str]) -> dict[str, np.ndarray]:
    """Plain FedAvg of the sites' changes (within the clip) weighted by their counts."""
    total = sum(COUNTS[c] for c in sites)
    mean = np.sum([flatten(delta_of(c, spec), spec) * COUNTS[c] for c in sites], axis=0) / total
    return {k: base[k] + v for k, v in unflatten(mean, spec).items()}


def final_global(conn: Connection) -> dict[str, np.ndarray]:
    task = conn.task(wait_s=5)
    assert task.action == Action.FINISHED, task
    return global_tensors(task)
