"""Failures reported, never looped: a client that cannot deliver says so, rounds of failures end the run."""

from __future__ import annotations

import time

import numpy as np
import pytest
from structlog.testing import capture_logs
from tests_support import StartCoordinator

from pfeddc.client.connection import Backoff, Connection
from pfeddc.common import serde
from pfeddc.common.logs import Event
from pfeddc.common.messages import Action, Code, FailureReason, Metrics, Refused
from pfeddc.common.spec import TensorSpec
from pfeddc.server.round.federation import CLOSE_MARGIN_S, Federation, FederationConfig, FederationState
from pfeddc.server.round.handouts import MAX_HANDOUTS

SPEC = [TensorSpec("text.global", (4, 128))]
FLAGS = ("--rounds", "2", "--method", "promptfl", "--text-ctx", "4")
METRICS = Metrics(train_loss=0.5, accuracy_before=0.1, accuracy_after=0.2, num_test_examples=5)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def connect(port: int, client_id: str) -> Connection:
    return Connection(f"127.0.0.1:{port}", client_id, backoff=Backoff(0.05, 0.2, 3), rpc_timeout_s=10)


def test_failure_report_drops_the_client_and_the_round_closes_with_the_others(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS, "--min-clients", "3")
    a, b, c = (connect(server.port, f"site-{x}") for x in "abc")
    for conn in (a, b, c):
        conn.join(10, SPEC)
    task = a.task()
    assert task.action == Action.TRAIN
    with capture_logs() as logs:
        result = a.report_failure(task.round, FailureReason.DIVERGED, "loss became NaN at step 3")
    assert not result.duplicate and result.expected == 2
    assert a.report_failure(task.round, FailureReason.DIVERGED).duplicate  # idempotent
    event = next(e for e in logs if e["event"] == Event.CLIENT_FAILED_ROUND)
    assert event["client_id"] == "site-a" and "diverged: loss became NaN" in event["reason"]
    with pytest.raises(Refused) as info:  # out of the round: its update no longer counts
        a.submit(task.round, {"text.global": np.zeros((4, 128), np.float32)}, 10, METRICS)
    assert info.value.code == Code.FAILED_PRECONDITION
    assert a.task().action == Action.WAIT
    for conn in (b, c):
        conn.submit(1, {"text.global": np.ones((4, 128), np.float32)}, 10, METRICS)
    assert server.federation.round == 2  # closed without waiting for site-a's deadline
    summary = server.federation.last_round
    assert summary is not None and summary.clients == ["site-b", "site-c"] and "site-a" in summary.failed


def test_round_of_only_failures_is_retried_then_the_federation_stops(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS, "--min-clients", "1", "--max-retries", "1")
    a = connect(server.port, "site-a")
    a.join(10, SPEC)
    assert a.task().action == Action.TRAIN
    a.report_failure(1, FailureReason.OUT_OF_MEMORY)
    again = a.task()
    assert again.action == Action.WAIT and again.retry_after_s > 0  # the same round again only after a backoff
    time.sleep(again.retry_after_s + 0.05)
    assert a.task().action == Action.TRAIN
    with capture_logs() as logs:
        a.report_failure(1, FailureReason.OUT_OF_MEMORY)
    assert server.federation.aborted and "round 1 failed 2 times" in server.federation.aborted
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [Event.FEDERATION_ABORTED]
    with pytest.raises(Refused) as info:
        a.task()
    assert info.value.code == Code.FAILED_PRECONDITION and "the federation stopped" in info.value.message


def test_a_silent_failing_client_is_never_handed_the_same_round_in_a_loop() -> None:
    clock = Clock()
    config = FederationConfig(rounds=2, min_clients=1, round_timeout_s=600, max_retries=2)
    fed = Federation(config, SPEC, FederationState(1, {"text.global": np.zeros((4, 128), np.float32)}, {}),
                     clock=clock)
    fed.join("looper", 10, SPEC)
    trains, waits = 0, []
    while clock.now < 60:  # asks every 50 ms, diverges at once, never reports
        try:
            task = fed.task("looper")
        except Refused as exc:
            assert "the federation stopped" in exc.message
            break
        if task.action == Action.TRAIN:
            trains += 1
        else:
            waits.append(task.retry_after_s)
        clock.now += 0.05
        fed.tick()
    # before: 1,433 trainings of the same round in 60 s; now at most MAX_HANDOUTS per attempt, with growing
    # backoffs, then the client counts as failed, the round is retried and, after max_retries, the federation stops
    assert trains == MAX_HANDOUTS * (config.max_retries + 1)
    assert max(waits) >= 2.0 - 0.05
    assert fed.aborted is not None and "without an update" in fed.aborted


