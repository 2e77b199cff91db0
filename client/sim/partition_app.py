"""`pfeddc-partition`: split a labeled image source into per-client ImageFolders with train/ and test/."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ...common.envflags import add_version, apply_env_defaults
from ..folders import DEFAULT_TEST_FRACTION
from ..partition import SCHEMES, counts, partition, train_test_split
from .sources import BUILTIN, Source, load_source


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pfeddc-partition",
        description="Split a labeled image source into N client folders (each with train/ and test/), with a "
                    "manifest.json of per-client per-class counts and a partition.png heatmap.")
    p.add_argument("--source", required=True,
                   help=f"built-in ({', '.join(BUILTIN)}) or an ImageFolder directory (DIR/<class>/*)")
    p.add_argument("--clients", type=int, required=True, help="number of clients")
    p.add_argument("--scheme", choices=SCHEMES, default="dirichlet",
                   help="dirichlet: label shift with Dirichlet(alpha) class proportions; pathological: "
                        "--classes-per-client classes each; domain: each client from one domain; iid "
                        "(default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="Dirichlet concentration: small = skewed, large = close to IID (default: %(default)s)")
    p.add_argument("--classes-per-client", type=int, default=2, help="for pathological (default: %(default)s)")
    p.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION,
                   help="per-client, per-class held-out fraction (default: %(default)s)")
    p.add_argument("--max-samples", type=int, default=0,
                   help="use a seeded random subset of the source this large (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="seeds the subset, the split and the test split")
    p.add_argument("--out", type=Path, required=True, help="output directory (must be empty or absent)")
    add_version(p)
    apply_env_defaults(p)
    return p


def write_partition(source: Source, args: argparse.Namespace) -> dict[str, Any]:
    if args.max_samples:
        source = source.subset(args.max_samples, args.seed)
    parts = partition(source.labels, args.clients, args.scheme, args.seed, alpha=args.alpha,
                      classes_per_client=args.classes_per_client, domains=source.domains)
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out} is not empty")
    folder_names = [c.replace(" ", "_") for c in source.classnames]
    clients = []
    for i, part in enumerate(parts):
        split = train_test_split(part, source.labels, args.test_fraction, args.seed + i)
        name = f"client_{i:02d}"
        for kind, indices in (("train", split.train), ("test", split.test)):
            for j in indices:
                source.write(j, out / name / kind / folder_names[source.labels[j]], f"{j:06d}")
        domain = sorted({str(source.domains[j]) for j in part}) if source.domains is not None else None
        clients.append({
            "name": name, "train": len(split.train), "test": len(split.test), "domains": domain,
            "train_counts": counts(source.labels, [split.train], len(source.classnames))[0].tolist(),
            "test_counts": counts(source.labels, [split.test], len(source.classnames))[0].tolist(),
        })
    manifest = {"source": source.name, "scheme": args.scheme, "alpha": args.alpha, "seed": args.seed,
                "clients": clients, "classnames": source.classnames, "samples": int(sum(len(p) for p in parts)),
                "classes_per_client": args.classes_per_client, "test_fraction": args.test_fraction}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    plot_partition(manifest, out / "partition.png")
    return manifest


def plot_partition(manifest: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.array([np.add(c["train_counts"], c["test_counts"]) for c in manifest["clients"]])
    fig, ax = plt.subplots(figsize=(1 + 0.6 * grid.shape[1], 1 + 0.4 * grid.shape[0]))
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), manifest["classnames"], rotation=45, ha="right")
    ax.set_yticks(range(grid.shape[0]), [c["name"] for c in manifest["clients"]])
    for (r, c), v in np.ndenumerate(grid):
        ax.text(c, r, str(v), ha="center", va="center", fontsize=7, color="white" if v < grid.max() / 2 else "black")
    ax.set_title(f"{manifest['source']}: {manifest['scheme']}"
                 + (f" (alpha={manifest['alpha']})" if manifest["scheme"] == "dirichlet" else ""))
    fig.colorbar(im, ax=ax, label="samples")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        manifest = write_partition(load_source(args.source), args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"pfeddc-partition: error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(manifest['clients'])} clients, {manifest['samples']} samples -> {args.out} "
          f"(manifest.json, partition.png)")
    for c in manifest["clients"]:
        print(f"  {c['name']}: {c['train']} train / {c['test']} test" + (f"  {c['domains']}" if c["domains"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
