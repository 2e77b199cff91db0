"""`pfeddc-sim`: a whole federation on one machine, through the same code paths as a deployment.

For each method it starts a real `pfeddc-server` and one real `pfeddc-client` process per client folder on
loopback, follows the rounds, then writes per-round per-client accuracy (CSV), a summary table (mean, std
across clients, worst client) and a plot of accuracy against round, one line per method.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from ...common.backbones import EMBEDDED_MODEL
from ...common.cli import (
    add_prompt_flags,
    add_train_flags,
    default_method,
    prompt_config_from,
    prompt_flags,
    train_flags,
    train_settings_from,
)
from ...common.envflags import add_version, apply_env_defaults
from ...common.logs import Event
from ...common.spec import METHODS, SECURE_DEFAULT_METHOD, PromptConfig, class_key
from .processes import LoggedProcess, installed_command
from .report import collect_method, print_round_table, write_results

DEMO: dict[str, Any] = {"source": "fashion-mnist", "clients": 4, "alpha": 0.5, "max_samples": 4000,
                        "methods": ["zeroshot", "pfeddc"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pfeddc-sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="folder of client folders, as pfeddc-partition --out writes it")
    p.add_argument("--demo", action="store_true",
                   help="partition built-in Fashion-MNIST (test split) into 4 Dirichlet(0.5) clients under "
                        "OUT/data and compare zero-shot CLIP with pFedDC on the embedded backbone")
    p.add_argument("--rounds", type=int, default=10, help="federated rounds (default: %(default)s)")
    p.add_argument("--methods", "--method", dest="methods",
                   help=f"comma-separated methods or 'all' ({', '.join(METHODS)}); default: pfeddc, or "
                        f"zeroshot,pfeddc with --demo; {SECURE_DEFAULT_METHOD} in place of pfeddc with "
                        "--secure-aggregation")
    p.add_argument("--model", default=EMBEDDED_MODEL,
                   help="backbone: 'embedded' (default), a local directory or a hub name")
    p.add_argument("--out", type=Path, default=Path("runs/sim"), help="results folder (default: %(default)s)")
    p.add_argument("--seed", type=int,
                   help="seed of the coordinator and of every client (default: theirs)")
    p.add_argument("--fraction", type=float, help="participation per round (default: the coordinator's)")
    p.add_argument("--round-timeout", type=float, default=900.0,
                   help="seconds before a round closes without stragglers (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per client process (default: cores / clients, at least 1)")
    p.add_argument("--device", default="cpu", help="client device: cpu, cuda, auto (default: %(default)s)")
    p.add_argument("--secure-aggregation", action="store_true", default=None,
                   help="run the coordinator with secure aggregation: it learns only each round's sum of the "
                        "clients' changes (needs 3 client folders or more; docs/secure-aggregation.md); a method "
                        "that shares no tensor (the zeroshot baseline) runs without it: it has no sum to hide")
    add_prompt_flags(p, with_method=False)
    add_train_flags(p)
    add_version(p)
    apply_env_defaults(p)
    return p


def client_folders(data: Path) -> list[Path]:
    folders = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"no client folders in {data}: run pfeddc-partition --out {data} first")
    return folders


def run_method(args: argparse.Namespace, method: str, clients: list[Path], out: Path) -> dict[str, Any]:
    """One federation of real processes for `method`; returns its collected results."""
    if out.exists():
        raise ValueError(f"{out} exists: results are never mixed with an earlier run; remove it or use another --out")
    threads = args.threads or max(1, (os.cpu_count() or 1) // len(clients))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    server_cmd = installed_command("pfeddc-server")
    client_cmd = installed_command("pfeddc-client")
    server = LoggedProcess(
        [server_cmd, *server_flags(args, method, clients, out)],
        out / "logs" / "server.log", env)
    procs = [server]
    try:
        port = server.wait_event(Event.SERVER_STARTED, 60)["port"]
        for folder in clients:
            procs.append(LoggedProcess(
                [client_cmd, *client_flags(args, folder, port, out)],
                out / "logs" / f"{folder.name}.log", env))
        started = time.monotonic()
        moved: dict[int, dict[str, float]] = {}  # per round, how far each global tensor moved
        for r in range(1, args.rounds + 1):
            event = _wait_round(server, procs[1:], r)
            moved[r] = dict(event.get("global_change") or {})
            acc = event.get("accuracy_after")
            print(f"  [{method}] round {r}/{args.rounds}: accuracy {acc if acc is None else f'{acc:.4f}'} "
                  f"({len(event['clients'])} clients, {event['duration_s']:.1f} s)", flush=True)
        for proc, folder in zip(procs[1:], clients, strict=True):
            if proc.wait(300) != 0:
                raise RuntimeError(f"client {folder.name} failed; its log ({proc.log_path}) ends:\n{proc.tail()}")
        duration = time.monotonic() - started
    finally:
        for proc in procs:
            proc.kill()
    return collect_method(method, out, [c.name for c in clients], duration, moved)


def server_flags(args: argparse.Namespace, method: str, clients: list[Path], out: Path) -> list[str]:
    """The coordinator's command line: the sim's settings of the coordinator's own flags passed through (a test
    parses it with pfeddc-server's parser), the rest what a local comparison needs."""
    return ["--bind", "127.0.0.1", "--port", "0", "--state-dir", str(out / "coordinator"),
            "--rounds", str(args.rounds), "--min-clients", str(len(clients)), *_given(args, "fraction", "seed"),
            "--round-timeout", str(args.round_timeout), "--model", args.model,
            "--method", method, "--poll-interval", "0.2", "--linger", "3", "--log-format", "json",
            *train_flags(train_settings_from(args)), *prompt_flags(prompt_config_from(args, method)),
            "--classes", args.classes or str(federation_classes(clients, out)),
            # a method that shares nothing (zeroshot) has no sum to hide: the coordinator refuses secure mode for it
            *(["--secure-aggregation"] if args.secure_aggregation and METHODS[method].shares else [])]


