"""The coordinator's flags default to its config's own defaults; combinations it refuses, and why."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pfeddc.common import serde
from pfeddc.common.messages import Metrics, Refused
from pfeddc.common.spec import CLASS_SHARE_FLOOR, TensorSpec
from pfeddc.server.app import build_parser, main
from pfeddc.server.config import FederationConfig
from pfeddc.server.options import federation_config
from pfeddc.server.updates import UpdateLimits, decode


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


@pytest.mark.parametrize("flags", [["--aggregator", "median"], ["--dp-noise-multiplier", "1.0", "--dp-clip", "0.1"]])
def test_shared_class_rows_refuse_aggregators_that_break_their_mean(flags: list[str], tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Rows x share and the share: only the plain weighted mean of both gives each row's class-weighted mean."""
    argv = ["--bind", "127.0.0.1", "--port", "0", "--state-dir", str(tmp_path), "--classes", "cat,dog", *flags]
    assert main(argv) == 2
    assert "shares class embeddings (--classes)" in capsys.readouterr().err


def test_shared_class_shares_outside_their_bounds_are_refused() -> None:
    spec = [TensorSpec("text.classes.share.global", (2,), bounds=(CLASS_SHARE_FLOOR, 1.0))]
    for bad in ([0.0, 1.0], [0.5, 1.5]):
        payload = serde.encode({"text.classes.share.global": np.array(bad, dtype=np.float32)})
        with pytest.raises(Refused, match=r"outside \[0.001, 1\]"):
            decode(payload, 10, Metrics(), spec, UpdateLimits(), "x")
    ok = serde.encode({"text.classes.share.global": np.array([0.001, 0.999], dtype=np.float32)})
    assert decode(ok, 10, Metrics(), spec, UpdateLimits(), "x").tensors["text.classes.share.global"].shape == (2,)
