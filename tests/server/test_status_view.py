"""The status model: a heartbeat window independent of the round timeout, failures and retries listed as
incidents, a finished federation that says "3 of 3", an aborted one that says why."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pfeddc.common import serde
from pfeddc.common.messages import HEARTBEAT_INTERVAL_S, FailureReason, Metrics
from pfeddc.common.spec import TensorSpec
from pfeddc.server.ops import admin_wire
from pfeddc.server.ops.status import StatusSource
from pfeddc.server.ops.status_doc import ClientState, Phase
from pfeddc.server.ops.status_table import render_table
from pfeddc.server.round.federation import Federation, FederationConfig, FederationState
from pfeddc.server.round.incidents import IncidentKind

SPEC = [TensorSpec("text.global", (4, 128))]
METRICS = Metrics(train_loss=0.5, accuracy_global=0.3, accuracy_after=0.6, num_test_examples=5)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, **config: object) -> tuple[Federation, StatusSource, Clock]:
    clock = Clock()
    settings = {"rounds": 3, "min_clients": 2, "round_timeout_s": 3600.0, **config}
    fed = Federation(FederationConfig(**settings),  # type: ignore[arg-type]
                     SPEC, FederationState(1, {"text.global": np.zeros((4, 128), np.float32)}, {}), clock=clock)
    return fed, StatusSource(fed, "fid", "embedded", "promptfl", "0", tmp_path / "rounds.jsonl"), clock


def update(value: float) -> bytes:
    return serde.encode({"text.global": np.full((4, 128), value, np.float32)})


def states(source: StatusSource) -> dict[str, ClientState]:
    return {c.client_id: c.state for c in source.status().clients}


def test_status_view_shows_a_silent_client_offline_after_the_heartbeat_window_not_the_round_timeout(
        tmp_path: Path) -> None:
    fed, source, clock = make(tmp_path, heartbeat_window_s=25.0)
    for cid in ("site-a", "site-b"):
        fed.join(cid, 10, SPEC)
    assert states(source) == {"site-a": ClientState.TRAINING, "site-b": ClientState.TRAINING}
    for _ in range(5):  # site-a beats while it trains; site-b was stopped
        clock.now += HEARTBEAT_INTERVAL_S
        assert fed.heartbeat("site-a") == 1
    assert states(source) == {"site-a": ClientState.TRAINING, "site-b": ClientState.OFFLINE}
    s = source.status()
    assert s.online_window_s == 25.0 and s.phase == Phase.TRAINING and s.deadline_s is not None
    assert s.deadline_s > 3000  # the round itself still waits for its timeout


def test_status_view_lists_failures_and_retries_and_says_retrying(tmp_path: Path) -> None:
    fed, source, clock = make(tmp_path, min_clients=1, max_retries=2)
    fed.join("site-a", 10, SPEC)
    fed.task("site-a")
    fed.report_failure("site-a", 1, FailureReason.DIVERGED, "loss became NaN")
    s = source.status()
    assert s.attempt == 1 and s.max_retries == 2
    assert [i.kind for i in s.incidents] == [IncidentKind.ROUND_RETRIED, IncidentKind.CLIENT_FAILED]
    assert s.incidents[1].client_id == "site-a" and "loss became NaN" in s.incidents[1].reason
    assert "round 1 of 3, attempt 2 of 3 (retrying)" in render_table(s)
    assert "client_failed  site-a: diverged: loss became NaN" in render_table(s)
    clock.now += 60  # past the hand-out backoff: sampled again in attempt 2, then failed in it
    fed.task("site-a")
    fed.report_failure("site-a", 1, FailureReason.OUT_OF_MEMORY)
    assert states(source) == {"site-a": ClientState.TRAINING}  # attempt 3 opened at once
    again = admin_wire.status_from_proto(admin_wire.status_to_proto(source.status()))  # as `status` sees it
    assert again.incidents == source.status().incidents and again.attempt == 2


def test_status_view_shows_a_failed_client_while_the_round_goes_on(tmp_path: Path) -> None:
    fed, source, _ = make(tmp_path)
    for cid in ("site-a", "site-b"):
        fed.join(cid, 10, SPEC)
    fed.task("site-a")
    fed.report_failure("site-a", 1, FailureReason.COLLAPSED, "one class everywhere")
    s = source.status()
    site_a = next(c for c in s.clients if c.client_id == "site-a")
    assert site_a.state == ClientState.FAILED and "one class everywhere" in site_a.failure
    assert "0 of 2 updates received, 1 failed" in render_table(s)


def test_status_view_of_an_aborted_federation_names_the_cause(tmp_path: Path) -> None:
    fed, source, clock = make(tmp_path, min_clients=1, max_retries=0)
    fed.join("site-a", 10, SPEC)
    fed.task("site-a")
    fed.report_failure("site-a", 1, FailureReason.OUT_OF_MEMORY)
    s = source.status()
    assert s.phase == Phase.ABORTED and s.aborted and "round 1 failed 1 times" in s.aborted
    assert s.incidents[0].kind == IncidentKind.FEDERATION_ABORTED
    assert "round 1 of 3 (aborted): round 1 failed" in render_table(s)
    assert admin_wire.status_from_proto(admin_wire.status_to_proto(s)).phase == Phase.ABORTED


def test_status_view_of_a_finished_federation_says_3_of_3_never_round_4(tmp_path: Path) -> None:
    fed, source, clock = make(tmp_path)
    for cid in ("site-a", "site-b"):
        fed.join(cid, 10, SPEC)
    for round_ in (1, 2, 3):
        for cid in ("site-a", "site-b"):
            fed.task(cid)
            fed.submit(cid, round_, update(0.1 * round_), 10, METRICS)
    s = source.status()
    assert s.phase == Phase.FINISHED and (s.round, s.rounds_completed) == (3, 3)
    table = render_table(s)
    assert "3 of 3 rounds (finished)" in table and "round 4" not in table
    assert s.to_json()["progress"] == "3 of 3 rounds (finished)"
    assert "ACC GLOBAL" in table and "30.0%" in table  # the global prompts' accuracy, reported by clients
    assert admin_wire.status_from_proto(admin_wire.status_to_proto(s)).round == 3
