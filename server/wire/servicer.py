"""The gRPC face of the federation: authenticate, convert with the wire layer, call the domain.

Requests arrive as raw bytes and pass the gate first (server/wire/gate.py: a credential, the size, the parse), then
`_call` binds the client_id to the credential. Every refusal becomes a status code in one place (`_abort`); the
conversions live in common/wire.py. A GetTask (or a SubmitUpdate asking for its next task) that would be told to
WAIT is held open until the federation changes (server/round/longpoll.py), so a client learns of a new round the
moment it opens. The methods are coroutines served by grpc.aio (server/wire/aioserver.py). The federation's calls
are synchronous: most are quick and run on the event loop (once no other thread holds the federation: `_enter`);
a large update or message, and a call that may close a round or stage, run on a worker thread
(INLINE_UPDATE_BYTES, `Federation.closing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NoReturn, TypeVar

import grpc

from ...common import wire
from ...common.logs import get_logger
from ...common.messages import (
    MAX_HOLD_S,
    Action,
    Code,
    FailureReport,
    FederationInfo,
    FederationRequest,
    HeartbeatRequest,
    JoinRequest,
    JoinResult,
    Refused,
    Task,
    TaskRequest,
    UpdateRequest,
)
from ...common.secagg.exchange import SecureStep, Status
from ...common.secagg.protocol import SharesChecked
from ...common.spec import PromptConfig
from ...common.transport import JOIN_SECRET_METADATA_KEY, is_loopback
from ..round.federation import Federation
from .auth import Authenticator
from .gate import Gate, R, register
from .rpcs import RPCS

T = TypeVar("T")
log = get_logger("coordinator")
# An update (or a secure round's message: a masked vector, keys, shares) up to this size is handled on the event
# loop: its decode and checks take about 0.1-0.4 ms, and handing it to a worker thread and back cost more CPU than
# that (the hop and the GIL's hand-overs: +0.024 CPU-s per plain round of 100 82-KB updates, -18% of a secure
# round's coordinator CPU at N=100; benchmarks/results/coordinator_cost.md, section 7). A larger one goes to a
# worker thread, so its decode never holds the loop (and every other call, the health checks too) for long; so does
# a call that may close a round or stage (`Federation.closing`: FedAvg and the checkpoint's fsync, or unmasking the
# sum, tens of milliseconds at 100 sites, longer on a slow disk). While another thread holds the federation, a call
# on the loop awaits a future the holder resolves as it leaves (`_enter`) rather than its lock, which would stop
# the loop; a hop to a worker thread for each of them cost 1.12x the CPU of a round at N=100. A small update is
# thus decoded inside the federation's section (0.1-0.4 ms each), where worker threads decode a large one outside
# it; a round opened by a call (a Join that completes the quorum) is opened on the loop.
INLINE_UPDATE_BYTES = 256 * 1024
CREDENTIAL_CODES = (Code.UNAUTHENTICATED, Code.PERMISSION_DENIED)


class CoordinatorServicer:
    def __init__(self, federation: Federation, auth: Authenticator, federation_id: str, model: str,
                 prompt_config: PromptConfig) -> None:
        self.federation = federation
        self.auth = auth
        self.federation_id = federation_id
        self.model = model
        self.prompt_config = prompt_config
        self.gate = Gate(auth, lambda: federation.spec, log.warning, federation.config.secure_aggregation,
                         lambda: federation.classes_pending)

    def register(self, server: Any) -> None:
        register(server, {name: getattr(self, name) for name in RPCS})

    async def _open(self, context: grpc.aio.ServicerContext, method: str, raw: bytes, kind: type[R]) -> R:
        try:
            return self.gate.open(context, method, raw, kind)
        except Refused as exc:
            await _abort(context, exc)

    async def _call(self, context: grpc.aio.ServicerContext, method: str, client_id: str, fn: Callable[[], T],
                    off_loop: bool = False, abort: bool = True, federation: bool = True) -> T:
        """Authenticate as `method`'s row says (server/wire/rpcs.py: in open mode a bound call must hold the join
        secret bound to `client_id`), run `fn`, map a refusal to its status. `fn` runs on the loop inside the
        federation's section (entered without waiting on its lock: `_enter`), or on a worker thread when it may
        close a round or stage (`Federation.closing`) or `off_loop` asks (a large update: INLINE_UPDATE_BYTES).
        `abort=False`: a refusal is raised to the caller, the call goes on. `federation=False`: `fn` touches no
        federation state (no section entered)."""
        try:
            self.auth.check(context, client_id)  # type: ignore[arg-type]  # the aio context has the same accessors
            if RPCS[method].bound and not self.auth.enabled:
                self.federation.authorize(client_id, _join_secret(context))
            if not federation:  # `fn` does not touch the federation: nothing to wait for
                return fn()
            if not off_loop:
                fed = self.federation
                await _enter(fed)
                try:
                    if not fed.closing(client_id):
                        return fn()
                finally:
                    fed.leave()
            return await asyncio.to_thread(fn)
        except Refused as exc:
            if not abort:
                raise
            if exc.code in CREDENTIAL_CODES:
                self.gate.caller_refused(context, "client_id check", exc)
            await _abort(context, exc)

    async def _hold(self, context: grpc.aio.ServicerContext, client_id: str, max_wait_s: float,
                    abort: bool = True) -> Task:
        """The client's task; while it is WAIT, hold the call until the federation changes or the wait ends."""
        fed = self.federation
        deadline = time.monotonic() + _hold_for(context, max_wait_s)
        while True:
            version = fed.changes.version
            task = await self._call(context, "GetTask", client_id, lambda: fed.task(client_id), abort=abort)
            left = deadline - time.monotonic()
            if task.action != Action.WAIT:
                return task
            if left <= 0:  # the wait ran its course: ask again now (or when a backoff ends)
                return replace(task, retry_after_s=fed.backoff_left(client_id))
            backoff = fed.backoff_left(client_id)
            if not await fed.changes.wait_async(version, min(left, backoff) if backoff > 0 else left, client_id):
                return task  # too many held calls (or stopping): answer at once, the client polls

    async def _next_task(self, context: grpc.aio.ServicerContext, client_id: str, max_wait_s: float) -> Task | None:
        """The next task, asked for in the call that delivered this round's part; None when it is refused (the
        client then asks GetTask): the refusal must not turn what the call already did into an error."""
        try:
            return await self._hold(context, client_id, max_wait_s, abort=False)
        except Refused:
            return None

    async def GetFederation(self, raw: bytes, context: grpc.aio.ServicerContext) -> wire.Reply:
        request = await self._open(context, "GetFederation", raw, FederationRequest)
        await self._call(context, "GetFederation", request.client_id, lambda: None, federation=False)
        fed = self.federation
        prompt = replace(self.prompt_config, classes=fed.classes)
        return wire.info_to_proto(FederationInfo(self.federation_id, fed.config.rounds, fed.round, self.model,
                                                 prompt, fed.spec, fed.classes_pending))

    async def Join(self, raw: bytes, context: grpc.aio.ServicerContext) -> wire.Reply:
        request = await self._open(context, "Join", raw, JoinRequest)
        fed = self.federation
        secret = _join_secret(context) if not self.auth.enabled else None
        peer = _remote_peer(context) if not self.auth.enabled else None
        weight = await self._call(context, "Join", request.client_id, lambda: fed.join(
            request.client_id, request.num_examples, request.spec, secret, peer, request.capabilities,
            request.class_names, request.signing_key))
        return wire.join_to_proto(JoinResult(self.federation_id, fed.config.rounds, fed.round, weight))

    async def GetTask(self, raw: bytes, context: grpc.aio.ServicerContext) -> wire.Reply:
        request = await self._open(context, "GetTask", raw, TaskRequest)
        client_id = request.client_id
        fed = self.federation
        if request.max_wait_s > 0:
            task = await self._hold(context, client_id, request.max_wait_s)
        else:
            task = await self._call(context, "GetTask", client_id, lambda: fed.task(client_id))
        return wire.task_to_proto(task)

    async def SubmitUpdate(self, raw: bytes, context: grpc.aio.ServicerContext) -> wire.Reply:
        request = await self._open(context, "SubmitUpdate", raw, UpdateRequest)
        client_id = request.client_id
        fed = self.federation
        result = await self._call(context, "SubmitUpdate", client_id, lambda: fed.submit(
            client_id, request.round, request.payload, request.num_examples, request.metrics),
            off_loop=len(request.payload) > INLINE_UPDATE_BYTES)
        if request.next_task_wait_s > 0:
            result = replace(result, next_task=await self._next_task(context, client_id, request.next_task_wait_s))
        return wire.submit_to_proto(result)

    async def ReportFailure(self, raw: bytes, context: grpc.aio.ServicerContext) -> wire.Reply:
        request = await self._open(context, "ReportFailure", raw, FailureReport)
        result = await self._call(context, "ReportFailure", request.client_id, lambda: self.federation.report_failure(
            request.client_id, request.round, request.reason, request.detail, request.attempt))
        return wire.failure_reply_to_proto(result)

    async def Heartbeat(self, raw: bytes, context: grpc.aio.ServicerContext) -> wire.Reply:
        request = await self._open(context, "Heartbeat", raw, HeartbeatRequest)
        round_ = await self._call(context, "Heartbeat", request.client_id,
                                  lambda: self.federation.heartbeat(request.client_id))
        return wire.heartbeat_reply_to_proto(round_)

    async def SecureAggregate(self, raw: bytes, context: grpc.aio.ServicerContext) -> wire.Reply:
        step = await self._open(context, "SecureAggregate", raw, SecureStep)
        fed = self.federation
        client_id = step.client_id
        deadline = time.monotonic() + _hold_for(context, step.max_wait_s)
        while True:  # the message counts once; then the call is held while the answer is PENDING
            version = fed.changes.version
            answer = await self._call(context, "SecureAggregate", client_id, functools.partial(fed.secure_step, step),
                                      off_loop=step.message is not None and _heavy(step.message, raw))
            left = deadline - time.monotonic()
            if answer.status != Status.PENDING or left <= 0 or not await fed.changes.wait_async(version, left,
                                                                                                  client_id):
                following = None
                if answer.status == Status.DONE and step.next_task_wait_s > 0:  # the round's last call asks on
                    following = await self._next_task(context, client_id, step.next_task_wait_s)
                return wire.secure_answer_to_proto(answer, following)
            step = replace(step, message=None)


