"""structlog set-up, and every event name the components log.

JSON lines when not on a terminal (or when asked), readable console otherwise. Event names are fixed
snake_case strings defined once in `Event`, and keys are fixed (`round`, `client_id`, `num_examples`,
`duration_s`), so logs can be queried across components and the sim and tests can wait for them.
"""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from typing import Any, TextIO

import structlog

LOG_FORMATS = ("auto", "json", "console")
DEFAULT_LOG_FORMAT = "auto"  # readable on a terminal, JSON lines otherwise
DEFAULT_LOG_LEVEL = "info"


class Event(StrEnum):
    # coordinator
    SERVER_STARTED = "server_started"
    SERVER_FAILED = "server_failed"
    SERVER_STOPPING = "server_stopping"
    SERVER_STOPPED = "server_stopped"
    INSECURE_LISTENER = "insecure_listener"
    LOOPBACK_ONLY = "loopback_only"  # no --bind and no credentials: this machine only, and how to serve others
    FEDERATION_CREATED = "federation_created"
    FEDERATION_RESUMED = "federation_resumed"
    SIGNING_KEYS_MISSING = "signing_keys_missing"  # resumed records that bound no signing key (an older checkpoint)
    SECURE_RESIDUAL_UNBOUNDED = "secure_residual_unbounded"  # a method with the head's residual, in secure rounds
    CLASSES_AGREED = "classes_agreed"  # the class list gathered from the sites' Joins, fixed as round 1 opens
    CLIENT_JOINED = "client_joined"
    CLIENT_EVICTED = "client_evicted"  # a full registry dropped an id that never delivered, for a new one
    ROUND_STARTED = "round_started"
    ROUND_RETRIED = "round_retried"
    ROUND_COMPLETED = "round_completed"
    UPDATE_ACCEPTED = "update_accepted"
    FEDERATION_FINISHED = "federation_finished"
    # coordinator: faults and hostile input, never silent
    WAITING_FOR_CLIENTS = "waiting_for_clients"  # below --min-clients: active and needed counts, every 30 s
    CLIENT_FAILED_ROUND = "client_failed_round"  # a sampled client reported (or was deemed) unable to update
    FEDERATION_ABORTED = "federation_aborted"  # a round failed --max-retries times: the coordinator stops
    REQUEST_REFUSED = "request_refused"  # refused before parsing (size, undecodable); at a bounded rate
    UPDATE_REJECTED = "update_rejected"  # an update refused for its content (size, spec, values, count)
    WEIGHT_CAPPED = "weight_capped"  # a join declared more examples than --max-examples-per-client
    CHECKPOINT_FAILED = "checkpoint_failed"  # the round could not be made durable; retried, health NOT_SERVING
    CHECKPOINT_RECOVERED = "checkpoint_recovered"
    HISTORY_REPAIRED = "history_repaired"  # rounds.jsonl reconciled with the checkpoint on start
    TICKER_FAILED = "ticker_failed"  # the round ticker hit an unexpected error; it keeps ticking
    LINGERING = "lingering"  # finished; still serving the final prompts and the status
    CALLER_REFUSED = "caller_refused"  # a token or certificate refused, a failed TLS handshake; at a bounded rate
    # coordinator, secure aggregation: counts and site ids only, never keys, shares or masked values
    SECAGG_STAGE_CLOSED = "secagg_stage_closed"
    SECAGG_STAGE_STALLED = "secagg_stage_stalled"  # a stage waits on sites a stage timeout after the others
    SECAGG_AGGREGATE_BOUNDED = "secagg_aggregate_bounded"  # an unmasked sum beyond its survivors' clips, scaled
    SECAGG_SITE_EXCLUDED = "secagg_site_excluded"  # a site named by the protocol (a complaint, a lying share)
    # any component: a line that bypassed the logger (gRPC C-core, a library's print), wrapped as JSON
    NATIVE_OUTPUT = "native_output"
    # client
    CLIENT_STARTING = "client_starting"
    CLIENT_STOPPED = "client_stopped"
    CLIENT_FAILED = "client_failed"
    COORDINATOR_UNREACHABLE = "coordinator_unreachable"
    FEDERATION_CHANGED = "federation_changed"
    LOCAL_STATE_RESTORED = "local_state_restored"
    REJOINING = "rejoining"
    WAITING_FOR_CLASSES = "waiting_for_classes"  # the coordinator still gathers its class list
    ROUND_TRAINING = "round_training"
    ROUND_DONE = "round_done"
    TRAINING_DIVERGED = "training_diverged"
    TRAINING_COLLAPSED = "training_collapsed"
    UPDATE_SENT = "update_sent"
    UPDATE_REFUSED = "update_refused"
    SECAGG_ROUND_DONE = "secagg_round_done"  # this site's part of a secure round: committed or abandoned
    SECAGG_PEER_REFUSED = "secagg_peer_refused"  # a peer's signature did not check: this site leaves the attempt
    PEER_KEYS_UNSAVED = "peer_keys_unsaved"  # the pinned peer keys could not be written (the round stands)
    PEER_KEYS_UNREADABLE = "peer_keys_unreadable"  # peer_keys.json unreadable mid-run: the last good pins are used
    HEARTBEAT_FAILED = "heartbeat_failed"  # debug: one lost heartbeat (the next comes soon)
    HEARTBEAT_UNSUPPORTED = "heartbeat_unsupported"  # the coordinator predates heartbeats
    CLASS_NAMES_SIMILAR = "class_names_similar"
    IMAGE_SKIPPED = "image_skipped"
    IMAGES_SKIPPED = "images_skipped"
    IMAGES_STREAMED = "images_streamed"
    # embedded backbone
    EMBEDDED_BUILD_STARTED = "embedded_build_started"
    EMBEDDED_BUILD_FINISHED = "embedded_build_finished"


class _CurrentStderr:
    """Writes to whatever sys.stderr is at the time of the write (test capture, redirection)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure_logging(fmt: str = DEFAULT_LOG_FORMAT, level: str = DEFAULT_LOG_LEVEL,
                      stream: TextIO | _CurrentStderr | None = None) -> None:
    out = stream or _CurrentStderr()
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {fmt!r}")
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def get_logger(component: str) -> Any:
    return structlog.get_logger(component=component)