def client_flags(args: argparse.Namespace, folder: Path, port: int, out: Path) -> list[str]:
    """One client's command line (a test parses it with pfeddc-client's parser)."""
    return ["--data", str(folder), "--server", f"127.0.0.1:{port}", "--state-dir", str(out / "clients" / folder.name),
            "--client-id", folder.name, "--model", args.model, *_given(args, "seed"), "--device", args.device,
            "--log-format", "json", "--no-progress"]


def _given(args: argparse.Namespace, *names: str) -> list[str]:
    """The flags of `names` that were given: the others keep the coordinator's and the client's own defaults."""
    return [arg for name in names if getattr(args, name) is not None
            for arg in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]


def federation_classes(clients: list[Path], out: Path) -> Path:
    """Every class any client folder holds (by the name it shows the model), written one per line."""
    from ..folders import classnames_for, scan

    names: dict[str, str] = {}
    for folder in clients:
        for name in classnames_for(folder, scan(folder)[0]):
            names.setdefault(class_key(name), name)
    path = out / "classes.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{names[k]}\n" for k in sorted(names)))
    return path


def _wait_round(server: LoggedProcess, clients: list[LoggedProcess], round_: int) -> dict[str, Any]:
    while True:
        try:
            return server.wait_event(Event.ROUND_COMPLETED, 5, count=round_)
        except TimeoutError:
            for proc in [server, *clients]:
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"{Path(proc.argv[0]).name} exited before round {round_} completed "
                                       f"({proc.log_path}):\n{proc.tail()}") from None


def main(argv: list[str] | None = None) -> int:
    from ...common.logs import configure_logging

    args = build_parser().parse_args(argv)
    configure_logging("auto", "warning")
    default = default_method(bool(args.secure_aggregation))  # the class head, without its residual when secure
    chosen = args.methods or (",".join(default if m == PromptConfig.method else m for m in DEMO["methods"])
                              if args.demo else default)
    methods = list(METHODS) if chosen == "all" else [m.strip() for m in chosen.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"pfeddc-sim: error: unknown method(s) {unknown}; choose from {', '.join(METHODS)}", file=sys.stderr)
        return 2
    try:
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"--out {args.out} is a file; give a directory for the results")
        if args.demo:
            args.data = args.data or _demo_data(args.out / "data")
        if args.data is None:
            raise ValueError("--data is required (or --demo)")
        clients = client_folders(args.data)
        if args.secure_aggregation and len(clients) < 3:  # before a coordinator starts only to refuse it
            raise ValueError(f"--secure-aggregation needs 3 client folders or more (with two, each learns the "
                             f"other's change from the sum); {args.data} has {len(clients)}")
        if args.model == EMBEDDED_MODEL:
            from ..embedded import embedded_dir

            print(f"backbone: embedded ({embedded_dir()})", flush=True)
        results = []
        for method in methods:
            print(f"{method}: {len(clients)} clients, {args.rounds} rounds", flush=True)
            results.append(run_method(args, method, clients, args.out / method))
    except (ValueError, OSError, RuntimeError) as exc:  # OSError: unwritable --out, a full disk, ...
        print(f"pfeddc-sim: error: {exc}", file=sys.stderr)
        return 2
    paths = write_results(results, args.out)
    print_round_table(results)
    print(f"\nresults: {paths['summary']}\nplot:    {paths['plot']}")
    return 0


def _demo_data(target: Path) -> Path:
    if (target / "manifest.json").exists():
        return target
    from .partition_app import build_parser as partition_parser
    from .partition_app import write_partition
    from .sources import load_source

    args = partition_parser().parse_args([
        "--source", DEMO["source"], "--clients", str(DEMO["clients"]), "--alpha", str(DEMO["alpha"]),
        "--max-samples", str(DEMO["max_samples"]), "--out", str(target)])
    write_partition(load_source(DEMO["source"]), args)
    print(f"demo data: {target} (Fashion-MNIST test split, {DEMO['clients']} clients, Dirichlet {DEMO['alpha']}; "
          f"heatmap {target / 'partition.png'})", flush=True)
    return target


if __name__ == "__main__":
    sys.exit(main())
