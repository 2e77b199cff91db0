"""Secure aggregation over real gRPC on loopback: scripted sites with numpy updates, a real coordinator.

The committed global must equal the plain weighted FedAvg of the clipped changes within the quantisation
bound, with every site, and with a site dropping out at each stage; what the coordinator keeps must hold no
site's change.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
from secure_sites import (
    COUNTS,
    FLAGS,
    HONEST,
    METRICS,
    STAGES,
    beside_three_honest,
    connect,
    delta_of,
    expected_global,
    final_global,
    honest,
    hostile,
    in_threads,
    norms_of,
    sampled,
    vanish,
)
from tests_support import StartCoordinator

from pfeddc.client.peer_keys import PinnedKeys
from pfeddc.client.secagg_site import SecAggSite
from pfeddc.client.secure import SecureOutcome, change_vector, contribute
from pfeddc.common import serde, wire
from pfeddc.common.messages import Action, Code, FailureReason, Refused
from pfeddc.common.proto import federation_pb2 as pb
from pfeddc.common.proto import federation_pb2_grpc as pb_grpc
from pfeddc.common.secagg.exchange import SecureStep, Status, flatten
from pfeddc.common.secagg.field import sum_error_bound
from pfeddc.common.secagg.identity import Identity, PeerCheck
from pfeddc.common.secagg.protocol import SealedBundle, ShareKeys
from pfeddc.server.app import build_parser
from pfeddc.server.flags import federation_config
from pfeddc.server.ops.checkpoint import Checkpoint, CheckpointError
from pfeddc.server.round.config import FederationConfig
from pfeddc.server.round.federation import Federation
from pfeddc.server.round.refusals import Refusals
from pfeddc.server.round.secure_plan import settings as secure_settings


@pytest.mark.parametrize("attack", ["accuse", "deal"])
def test_one_hostile_site_in_a_secure_round_is_convicted_on_evidence_and_stops_nothing(
        coordinator: StartCoordinator, attack: str) -> None:
    """A false accuser (complaints against every other site) or a dealer of a bad bundle: the complaint is
    judged on its evidence, the guilty site is named (log, incident) and left out, the honest ones are not, and the
    round commits the honest sites' weighted mean on the next attempt."""
    server = coordinator(*FLAGS)
    conns, spec, tasks, base = sampled(server.port)
    site_d = functools.partial(hostile, attack=attack)
    outcomes = beside_three_honest(conns, tasks, spec, site_d)
    assert all(outcomes[c].committed and not outcomes[c].reason for c in ("site-a", "site-b", "site-c")), outcomes
    assert not outcomes["site-d"].committed and "site-d" in outcomes["site-d"].reason
    got, want = final_global(conns["site-a"]), expected_global(base, spec, ["site-a", "site-b", "site-c"])
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5)
    blamed = [i for i in server.federation.snapshot().incidents if i.kind == "client_failed"]
    assert {i.client_id for i in blamed} == {"site-d"}, blamed
    assert ("falsely" if attack == "accuse" else "could not use") in blamed[0].reason


@pytest.mark.parametrize("attack", ["range", "range-lie"])
def test_a_masked_input_outside_its_range_is_bounded_by_what_the_survivors_could_send(
        coordinator: StartCoordinator, attack: str) -> None:
    """No one can see a range violation under the masks; the unmasked sum shows it: each bounded tensor's part
    beyond the survivors' weighted bounds of it, and the whole beyond their clips, is scaled down and reported (one
    aggregate_bounded incident), and the round commits. A tensor's bound is --adaptive-clip (2) x the median of the
    reported change norms: a site reporting a million times its norm does not raise it."""
    server = coordinator(*FLAGS, "--update-clip-norm", "0.5")
    conns, spec, tasks, base = sampled(server.port)
    outcomes = beside_three_honest(conns, tasks, spec, functools.partial(hostile, attack=attack))
    assert all(o.committed for o in outcomes.values()), outcomes
    got = final_global(conns["site-a"])
    moved = float(np.linalg.norm(flatten(got, spec) - flatten(base, spec)))
    assert moved <= 0.5 * 1.001 + 1e-3  # the sum's bound (the survivors' weight x clip) over their weight
    honest = max(float(np.linalg.norm(delta_of(c, spec)["text.global"])) for c in HONEST)
    assert float(np.linalg.norm(got["text.global"] - base["text.global"])) <= 2 * honest * 1.001 + 1e-3
    bounded = [i for i in server.federation.snapshot().incidents if i.kind == "aggregate_bounded"]
    assert len(bounded) == 1 and "outside its range" in bounded[0].reason, bounded
    excess = float(bounded[0].reason.split("text.global ")[1].split("x")[0])
    assert excess > 3  # unbounded, the forged input would have moved the tensor this many times further


