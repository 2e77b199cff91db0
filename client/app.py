"""`pfeddc-client`: run the daemon against a coordinator, or use the personalized model offline.

  pfeddc-client --data DIR --server HOST:PORT [...]        train with the federation (the daemon)
  pfeddc-client predict --state-dir DIR PATH...            class and probability per image
  pfeddc-client evaluate --state-dir DIR --data DIR        accuracy of the personalized model
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
from pathlib import Path

from ..common.cli import add_log_flags, add_train_flags, train_overrides_from
from ..common.envflags import add_version, apply_env_defaults
from ..common.lifecycle import ExitCode, Stopper, run_in_worker
from ..common.logs import Event, configure_logging, get_logger
from ..common.messages import Refused
from ..common.stdio import capture_stray_output, json_logging, say_error
from ..common.tlsprobe import CredentialError, check_files
from ..common.transport import TlsFiles, common_name, read_token
from .connection import CoordinatorUnreachable
from .folders import DataError
from .options import add_option_flags, options_from
from .preflight import check_data, check_model, check_server
from .store import ClientStore, StateError

log = get_logger("client")


def _common(p: argparse.ArgumentParser) -> None:
    add_option_flags(p, ["state_dir", "device"])
    add_log_flags(p)


def run_parser(env: bool = True) -> argparse.ArgumentParser:
    """The daemon's flags: made from `ClientOptions` (client/options.py), where their defaults are written."""
    p = argparse.ArgumentParser(
        prog="pfeddc-client", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="pfeddc client daemon: trains global and local prompts on private images and exchanges "
                    "only the global prompts with the coordinator.",
        epilog="other commands:\n  pfeddc-client predict --help\n  pfeddc-client evaluate --help\n"
               "  pfeddc-client signing-key --help")
    add_option_flags(p, ["data", "server"])
    _common(p)
    add_option_flags(p, ["model", "allow_download", "seed", "test_fraction", "client_id"])
    p.add_argument("--tls-ca", type=Path, help="PEM CA that signed the coordinator's certificate (enables TLS)")
    p.add_argument("--tls-cert", type=Path, help="PEM client certificate for mTLS")
    p.add_argument("--tls-key", type=Path, help="PEM private key of the client certificate")
    add_option_flags(p, ["token"])
    p.add_argument("--token-file", type=Path,
                   help="file holding the client token (as pfeddc-certs client writes it: DIR/clients/ID/token)")
    add_option_flags(p, ["max_retries", "progress", "eval_every"])
    add_train_flags(p, overrides=True)
    add_version(p)
    if env:
        apply_env_defaults(p, siblings=[offline_parser(c, env=False) for c in ("predict", "evaluate")])
    return p


def offline_parser(command: str, env: bool = True) -> argparse.ArgumentParser:
    if command == "signing-key":
        p = argparse.ArgumentParser(
            prog="pfeddc-client signing-key",
            description="Print this client's id and the public key it signs secure rounds with when it has no "
                        "client certificate (made once in its state dir), as one line of JSON: the other sites' "
                        "operators merge it into their state dir's peer_keys.json to pin it before the first round "
                        "(otherwise each site pins it when it first sees it: docs/secure-aggregation.md).")
        add_option_flags(p, ["state_dir", "client_id"])
        add_log_flags(p)
        add_version(p)
        if env:
            apply_env_defaults(p, siblings=[run_parser(env=False)])
        return p
    if command == "predict":
        p = argparse.ArgumentParser(prog="pfeddc-client predict",
                                    description="Classify images with this client's personalized model.")
        p.add_argument("paths", nargs="+", type=Path, help="image files or directories")
        p.add_argument("--format", choices=["csv", "json"], default="csv", help="output format (default: csv)")
    else:
        p = argparse.ArgumentParser(prog="pfeddc-client evaluate",
                                    description="Accuracy of this client's personalized model on an ImageFolder "
                                                "(its test/ part when it has train/ and test/).")
        p.add_argument("--data", type=Path, required=True, help="ImageFolder with the same class folders")
    _common(p)
    p.add_argument("--model", help="backbone override (default: the one recorded in the state dir)")
    add_version(p)
    if env:
        apply_env_defaults(p, siblings=[run_parser(env=False)])
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in ("predict", "evaluate", "signing-key", "run") else "run"
    if argv and argv[0] == command:
        argv = argv[1:]
    args = (run_parser() if command == "run" else offline_parser(command)).parse_args(argv)
    configure_logging(args.log_format, args.log_level)
    args.state_dir = args.state_dir.expanduser()
    try:
        if command == "run":
            return _run(args)
        if command == "signing-key":
            return _print_signing_key(args.state_dir, args.client_id)
        if args.log_format == "json" or not sys.stderr.isatty():
            quiet_progress_bars()
        from .offline import evaluate_command, predict_command

        if command == "predict":
            rows = predict_command(args.state_dir, args.paths, args.model, args.device)
            if args.format == "json":
                for row in rows:
                    print(json.dumps(row))
            else:
                writer = csv.DictWriter(sys.stdout, fieldnames=["path", "class", "probability"])
                writer.writeheader()
                writer.writerows(rows)
        else:
            print(json.dumps(evaluate_command(args.state_dir, args.data, args.model, args.device)))
        return 0
    except CoordinatorUnreachable as exc:
        return _fail(str(exc), ExitCode.UNREACHABLE)
    except (DataError, StateError, ValueError, FileNotFoundError, PermissionError) as exc:  # + no such model
        return _fail(str(exc), ExitCode.CONFIG)
    except Refused as exc:
        return _fail(f"coordinator refused: {exc.code}: {exc.message}", ExitCode.CONFIG)


