"""A thin, torch-free client of the coordinator's gRPC service, with reconnect and backoff.

Returns plain values; gRPC errors other than transient unavailability propagate as `grpc.RpcError`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from pfeddc.common.logs import get_logger
from pfeddc.common.proto import federation_pb2 as pb
from pfeddc.common.proto import federation_pb2_grpc as pb_grpc
from pfeddc.common.spec import PromptConfig, TensorSpec
from pfeddc.common.transport import TlsFiles, open_channel

log = get_logger("client")
T = TypeVar("T")
TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class CoordinatorUnreachable(ConnectionError):
    pass


@dataclass(frozen=True)
class FederationInfo:
    federation_id: str
    total_rounds: int
    current_round: int
    model: str
    prompt_config: PromptConfig
    spec: list[TensorSpec]


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
                 backoff: Backoff | None = None, rpc_timeout_s: float = 60.0) -> None:
        self.target, self.client_id = target, client_id
        self.backoff = backoff or Backoff()
        self.rpc_timeout_s = rpc_timeout_s
        self._rng = random.Random()
        tls = tls or TlsFiles()
        self._hint = (" -- with TLS, check that --tls-ca is the CA that signed the coordinator's certificate, that "
                      "no certificate has expired, and that the address matches the certificate's names"
                      if tls.enabled else
                      " -- if the coordinator uses TLS, pass --tls-ca (plaintext cannot reach a TLS coordinator)")
        self._channel = open_channel(target, tls, token)
        self._stub = pb_grpc.CoordinatorStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return call()
            except grpc.RpcError as exc:
                code = exc.code()  # type: ignore[attr-defined]
                if code not in TRANSIENT:
                    raise
                if self.backoff.max_attempts and attempt + 1 >= self.backoff.max_attempts:
                    raise CoordinatorUnreachable(
                        f"coordinator at {self.target} unreachable after {attempt + 1} attempts ({what}): "
                        f"{exc.details()}{self._hint}"  # type: ignore[attr-defined]
                    ) from exc
                delay = self.backoff.delay(attempt, self._rng)
                log.warning("coordinator_unreachable", call=what, attempt=attempt + 1, retry_in_s=round(delay, 2),
                            error=code.name, target=self.target)
                time.sleep(delay)
                attempt += 1

    def federation(self) -> FederationInfo:
        reply = self._retry("get_federation", lambda: self._stub.GetFederation(
            pb.FederationRequest(client_id=self.client_id), timeout=self.rpc_timeout_s))
        return FederationInfo(
            reply.federation_id, reply.total_rounds, reply.current_round, reply.model,
            PromptConfig.from_dict(json.loads(reply.prompt_config_json)),
            [TensorSpec.from_proto(s) for s in reply.spec],
        )

    def join(self, num_examples: int, spec: list[TensorSpec]) -> pb.JoinReply:
        request = pb.JoinRequest(client_id=self.client_id, num_examples=num_examples,
                                 spec=[s.to_proto() for s in spec])
        return self._retry("join", lambda: self._stub.Join(request, timeout=self.rpc_timeout_s))

    def task(self) -> pb.TaskReply:
        request = pb.TaskRequest(client_id=self.client_id)
        return self._retry("get_task", lambda: self._stub.GetTask(request, timeout=self.rpc_timeout_s))

    def submit(self, round_: int, payload: bytes, num_examples: int, metrics: Mapping[str, Any]) -> pb.UpdateReply:
        request = pb.UpdateRequest(client_id=self.client_id, round=round_, global_state=payload,
                                   num_examples=num_examples, metrics=pb.Metrics(**metrics))
        return self._retry("submit_update", lambda: self._stub.SubmitUpdate(request, timeout=self.rpc_timeout_s))
