"""The client's side of the wire: domain types in and out, with reconnect and backoff.

It encodes and hashes what the client sends, converts replies with common/wire.py, and turns every
refusal into `Refused` (a `Code` and the coordinator's message). Transient unavailability is retried with
exponential backoff and full jitter; after `max_attempts` it raises `CoordinatorUnreachable`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

import grpc
import numpy as np

from ..common import serde, wire, wire_secure
from ..common.logs import Event, get_logger
from ..common.messages import (
    MAX_HOLD_S,
    Code,
    FailureReason,
    FailureReport,
    FederationInfo,
    FederationRequest,
    HeartbeatRequest,
    JoinRequest,
    JoinResult,
    Metrics,
    Refused,
    SubmitResult,
    Task,
    TaskRequest,
    UpdateRequest,
)
from ..common.proto import federation_pb2_grpc as pb_grpc
from ..common.secagg.exchange import SPOKEN, SecureAnswer, SecureStep
from ..common.secagg.identity import Identity
from ..common.secagg.keys import RoundId
from ..common.spec import TensorSpec
from ..common.tlsprobe import CredentialError, diagnose, network_hint
from ..common.transport import TlsFiles, open_channel

log = get_logger("client")
T = TypeVar("T")
# Every call is idempotent (Join upserts, GetTask reads, an update or failure report repeats by content), so each
# is retried on these. gRPC cancels a few calls when thousands of connections open at once (CANCELLED).
TRANSIENT = (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.CANCELLED)
DIAGNOSE_INTERVAL_S = 60.0  # between two looks at why the coordinator is UNAVAILABLE (common/tlsprobe.py)


class CoordinatorUnreachable(ConnectionError):
    pass


class Stopped(RuntimeError):
    """The stop event was set while waiting to retry (SIGINT/SIGTERM): give up at once."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter; `max_attempts` 0 means retry forever."""

    initial_s: float = 0.5
    max_s: float = 30.0
    max_attempts: int = 10

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.max_s, self.initial_s * 2**attempt))