def _print_signing_key(state_dir: Path, client_id: str | None) -> int:
    store = ClientStore(state_dir, tidy=False)  # a daemon may be running on it
    if client_id is None and store.stored_client_id() is None:
        raise StateError(f"{store.dir} holds no client id yet: pass --client-id (the id this site joins under), or "
                         "check --state-dir")
    print(json.dumps({store.client_id(client_id): store.signing_key().credential.hex()}))
    return 0


def client_identity(client_id: str | None, tls_cert: Path | None) -> tuple[str | None, str]:
    """The client id and where it came from: --client-id, else the client certificate's common name (the
    coordinator ties the two under mTLS, so they must agree)."""
    if tls_cert is None:
        return client_id, "--client-id"
    named = common_name(tls_cert)
    if client_id is not None and client_id != named:
        raise CredentialError(f"--client-id {client_id!r} differs from the common name {named!r} of --tls-cert "
                              f"{tls_cert}: the coordinator ties each client id to its certificate. Drop --client-id "
                              "(the id comes from the certificate), or use that client's certificate")
    return named, f"the common name of --tls-cert {tls_cert}"


def quiet_progress_bars() -> None:
    """No progress bars (transformers' "Loading weights", tqdm's) where nobody watches a terminal, or where
    stderr carries JSON logs: set before transformers is imported, which reads it once."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TQDM_DISABLE"] = "1"
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _fail(message: str, code: int) -> int:
    log.error(Event.CLIENT_FAILED, error=message, exit_code=int(code))
    say_error("pfeddc-client", message)
    return code


def _run(args: argparse.Namespace) -> int:
    check_server(args.server)  # mistakes that take milliseconds to find are reported before anything slow
    check_data(args.data)
    check_model(args.model)
    token = read_token(args.token, args.token_file)
    tls = TlsFiles(args.tls_ca, args.tls_cert, args.tls_key)
    problem = check_files(tls)  # an expired or mismatched certificate: before seconds of model loading
    if problem:
        raise CredentialError(problem)
    client_id, source = client_identity(args.client_id, args.tls_cert)
    release_output = capture_stray_output(args.log_level)
    from .daemon import ClientDaemon  # torch and transformers: seconds

    opts = options_from(args, client_id=client_id, client_id_source=source, tls=tls, token=token,
                        overrides={k: v for k, v in train_overrides_from(args).items() if v is not None})
    with Stopper() as stopper:
        outcome = run_in_worker(lambda: ClientDaemon(opts, stopper.event).run(), stopper)
    if stopper.signum:
        # Interrupted: whatever the daemon was doing (loading, training, waiting), the exit code says so.
        log.info(Event.CLIENT_STOPPED, reason=stopper.signal_name, exit_code=stopper.exit_code,
                 wound_down=outcome.done)
        # The state is saved (or the work is still inside a model load or a blocking call): do not wait for the
        # interpreter's teardown either (gRPC's C-core shutdown alone can take over a second), end the process.
        release_output()
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(stopper.exit_code)
    if outcome.error is not None:
        raise outcome.error
    if not json_logging():  # with JSON logs the federation_finished event carries the same summary
        print(json.dumps(outcome.result))
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