@pytest.mark.parametrize("adaptive", ["2", "0"])
def test_secure_round_commits_the_weighted_fedavg_and_keeps_no_site_change(coordinator: StartCoordinator,
                                                                          tmp_path: Path, adaptive: str) -> None:
    """With per-tensor bounds (none binds these sites), and without: what a coordinator of secure-aggregation/v2
    sends (no tensor to report), which a v3 site follows too, so sites can be upgraded first."""
    server = coordinator(*FLAGS, "--adaptive-clip", adaptive)
    conns, spec, tasks, base = sampled(server.port)
    s = tasks["site-a"].secure
    assert s is not None and s.threshold == 3 and sorted(s.sampled) == sorted(COUNTS)
    assert s.clipped_tensors == (("text.global",) if adaptive == "2" else ())
    assert {c: t.secure.weight for c, t in tasks.items() if t.secure} == {c: n / 400 for c, n in COUNTS.items()}
    assert s.signed  # no certificates: every site signs with the key its Join bound, and checks its peers'
    pins = {c: PinnedKeys(tmp_path / c / "peer_keys.json") for c in conns}
    outcomes = in_threads({c: functools.partial(honest, conns[c], tasks[c], spec, verifier=pins[c]) for c in conns})
    assert all(o.committed and not o.reason for o in outcomes.values()), outcomes
    assert all(pins[c].knows(u) for c in conns for u in conns)  # each pinned every peer, as the coordinator bound
    # the reveal's call also carried the next task (the federation's end): no GetTask after the round
    assert all(o.next_task is not None and o.next_task.action == Action.FINISHED for o in outcomes.values())
    got, want = final_global(conns["site-a"]), expected_global(base, spec, list(COUNTS))
    bound = sum_error_bound(s.field, 4) / (sum(COUNTS.values()) / 400)
    for k in want:
        assert np.abs(got[k] - want[k]).max() <= bound + 1e-6  # float32 rounding of the stored global
        assert np.abs(got[k] - base[k]).max() > 100 * bound  # it moved
    history = (tmp_path / "coord" / "rounds.jsonl").read_text()
    assert '"aggregator":"secagg-fedavg"' in history
    checkpoint = serde.decode((tmp_path / "coord" / "checkpoint.safetensors").read_bytes())
    assert sorted(checkpoint) == sorted(s.name for s in spec)  # the new global only: no site's change


