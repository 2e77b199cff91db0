"""Who may do what: the checks a request passes before it may change the federation. Each raises `Refused`
naming the problem and changes nothing; the federation calls them (under its lock where they read the round)."""

from __future__ import annotations

from typing import Protocol

from ...common.ids import client_id_problem
from ...common.messages import Code, Refused, SubmitResult
from ...common.secagg.exchange import CAPABILITY, SecureStep
from ...common.secagg.identity import signing_key_problem
from ...common.spec import TensorSpec, class_names_problem, classes_outside, spec_difference
from .attempt import Attempt
from .config import FederationConfig
from .sampling import evictable
from .secure import SecureRun
from .state import ClientRecord, FederationState, refuse_another_key


class Rounds(Protocol):
    """What the checks read of the round (server/round/rounds.py owns and writes it)."""

    config: FederationConfig
    state: FederationState
    attempt: Attempt
    pending: FederationState | None
    aborted: str | None
    last_closed: dict[str, str]
    ended_secure: SecureRun | None

    @property
    def round(self) -> int: ...

    @property
    def finished(self) -> bool: ...


def check_join(config: FederationConfig, spec: list[TensorSpec], client_id: str, num_examples: int,
               their_spec: list[TensorSpec], secret: str | None, capabilities: frozenset[str],
               signing_key: bytes = b"") -> None:
    """A Join's own values, before the lock: the id, the example count, the model's spec, the join secret,
    the signing key, and in a secure federation the client's support for it."""
    problem = client_id_problem(client_id)
    if problem:
        raise Refused(Code.INVALID_ARGUMENT, problem)
    if num_examples <= 0:
        raise Refused(Code.INVALID_ARGUMENT, f"num_examples must be > 0, got {num_examples}")
    diff = spec_difference(spec, their_spec)
    if diff:
        raise Refused(Code.FAILED_PRECONDITION, f"model spec differs from the federation's: {diff} (the same "
                                                "model and flags, and the same pfeddc version on the coordinator "
                                                "and every site: upgrade whichever is older)")
    if config.secure_aggregation and CAPABILITY not in capabilities:
        raise Refused(Code.FAILED_PRECONDITION, "this federation runs secure aggregation (the coordinator sees only "
                                                "the sum of the sites' changes) and this client does not support it: "
                                                f"upgrade pfeddc on this site (a client that announces {CAPABILITY!r}; "
                                                "upgrade the sites before their coordinator: a newer site follows an "
                                                "older coordinator)")
    key_problem = signing_key_problem(signing_key) if signing_key else None
    if key_problem:
        raise Refused(Code.INVALID_ARGUMENT, f"signing_key: {key_problem}")
    if config.binds_signing_keys and not signing_key:
        raise Refused(Code.FAILED_PRECONDITION, "this federation signs secure rounds with the key each site binds "
                                                "at Join (it runs without client certificates) and this Join "
                                                "carries none: upgrade pfeddc on this site")
    if config.require_join_secret and not secret:
        raise Refused(Code.UNAUTHENTICATED, "this coordinator runs without client authentication: every Join "
                                            "must carry a join secret (pfeddc-client keeps one in its state dir)")


def check_classes(federation: tuple[str, ...], site: tuple[str, ...]) -> None:
    """A Join's class names: bounded, and (once the federation's list is fixed) all in it."""
    problem = class_names_problem(site)
    if problem:
        raise Refused(Code.INVALID_ARGUMENT, problem)
    outside = classes_outside(federation, site) if federation else []
    if outside:
        raise Refused(Code.FAILED_PRECONDITION, f"classes {outside} are not in the federation's class list "
                                                f"{list(federation)}: relabel them (or merge them into a listed "
                                                "class), or start a new federation whose --classes lists them")


def check_room(config: FederationConfig, clients: int, joins_from_peer: int | None) -> None:
    """A new client id: the registry's cap, and (open mode) the cap of new ids from one peer address."""
    if clients >= config.max_clients:
        raise Refused(Code.RESOURCE_EXHAUSTED, f"the federation already has {clients} clients, its --max-clients, "
                                               "and none that could make room (ids that never delivered an update "
                                               "expire after --client-ttl unseen, or after a failed trial): a new "
                                               "client id cannot join")
    if joins_from_peer is not None and joins_from_peer >= config.max_joins_per_peer:
        raise Refused(Code.RESOURCE_EXHAUSTED, f"{config.max_joins_per_peer} client ids already joined from "
                                               "this address (--max-joins-per-peer)")


