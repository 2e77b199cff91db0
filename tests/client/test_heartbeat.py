"""The client's heartbeat: regular while it runs, quiet about lost beats, stops against an old coordinator."""

from __future__ import annotations

import threading
import time

from pfeddc.client.heartbeat import Heartbeat
from pfeddc.common.messages import Code, Refused


class FakeConnection:
    client_id = "site-a"

    def __init__(self, refuse: Code | None = None) -> None:
        self.calls: list[int] = []
        self.refuse = refuse

    def heartbeat(self, round_: int = 0, timeout_s: float = 5.0) -> int:
        self.calls.append(round_)
        if self.refuse:
            raise Refused(self.refuse, "no")
        return 1


def test_heartbeat_beats_with_the_round_being_trained_and_survives_lost_beats() -> None:
    conn = FakeConnection()
    with Heartbeat(conn, threading.Event(), interval_s=0.02) as beat:
        beat.round = 3
        time.sleep(0.2)
    assert len(conn.calls) >= 3 and 3 in conn.calls
    flaky = FakeConnection(Code.UNAVAILABLE)
    with Heartbeat(flaky, threading.Event(), interval_s=0.02):
        time.sleep(0.15)
    assert len(flaky.calls) >= 3  # a lost beat is not the end: the next one comes


def test_heartbeat_stops_for_good_against_a_coordinator_without_it() -> None:
    conn = FakeConnection(Code.UNIMPLEMENTED)
    with Heartbeat(conn, threading.Event(), interval_s=0.02):
        time.sleep(0.2)
    assert len(conn.calls) == 1
