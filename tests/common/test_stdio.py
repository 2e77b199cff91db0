"""Stray output of a process with JSON logs becomes JSON lines: C-core lines, prints, warnings, progress bars."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration  # starts a process that owns its stdio

SCRIPT = r"""
import logging, os, sys, warnings
from pfeddc.common.logs import configure_logging, get_logger
from pfeddc.common.stdio import capture_stray_output
configure_logging(sys.argv[1], "info")
capture_stray_output("info", serving=True)
print("a plain print")
print("to stderr", file=sys.stderr)
os.write(2, b"E1128 10:23:26.280398   14114 add_port.cc:83] Failed to add port to server\n")
os.write(2, b"I1128 10:23:26.280398   14114 ssl_transport_security.cc:1884] Handshake failed\n")
warnings.warn("deprecated thing")
logging.getLogger("transformers.modeling_utils").warning("Some weights were not used")
sys.stderr.write("Loading weights:  10%|#  | 1/10\rLoading weights: 100%|###| 10/10\n")
get_logger("test").info("an_event", round=1)
"""


def run(fmt: str) -> list[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, fmt], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return (out.stdout + out.stderr).splitlines()


def test_every_line_is_json_when_logs_are() -> None:
    records = [json.loads(line) for line in run("json")]
    assert all(isinstance(r, dict) and "event" in r and "level" in r for r in records)
    core = [r for r in records if r.get("source") == "grpc-core"]
    # a refused TLS handshake is an operator's concern: a warning (rate-limited) that says what it means
    assert [(r["level"], r["location"]) for r in core] == [("error", "add_port.cc:83"),
                                                           ("warning", "ssl_transport_security.cc:1884")]
    assert core[1]["event"] == "caller_refused" and core[1]["reason"] == "a TLS handshake failed"
    messages = " ".join(str(r.get("message")) for r in records)
    for text in ("a plain print", "to stderr", "deprecated thing", "Some weights were not used",
                 "Loading weights: 100%"):
        assert text in messages, text
    assert any(r["event"] == "an_event" and r["round"] == 1 for r in records)


def test_console_logs_leave_output_alone() -> None:
    lines = run("console")
    assert "a plain print" in lines and any(line.startswith("E1128") for line in lines)


def test_failed_handshakes_are_rate_limited_caller_warnings_only_where_callers_connect() -> None:
    from pfeddc.common.stdio import _Every, _wrap

    line = ("I1128 10:23:26.280398   14114 ssl_transport_security.cc:2563] Handshake failed with error "
            "SSL_ERROR_SSL: error:100000c0:SSL routines:OPENSSL_internal:PEER_DID_NOT_RETURN_A_CERTIFICATE")
    on_client = _wrap(line, "stderr", 20)
    assert on_client and json.loads(on_client)["event"] == "native_output"  # a client names its own cause
    every = _Every(10.0)
    first = _wrap(line, "stderr", 20, every)
    assert first and json.loads(first)["level"] == "warning"
    assert json.loads(first)["reason"] == "a caller presented no client certificate"
    assert _wrap(line, "stderr", 20, every) is None  # a scanner cannot flood the log