class Connection:
    def __init__(self, target: str, client_id: str, tls: TlsFiles | None = None, token: str | None = None,
                 backoff: Backoff | None = None, rpc_timeout_s: float = 60.0,
                 stop: threading.Event | None = None, join_secret: str | None = None,
                 signing_key: Identity | None = None) -> None:
        """`join_secret`: the secret this client keeps on its disk (`ClientStore.join_secret()`); a coordinator
        without client authentication binds it to the client id at the first join and then requires it.
        `signing_key`: the key it signs secure rounds with (`ClientStore.signing_key()`; none: a fresh one for
        this connection's life), whose public half every Join presents (the coordinator binds it)."""
        self.signing_key = signing_key or Identity.generate()
        self.target = target
        self.client_id = client_id
        self.backoff = backoff or Backoff()
        self.rpc_timeout_s = rpc_timeout_s
        self._rng = random.Random()
        self._stop = stop or threading.Event()  # set: backoff waits end at once (signals must not wait 30 s)
        self.tls = tls = tls or TlsFiles()
        self._diagnose_after = 0.0
        self._channel = open_channel(target, tls, token, join_secret)
        self._stub = pb_grpc.CoordinatorStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return call()
            except grpc.RpcError as exc:
                code = wire.rpc_code(exc)
                if code not in TRANSIENT:
                    raise Refused(code, wire.rpc_details(exc)) from None
                if code == Code.UNAVAILABLE and time.monotonic() >= self._diagnose_after:
                    # a certificate at fault looks the same as an outage: find out now, not after minutes of retries
                    # (a probe takes milliseconds, up to 5 s against a silent address: at most once a minute)
                    self._diagnose_after = time.monotonic() + DIAGNOSE_INTERVAL_S
                    problem = diagnose(self.target, self.tls)
                    if problem:
                        raise CredentialError(f"cannot reach the coordinator at {self.target}: {problem}") from None
                if self.backoff.max_attempts and attempt + 1 >= self.backoff.max_attempts:
                    raise CoordinatorUnreachable(
                        f"coordinator at {self.target} unreachable after {attempt + 1} attempts ({what}): "
                        f"{wire.rpc_details(exc)} -- {network_hint(self.target)}"
                    ) from exc
                delay = self.backoff.delay(attempt, self._rng)
                log.warning(Event.COORDINATOR_UNREACHABLE, call=what, attempt=attempt + 1,
                            retry_in_s=round(delay, 2), error=str(code), target=self.target)
                if self._stop.wait(delay):
                    raise Stopped(f"stopped while waiting to retry {what} at {self.target}") from None
                attempt += 1

    def federation(self) -> FederationInfo:
        request = wire.federation_request_to_proto(FederationRequest(self.client_id))
        return wire.info_from_proto(self._retry(
            "get_federation", lambda: self._stub.GetFederation(request, timeout=self.rpc_timeout_s)))

    def join(self, num_examples: int, spec: list[TensorSpec], class_names: tuple[str, ...] = ()) -> JoinResult:
        """Join (or re-join) with this client's count, model spec and class names, announcing what it supports."""
        request = wire.join_request_to_proto(JoinRequest(self.client_id, num_examples, spec, SPOKEN,
                                                         class_names, self.signing_key.credential))
        return wire.join_from_proto(self._retry("join", lambda: self._stub.Join(request, timeout=self.rpc_timeout_s)))

    def task(self, wait_s: float = 0.0) -> Task:
        """The next task. `wait_s` > 0: the coordinator holds the call while the answer would be WAIT (up to
        that long, at most 30 s), so a new round reaches the client the moment it opens."""
        request = wire.task_request_to_proto(TaskRequest(self.client_id, wait_s))
        timeout = self.rpc_timeout_s + _held(wait_s)
        return wire.task_from_proto(self._retry("get_task", lambda: self._stub.GetTask(request, timeout=timeout)))

    def submit(self, round_: int, tensors: Mapping[str, np.ndarray] | serde.Encoded, num_examples: int,
               metrics: Metrics, next_task_wait_s: float = 0.0) -> SubmitResult:
        """Send an update (`Encoded`: its bytes as they are). `next_task_wait_s` > 0: also wait (like
        `task(wait_s)`) for the next task and return it as `SubmitResult.next_task`: one call per round instead
        of two."""
        payload = tensors.payload if isinstance(tensors, serde.Encoded) else serde.encode(tensors)
        request = wire.update_request_to_proto(
            UpdateRequest(self.client_id, round_, payload, num_examples, metrics, next_task_wait_s))
        timeout = self.rpc_timeout_s + _held(next_task_wait_s)
        return wire.submit_from_proto(self._retry(
            "submit_update", lambda: self._stub.SubmitUpdate(request, timeout=timeout)))

    def heartbeat(self, round_: int = 0, timeout_s: float = 5.0) -> int:
        """One liveness call, not retried (the next one comes soon); returns the coordinator's round. Raises
        `Refused` on any refusal (UNIMPLEMENTED from a coordinator that predates heartbeats)."""
        request = wire.heartbeat_request_to_proto(HeartbeatRequest(self.client_id, round_))
        try:
            return wire.heartbeat_reply_from_proto(self._stub.Heartbeat(request, timeout=timeout_s))
        except grpc.RpcError as exc:
            raise Refused(wire.rpc_code(exc), wire.rpc_details(exc)) from None

    def secure(self, step: SecureStep, rid: RoundId, wait_s: float = MAX_HOLD_S) -> SecureAnswer:
        """One stage of secure aggregation (or, without a message, a poll), held up to `wait_s` while PENDING."""
        return self.secure_with_task(step, rid, wait_s)[0]

    def secure_with_task(self, step: SecureStep, rid: RoundId, wait_s: float = MAX_HOLD_S
                         ) -> tuple[SecureAnswer, Task | None]:
        """`secure`, and the next task when the step asked for it (`next_task_wait_s`) and the round committed."""
        request = wire_secure.step_to_proto(replace(step, max_wait_s=wait_s, run_id=rid.federation_id))
        timeout = self.rpc_timeout_s + _held(wait_s) + _held(step.next_task_wait_s)
        return wire.secure_answer_from_proto(self._retry("secure_aggregate", lambda: self._stub.SecureAggregate(
            request, timeout=timeout)), rid, self.client_id)

    def report_failure(self, round_: int, reason: FailureReason, detail: str = "", attempt: int = 0) -> SubmitResult:
        """Tell the coordinator this client cannot produce an update for `round_` (it stops waiting for it);
        `attempt`: the secure attempt a PEER_REFUSED report is about."""
        request = wire.failure_to_proto(FailureReport(self.client_id, round_, reason, detail, attempt))
        return wire.failure_reply_from_proto(self._retry(
            "report_failure", lambda: self._stub.ReportFailure(request, timeout=self.rpc_timeout_s)))


def _held(wait_s: float) -> float:
    """How long the coordinator may hold a call asked to wait `wait_s`: at most MAX_HOLD_S, not at all for NaN or
    <= 0 (what the call's deadline must leave room for; an unbounded one would be no deadline gRPC accepts)."""
    return min(wait_s, MAX_HOLD_S) if wait_s > 0 else 0.0


def global_tensors(task: Task) -> dict[str, np.ndarray]:
    """The global prompts `task` carries, after checking they are the bytes the coordinator hashed."""
    return serde.decode_verified(task.payload, task.sha256, f"global prompts of round {task.round}")