def test_the_message_that_closes_a_stage_is_handled_off_the_event_loop(coordinator: StartCoordinator,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Small messages are handled on the event loop (the hop to a worker thread cost more than their work); the
    one that closes a stage on a worker thread, so the stage's work (routing every bundle, unmasking the sum)
    never holds every other call."""
    handled: list[tuple[bool, bool]] = []  # (on the loop, closed a stage) for each message
    secure_step = Federation.secure_step

    def recorded(self: Federation, step: SecureStep) -> object:
        run = self._rounds.attempt.secure

        def progress() -> object:
            return run and (run.stage, run.result is not None, run.failure)

        before = progress()
        answer = secure_step(self, step)
        if step.message is not None:
            handled.append((threading.current_thread().name == "grpc-aio", progress() != before))
        return answer

    monkeypatch.setattr(Federation, "secure_step", recorded)
    server = coordinator(*FLAGS)
    conns, spec, tasks, _ = sampled(server.port)
    outcomes = in_threads({c: functools.partial(honest, conns[c], tasks[c], spec) for c in conns})
    assert all(o.committed for o in outcomes.values()), outcomes
    assert sum(closed for _, closed in handled) == 5  # one message closed each of the five stages
    assert all(on_loop != closed for on_loop, closed in handled), handled
    assert sum(on_loop for on_loop, _ in handled) >= 10  # the others, on the loop


def test_sites_back_off_when_the_coordinator_cannot_hold_their_polls(coordinator: StartCoordinator) -> None:
    """No held slot left (here: none at all): each PENDING comes back at once, and a site waits with jitter
    before asking again instead of spinning; the round still commits."""
    server = coordinator(*FLAGS, "--secagg-stage-timeout", "3")
    server.federation.changes.max_waiters = 0
    conns, spec, tasks, _base = sampled(server.port)
    calls = {c: 0 for c in conns}
    for c, conn in conns.items():
        def counted(*args: object, _inner: Callable[..., object] = conn.secure, _c: str = c) -> object:
            calls[_c] += 1
            return _inner(*args)
        conn.secure = counted
    site_d = conns.pop("site-d")  # trains slowly: the others wait for it at the keys stage
    started = time.monotonic()

    def late() -> None:
        time.sleep(1.5)
        honest(site_d, tasks["site-d"], spec)

    slow = threading.Thread(target=late)
    slow.start()
    outcomes = in_threads({c: functools.partial(honest, conns[c], tasks[c], spec) for c in conns})
    slow.join(30)
    elapsed = time.monotonic() - started
    assert all(o.committed and not o.reason for o in outcomes.values()), outcomes
    assert max(calls[c] for c in conns) < 10 * elapsed + 10, (calls, elapsed)  # a spinning site asks ~1000/s


@pytest.mark.parametrize("stage", STAGES)
def test_secure_round_completes_when_a_site_drops_out_at_any_stage(coordinator: StartCoordinator,
                                                                   stage: str) -> None:
    server = coordinator(*FLAGS)
    conns, spec, tasks, base = sampled(server.port)
    site_d = functools.partial(vanish, stop_after=stage)
    outcomes = beside_three_honest(conns, tasks, spec, site_d)
    assert all(outcomes[c].committed and not outcomes[c].reason for c in ("site-a", "site-b", "site-c")), outcomes
    # a site that sent its masked input is a survivor: its change is in the sum, its mask removed without it
    counted = list(COUNTS) if stage == "masked" else ["site-a", "site-b", "site-c"]
    got, want = final_global(conns["site-a"]), expected_global(base, spec, counted)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5)


def test_a_site_silent_at_the_keys_stage_is_reported_as_it_waits(coordinator: StartCoordinator) -> None:
    """Three sites sent their keys, the fourth never does: a stage timeout later the status names the stalled
    stage and the site it waits on, while the round still waits (the keys stage closes at the round's deadline)."""
    server = coordinator(*FLAGS)
    conns, spec, tasks, _base = sampled(server.port)
    site_d = functools.partial(vanish, stop_after="train")
    seen: list[str] = []

    def watch() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not seen:
            seen.extend(i.reason for i in server.federation.snapshot().incidents if i.kind == "stage_stalled")
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    outcomes = beside_three_honest(conns, tasks, spec, site_d)
    watcher.join(15)
    assert all(outcomes[c].committed and not outcomes[c].reason for c in ("site-a", "site-b", "site-c")), outcomes
    assert len(seen) == 1 and "site-d" in seen[0] and "advertise" in seen[0].lower(), seen


def test_secure_round_excludes_a_site_whose_bundle_is_garbage(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS)
    conns, spec, tasks, base = sampled(server.port)
    real_share_keys = SecAggSite.share_keys

    def tampered(self: SecAggSite, announced: object) -> ShareKeys:
        out = real_share_keys(self, announced)  # type: ignore[arg-type]
        if self.site_id != "site-d":
            return out
        first = out.bundles[0]
        broken = SealedBundle(first.sender, first.recipient, bytes(len(first.ciphertext)), first.digests)
        return ShareKeys(out.site_id, (broken, *out.bundles[1:]))

    SecAggSite.share_keys = tampered  # type: ignore[method-assign]
    try:
        outcomes = in_threads({c: functools.partial(honest, conns[c], tasks[c], spec) for c in conns})
    finally:
        SecAggSite.share_keys = real_share_keys  # type: ignore[method-assign]
    # named by the site it cheated, then left out of the retried round, which commits without it
    assert not outcomes["site-d"].committed and "the share bundle from 'site-d'" in outcomes["site-d"].reason
    got, want = final_global(conns["site-a"]), expected_global(base, spec, ["site-a", "site-b", "site-c"])
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5)


def test_secure_federation_refuses_plain_clients_and_plain_updates(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS)
    conn = connect(server.port, "site-a")
    spec = conn.federation().spec
    # none, the protocol before judged complaints, before per-tensor bounds, before signing keys; and a v4 Join
    # without its signing key
    for capabilities, key_named in (([], False), (["secure-aggregation/v1"], False),
                                    (["secure-aggregation/v2"], False),
                                    (["secure-aggregation/v2", "secure-aggregation/v3"], False),
                                    (["secure-aggregation/v4"], True)):
        old_join = pb.JoinRequest(client_id="old-site", num_examples=5, spec=wire.spec_to_proto(spec),
                                  capabilities=capabilities)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel, pytest.raises(grpc.RpcError) as old:
            pb_grpc.CoordinatorStub(channel).Join(old_join, timeout=10)
        details = str(old.value.details())
        assert old.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "upgrade pfeddc" in details
        assert ("carries none" in details) if key_named else ("secure-aggregation/v4" in details)
    conn.join(100, spec)
    with pytest.raises(Refused) as plain:
        conn.submit(1, {s.name: np.zeros(s.shape, np.float32) for s in spec}, 100, METRICS)
    assert plain.value.code == Code.FAILED_PRECONDITION and "never in the clear" in plain.value.message


@pytest.mark.parametrize(("flags", "refusal"), [
    (("--aggregator", "median"), "--aggregator median is refused with --secure-aggregation"),
    (("--min-clients", "2"), "needs --min-clients >= --secagg-min-sites"),
    (("--secagg-min-sites", "2"), "--secagg-min-sites must be at least 3"),
    (("--secagg-min-sites", "5"), "needs --min-clients >= --secagg-min-sites"),
    (("--secagg-threshold", "9"), "--secagg-threshold must be in"),
    (("--update-clip-norm", "0"), "needs a bound on each change"),
])
def test_secure_aggregation_refuses_what_needs_every_update(flags: tuple[str, ...], refusal: str) -> None:
    args = build_parser().parse_args(["--secure-aggregation", "--min-clients", "4", *flags])
    with pytest.raises(ValueError, match=refusal.replace("-", "[-]")):
        federation_config(args)
    default = federation_config(build_parser().parse_args(["--secure-aggregation", "--min-clients", "4"]))
    assert default.adaptive_clip == 2  # per-tensor bounds from the sites' reported norms (server/round/secure_bounds)


@pytest.mark.parametrize(("sampled", "min_sites", "threshold"), [(3, 3, 3), (4, 3, 3), (4, 4, 4), (10, 3, 6)])
def test_no_secure_round_unmasks_fewer_survivors_than_the_minimum_group(sampled: int, min_sites: int,
                                                                        threshold: int) -> None:
    """With 3 sites and one dropping out, the other two never see a sum of two: the threshold (the survivors
    every stage needs) is at least --secagg-min-sites, and more than half of the sampled."""
    config = FederationConfig(rounds=1, min_clients=max(min_sites, 3), secure_aggregation=True, adaptive_clip=0.0,
                              secagg_min_sites=min_sites)
    sites = [f"s{i}" for i in range(sampled)]
    plan = secure_settings(config, 0, sites, dict.fromkeys(sites, 10), 8)
    assert {p.threshold for p in plan.values()} == {threshold}


def test_secure_round_with_dp_carries_the_noise_the_accountant_assumes(coordinator: StartCoordinator,
                                                                      tmp_path: Path) -> None:
    """Each site adds N(0, (sigma C)^2 / t) before masking: the committed mean's noise has std
    sigma C sqrt(n / t) / n with every site surviving; the epsilon is logged as in plain DP."""
    sigma, clip = 1.0, 0.1
    server = coordinator(*FLAGS, "--dp-noise-multiplier", str(sigma), "--dp-clip", str(clip))
    conns, spec, tasks, base = sampled(server.port)
    s = tasks["site-a"].secure
    assert s is not None and s.weight == 1.0 and s.noise_std == pytest.approx(sigma * clip / np.sqrt(3))
    assert s.clipped_tensors == ()  # under DP no site reports a norm: a data-dependent bound voids the analysis
    outcomes = in_threads({c: functools.partial(honest, conns[c], tasks[c], spec) for c in conns})
    assert all(o.committed for o in outcomes.values()), outcomes
    got = flatten(final_global(conns["site-a"]), spec) - flatten(base, spec)
    clipped = [change_vector(base, {k: base[k] + v for k, v in delta_of(c, spec).items()}, spec,
                             replace(s, noise_std=0.0)) for c in COUNTS]
    noise = got - np.mean(clipped, axis=0)  # DP-FedAvg: equal weights, over the sampled count
    assert 0.8 < float(np.std(noise)) / (sigma * clip * np.sqrt(4 / 3) / 4) < 1.25
    summary = json.loads((tmp_path / "coord" / "rounds.jsonl").read_text().splitlines()[-1])
    assert summary["aggregator"] == "secagg-dp-fedavg" and summary["dp_epsilon"] > 0


def test_a_site_asking_to_be_held_nan_seconds_is_answered_at_once(coordinator: StartCoordinator) -> None:
    """A member's `max_wait_s` of NaN (any value is valid protobuf) is no wait: the call answers PENDING at once,
    where it made the coordinator re-ask the stage in a loop without a pause until the stage closed."""
    server = coordinator(*FLAGS)
    conns, spec, tasks, _base = sampled(server.port)
    s = tasks["site-a"].secure
    assert s is not None
    keys = SecAggSite("site-a", s.round_config(1), identity=conns["site-a"].signing_key).advertise()
    started = time.monotonic()
    answer = conns["site-a"].secure(SecureStep("site-a", 1, s.attempt, keys, change_norms=norms_of("site-a", spec, s)),
                                    s.round_config(1).rid, wait_s=math.nan)
    assert answer.status == Status.PENDING and time.monotonic() - started < 1.0, answer


def test_a_restarted_coordinator_runs_the_round_afresh_and_refuses_the_old_run(coordinator: StartCoordinator,
                                                                             tmp_path: Path) -> None:
    first = coordinator(*FLAGS, state_dir=tmp_path / "state")
    conns, spec, tasks, base = sampled(first.port)
    old = tasks["site-a"].secure
    assert old is not None
    keys = SecAggSite("site-a", old.round_config(1), identity=conns["site-a"].signing_key).advertise()
    conns["site-a"].secure(SecureStep("site-a", 1, old.attempt, keys, change_norms=norms_of("site-a", spec, old)),
                           old.round_config(1).rid, wait_s=0)
    first.stop(0)  # mid-round: keys advertised, nothing saved of them
    second = coordinator(*FLAGS, state_dir=tmp_path / "state")
    conns = {c: connect(second.port, c) for c in COUNTS}
    for c, conn in conns.items():
        conn.join(COUNTS[c], spec)
    tasks = {c: conn.task(wait_s=5) for c, conn in conns.items()}
    new = tasks["site-a"].secure
    assert new is not None and tasks["site-a"].round == 1 and new.run_id != old.run_id  # fresh keys, fresh masks
    with pytest.raises(Refused, match="the coordinator may have restarted"):  # the old run's message
        conns["site-a"].secure(SecureStep("site-a", 1, old.attempt, keys), old.round_config(1).rid, wait_s=0)
    outcomes = in_threads({c: functools.partial(honest, conns[c], tasks[c], spec) for c in conns})
    assert all(o.committed and not o.reason for o in outcomes.values()), outcomes
    # the reveal's call also carried the next task (the federation's end): no GetTask after the round
    assert all(o.next_task is not None and o.next_task.action == Action.FINISHED for o in outcomes.values())
    got, want = final_global(conns["site-a"]), expected_global(base, spec, list(COUNTS))
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5)


