"""Every line a process writes is JSON when its logs are: stray output is routed through the logger.

`--log-format json` (or logs that are not on a terminal) promises one JSON object per line on stdout and
stderr. Three things break that promise unless caught: gRPC's C-core logs straight to file descriptor 2
(`E1128 10:23:26.280398 14114 add_port.cc:83] ...`, `Handshake failed` on every scanner), libraries print or
warn (transformers, PIL), and Python `warnings`. `capture_stray_output` points descriptors 1 and 2 at pipes
whose reader threads pass JSON lines through unchanged and wrap any other line in a `native_output` event
(C-core lines keep their severity and are dropped below --log-level); Python logging and warnings go through
structlog. It acts only in a process that owns its stdio (not inside pytest's capture).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from .logs import Event

# absl / gRPC C-core: "E1128 10:23:26.280398   14114 add_port.cc:83] message"
_CORE_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]]+)\] ?(.*)$")
_CORE_LEVELS = {"I": "info", "W": "warning", "E": "error", "F": "critical"}
_RANK = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def json_logging() -> bool:
    """Whether structlog is configured to render JSON lines (configure_logging decided it)."""
    processors = structlog.get_config().get("processors") or []
    return bool(processors) and isinstance(processors[-1], structlog.processors.JSONRenderer)


def say_error(tool: str, message: str) -> None:
    """The one-line error for people at a terminal; with JSON logs the logged event says it already."""
    if not json_logging():
        print(f"{tool}: error: {message}", file=sys.stderr)


# gRPC C-core reports a refused TLS handshake at INFO ("Handshake failed with error SSL_ERROR_SSL: ...:
# PEER_DID_NOT_RETURN_A_CERTIFICATE"): an operator must see it, at a bounded rate, with what it means.
_HANDSHAKE_CAUSES = (
    ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "a caller presented no client certificate"),
    ("CERTIFICATE_VERIFY_FAILED", "a caller's certificate was not issued by the trusted CA (or has expired)"),
    ("certificate signature failure", "a caller's certificate was not issued by the trusted CA"),
    ("certificate has expired", "a caller's certificate has expired"),
    ("WRONG_VERSION_NUMBER", "a caller spoke plaintext to a TLS port (or TLS to a plaintext one)"),
    ("HTTP_REQUEST", "a caller spoke plaintext to a TLS port"),
    ("TLSV1_ALERT_UNKNOWN_CA", "the peer does not trust this side's certificate's CA"),
)
HANDSHAKE_LOG_INTERVAL_S = 10.0


class _Every:
    """At most one line per `interval_s`; says how many were dropped in between."""

    def __init__(self, interval_s: float = HANDSHAKE_LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.last = -math.inf
        self.skipped = 0

    def allow(self) -> int | None:
        now = time.monotonic()
        if now - self.last < self.interval_s:
            self.skipped += 1
            return None
        skipped, self.last, self.skipped = self.skipped, now, 0
        return skipped


def _handshake_cause(message: str) -> str:
    return next((cause for mark, cause in _HANDSHAKE_CAUSES if mark in message), "a TLS handshake failed")


def _wrap(line: str, stream: str, min_rank: int, handshakes: _Every | None = None) -> str | None:
    """The line to write for one line read from a captured descriptor (None: drop it)."""
    text = line.rstrip("\r\n")
    if not text.strip():
        return None
    if text.startswith("{"):
        try:
            if isinstance(json.loads(text), dict):
                return text + "\n"
        except json.JSONDecodeError:
            pass
    stamp = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    record: dict[str, Any] = {"event": str(Event.NATIVE_OUTPUT), "stream": stream, "timestamp": stamp}
    match = _CORE_LINE.match(text)
    if match:
        level = _CORE_LEVELS[match.group(1)]
        record.update(level=level, source="grpc-core", location=match.group(2).strip(), message=match.group(3))
        if handshakes is not None and "Handshake failed" in match.group(3):
            skipped = handshakes.allow()
            if skipped is None:
                return None
            level = "warning"
            record.update(event=str(Event.CALLER_REFUSED), level=level, reason=_handshake_cause(match.group(3)),
                          skipped=skipped)
    else:
        level = "warning" if stream == "stderr" else "info"
        record.update(level=level, source="stray", message=text[-2000:])
    if _RANK[level] < min_rank:
        return None
    return json.dumps(record) + "\n"


@dataclass
class _Capture:
    fd: int
    stream: str
    min_rank: int
    saved: int = -1
    thread: threading.Thread | None = None
    _write_end: int = -1
    handshakes: _Every | None = None  # set: failed handshakes are callers' (rate-limited warnings)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        read_end, self._write_end = os.pipe()
        self.saved = os.dup(self.fd)
        os.dup2(self._write_end, self.fd)
        self.thread = threading.Thread(target=self._pump, args=(read_end,), daemon=True,
                                       name=f"capture-{self.stream}")
        self.thread.start()

    def _pump(self, read_end: int) -> None:
        with os.fdopen(read_end, "r", encoding="utf-8", errors="replace", newline="") as pipe:
            for raw in pipe:
                for part in re.split(r"\r(?!\n)", raw):  # progress bars redraw with \r: one line per redraw
                    out = _wrap(part, self.stream, self.min_rank, self.handshakes)
                    if out is not None:
                        os.write(self.saved, out.encode())

    def stop(self) -> None:
        with self._lock:
            if self._write_end < 0:
                return
            os.dup2(self.saved, self.fd)  # the pipe's last writer goes away: the reader sees EOF
            os.close(self._write_end)
            self._write_end = -1
        if self.thread:
            self.thread.join(2)


class _ToStructlog(logging.Handler):
    """Python logging records (transformers, PIL, py.warnings) as structlog events."""

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname.lower()
        logger = structlog.get_logger(component=record.name)
        getattr(logger, level if level in _RANK else "warning")(
            str(Event.NATIVE_OUTPUT), source="python-logging", message=record.getMessage())


def _nothing() -> None:
    pass


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


def capture_stray_output(level: str = "info", serving: bool = False) -> Callable[[], None]:
    """Route everything this process prints through JSON lines (no-op unless logs are JSON and stdio is ours).

    `serving`: this process accepts connections (the coordinator), so gRPC's "Handshake failed" lines are its
    callers' and become rate-limited `caller_refused` warnings; a client names its own failed handshakes itself.

    Returns what drains the captured descriptors: it runs at exit, or call it before `os._exit`.
    """
    if not json_logging():
        return _nothing
    logging.captureWarnings(True)
    root = logging.getLogger()
    root.handlers = [_ToStructlog()]
    root.setLevel(max(logging.WARNING, logging.getLevelNamesMapping()[level.upper()]))
    # progress bars only on a terminal: for libraries imported later (their environment switches) and for
    # those already imported (their own switches; importing them here would pull torch into the coordinator)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for module, switch in (("huggingface_hub.utils", "disable_progress_bars"),
                           ("transformers.utils.logging", "disable_progress_bar")):
        off = getattr(sys.modules.get(module), switch, None)
        if callable(off):
            off()
    if sys.stderr is not sys.__stderr__ or sys.stdout is not sys.__stdout__:
        return _nothing  # someone (pytest) captures our output already
    min_rank = _RANK.get(level.lower(), 20)
    captures = [_Capture(1, "stdout", min_rank, handshakes=_Every() if serving else None),
                _Capture(2, "stderr", min_rank, handshakes=_Every() if serving else None)]
    for capture in captures:
        _flush()
        capture.start()

    def release() -> None:
        _flush()
        for capture in captures:
            capture.stop()

    atexit.register(release)
    return release
