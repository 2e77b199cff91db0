"""The coordinator's flags default to its config's own defaults: each default is written once."""

from __future__ import annotations

import os

import pytest

from pfeddc.server.app import build_parser
from pfeddc.server.config import FederationConfig
from pfeddc.server.options import federation_config


def test_coordinator_flags_default_to_the_config_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("PFEDDC_")]:
        monkeypatch.delenv(name)
    args = build_parser().parse_args(["--rounds", "3", "--bind", "127.0.0.1"])
    assert federation_config(args) == FederationConfig(rounds=3)


def test_coordinator_flags_set_every_config_field_they_name(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("PFEDDC_")]:
        monkeypatch.delenv(name)
    args = build_parser().parse_args(["--rounds", "3", "--min-clients", "4", "--quorum", "2", "--seed", "7",
                                      "--max-update-mb", "1", "--poll-interval", "0.5", "--trim", "0.1"])
    config = federation_config(args)
    assert (config.min_clients, config.quorum, config.seed, config.max_update_bytes, config.poll_interval_s,
            config.trim, config.require_join_secret) == (4, 2, 7, 2**20, 0.5, 0.1, True)
