"""Every `pfeddc-server` flag, declared once: name, value type, default, help, and the config field it sets.

The parser, `--help`, docs/flags.md (`python -m tools.flags`) and the `PFEDDC_SERVER_<NAME>` environment variables
(common/envflags.py, which the Kubernetes ConfigMaps set) are all made from `COORDINATOR_FLAGS`; the
`FederationConfig` is made from the rows that name a `config` field, whose default is that field's own. Prompt
layout, training and logging flags are shared with the other tools and come from their own typed sources
(`PromptConfig`, `TrainSettings`, common/cli.py).

Adding a coordinator flag: one row here (with `config=` when the round logic reads it, then the field, its
default and its validation in server/round/config.py), and the code that uses it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..common.backbones import EMBEDDED_MODEL
from ..common.cli import add_log_flags, add_prompt_flags, add_train_flags, train_settings_from
from ..common.envflags import add_version, apply_env_defaults
from ..common.messages import HEARTBEAT_INTERVAL_S
from ..common.transport import MiB, is_loopback, port_number
from .exposure import client_auth_of, listen_address
from .pipeline.aggregate import AggregatorKind
from .pipeline.privacy import DEFAULT_DELTA, DpSettings
from .round.config import CONFIG_DEFAULTS, FederationConfig

# Worker threads of the gRPC server: each held (long-poll) call occupies one, so this bounds held calls.
DEFAULT_MAX_HELD_CALLS = 1024


@dataclass(frozen=True)
class Flag:
    """One flag. `config`: the `FederationConfig` field it sets (its default is then the field's, unless given);
    `to_config`: how the flag's value becomes the field's (a unit). `switch`: a flag without a value."""

    name: str
    help: str
    type: Callable[[str], Any] = str
    default: Any = None
    config: str | None = None
    to_config: Callable[[Any], Any] | None = None
    choices: tuple[str, ...] | None = None
    switch: bool = False

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def default_value(self) -> Any:
        if self.default is None and self.config is not None:
            return CONFIG_DEFAULTS.get(self.config)
        return self.default

    def add_to(self, group: argparse._ArgumentGroup) -> None:
        if self.switch:
            group.add_argument(f"--{self.name}", action="store_true", help=self.help)
        else:
            group.add_argument(f"--{self.name}", type=self.type, default=self.default_value, choices=self.choices,
                               help=self.help)


# The groups, in --help's order; None: a group of shared flags (common/cli.py) goes there.
COORDINATOR_FLAGS: tuple[tuple[str | None, tuple[Flag, ...]], ...] = (
    ("federation", (
        Flag("rounds", "federated rounds to run (default: %(default)s)", int, 20, config="rounds"),
        Flag("port", "gRPC port, 1-65535; 0 picks a free one (default: %(default)s)", port_number, 50051),
        Flag("bind", "address to listen on (default: every interface, 0.0.0.0, when TLS and client authentication "
                     "are configured; else loopback, 127.0.0.1, so a bare local run starts; beyond loopback without "
                     "both it refuses unless --insecure)"),
        Flag("state-dir", "where the checkpoint (round, global prompts, clients) lives; an existing one is resumed "
                          "(default: %(default)s)", Path, Path("pfeddc-coordinator")),
        Flag("min-clients", "clients that must be checked in before a round starts (default: %(default)s)", int,
             config="min_clients"),
        Flag("fraction", "fraction of the checked-in clients sampled each round (default: %(default)s)", float,
             config="fraction"),
        Flag("round-timeout", "seconds a round waits for its sampled clients before closing with those that "
                              "answered (default: %(default)s)", float, config="round_timeout_s"),
        Flag("heartbeat-window", "seconds without a request or heartbeat after which the status shows a client "
                                 f"offline; clients send one every {HEARTBEAT_INTERVAL_S:g} s (default: %(default)s)",
             float, config="heartbeat_window_s"),
        Flag("quorum", "updates needed to close a round at its deadline; fewer -> the round is re-sampled "
                       "(default: %(default)s)", int, config="quorum"),
        Flag("seed", "seeds client sampling, initial prompts and each client's round seed (default: %(default)s)",
             int, config="seed"),
        Flag("model", "backbone the clients use: a hub name such as openai/clip-vit-base-patch16, a local directory "
                      "with config.json, or 'embedded' (default). Only its shapes are read.", str, EMBEDDED_MODEL),
    )),
    (None, ()),  # prompt layout and training settings: PromptConfig's and TrainSettings' own flags
    ("transport and security", (
        Flag("max-update-mb", "largest update payload accepted, in MiB (default: %(default)s)", float,
             CONFIG_DEFAULTS["max_update_bytes"] / MiB, config="max_update_bytes", to_config=lambda mb: int(mb * MiB)),
        Flag("poll-interval", "seconds a waiting client is told to wait before asking again (default: %(default)s)",
             float, config="poll_interval_s"),
        Flag("tls-cert", "PEM certificate of the coordinator (enables TLS)", Path),
        Flag("tls-key", "PEM private key of the coordinator", Path),
        Flag("tls-client-ca", "PEM CA that signs client certificates: enables mTLS and ties each client_id to the "
                              "certificate's common name", Path),
        Flag("tokens", "JSON file of client_id -> token (or sha256:<hex> digest); every request must carry the token "
                       "of the client_id it claims", Path),
        Flag("linger", "seconds to keep serving after the last round so clients fetch the final prompts and "
                       "operators the status; inf or negative: until stopped (default: %(default)s)", float, 30.0),
        Flag("grace", "seconds in-flight calls get to finish on shutdown (default: %(default)s)", float, 10.0),
    )),
    ("bounded influence and aggregation", (
        Flag("max-examples-per-client", "cap on a client's FedAvg weight (the example count it declared at Join); "
                                        "set it to the largest honest site's count (default: %(default)s)", int,
             config="max_examples_per_client"),
        Flag("update-clip-norm", "L2 bound on each update's change from the current global, over all its tensors as "
                                 "one vector; larger changes are scaled down to it. 0: off (default: %(default)s)",
             float, config="update_clip_norm"),
        # its default depends on --secure-aggregation: resolved in federation_config
        Flag("adaptive-clip", "per-tensor bound adaptive to the round: each update's change of a global tensor is "
                              "scaled down to this multiple of the round's median change of that tensor (never above "
                              "twice the previous round's median; each class row of the head's residual on its own, "
                              "against the second largest change of that row), so one site cannot move any tensor "
                              "or class row much more than an honest one. Applied before --update-clip-norm; not under "
                              "DP (a bound computed from the round's updates voids the sensitivity analysis: --dp-clip "
                              "alone applies). Under --secure-aggregation each site reports its change norm of each "
                              "tensor with its keys (the median sets the bound, which it then applies itself) and "
                              "the unmasked sum of each tensor is held to what its survivors could send. 0: off "
                              "(default: %(default)s)",
             float, config="adaptive_clip"),
        Flag("max-abs-value", "updates holding a value of larger magnitude are refused (default: %(default)s)", float,
             config="max_abs_value"),
        Flag("aggregator", "fedavg: mean weighted by capped example counts; median: coordinate-wise median; "
                           "trimmed-mean: coordinate-wise mean without the --trim fraction at each end; "
                           "geometric-median: the point nearest to all updates (Weiszfeld, as RFA). The robust "
                           "three are unweighted (default: %(default)s)", str, str(CONFIG_DEFAULTS["aggregator"]),
             config="aggregator", to_config=AggregatorKind, choices=tuple(AggregatorKind)),
        Flag("trim", "fraction trimmed at each end by trimmed-mean: floor(trim * n) values, tolerating that many "
                     "hostile clients (default: %(default)s)", float, config="trim"),
        Flag("max-clients", "client ids the coordinator registers at most; a Join of a new id beyond it is refused "
                            "(RESOURCE_EXHAUSTED), re-joins are not. Keeps the registry, its memory and the "
                            "checkpoint bounded (default: %(default)s)", int, config="max_clients"),
        Flag("client-ttl", "seconds after which a client id that never delivered an update and was not heard from "
                           "expires, and how long an id whose trial failed (sampled twice, never delivered), or that "
                           "a secure round convicted, sits out; a full registry evicts never-delivered ids for a new "
                           "one (default: %(default)s)",
             float, config="client_ttl_s"),
        Flag("max-joins-per-peer", "open mode: new client ids one peer address may register (loopback peers are "
                                   "exempt: the operator's own machine, e.g. pfeddc-sim) (default: %(default)s)", int,
             config="max_joins_per_peer"),
        Flag("max-retries", "attempts of one round that may fail (only failure reports, no quorum, a non-finite "
                            "aggregate) before the coordinator stops with exit code 4; the round can still commit at "
                            "attempt N + 1, and each attempt counts hand-outs afresh (default: %(default)s)", int,
             config="max_retries"),
    )),
    ("central differential privacy (off unless --dp-noise-multiplier is given)", (
        Flag("dp-noise-multiplier", "DP-FedAvg: each client's change is clipped to --dp-clip, the changes are "
                                    "averaged with equal weights and Gaussian noise of std multiplier * clip is added "
                                    "to their sum; epsilon is logged and recorded every round. Requires --aggregator "
                                    "fedavg", float),
        Flag("dp-clip", "L2 clip of each client's change under DP (replaces --update-clip-norm)", float),
        Flag("dp-delta", "delta at which epsilon is reported (default: %(default)s)", float, DEFAULT_DELTA),
    )),
    ("secure aggregation (off unless --secure-aggregation; docs/secure-aggregation.md)", (
        Flag("secure-aggregation", "the coordinator learns only the weighted sum of each round's changes, never one "
                                   "site's: sites mask their clipped, weighted changes (SecAgg: X25519, AES-GCM, "
                                   "Shamir shares) and clients follow without a flag. Needs --min-clients >= "
                                   "--secagg-min-sites (3) and --aggregator fedavg; each site clips to "
                                   "--adaptive-clip's announced bounds and --update-clip-norm (or --dp-clip) itself; "
                                   "the coordinator can no longer check update values, only bound their sum. A "
                                   "method that shares no tensor (zeroshot, coop) is refused",
             config="secure_aggregation", switch=True),
        Flag("secagg-threshold", "sampled sites that must finish every stage of a secure round, or it is retried with "
                                 "fresh keys; always more than half of the sampled; 0: more than half (default: "
                                 "%(default)s)", int, config="secagg_threshold"),
        Flag("secagg-min-sites", "no secure round unmasks the sum of fewer surviving sites: with 2, each learns the "
                                 "other's change (and so does a coordinator colluding with one). The collusion bound: "
                                 "the coordinator with k colluding sites learns the sum of the other survivors' "
                                 "changes, one site's alone once k = survivors - 1; a consortium of 3-4 sites gets no "
                                 "dropout tolerance at 3 (every site must finish). Never below 3 (default: "
                                 "%(default)s)", int, config="secagg_min_sites"),
        Flag("secagg-stage-timeout", "seconds each exchange of a secure round after training may take; a site silent "
                                     "longer has dropped out of the round (default: %(default)s)", float,
             config="secagg_stage_timeout_s"),
    )),
    ("durability and exposure", (
        Flag("fresh", "start a new federation even though --state-dir holds an earlier one's files (they are kept, "
                      "renamed *.old)", switch=True),
        Flag("resume-aborted", "go on with a federation that aborted (a round failed more than --max-retries times; "
                               "it left aborted.json in --state-dir): retry that round. Without it such a state dir is "
                               "refused (exit 2), so a restart never quietly resumes what the clients gave up on",
             switch=True),
        Flag("insecure", "allow listening on a non-loopback address without TLS and client authentication (anyone "
                         "who reaches the port can join; clients then prove their id with a join secret)",
             switch=True),
        Flag("allow-tokens-only", "allow listening beyond loopback with TLS and --tokens but no --tls-client-ca: "
                                  "strangers then get through the TLS handshake and are refused only from their "
                                  "call's headers (by default client certificates are required beyond loopback)",
             switch=True),
        Flag("max-held-calls", "waiting clients whose GetTask is held open (push); beyond it they poll (default: "
                               "%(default)s)", int, DEFAULT_MAX_HELD_CALLS),
    )),
    ("operations", (
        Flag("health-port", "also serve grpc.health.v1 (and nothing else) in plaintext on this port of --bind, for "
                            "probes that carry no client certificate, such as the kubelet's; 0 picks a free one "
                            "(default: off)", port_number),
        Flag("metrics-port", "serve Prometheus /metrics, the live status page / and /api/status over plain HTTP on "
                             "this port; 0 picks a free one (default: off)", port_number),
        Flag("metrics-bind", "address of the metrics port: it shows client ids and metrics without authentication, "
                             "so loopback unless --metrics-guarded (default: %(default)s)", str, "127.0.0.1"),
        Flag("metrics-guarded", "confirm that something else guards the metrics port (a Kubernetes NetworkPolicy, a "
                                "firewall, an authenticating proxy): required to bind it beyond loopback",
             switch=True),
    )),
)

# FederationConfig fields no single flag sets: derived from several (see federation_config).
DERIVED_FIELDS = frozenset({"train", "dp", "require_join_secret", "signing_ca"})


def rows() -> list[Flag]:
    return [row for _, group in COORDINATOR_FLAGS for row in group]


def build_parser() -> argparse.ArgumentParser:
    """`pfeddc-server`'s parser, made from the table (and the shared prompt, training and log flags)."""
    p = argparse.ArgumentParser(
        prog="pfeddc-server",
        description="The pfeddc coordinator: holds the global vision and text prompts, samples clients each "
                    "round, and averages their updates (FedAvg weighted by example counts).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="other commands:\n  pfeddc-server status --help    the round, its deadline and every client (admin RPC)",
    )
    add_version(p)
    for title, group in COORDINATOR_FLAGS:
        if title is None:
            add_prompt_flags(p)
            add_train_flags(p)
            continue
        target = p.add_argument_group(title)
        for row in group:
            row.add_to(target)
    add_log_flags(p.add_argument_group("output"))
    apply_env_defaults(p)
    return p


def federation_config(args: argparse.Namespace) -> FederationConfig:
    """The FederationConfig of these flags: every row's `config` field, and the few fields derived from several
    flags (training settings, DP, the join-secret rule, the CA secure rounds check
    signatures with); FederationConfig validates."""
    given = {row.config: (row.to_config or (lambda v: v))(getattr(args, row.dest)) for row in rows() if row.config}
    dp = None
    if args.dp_noise_multiplier is not None or args.dp_clip is not None:
        if args.dp_noise_multiplier is None or args.dp_clip is None:
            raise ValueError("differential privacy needs both --dp-noise-multiplier and --dp-clip")
        dp = DpSettings(args.dp_noise_multiplier, args.dp_clip, args.dp_delta)
    return FederationConfig(**given, train=train_settings_from(args), dp=dp,
                            require_join_secret=not client_auth_of(args) and not is_loopback(listen_address(args)),
                            signing_ca=str(args.tls_client_ca) if args.tls_client_ca else None)
