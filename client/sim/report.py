"""Results of simulated federations: per-round per-client CSV, summary table, accuracy-vs-round plot."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any

from ..store import ClientStore

ROUND_FIELDS = ["method", "round", "client", "accuracy_global", "accuracy_after", "train_loss", "num_test_examples",
                "num_examples", "accepted", "reason"]


def collect_method(method: str, out: Path, clients: list[str], duration_s: float,
                   global_change: dict[int, dict[str, float]]) -> dict[str, Any]:
    """Read each client's own state dir (through its store): per-round history and final evaluation."""
    rows = []
    finals = {}
    for name in clients:
        store = ClientStore(out / "clients" / name)
        for record in store.history():  # empty for a client never sampled (participation < 1)
            m = record.metrics
            rows.append({"method": method, "round": record.round, "client": name,
                         "accuracy_global": _number(m.accuracy_global), "accuracy_after": _number(m.accuracy_after),
                         "train_loss": _number(m.train_loss), "num_test_examples": m.num_test_examples,
                         "num_examples": record.num_examples, "accepted": record.accepted, "reason": record.reason})
        final = store.meta().final_accuracy
        if final is None:
            raise RuntimeError(f"client {name} of {method} recorded no final accuracy")
        finals[name] = float(final)
    accs = list(finals.values())
    summary = {
        "method": method, "clients": len(accs), "mean_accuracy": statistics.fmean(accs),
        "std_across_clients": statistics.pstdev(accs), "worst_client": min(accs), "duration_s": round(duration_s, 1),
    }
    return {"method": method, "rows": rows, "final": finals, "summary": summary, "global_change": global_change}


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def per_round_means(result: dict[str, Any]) -> dict[int, float]:
    by_round: dict[int, list[float]] = {}
    for row in result["rows"]:
        if row["accuracy_after"] is not None:  # None: a round whose training diverged and was discarded
            by_round.setdefault(int(row["round"]), []).append(float(row["accuracy_after"]))
    return {r: statistics.fmean(v) for r, v in sorted(by_round.items())}


def write_results(results: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"rounds": out / "per_round.csv", "summary": out / "summary.csv", "plot": out / "accuracy.png",
             "json": out / "results.json"}
    with open(paths["rounds"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=ROUND_FIELDS)
        writer.writeheader()
        for result in results:
            writer.writerows(sorted(result["rows"], key=lambda r: (r["round"], r["client"])))
    with open(paths["summary"], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(results[0]["summary"]))
        writer.writeheader()
        writer.writerows(r["summary"] for r in results)
    paths["json"].write_text(json.dumps([{k: r[k] for k in ("method", "final", "summary", "global_change")}
                                         for r in results],
                                        indent=1))
    plot_accuracy(results, paths["plot"])
    return paths


def plot_accuracy(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for result in results:
        means = per_round_means(result)
        line = ax.plot(list(means), list(means.values()), marker="o", label=result["method"])[0]
        if means:  # the number the summary reports, at the end of the curve: the model each site keeps
            ax.plot([max(means) + 0.5], [result["summary"]["mean_accuracy"]], marker="*", markersize=12,
                    color=line.get_color(), linestyle="none")
    ax.plot([], [], marker="*", color="gray", linestyle="none", label="final (the model each site keeps)")
    ax.set_xlabel("round")
    ax.set_ylabel("mean personalized accuracy across clients")
    ax.set_title("accuracy against round")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_round_table(results: list[dict[str, Any]]) -> None:
    means = {r["method"]: per_round_means(r) for r in results}
    rounds = sorted({k for m in means.values() for k in m})
    names = list(means)
    width = max(10, *(len(n) for n in names))
    print("\nmean personalized accuracy across clients, after each round's local training (the round's global "
          "with the site's personal part)")
    print("round | " + " | ".join(f"{n:>{width}}" for n in names))
    for r in rounds:
        print(f"{r:>5} | " + " | ".join(f"{means[n].get(r, float('nan')):>{width}.4f}" for n in names))
    finals = {r["method"]: r["summary"]["mean_accuracy"] for r in results}
    print("final | " + " | ".join(f"{finals[n]:>{width}.4f}" for n in names))
    print("\nfinal: the model each site keeps (the last round's global, its federated statistics and calibration "
          "after every site's last update, with the site's personal part), across clients")
    print(f"{'method':<{width}} | mean   | std    | worst")
    for result in results:
        s = result["summary"]
        print(f"{s['method']:<{width}} | {s['mean_accuracy']:.4f} | {s['std_across_clients']:.4f} | "
              f"{s['worst_client']:.4f}")