def test_the_reveal_carries_the_next_round_and_an_older_site_still_asks_gettask(
        coordinator: StartCoordinator) -> None:
    """The reveal's call, held until the round commits, is held on until round 2 opens and carries its task; a
    site that does not ask (`next_task_wait_s` 0, as before it existed) gets a plain DONE and asks GetTask. What a
    member may send instead changes nothing else: NaN asks for nothing, infinity waits at most MAX_HOLD_S."""
    server = coordinator(*FLAGS, "--rounds", "2")
    conns, spec, tasks, base = sampled(server.port)
    waits = {"site-a": 30.0, "site-b": math.nan, "site-c": math.inf, "site-d": 0.0}

    def first_round(client_id: str) -> SecureOutcome:
        task = tasks[client_id]
        assert task.secure is not None
        delta = delta_of(client_id, spec)
        return contribute(conns[client_id], task.secure, task.round, base, {k: base[k] + delta[k] for k in base},
                          spec, COUNTS[client_id], next_task_wait_s=waits[client_id])

    started = time.monotonic()
    outcomes = in_threads({c: functools.partial(first_round, c) for c in conns})
    assert all(o.committed and not o.reason for o in outcomes.values()), outcomes
    for c in ("site-a", "site-c"):
        following = outcomes[c].next_task
        assert following is not None and following.action == Action.TRAIN and following.round == 2, following
        assert following.secure is not None and following.secure.sampled == tuple(sorted(COUNTS))
    for c in ("site-b", "site-d"):
        assert outcomes[c].next_task is None
        assert conns[c].task(wait_s=5).round == 2
    assert time.monotonic() - started < 20  # round 2 opened at once: nobody waited out a hold


