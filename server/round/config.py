"""`FederationConfig`: every setting of the round logic, validated once, with the reason for each refusal."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

import numpy as np

from ...common.messages import HEARTBEAT_INTERVAL_S, HEARTBEAT_WINDOW_S, TrainSettings
from ...common.spec import MAX_ABS_VALUE
from ...common.transport import DEFAULT_MAX_UPDATE_BYTES
from ..pipeline.aggregate import DEFAULT_TRIM, Aggregator, AggregatorKind
from ..pipeline.clipping import DEFAULT_ADAPTIVE_CLIP
from ..pipeline.combine import DEFAULT_CLIP_NORM, Rules
from ..pipeline.privacy import DpSettings
from ..pipeline.updates import UpdateLimits

# No site's weight may exceed this many examples unless the operator says so: a site that declares 10^15
# examples must not become the whole average. Set it to the largest honest site's count.
DEFAULT_MAX_EXAMPLES_PER_CLIENT = 100_000
# Clients the registry holds at most: each costs the checkpoint's header up to ~300 bytes (a 128-character id,
# a secret digest, counts), and safetensors refuses headers above 100 MB, so the cap must stay far below 300,000.
DEFAULT_MAX_CLIENTS = 10_000
DEFAULT_CLIENT_TTL_S = 3600.0
MAX_CLIENTS_LIMIT = 200_000
# Open mode: new client ids one peer address (not loopback) may register.
DEFAULT_MAX_JOINS_PER_PEER = 100
# A secure round: no fewer sites (with two, each learns the other's change from the sum), and how long each of
# its exchanges after training may take (sites answer the moment a stage closes; this only bounds a silent one).
SECAGG_MIN_SITES = 3
DEFAULT_STAGE_TIMEOUT_S = 60.0
# Attempts of one round that may end without a committable aggregate before the coordinator gives up.
DEFAULT_MAX_RETRIES = 5


@dataclass(frozen=True)
class FederationConfig:
    rounds: int
    min_clients: int = 2
    fraction: float = 1.0
    round_timeout_s: float = 600.0
    quorum: int = 1
    seed: int = 0
    train: TrainSettings = field(default_factory=TrainSettings)
    max_update_bytes: int = DEFAULT_MAX_UPDATE_BYTES
    poll_interval_s: float = 2.0
    max_examples_per_client: int = DEFAULT_MAX_EXAMPLES_PER_CLIENT
    update_clip_norm: float = DEFAULT_CLIP_NORM  # L2 bound on each update's change from the global; 0: off
    adaptive_clip: float = DEFAULT_ADAPTIVE_CLIP  # per-tensor bound, x the round's median change; 0: off
    max_abs_value: float = MAX_ABS_VALUE
    aggregator: AggregatorKind = AggregatorKind.FEDAVG
    trim: float = DEFAULT_TRIM
    dp: DpSettings | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    max_clients: int = DEFAULT_MAX_CLIENTS
    client_ttl_s: float = DEFAULT_CLIENT_TTL_S  # an id that never delivered expires after this long unseen
    max_joins_per_peer: int = DEFAULT_MAX_JOINS_PER_PEER
    require_join_secret: bool = False  # open mode beyond loopback: every Join must carry a join secret
    heartbeat_window_s: float = HEARTBEAT_WINDOW_S  # the status view: not heard from for longer -> offline
    secure_aggregation: bool = False  # the coordinator learns only the sum of each round's changes
    secagg_threshold: int = 0  # sites that must finish a secure round (0: more than half of the sampled)
    secagg_min_sites: int = SECAGG_MIN_SITES  # no secure round unmasks the sum of fewer survivors (never below 3)
    secagg_stage_timeout_s: float = DEFAULT_STAGE_TIMEOUT_S  # each exchange after training closes by then
    signing_ca: str | None = None  # mTLS: the CA of the sites' certificates; secure rounds require signed messages

    def __post_init__(self) -> None:
        object.__setattr__(self, "aggregator", AggregatorKind(self.aggregator))
        checks = [
            (self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}"),
            (self.min_clients >= 1, f"min_clients must be >= 1, got {self.min_clients}"),
            (0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}"),
            (self.round_timeout_s > 0, f"round_timeout must be > 0, got {self.round_timeout_s}"),
            (1 <= self.quorum <= self.min_clients, f"quorum must be in [1, min_clients], got {self.quorum}"),
            (self.max_update_bytes > 0, f"max_update_bytes must be > 0, got {self.max_update_bytes}"),
            (self.max_examples_per_client >= 1,
             f"--max-examples-per-client must be >= 1, got {self.max_examples_per_client}"),
            (self.update_clip_norm >= 0 and math.isfinite(self.update_clip_norm),
             f"--update-clip-norm must be >= 0 (0: off), got {self.update_clip_norm}"),
            (self.adaptive_clip == 0 or (self.adaptive_clip >= 1 and math.isfinite(self.adaptive_clip)),
             f"--adaptive-clip must be 0 (off) or >= 1 (a bound below the median would clip most honest "
             f"sites), got {self.adaptive_clip}"),
            (self.max_abs_value > 0, f"--max-abs-value must be > 0, got {self.max_abs_value}"),
            (0 <= self.trim < 0.5, f"--trim must be in [0, 0.5), got {self.trim}"),
            (self.max_retries >= 0, f"--max-retries must be >= 0, got {self.max_retries}"),
            (self.min_clients <= self.max_clients <= MAX_CLIENTS_LIMIT,
             f"--max-clients must be in [--min-clients, {MAX_CLIENTS_LIMIT}] (the checkpoint's header holds the "
             f"registry and safetensors caps it at 100 MB), got {self.max_clients}"),
            (self.heartbeat_window_s > HEARTBEAT_INTERVAL_S,
             f"--heartbeat-window must be > {HEARTBEAT_INTERVAL_S:g} s (clients send a heartbeat every "
             f"{HEARTBEAT_INTERVAL_S:g} s), got {self.heartbeat_window_s}"),
            (self.max_joins_per_peer >= 1, f"--max-joins-per-peer must be >= 1, got {self.max_joins_per_peer}"),
            (self.client_ttl_s > 0, f"--client-ttl must be > 0, got {self.client_ttl_s}"),
            (self.dp is None or self.aggregator is AggregatorKind.FEDAVG,
             f"differential privacy is refused with --aggregator {self.aggregator}: the privacy accounting covers "
             "the clipped, noised mean (DP-FedAvg) only; the median and the trimmed mean have another "
             "sensitivity. Use --aggregator fedavg with --dp-noise-multiplier and --dp-clip"),
        ]
        if self.secure_aggregation:
            checks += self._secure_checks()
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def _secure_checks(self) -> list[tuple[bool, str]]:
        """What a coordinator that never sees one update cannot do (docs/secure-aggregation.md)."""
        return [
            (self.aggregator is AggregatorKind.FEDAVG,
             f"--aggregator {self.aggregator} is refused with --secure-aggregation: a coordinate-wise median or "
             "trimmed mean needs every update's values, and the coordinator sees only their sum. Use fedavg"),
            (self.update_clip_norm > 0 or self.dp is not None,
             "--secure-aggregation needs a bound on each change (--update-clip-norm > 0, or DP's --dp-clip): each "
             "site clips to it before masking, and the field's range is derived from it"),
            (self.secagg_min_sites >= SECAGG_MIN_SITES,
             f"--secagg-min-sites must be at least {SECAGG_MIN_SITES}: the sum of two sites tells each the other's "
             f"change, got {self.secagg_min_sites}"),
            (self.min_clients >= self.secagg_min_sites,
             f"--secure-aggregation needs --min-clients >= --secagg-min-sites ({self.secagg_min_sites}): with "
             f"fewer, the sum tells a site (or the sites the coordinator colludes with) the others' changes, got "
             f"{self.min_clients}"),
            (0 <= self.secagg_threshold <= self.min_clients,
             f"--secagg-threshold must be in [0, --min-clients] (0: more than half of the sampled sites), got "
             f"{self.secagg_threshold}"),
            (self.secagg_stage_timeout_s > 0, f"--secagg-stage-timeout must be > 0, got {self.secagg_stage_timeout_s}"),
        ]

    @property
    def limits(self) -> UpdateLimits:
        return UpdateLimits(self.max_update_bytes, self.max_abs_value)

    def rules(self, aggregate: Aggregator, previous_scale: Mapping[str, float], sampled: int,
              rng: np.random.Generator) -> Rules:
        """How a plain round combines: the pipeline's settings from this config (a new rule's flag sets a field
        here and is passed on here), with what the round fixed."""
        return Rules(aggregate, self.update_clip_norm or None, self.adaptive_clip or None, previous_scale, self.dp,
                     sampled, rng)

    def settings_for(self, round_: int, client_id: str) -> TrainSettings:
        """The training settings handed to `client_id` in `round_`: its seed derived from the federation's."""
        digest = hashlib.sha256(f"{self.seed}:{round_}:{client_id}".encode()).digest()
        return replace(self.train, seed=int.from_bytes(digest[:8], "big") & (2**63 - 1))

    @property
    def binds_signing_keys(self) -> bool:
        """Secure rounds without client certificates: each site's messages are checked against the key its first
        Join bound (in any other mode nothing is bound, so a site that lost its state dir may join again)."""
        return self.secure_aggregation and not self.signing_ca

    @property
    def min_sample(self) -> int:
        """The fewest sites a round may sample: the quorum, and under secure aggregation three and the threshold."""
        return max(self.quorum, self.secagg_min_sites, self.secagg_threshold) if self.secure_aggregation \
            else self.quorum

    def sample_size(self, active: int) -> int:
        """Sites sampled in a round of `active` online ones: the fraction, at least `min_sample`."""
        return min(max(math.ceil(self.fraction * active), self.min_sample), active)

    def weight(self, num_examples: int) -> int:
        """A client's FedAvg weight: the count it declared at Join, capped."""
        return min(num_examples, self.max_examples_per_client)


# Every field's default, for the flags (server/app.py, server/options.py): written once, above.
CONFIG_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(FederationConfig) if f.default is not MISSING}