def _heavy(message: object, raw: bytes) -> bool:
    """A secure message whose handling may take long: a large one, or a check with complaints (each is judged on
    its evidence: a key exchange and a decryption per complaint, up to one per peer)."""
    return len(raw) > INLINE_UPDATE_BYTES or bool(isinstance(message, SharesChecked) and message.complaints)


def _hold_for(context: grpc.aio.ServicerContext, asked: float) -> float:
    """How long a call that asked to be held `asked` seconds may be: at most MAX_HOLD_S and the caller's own
    deadline, and not at all for NaN or <= 0 (a NaN deadline never passes: the call re-asked in a loop)."""
    remaining = context.time_remaining()
    return min(asked, MAX_HOLD_S, (remaining - 0.5) if remaining is not None else MAX_HOLD_S) if asked > 0 else 0.0


async def _enter(fed: Federation) -> None:
    """Enter the federation's section from the event loop without waiting on its lock: while another thread holds
    it (a round closing, a checkpoint written), await a future that thread resolves as it leaves, so every other
    call goes on meanwhile and a waiting call costs nothing until then."""
    loop = asyncio.get_running_loop()
    while not fed.try_enter():
        freed: asyncio.Future[None] = loop.create_future()
        fed.when_free(functools.partial(_resolve_soon, loop, freed))
        if fed.try_enter():  # the holder left between the two asks: the callback, when it comes, does nothing
            return
        await freed


def _resolve_soon(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    """From the thread that left the section: resolve `future` on its loop (unless the loop has closed)."""
    with contextlib.suppress(RuntimeError):  # the loop closed (the server stopping): nobody waits any more
        loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # cancelled when its call was, or resolved already
        future.set_result(None)


async def _abort(context: grpc.aio.ServicerContext, exc: Refused) -> NoReturn:
    await context.abort(wire.status_of(exc.code), exc.message)
    raise AssertionError("unreachable")  # abort raises


def _remote_peer(context: grpc.aio.ServicerContext) -> str | None:
    """The caller's address without its port ("ipv4:10.1.2.3"), or None for a loopback (or unknown) caller."""
    peer = (context.peer() or "").replace("%5B", "[").replace("%5D", "]")
    host = peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else ""
    address = host.split(":", 1)[-1].strip("[]")
    return None if not address or is_loopback(address) else host


def _join_secret(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == JOIN_SECRET_METADATA_KEY and isinstance(value, str):
            return value
    return None