def test_a_convicted_site_sits_out_the_next_rounds(coordinator: StartCoordinator, tmp_path: Path) -> None:
    """Convicted in round 1, a false accuser is not sampled in round 2 (it sits out --client-ttl): a persistent
    liar costs one attempt, not one per round."""
    server = coordinator(*FLAGS, "--rounds", "2")
    conns, spec, tasks, _base = sampled(server.port)
    site_d = functools.partial(hostile, attack="accuse")
    keep_alive = threading.Event()

    def heartbeat() -> None:  # site-d stays online (heard from), so only its conviction keeps it out
        while not keep_alive.wait(0.2):
            conns["site-d"].heartbeat(0)

    beat = threading.Thread(target=heartbeat)
    beat.start()
    try:
        outcomes = beside_three_honest(conns, tasks, spec, site_d)
    finally:
        keep_alive.set()
        beat.join(5)
    assert all(outcomes[c].committed for c in ("site-a", "site-b", "site-c")), outcomes
    rounds = [json.loads(x) for x in (tmp_path / "coord" / "rounds.jsonl").read_text().splitlines()]
    assert [r["attempts"] for r in rounds] == [2, 1]
    assert sorted(rounds[1]["clients"]) == ["site-a", "site-b", "site-c"] and rounds[1]["stragglers"] == []
    # the conviction is checkpointed: a restarted coordinator still leaves site-d out
    saved = Checkpoint(tmp_path / "coord").load(spec, 3)
    assert saved is not None and 0 < saved.convicted["site-d"] <= FederationConfig(rounds=3).client_ttl_s
    restarted = Federation(FederationConfig(rounds=3, min_clients=4), spec, saved)
    for client, count in COUNTS.items():
        restarted.join(client, count, spec)
    assert restarted.snapshot().sampled == {"site-a", "site-b", "site-c"}




