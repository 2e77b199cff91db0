"""Push instead of poll: held calls answer the moment a round opens; old polling clients keep working."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from structlog.testing import capture_logs
from tests_support import StartCoordinator

from pfeddc.client.connection import Backoff, Connection
from pfeddc.common import serde
from pfeddc.common.messages import Action, Metrics, Task
from pfeddc.common.spec import TensorSpec
from pfeddc.server.round.federation import Federation, FederationConfig, FederationState
from pfeddc.server.round.longpoll import ChangeFeed

SPEC = [TensorSpec("text.global", (4, 128))]
FLAGS = ("--rounds", "2", "--min-clients", "2", "--method", "promptfl", "--text-ctx", "4", "--poll-interval", "5")
METRICS = Metrics(train_loss=0.5, accuracy_before=0.1, accuracy_after=0.2, num_test_examples=5)
UPDATE = {"text.global": np.full((4, 128), 0.01, np.float32)}


def connect(port: int, client_id: str) -> Connection:
    return Connection(f"127.0.0.1:{port}", client_id, backoff=Backoff(0.05, 0.2, 3), rpc_timeout_s=10)


def in_thread(call: object) -> tuple[threading.Thread, dict[str, object]]:
    box: dict[str, object] = {}

    def run() -> None:
        box["result"] = call()  # type: ignore[operator]
        box["at"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def test_held_get_task_answers_train_the_moment_the_round_opens(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS)
    a, b = connect(server.port, "site-a"), connect(server.port, "site-b")
    a.join(10, SPEC)
    assert a.task().action == Action.WAIT  # an old client: answered at once, told to poll in 5 s
    thread, box = in_thread(lambda: a.task(wait_s=20))
    time.sleep(0.3)
    assert thread.is_alive()  # held: nothing has changed yet
    joined_at = time.monotonic()
    b.join(10, SPEC)  # the second client opens round 1
    thread.join(10)
    task = box["result"]
    assert isinstance(task, Task) and task.action == Action.TRAIN and task.round == 1
    assert float(box["at"]) >= joined_at  # type: ignore[arg-type]


def test_submit_can_carry_the_next_task_in_the_same_call(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS)
    a, b = connect(server.port, "site-a"), connect(server.port, "site-b")
    a.join(10, SPEC)
    b.join(10, SPEC)
    thread, box = in_thread(lambda: a.submit(1, UPDATE, 10, METRICS, next_task_wait_s=20))
    time.sleep(0.3)
    assert thread.is_alive()  # round 1 still waits for site-b
    b.submit(1, UPDATE, 10, METRICS)
    thread.join(10)
    result = box["result"]
    assert result.next_task is not None and result.next_task.action == Action.TRAIN  # type: ignore[attr-defined]
    assert result.next_task.round == 2  # type: ignore[attr-defined]


def test_a_held_call_that_runs_its_course_says_ask_again_now(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS)
    a = connect(server.port, "site-a")
    a.join(10, SPEC)
    task = a.task(wait_s=0.3)
    assert task.action == Action.WAIT and task.retry_after_s == 0.0


def test_held_calls_are_released_when_the_server_stops(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS)
    a = connect(server.port, "site-a")
    a.join(10, SPEC)
    thread, box = in_thread(lambda: a.task(wait_s=25))
    time.sleep(0.3)
    started = time.monotonic()
    server.stop(1)
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 3
    assert isinstance(box.get("result"), Task)


def test_beyond_the_held_call_limit_clients_are_answered_at_once(coordinator: StartCoordinator) -> None:
    server = coordinator(*FLAGS, "--max-held-calls", "1")
    a, b = connect(server.port, "site-a"), connect(server.port, "site-c")
    a.join(10, SPEC)
    b.join(10, [TensorSpec("text.global", (4, 128))])  # opens the round; site-z stays unsampled below
    connect(server.port, "site-z").join(10, SPEC)
    first, _ = in_thread(lambda: connect(server.port, "site-z").task(wait_s=3))
    time.sleep(0.3)
    started = time.monotonic()
    second = connect(server.port, "site-z").task(wait_s=3)
    assert second.action == Action.WAIT and time.monotonic() - started < 1.0 and second.retry_after_s == 5.0
    first.join(5)


def test_change_feed_wakes_waiters_on_change_and_not_otherwise() -> None:
    async def held() -> None:
        feed = ChangeFeed()
        feed.attach(asyncio.get_running_loop())
        version = feed.version
        started = time.monotonic()
        assert await feed.wait_async(version, 0.1)  # nothing changed: the full timeout
        assert time.monotonic() - started >= 0.1
        threading.Timer(0.05, feed.notify).start()  # from another thread, as the federation's calls do
        started = time.monotonic()
        await feed.wait_async(version, 5.0)
        assert time.monotonic() - started < 2.0

    asyncio.run(held())


def test_updates_are_parsed_and_logs_rendered_outside_the_federation_lock(tmp_path: Path,
                                                                          monkeypatch: object) -> None:
    fed = Federation(FederationConfig(rounds=2, min_clients=2), SPEC,
                     FederationState(1, {"text.global": np.zeros((4, 128), np.float32)}, {}))
    held_while: dict[str, bool] = {}
    from pfeddc.server.round import federation as module

    real_check = module.accept

    def spy_check(*args: object, **kwargs: object) -> object:
        held_while["parse"] = fed._section.lock._is_owned()  # type: ignore[attr-defined]
        return real_check(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "accept", spy_check)  # type: ignore[attr-defined]
    rendered: list[bool] = []

    def spy(_logger: object, _name: str, event: dict[str, object]) -> dict[str, object]:
        rendered.append(fed._section.lock._is_owned())  # type: ignore[attr-defined]
        return event

    with capture_logs():
        structlog.get_config()["processors"].insert(0, spy)
        fed.join("a", 10, SPEC)
        fed.join("b", 10, SPEC)
        fed.submit("a", 1, serde.encode(UPDATE), 10, METRICS)
    assert held_while == {"parse": False}
    assert rendered and not any(rendered)


@pytest.mark.parametrize("holder", ["snapshot", "heartbeat", "submit"])
def test_every_holder_of_the_federation_wakes_the_calls_waiting_for_it(monkeypatch: pytest.MonkeyPatch,
                                                                        holder: str) -> None:
    """A call on the event loop that finds the federation held waits for a `when_free` callback: whichever path
    held it (the status page's snapshot, a heartbeat off the loop, an update) must call it as it leaves, or the
    call waits for whatever comes next (a review found the first two took the lock around the section)."""
    fed = Federation(FederationConfig(rounds=2, min_clients=2), SPEC,
                     FederationState(1, {"text.global": np.zeros((4, 128), np.float32)}, {}))
    fed.join("a", 10, SPEC)
    fed.join("b", 10, SPEC)
    inside, release = threading.Event(), threading.Event()
    from pfeddc.server.round import federation as module

    def held(real: Any) -> Any:
        def hold(*args: Any, **kwargs: Any) -> Any:
            inside.set()
            assert release.wait(10)
            return real(*args, **kwargs)
        return hold

    calls = {"snapshot": (module.Rounds, "view", fed.snapshot),
             "heartbeat": (Federation, "_touch", lambda: fed.heartbeat("a")),
             "submit": (module.Rounds, "accept", lambda: fed.submit("a", 1, serde.encode(UPDATE), 10, METRICS))}
    owner, name, call = calls[holder]
    monkeypatch.setattr(owner, name, held(getattr(owner, name)))
    thread = threading.Thread(target=call)
    thread.start()
    assert inside.wait(10)
    assert not fed.try_enter()  # held by the other thread
    woken: list[str] = []
    fed.when_free(lambda: woken.append("woken"))
    release.set()
    thread.join(10)
    assert woken == ["woken"]
    assert fed.try_enter()
    fed.leave()
