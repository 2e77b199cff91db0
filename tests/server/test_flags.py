"""The coordinator's flags default to its config's own defaults; combinations it refuses, and why."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pfeddc.common import serde
from pfeddc.common.messages import Metrics, Refused
from pfeddc.common.spec import TensorSpec
from pfeddc.server.app import build_parser
from pfeddc.server.flags import federation_config
from pfeddc.server.pipeline.updates import UpdateLimits, decode
from pfeddc.server.round.config import FederationConfig


def test_coordinator_flags_default_to_the_config_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("PFEDDC_")]:
        monkeypatch.delenv(name)
    args = build_parser().parse_args(["--rounds", "3", "--bind", "127.0.0.1"])
    assert federation_config(args) == FederationConfig(rounds=3)


def test_coordinator_flags_set_every_config_field_they_name(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("PFEDDC_")]:
        monkeypatch.delenv(name)
    args = build_parser().parse_args(["--rounds", "3", "--bind", "0.0.0.0", "--min-clients", "4", "--quorum", "2",
                                      "--seed", "7",
                                      "--max-update-mb", "1", "--poll-interval", "0.5", "--trim", "0.1"])
    config = federation_config(args)
    assert (config.min_clients, config.quorum, config.seed, config.max_update_bytes, config.poll_interval_s,
            config.trim, config.require_join_secret) == (4, 2, 7, 2**20, 0.5, 0.1, True)


def test_head_statistics_outside_their_bounds_are_refused() -> None:
    """Class fractions lie in [0, 1]: no honest site sends another (the spec's bounds, checked at decode)."""
    spec = [TensorSpec("head.counts.global", (2,), bounds=(0.0, 1.0))]
    for bad in ([-0.5, 1.0], [0.5, 1.5]):
        payload = serde.encode({"head.counts.global": np.array(bad, dtype=np.float32)})
        with pytest.raises(Refused, match=r"outside \[0, 1\]"):
            decode(payload, 10, Metrics(), spec, UpdateLimits(), "x")
    ok = serde.encode({"head.counts.global": np.array([0.25, 0.75], dtype=np.float32)})
    assert decode(ok, 10, Metrics(), spec, UpdateLimits(), "x").tensors["head.counts.global"].shape == (2,)