def test_a_method_that_shares_nothing_is_refused_secure_mode_and_the_sim_runs_it_plain(tmp_path: Path) -> None:
    """zeroshot shares no tensor: there is no sum to mask (the protocol cannot run on an empty vector), so the
    coordinator says so at start, and `pfeddc-sim --secure-aggregation` runs that baseline without it (before:
    the README's `pfeddc-sim --demo --secure-aggregation` failed in its first round)."""
    from pfeddc.client.sim.app import build_parser as sim_parser
    from pfeddc.client.sim.app import server_flags
    from pfeddc.server.app import start

    args = build_parser().parse_args(["--secure-aggregation", "--min-clients", "3", "--method", "zeroshot",
                                      "--bind", "127.0.0.1", "--port", "0", "--state-dir", str(tmp_path / "s")])
    with pytest.raises(ValueError, match="--method zeroshot: the method shares no tensor"):
        start(args).stop(0)  # (a regression would leave no server running)
    sim = sim_parser().parse_args(["--data", str(tmp_path), "--secure-aggregation", "--classes", "cat,dog"])
    sites = [tmp_path / f"site-{i}" for i in range(3)]
    assert "--secure-aggregation" not in server_flags(sim, "zeroshot", sites, tmp_path / "out")
    assert "--secure-aggregation" in server_flags(sim, "pfeddc", sites, tmp_path / "out")


