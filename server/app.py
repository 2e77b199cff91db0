"""`pfeddc-server`: parse flags, restore or create the federation, serve it over gRPC until done."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
from dataclasses import dataclass, replace

from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ..common.backbones import BackboneDims, resolve_dims
from ..common.cli import prompt_config_from
from ..common.envflags import package_version
from ..common.lifecycle import ExitCode, Stopper
from ..common.logs import Event, configure_logging, get_logger
from ..common.proto import admin_pb2_grpc as admin_grpc
from ..common.spec import (
    MAX_CLASSES,
    METHODS,
    SECURE_DEFAULT_METHOD,
    PromptConfig,
    TensorSpec,
    global_spec,
    initial_prompts,
)
from ..common.stdio import capture_stray_output, say_error
from ..common.transport import TlsFiles, is_loopback, server_options
from .exposure import check_exposure, listen_address
from .flags import build_parser, federation_config
from .ops.checkpoint import ROUNDS_FILE, Checkpoint, CheckpointError
from .ops.metrics import CoordinatorMetrics
from .ops.process import freeze_startup, single_threaded_blas, tune_allocator
from .ops.runner import SidePorts, run_until_done, start_side_ports, tick
from .ops.statedir import StateDirLock, check_aborted, mark_aborted
from .ops.status import StatusSource
from .round.classes import class_list
from .round.federation import Federation, FederationConfig, FederationState
from .round.longpoll import ChangeFeed
from .wire.admin import ADMIN_SERVICE_NAME, AdminServicer
from .wire.aioserver import AioServer
from .wire.auth import Authenticator, load_tokens
from .wire.gate import SERVICE_NAME, max_receive_bytes
from .wire.headers import CredentialHeaders
from .wire.servicer import CoordinatorServicer

log = get_logger("coordinator")


@dataclass
class RunningServer:
    server: AioServer
    port: int
    federation: Federation
    health: health.HealthServicer
    stop_event: threading.Event
    status: StatusSource | None = None
    side: SidePorts | None = None
    lock: StateDirLock | None = None

    def stop(self, grace: float | None = None) -> None:
        self.stop_event.set()
        for name in ("", SERVICE_NAME, ADMIN_SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.federation.changes.close()  # held calls answer now instead of pinning the shutdown
        self.server.stop(grace)
        if self.side:
            self.side.stop()
        if self.lock:
            self.lock.release()


def start(args: argparse.Namespace) -> RunningServer:
    """Build the federation from flags (resuming a checkpoint) and start serving; returns at once."""
    prompt = prompt_config_from(args)
    dims = resolve_dims(args.model)
    global_spec(dims, prompt)  # refuse impossible layouts before anything else
    config = federation_config(args)
    if config.secure_aggregation and not METHODS[prompt.method].shares:
        raise ValueError(f"--secure-aggregation with --method {prompt.method}: the method shares no tensor, so there "
                         "is no sum to hide; run it without --secure-aggregation")
    if config.secure_aggregation and prompt.residual:
        log.warning(Event.SECURE_RESIDUAL_UNBOUNDED, method=prompt.method,
                    detail="under secure aggregation the coordinator bounds only the sum of each class row of the "
                           "head's residual, not one site's: one hostile member moved rows 19-99x an honest site's "
                           "influence and cost honest sites up to 7.4 points (benchmarks/results/"
                           f"attack_head_secure.md); {SECURE_DEFAULT_METHOD}, the default here, shares no residual")
    tls = TlsFiles(ca=args.tls_client_ca, cert=args.tls_cert, key=args.tls_key)
    args.bind_given = bool(args.bind)
    args.bind = listen_address(args)
    check_exposure(args.bind, tls.enabled, args.tls_client_ca is not None, args.tokens is not None,
                   args.allow_tokens_only, args.insecure)
    if config.dp is not None and prompt.head.has_global:
        raise ValueError(
            f"DP-FedAvg (--dp-noise-multiplier) is refused with --method {prompt.method}: its noise, one clip for "
            "all of a site's tensors, swamps the class head's shared statistics (their P x P second moment above "
            "all), and the federation falls below zero-shot (measured, 10 sites, epsilon 8: inverted digits 87.6% "
            "-> 11.9%, Twemoji-10 89.0% -> 10.6%; docs/method.md). Use --secure-aggregation to hide each site's "
            "statistics instead, or DP with a prompt method (--method pfeddc-noproto)")
    lock = StateDirLock(args.state_dir).acquire()
    try:
        return _start_locked(args, prompt, dims, config, tls, lock)
    except BaseException:
        lock.release()
        raise


def _start_locked(args: argparse.Namespace, prompt: PromptConfig, dims: BackboneDims, config: FederationConfig,
                  tls: TlsFiles, lock: StateDirLock) -> RunningServer:
    aborted = check_aborted(args.state_dir, args.resume_aborted, args.fresh)
    if aborted is not None:
        log.warning(Event.FEDERATION_RESUMED, state_dir=str(args.state_dir), aborted_round=aborted.get("round"),
                    reason=aborted.get("reason"), advice="--resume-aborted (or --fresh): the aborted round is "
                    "retried from its first attempt")
    checkpoint = Checkpoint(args.state_dir)
    fingerprint = json.dumps([args.model, prompt.to_dict(), args.seed], sort_keys=True)  # before classes gathered
    federation_id = hashlib.sha256(fingerprint.encode()).hexdigest()[:12]
    saved = () if args.fresh else checkpoint.saved_classes()
    prompt = replace(prompt, classes=class_list(prompt.classes, saved, str(args.state_dir)))
    spec = global_spec(dims, prompt)

    def spec_for(classes: tuple[str, ...]) -> list[TensorSpec]:
        return global_spec(dims, replace(prompt, classes=classes))

    gather = prompt.head.has_global and not prompt.classes  # the class list comes from the sites' Joins
    state = checkpoint.load(spec, config.rounds, args.fresh)
    if state is None:
        state = FederationState(1, initial_prompts(spec, args.seed), {}, classes=prompt.classes)
        checkpoint.save(state)
        log.info(Event.FEDERATION_CREATED, state_dir=str(args.state_dir), spec=[s.describe() for s in spec],
                 classes=list(prompt.classes) or ("gathered from the sites' Joins as round 1 opens" if gather
                                                  else None))
    else:
        log.info(Event.FEDERATION_RESUMED, state_dir=str(args.state_dir), round=state.round,
                 clients=len(state.clients))
        keyless = sorted(c for c, r in state.clients.items() if not r.signing_key) if config.binds_signing_keys else []
        if keyless:
            log.warning(Event.SIGNING_KEYS_MISSING, clients=len(keyless), first=keyless[:5],
                        advice="secure rounds that sample these sites are unsigned until each joins again: "
                               "restart their pfeddc-client (it joins when it starts)")
    metrics = CoordinatorMetrics()
    federation = Federation(config, spec, state, save=checkpoint.save,
                            changes=ChangeFeed(max_waiters=args.max_held_calls),
                            spec_for=spec_for if gather else None, observe_save=metrics.checkpoint_duration.observe)
    tokens = load_tokens(args.tokens) if args.tokens else None
    auth = Authenticator(tokens=tokens, require_cert_identity=args.tls_client_ca is not None,
                         loopback=is_loopback(args.bind))
    source = StatusSource(federation, federation_id, args.model, prompt.method, package_version(),
                          args.state_dir / ROUNDS_FILE)
    metrics.watch(source)
    largest = spec_for(tuple(f"class {i}" for i in range(MAX_CLASSES))) if gather else spec  # before it is known
    options = server_options(config.max_update_bytes, max_receive_bytes(largest, config.secure_aggregation, gather))
    # the token check needs the headers before the body is read, so an interceptor (per call); nothing else is one
    headers = [CredentialHeaders(auth.token_digests, metrics.refused)] if auth.token_digests is not None else []
    server = AioServer(options=options, interceptors=headers, instrument=metrics.instrument)
    federation.changes.attach(server.loop)  # held calls wait on the server's event loop
    admin_grpc.add_AdminServicer_to_server(AdminServicer(source, auth), server)
    CoordinatorServicer(federation, auth, federation_id, args.model, prompt).register(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"[{args.bind}]:{args.port}" if ":" in args.bind else f"{args.bind}:{args.port}"
    try:
        port = server.add_secure_port(address, tls.server_credentials()) if tls.enabled else \
            server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0 or (args.port and port != args.port):
        raise OSError(f"cannot listen on {address}: the address is not local or the port is in use (is another "
                      "coordinator running on it? two would split the clients between two federations)")
    if is_loopback(args.bind) and not args.bind_given:
        log.info(Event.LOOPBACK_ONLY, bind=args.bind, port=port,
                 advice="serving this machine only: to serve other machines, give --tls-cert/--tls-key with "
                        "--tls-client-ca and/or --tokens (docs/deploy.md), or --bind ADDRESS --insecure")
    if not is_loopback(args.bind) and (not tls.enabled or (tokens is None and args.tls_client_ca is None)):
        log.warning(Event.INSECURE_LISTENER, bind=args.bind, tls=tls.enabled, client_auth=False,
                    advice="anyone who reaches this port can join and submit: use --tls-cert/--tls-key and "
                           "--tls-client-ca or --tokens (see docs/deploy.md)")
    try:
        side = start_side_ports(args, health_servicer, source, metrics)
    except BaseException:
        server.stop(0)
        raise
    server.start()
    for name in ("", SERVICE_NAME, ADMIN_SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    running = RunningServer(server, port, federation, health_servicer, threading.Event(), source, side, lock)
    threading.Thread(target=tick, args=(federation, health_servicer, running.stop_event), daemon=True,
                     name="round-ticker").start()
    log.info(Event.SERVER_STARTED, port=port, bind=args.bind, tls=tls.enabled, federation_id=federation_id,
             rounds=config.rounds, round=federation.round, health_port=side.health_port,
             metrics_port=side.metrics_port, version=package_version())
    return running


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["status"]:
        from .ops.status_cli import main as status_main
        return status_main(argv[1:])
    args = build_parser().parse_args(argv)
    configure_logging(args.log_format, args.log_level)
    capture_stray_output(args.log_level, serving=True)
    single_threaded_blas()
    tune_allocator()
    with Stopper() as stopper:
        try:
            running = start(args)
        except (ValueError, OSError, CheckpointError) as exc:
            log.error(Event.SERVER_FAILED, error=str(exc))
            say_error("pfeddc-server", str(exc))
            return ExitCode.CONFIG
        freeze_startup()
        code = run_until_done(running.federation, args.linger, stopper)
        if running.federation.aborted:
            mark_aborted(args.state_dir, running.federation.round, running.federation.aborted)
        log.info(Event.SERVER_STOPPING, grace_s=args.grace, round=running.federation.round,
                 signal=stopper.signal_name, finished=running.federation.finished)
        running.stop(args.grace)
    log.info(Event.SERVER_STOPPED, exit_code=int(code))
    return code


if __name__ == "__main__":
    sys.exit(main())
