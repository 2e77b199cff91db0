"""The coordinator's flags for bounded influence, robust and private aggregation, durability and exposure.

Defaults are read from where they are defined (FederationConfig, the aggregators, the DP settings), so the
help, the config and the docs cannot drift apart.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..common.cli import train_settings_from
from ..common.transport import MiB, is_loopback
from .pipeline.aggregate import AggregatorKind
from .pipeline.privacy import DEFAULT_DELTA, DpSettings
from .round.config import CONFIG_DEFAULTS as _DEFAULTS
from .round.config import FederationConfig

# Worker threads of the gRPC server: each held (long-poll) call occupies one, so this bounds held calls.
DEFAULT_MAX_HELD_CALLS = 1024


def add_robustness_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("bounded influence and aggregation")
    g.add_argument("--max-examples-per-client", type=int, default=_DEFAULTS["max_examples_per_client"],
                   help="cap on a client's FedAvg weight (the example count it declared at Join); set it to the "
                        "largest honest site's count (default: %(default)s)")
    g.add_argument("--update-clip-norm", type=float, default=_DEFAULTS["update_clip_norm"],
                   help="L2 bound on each update's change from the current global, over all its tensors as one "
                        "vector; larger changes are scaled down to it. 0: off (default: %(default)s)")
    g.add_argument("--adaptive-clip", type=float,
                   help="per-tensor bound adaptive to the round: each update's change of a global tensor is "
                        "scaled down to this multiple of the round's median change of that tensor (never above "
                        "twice the previous round's median), so one site cannot move any tensor much more than an "
                        "honest one. Applied before --update-clip-norm; not under DP (a bound computed from the "
                        "round's updates voids the sensitivity analysis: --dp-clip alone applies) and not under "
                        f"--secure-aggregation (it needs every update). 0: off (default: {_DEFAULTS['adaptive_clip']})")
    g.add_argument("--max-abs-value", type=float, default=_DEFAULTS["max_abs_value"],
                   help="updates holding a value of larger magnitude are refused (default: %(default)s)")
    g.add_argument("--aggregator", choices=list(AggregatorKind), default=str(_DEFAULTS["aggregator"]),
                   help="fedavg: mean weighted by capped example counts; median: coordinate-wise median; "
                        "trimmed-mean: coordinate-wise mean without the --trim fraction at each end. The robust "
                        "two are unweighted (default: %(default)s)")
    g.add_argument("--trim", type=float, default=_DEFAULTS["trim"],
                   help="fraction trimmed at each end by trimmed-mean: floor(trim * n) values, tolerating that many "
                        "hostile clients (default: %(default)s)")
    g.add_argument("--max-clients", type=int, default=_DEFAULTS["max_clients"],
                   help="client ids the coordinator registers at most; a Join of a new id beyond it is refused "
                        "(RESOURCE_EXHAUSTED), re-joins are not. Keeps the registry, its memory and the checkpoint "
                        "bounded (default: %(default)s)")
    g.add_argument("--client-ttl", type=float, default=_DEFAULTS["client_ttl_s"],
                   help="seconds after which a client id that never delivered an update and was not heard from "
                        "expires, and how long an id whose trial failed (sampled twice, never delivered) sits out "
                        "before another; a full registry evicts such ids for a new one (default: %(default)s)")
    g.add_argument("--max-joins-per-peer", type=int, default=_DEFAULTS["max_joins_per_peer"],
                   help="open mode: new client ids one peer address may register (loopback peers are exempt: the "
                        "operator's own machine, e.g. pfeddc-sim) (default: %(default)s)")
    g.add_argument("--max-retries", type=int, default=_DEFAULTS["max_retries"],
                   help="attempts of one round that may fail (only failure reports, no quorum, a non-finite "
                        "aggregate) before the coordinator stops with exit code 4; the round can still commit at "
                        "attempt N + 1, and each attempt counts hand-outs afresh (default: %(default)s)")
    d = p.add_argument_group("central differential privacy (off unless --dp-noise-multiplier is given)")
    d.add_argument("--dp-noise-multiplier", type=float,
                   help="DP-FedAvg: each client's change is clipped to --dp-clip, the changes are averaged with "
                        "equal weights and Gaussian noise of std multiplier * clip is added to their sum; epsilon "
                        "is logged and recorded every round. Requires --aggregator fedavg")
    d.add_argument("--dp-clip", type=float,
                   help="L2 clip of each client's change under DP (replaces --update-clip-norm)")
    d.add_argument("--dp-delta", type=float, default=DEFAULT_DELTA,
                   help="delta at which epsilon is reported (default: %(default)s)")
    a = p.add_argument_group("secure aggregation (off unless --secure-aggregation; docs/secure-aggregation.md)")
    a.add_argument("--secure-aggregation", action="store_true",
                   help="the coordinator learns only the weighted sum of each round's changes, never one site's: "
                        "sites mask their clipped, weighted changes (SecAgg: X25519, AES-GCM, Shamir shares) and "
                        "clients follow without a flag. Needs --min-clients >= --secagg-min-sites (3) and "
                        "--aggregator fedavg; turns "
                        "--adaptive-clip off (it needs every update) and each site clips to --update-clip-norm "
                        "(or --dp-clip) itself; the coordinator can no longer check update values")
    a.add_argument("--secagg-threshold", type=int, default=_DEFAULTS["secagg_threshold"],
                   help="sampled sites that must finish every stage of a secure round, or it is retried with fresh "
                        "keys; always more than half of the sampled; 0: more than half (default: %(default)s)")
    a.add_argument("--secagg-min-sites", type=int, default=_DEFAULTS["secagg_min_sites"],
                   help="no secure round unmasks the sum of fewer surviving sites: with 2, each learns the other's "
                        "change (and so does a coordinator colluding with one). The collusion bound: the "
                        "coordinator with k colluding sites learns the sum of the other survivors' changes, one "
                        "site's alone once k = survivors - 1; a consortium of 3-4 sites gets no dropout tolerance "
                        "at 3 (every site must finish). Never below 3 (default: %(default)s)")
    a.add_argument("--secagg-stage-timeout", type=float, default=_DEFAULTS["secagg_stage_timeout_s"],
                   help="seconds each exchange of a secure round after training may take; a site silent longer "
                        "has dropped out of the round (default: %(default)s)")
    e = p.add_argument_group("durability and exposure")
    e.add_argument("--fresh", action="store_true",
                   help="start a new federation even though --state-dir holds an earlier one's files (they are "
                        "kept, renamed *.old)")
    e.add_argument("--resume-aborted", action="store_true",
                   help="go on with a federation that aborted (a round failed more than --max-retries times; it "
                        "left aborted.json in --state-dir): retry that round. Without it such a state dir is "
                        "refused (exit 2), so a restart never quietly resumes what the clients gave up on")
    e.add_argument("--insecure", action="store_true",
                   help="allow listening on a non-loopback address without TLS and client authentication "
                        "(anyone who reaches the port can join; clients then prove their id with a join secret)")
    e.add_argument("--allow-tokens-only", action="store_true",
                   help="allow listening beyond loopback with TLS and --tokens but no --tls-client-ca: strangers "
                        "then get through the TLS handshake and are refused only from their call's headers "
                        "(by default client certificates are required beyond loopback)")
    e.add_argument("--max-held-calls", type=int, default=DEFAULT_MAX_HELD_CALLS,
                   help="waiting clients whose GetTask is held open (push); beyond it they poll (default: "
                        "%(default)s)")


def federation_config(args: argparse.Namespace) -> FederationConfig:
    """The coordinator's FederationConfig from its flags (whose defaults are the config's own)."""
    return FederationConfig(
        rounds=args.rounds, min_clients=args.min_clients, fraction=args.fraction,
        round_timeout_s=args.round_timeout, quorum=args.quorum, seed=args.seed, train=train_settings_from(args),
        max_update_bytes=int(args.max_update_mb * MiB),
        poll_interval_s=args.poll_interval, heartbeat_window_s=args.heartbeat_window, **robustness_config(args),
        require_join_secret=not client_auth_of(args) and not is_loopback(listen_address(args)),
    )


def robustness_config(args: argparse.Namespace) -> dict[str, Any]:
    """The FederationConfig fields these flags set (FederationConfig validates them)."""
    dp = None
    if args.dp_noise_multiplier is not None or args.dp_clip is not None:
        if args.dp_noise_multiplier is None or args.dp_clip is None:
            raise ValueError("differential privacy needs both --dp-noise-multiplier and --dp-clip")
        dp = DpSettings(args.dp_noise_multiplier, args.dp_clip, args.dp_delta)
    secure = args.secure_aggregation
    # not given: the default, off under secure aggregation (it needs every update); asking for it then is refused
    adaptive = args.adaptive_clip if args.adaptive_clip is not None else 0.0 if secure else _DEFAULTS["adaptive_clip"]
    return {"max_examples_per_client": args.max_examples_per_client, "update_clip_norm": args.update_clip_norm,
            "adaptive_clip": adaptive, "secure_aggregation": secure,
            "secagg_threshold": args.secagg_threshold, "secagg_min_sites": args.secagg_min_sites,
            "secagg_stage_timeout_s": args.secagg_stage_timeout,
            "max_abs_value": args.max_abs_value, "aggregator": AggregatorKind(args.aggregator), "trim": args.trim,
            "dp": dp, "max_retries": args.max_retries, "max_clients": args.max_clients,
            "client_ttl_s": args.client_ttl,
            "max_joins_per_peer": args.max_joins_per_peer}


def listen_address(args: argparse.Namespace) -> str:
    """--bind, or without it: every interface once the coordinator can tell its clients from anyone (TLS and
    client certificates, or tokens with --allow-tokens-only: what `check_exposure` accepts), loopback before, so
    `pfeddc-server --rounds 20` starts as written."""
    if args.bind:
        return str(args.bind)
    tls = any((args.tls_cert, args.tls_key, args.tls_client_ca))  # as TlsFiles.enabled reads them
    trusted = args.tls_client_ca is not None or (args.tokens is not None and args.allow_tokens_only)
    return "0.0.0.0" if tls and trusted else "127.0.0.1"


def client_auth_of(args: argparse.Namespace) -> bool:
    return args.tokens is not None or args.tls_client_ca is not None


def check_exposure(bind: str, tls: bool, client_certs: bool, tokens: bool, tokens_only: bool, insecure: bool) -> None:
    """Beyond loopback: TLS and client certificates (a stranger is then refused at the TLS handshake, before it
    can open a stream), or tokens alone when --allow-tokens-only says so, or --insecure; else refuse to start."""
    if is_loopback(bind) or insecure or (tls and (client_certs or (tokens and tokens_only))):
        return
    if tls and tokens:
        raise ValueError(
            f"refusing to listen on {bind} with tokens alone: without client certificates anyone who reaches the "
            "port completes the TLS handshake and can open streams before a token is checked. Fix: "
            "--tls-client-ca (pfeddc-certs issues client certificates; docs/deploy.md), or --allow-tokens-only to "
            "accept that")
    missing = "TLS and client authentication" if not tls else "client authentication"
    raise ValueError(
        f"refusing to listen on {bind} without {missing}: anyone who reaches this port could join and submit. "
        "Fix: --tls-cert/--tls-key with --tls-client-ca (and --tokens) (docs/deploy.md), or --bind 127.0.0.1 "
        "for a local run, or --insecure to accept the risk")