def register(config: FederationConfig, state: FederationState, joins_by_peer: dict[str, int],
             client_id: str, num_examples: int, peer: str | None, busy: set[str], now: float,
             signing_key: bytes = b"") -> tuple[ClientRecord, str | None]:
    """The client's record, and the id evicted to make room for it (if any); a new id is registered if there is
    room, made by evicting an expired or failed-trial id (server/round/sampling.py `evictable`; `busy`: the open
    attempt's sites), and (open mode) room for its peer. An id that comes back after its eviction gets back the
    signing key it had bound."""
    clients = state.clients
    record = clients.get(client_id)
    evicted = None
    if record is None and config.binds_signing_keys:  # before anything changes for it
        refuse_another_key(client_id, state.retired_keys.get(client_id, b""), signing_key)
    if record is None:
        joins = None if peer is None else joins_by_peer.get(peer, 0)
        check_room(config, 0, joins)  # the address's cap first: a refused Join evicts nobody
        if len(clients) >= config.max_clients:
            evicted = evictable(clients, busy, now, config.client_ttl_s)
            if evicted is not None:
                state.retire(clients.pop(evicted))
        check_room(config, len(clients), joins)
        record = clients[client_id] = ClientRecord(client_id, num_examples,
                                                   signing_key=state.returning_key(client_id))
        if peer is not None:
            joins_by_peer[peer] = joins_by_peer.get(peer, 0) + 1
    return record, evicted


def check_running(rounds: Rounds) -> None:
    if rounds.aborted:
        raise Refused(Code.FAILED_PRECONDITION, f"the federation stopped: {rounds.aborted}")


def check_round(rounds: Rounds, round_: int) -> None:
    check_running(rounds)
    if rounds.finished:
        raise Refused(Code.FAILED_PRECONDITION, f"the federation finished after round {rounds.config.rounds}")
    if round_ != rounds.round:
        which = "stale" if round_ < rounds.round else "future"
        raise Refused(Code.FAILED_PRECONDITION, f"{which} round {round_}: the current round is {rounds.round}")


def admit(rounds: Rounds, client_id: str, round_: int, digest: str, num_examples: int) -> SubmitResult | None:
    """A reply for a repeated update, None for one to parse, or `Refused` for one that cannot count."""
    a = rounds.attempt
    if round_ == rounds.round - 1 and rounds.last_closed.get(client_id) == digest:
        return SubmitResult(True, len(a.received), a.expected())
    check_round(rounds, round_)
    previous = a.received.get(client_id)
    if previous is not None:
        if previous.digest == digest:
            return SubmitResult(True, len(a.received), a.expected())
        raise Refused(Code.ALREADY_EXISTS, f"a different update from {client_id!r} for round {round_} "
                                           "was already accepted")
    if rounds.pending is not None:
        raise Refused(Code.UNAVAILABLE, f"round {round_} is closed and waiting to be saved: retry")
    if client_id not in a.sampled:
        raise Refused(Code.FAILED_PRECONDITION, f"client {client_id!r} is not sampled in round {rounds.round}")
    if client_id in a.failed:
        raise Refused(Code.FAILED_PRECONDITION, f"client {client_id!r} is out of round {round_}: "
                                                f"{a.failed[client_id]}")
    declared = rounds.state.clients[client_id].num_examples
    if num_examples != declared:
        raise Refused(Code.INVALID_ARGUMENT, f"num_examples {num_examples} differs from the {declared} declared "
                                             "at Join (join again to change it)")
    return None


def check_report(rounds: Rounds, client_id: str, round_: int) -> SubmitResult | None:
    """A failure report: the reply for a repeated one, None for a new one, or `Refused`."""
    check_round(rounds, round_)
    a = rounds.attempt
    if client_id in a.failed:
        return SubmitResult(True, len(a.received), a.expected())
    if client_id not in a.sampled:
        raise Refused(Code.FAILED_PRECONDITION, f"client {client_id!r} is not sampled in round {rounds.round}")
    if client_id in a.received:
        raise Refused(Code.FAILED_PRECONDITION, f"an update from {client_id!r} for round {round_} was already "
                                                "accepted")
    return None


def find_run(rounds: Rounds, step: SecureStep) -> SecureRun:
    """The secure run a SecureAggregate call is about: the open attempt's, or the one that just ended."""
    for run in (rounds.attempt.secure, rounds.ended_secure):
        if run is not None and (run.round, run.attempt, run.config.rid.federation_id) == \
                (step.round, step.attempt, step.run_id):
            if step.client_id not in run.plan:
                raise Refused(Code.FAILED_PRECONDITION, f"client {step.client_id!r} is not sampled in round "
                                                        f"{run.round} (attempt {run.attempt})")
            return run
    if not rounds.config.secure_aggregation:
        raise Refused(Code.FAILED_PRECONDITION, "this federation does not run secure aggregation: use SubmitUpdate")
    raise Refused(Code.FAILED_PRECONDITION, f"round {step.round} attempt {step.attempt} of run {step.run_id!r} is not "
                                            f"the open secure round (round {rounds.round}, attempt "
                                            f"{rounds.attempt.number}; the coordinator may have restarted): ask for "
                                            "a task")