def test_failure_reports_and_stale_rounds_are_refused_by_name() -> None:
    clock = Clock()
    config = FederationConfig(rounds=2, min_clients=2, round_timeout_s=600, update_clip_norm=0)
    fed = Federation(config, SPEC, FederationState(1, {"text.global": np.zeros((4, 128), np.float32)}, {}),
                     clock=clock)
    fed.join("a", 10, SPEC)
    with pytest.raises(Refused, match="not sampled"):
        fed.report_failure("a", 1, FailureReason.OTHER)  # no round open yet
    fed.join("b", 10, SPEC)
    with pytest.raises(Refused, match="future round 2"):
        fed.report_failure("a", 2, FailureReason.OTHER)
    fed.submit("a", 1, serde.encode({"text.global": np.ones((4, 128), np.float32)}), 10, METRICS)
    with pytest.raises(Refused, match="already accepted"):
        fed.report_failure("a", 1, FailureReason.OTHER)


def _attempt(fed: Federation, clock: Clock, delivering: list[str], failing: str, silent: bool, round_: int) -> None:
    """One attempt: each delivering client is handed the round and submits; `failing` fails transiently
    (reports an out-of-memory, or stays silent until the deadline)."""
    for cid in delivering + [failing]:
        assert fed.task(cid).action == Action.TRAIN
    for cid in delivering:
        fed.submit(cid, round_, serde.encode({"text.global": np.ones((4, 128), np.float32)}), 10, METRICS)
    if silent:
        clock.now += fed.config.round_timeout_s + 1
        fed.tick()
    else:
        fed.report_failure(failing, round_, FailureReason.OUT_OF_MEMORY)
    clock.now += 5  # past the hand-out backoff of a client handed the round once


@pytest.mark.parametrize("max_retries", [1, 2, 3, 4, 5, 6])
def test_round_commits_at_the_last_allowed_attempt_after_transient_failures(max_retries: int) -> None:
    clock = Clock()
    config = FederationConfig(rounds=2, min_clients=3, quorum=3, round_timeout_s=30, max_retries=max_retries,
                              poll_interval_s=10)
    fed = Federation(config, SPEC, FederationState(1, {"text.global": np.zeros((4, 128), np.float32)}, {}),
                     clock=clock)
    for cid in "abc":
        fed.join(cid, 10, SPEC)
    with capture_logs() as logs:
        for attempt in range(max_retries):  # attempts 1..N fail: site c fails each time, a and b deliver
            _attempt(fed, clock, ["a", "b"], "c", silent=attempt % 2 == 1, round_=1)
            assert fed.round == 1 and fed.aborted is None
        for cid in "abc":  # attempt N + 1 (the N-th retry): everyone delivers
            assert fed.task(cid).action == Action.TRAIN
            fed.submit(cid, 1, serde.encode({"text.global": np.ones((4, 128), np.float32)}), 10, METRICS)
    assert fed.aborted is None and fed.round == 2
    assert fed.last_round is not None and fed.last_round.attempts == max_retries + 1
    failed = {e["client_id"] for e in logs if e["event"] == Event.CLIENT_FAILED_ROUND}
    assert failed == {"c"}  # a client that delivered is never reported failed


def test_round_failing_one_attempt_more_than_max_retries_stops_the_federation() -> None:
    clock = Clock()
    config = FederationConfig(rounds=2, min_clients=2, quorum=2, round_timeout_s=30, max_retries=3,
                              poll_interval_s=10)
    fed = Federation(config, SPEC, FederationState(1, {"text.global": np.zeros((4, 128), np.float32)}, {}),
                     clock=clock)
    for cid in "ab":
        fed.join(cid, 10, SPEC)
    for _ in range(3):
        _attempt(fed, clock, ["a"], "b", silent=False, round_=1)
        assert fed.aborted is None
    _attempt(fed, clock, ["a"], "b", silent=False, round_=1)
    assert fed.aborted is not None and "round 1 failed 4 times" in fed.aborted


def test_a_call_that_may_close_the_round_is_known_before_it_runs() -> None:
    """`closing` tells the servicer to run a call off the event loop: the last update awaited, or any call near
    the deadline (it may reach it while it runs and then close the round: FedAvg and the checkpoint)."""
    clock = Clock()
    config = FederationConfig(rounds=2, min_clients=3, round_timeout_s=60, update_clip_norm=0)
    fed = Federation(config, SPEC, FederationState(1, {"text.global": np.zeros((4, 128), np.float32)}, {}),
                     clock=clock)
    for c in "abc":
        fed.join(c, 10, SPEC)
    assert not any(fed.closing(c) for c in "abc")  # three updates awaited
    fed.submit("a", 1, serde.encode({"text.global": np.ones((4, 128), np.float32)}), 10, METRICS)
    assert not fed.closing("b")
    fed.submit("b", 1, serde.encode({"text.global": np.ones((4, 128), np.float32)}), 10, METRICS)
    assert fed.closing("c") and not fed.closing("a")  # c's is the last one awaited
    clock.now = 60 - CLOSE_MARGIN_S - 0.01
    assert not fed.closing("a")
    clock.now = 60 - CLOSE_MARGIN_S + 0.01
    assert fed.closing("a")  # a heartbeat this near the deadline may close the round