def test_each_site_clips_each_tensor_to_the_announced_bound_which_history_caps(coordinator: StartCoordinator,
                                                                               tmp_path: Path) -> None:
    """Two secure rounds of four honest sites, end to end: round 1's bound is 2x the median reported norm and
    site-a, whose change is 5x the others', is held to it (the summary names it); in round 2 every change grew
    10x, and the bound is capped at twice round 1's scale, so every site is held to it. The committed global is
    the weighted FedAvg of the changes as clipped."""
    server = coordinator(*FLAGS, "--rounds", "2", state_dir=tmp_path / "state")
    conns, spec, tasks, base = sampled(server.port)
    scales = {c: (lambda r, big=(c == "site-a"): (0.25 if big else 0.05) if r == 1 else 0.5) for c in COUNTS}
    outcomes = in_threads({c: functools.partial(honest, conns[c], tasks[c], spec, scales[c]) for c in COUNTS})
    assert all(o.committed for o in outcomes.values()), outcomes
    got = final_global(conns["site-a"])
    rounds = [json.loads(line) for line in (tmp_path / "state" / "rounds.jsonl").read_text().splitlines()]
    total = sum(COUNTS.values())
    want, scale = base["text.global"].astype(np.float64), None
    for number, summary in enumerate(rounds, 1):
        changes = {c: delta_of(c, spec, scales[c](number))["text.global"].astype(np.float64) for c in COUNTS}
        median = float(np.median([np.linalg.norm(d) for d in changes.values()]))
        scale = median if scale is None else min(median, 2 * scale)
        bound = 2 * scale
        assert summary["clip_bounds"]["text.global"] == pytest.approx(bound, rel=1e-4)
        clipped = sorted(c for c, d in changes.items() if np.linalg.norm(d) > bound)
        assert summary["clipped_tensors"].get("text.global", []) == clipped
        assert clipped == (["site-a"] if number == 1 else sorted(COUNTS))
        want = want + sum(COUNTS[c] * d * min(1.0, bound / np.linalg.norm(d)) for c, d in changes.items()) / total
    np.testing.assert_allclose(got["text.global"], want, atol=1e-5)


def test_a_range_attack_beside_a_dropout_is_held_to_the_survivors_bounds(coordinator: StartCoordinator) -> None:
    """site-a drops after its check, site-d masks out-of-range values and reports its norm 10^6x: the committed
    change of the tensor is at most its bound (the survivors' weighted bounds over their weight, never the
    sampled sites'), and the forged input reaches it."""
    server = coordinator(*FLAGS)  # the whole-change clip (10) is far looser: the per-tensor bound is what holds
    conns, spec, tasks, base = sampled(server.port)
    outcomes = in_threads({
        "site-a": functools.partial(vanish, conns["site-a"], tasks["site-a"], spec, stop_after="check"),
        "site-b": functools.partial(honest, conns["site-b"], tasks["site-b"], spec),
        "site-c": functools.partial(honest, conns["site-c"], tasks["site-c"], spec),
        "site-d": functools.partial(hostile, conns["site-d"], tasks["site-d"], spec, attack="range-lie")})
    assert outcomes["site-b"].committed and outcomes["site-c"].committed, outcomes
    got = final_global(conns["site-b"])
    reports = [float(np.linalg.norm(delta_of(c, spec)["text.global"])) for c in HONEST] + [1e300]
    bound = 2 * float(np.median(reports))
    moved = float(np.linalg.norm(got["text.global"] - base["text.global"]))
    assert 0.9 * bound <= moved <= bound * 1.001 + 1e-4, (moved, bound)


def test_a_checkpoint_from_before_signing_keys_resumes_and_its_sites_are_asked_to_join_again(
        coordinator: StartCoordinator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Its records bound no key: the coordinator says so as it resumes and hands such a site no task until it
    joins again (NOT_FOUND, which a daemon answers with a Join), which binds its key; the round then runs."""
    first = coordinator(*FLAGS, state_dir=tmp_path / "state")
    conns, spec, tasks, _base = sampled(first.port)
    in_threads({c: functools.partial(honest, conns[c], tasks[c], spec) for c in conns})  # round 1 commits
    first.stop(0)
    checkpoint = Checkpoint(tmp_path / "state")
    state = checkpoint.load(spec, 2)
    assert state is not None and all(r.signing_key for r in state.clients.values())
    for record in state.clients.values():
        record.signing_key = b""  # as a checkpoint written before signing keys holds them
    checkpoint.save(state)
    capsys.readouterr()
    second = coordinator(*FLAGS, "--rounds", "2", state_dir=tmp_path / "state")  # one more round
    warned = [json.loads(x) for x in capsys.readouterr().err.splitlines() if "signing_keys_missing" in x]
    assert warned and warned[0]["clients"] == len(COUNTS)
    conns = {c: connect(second.port, c) for c in COUNTS}
    for c, conn in conns.items():
        with pytest.raises(Refused) as asked:
            conn.task()
        assert asked.value.code == Code.NOT_FOUND and "call Join again" in asked.value.message
        conn.join(COUNTS[c], spec)
    with ThreadPoolExecutor(len(conns)) as pool:  # together: the round opens once all four are back
        tasks = dict(zip(conns, pool.map(lambda conn: conn.task(wait_s=5), conns.values()), strict=True))
    assert all(t.secure is not None and t.secure.signed for t in tasks.values())
    outcomes = in_threads({c: functools.partial(honest, conns[c], tasks[c], spec) for c in conns})
    assert all(o.committed for o in outcomes.values()), outcomes
    bound = Checkpoint(tmp_path / "state").load(spec, 2)
    assert bound is not None and all(r.signing_key == conns[c].signing_key.credential
                                     for c, r in bound.clients.items())


def test_a_site_its_peers_refuse_is_left_out_and_one_report_blames_nobody(coordinator: StartCoordinator,
                                                                         tmp_path: Path) -> None:
    """site-d comes back under an id its peers pinned with another key: each of them refuses it, leaves the
    attempt and says whom it refused; refused by all three others, site-d is left out of the retry, which commits
    the three. A single site's report (it cannot be proved) blames nobody."""
    server = coordinator(*FLAGS)
    conns, spec, tasks, base = sampled(server.port)
    old_key = Identity.generate().credential.hex()
    pins: dict[str, PeerCheck] = {}
    for c in HONEST:
        (tmp_path / c).mkdir()
        (tmp_path / c / "peer_keys.json").write_text(json.dumps({"site-d": old_key}))
        pins[c] = PinnedKeys(tmp_path / c / "peer_keys.json")
    first = tasks["site-a"].secure
    assert first is not None
    attempt = first.attempt
    with pytest.raises(Refused) as stale:  # a refusal about an attempt that is not the open one counts nowhere
        conns["site-a"].report_failure(1, FailureReason.PEER_REFUSED, "site-d", attempt + 1)
    assert stale.value.code == Code.FAILED_PRECONDITION and "has ended" in stale.value.message
    work: dict[str, Callable[[], SecureOutcome]] = {
        c: functools.partial(honest, conns[c], tasks[c], spec, verifier=pins[c]) for c in HONEST}
    work["site-d"] = functools.partial(honest, conns["site-d"], tasks["site-d"], spec)
    outcomes = in_threads(work)
    assert all(outcomes[c].committed for c in HONEST) and not outcomes["site-d"].committed, outcomes
    got, want = final_global(conns["site-a"]), expected_global(base, spec, list(HONEST))
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5)
    refusals = Refusals(COUNTS)
    assert refusals.record("site-d", "site-a") and not refusals.record("site-d", "site-d")
    assert not refusals.record("site-x", "site-a") and refusals.blamed() == {}
    assert refusals.record("site-b", "site-a") and list(refusals.blamed()) == ["site-a"]  # 2 of the other 3
    three = Refusals(("site-a", "site-b", "site-c"))  # the smallest secure round: both others must refuse
    assert three.record("site-b", "site-a") and three.blamed() == {}


def test_a_secure_federation_shares_no_residual_unless_asked_and_is_warned_when_asked(
        coordinator: StartCoordinator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --method, --secure-aggregation runs the class head without its residual: under the masks the
    coordinator bounds only the sum of a residual row, which one hostile site fills (attack_head_secure.md). Plain
    federations keep the residual; --method pfeddc in a secure one runs it and says what that costs. Its checkpoint
    resumed without --method is refused with a message that names the flag (the default changed on upgrade)."""
    flags = ("--rounds", "1", "--min-clients", "4", "--classes", "cat,dog,fox")

    def shared(*more: str) -> set[str]:
        server = coordinator(*flags, *more, state_dir=tmp_path / "-".join(("state",) + more))
        names = {s.name for s in connect(server.port, "site-a").federation().spec}
        server.stop(0)
        return names

    def warned() -> list[dict[str, object]]:
        return [json.loads(x) for x in capsys.readouterr().err.splitlines() if "secure_residual_unbounded" in x]

    capsys.readouterr()
    assert "head.residual.global" in shared() and not warned()
    secure = shared("--secure-aggregation")
    assert "head.residual.global" not in secure and "head.counts.global" in secure and not warned()
    assert "head.residual.global" in shared("--secure-aggregation", "--method", "pfeddc")
    said = warned()
    assert said and said[0]["method"] == "pfeddc" and "attack_head_secure.md" in str(said[0]["detail"])
    with pytest.raises(CheckpointError, match="--method first"):
        coordinator(*flags, "--secure-aggregation", state_dir=tmp_path / "state---secure-aggregation---method-pfeddc")
