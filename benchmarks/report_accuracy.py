"""Tables and plots of the accuracy benchmark's recorded runs (benchmarks/results/accuracy_runs.jsonl)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
Records = list[dict[str, Any]]


def render(records: Records, chosen: Callable[[Records, str, str], Records], fmt: Callable[..., str],
           settings: Mapping[str, Any], methods: list[str], ablations: list[str]) -> str:
    lines = summary(records, chosen, settings, methods)
    for setting in settings:
        rows = {m: chosen(records, setting, m) for m in methods}
        if not any(rows.values()):
            continue
        lines += [f"### {setting}: personalized accuracy % (mean ± std over seeds)", "",
                  "| method | lr | accuracy | worst client | std across clients | global prompts alone | collapses "
                  "| seeds | wall s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for method, rs in rows.items():
            if rs:
                lines.append(f"| {method} | {rs[0]['lr'] or '-'} | {fmt([r['mean_accuracy'] for r in rs])} | "
                             f"{fmt([r['worst_client'] for r in rs])} | {fmt([r['std_across_clients'] for r in rs])} | "
                             f"{fmt([r['global_alone'] for r in rs])} | {sum(len(r['failures']) for r in rs)} | "
                             f"{len(rs)} | {statistics.fmean(r['wall_s'] for r in rs):.0f} |")
        if setting == "newclients":
            lines += ["", "New clients (never trained): accuracy % with the final global prompts alone, then after "
                      "one local epoch", "", "| method | global alone | after 1 epoch |", "|---|---:|---:|"]
            for method, rs in rows.items():
                alone = [v["global"] for r in rs for v in r["new_clients"].values()]
                tuned = [v["one_epoch"] for r in rs for v in r["new_clients"].values()]
                if alone:
                    lines.append(f"| {method} | {fmt(alone)} | {fmt(tuned)} |")
        lines.append("")
    rows = {m: chosen(records, "dir0.5", m) for m in ["pfeddc", *ablations, "vision-only"]}
    if any(rows[a] for a in ablations):
        seeds = {r["seed"] for a in ablations for r in rows[a]}  # every row on the ablation's seeds
        rows = {m: [r for r in rs if r["seed"] in seeds] for m, rs in rows.items()}
        lines += [f"### pFedDC ablation (dir0.5, seeds {', '.join(map(str, sorted(seeds)))}): one part removed each",
                  "", "| variant | accuracy | worst client | vs pfeddc |", "|---|---:|---:|---:|"]
        base = [r["mean_accuracy"] for r in rows["pfeddc"]]
        labels = {"pfeddc": "pfeddc (all parts)", "pfeddc-noproto": "no class embeddings",
                  "pfeddc-nofusion": "no fusion (sum)",
                  "pfeddc-novision": "no vision prompts", "vision-only": "no text prompts (vision-only, own lr)",
                  "pfeddc-nolocal": "no local prompts"}
        for method, rs in rows.items():
            if rs:
                accs = [r["mean_accuracy"] for r in rs]
                delta = 100 * (statistics.fmean(base) - statistics.fmean(accs)) if base else float("nan")
                gain = f"{delta:+.1f} for all parts" if method != "pfeddc" else "-"
                lines.append(f"| {labels[method]} | {fmt(accs)} | {fmt([r['worst_client'] for r in rs])} | {gain} |")
        lines.append("")
    moved = {m: chosen(records, "dir0.5", m) for m in ["pfeddc", "promptfl", "vision-only", "pfeddc-nolocal"]}
    if any(moved.values()):
        lines += ["### How far the global prompts moved (dir0.5, L2 norm of final - initial, mean over seeds)", "",
                  "| method | tensor | moved |", "|---|---|---:|"]
        for method, rs in moved.items():
            for name in sorted(rs[0]["global_moved"]) if rs else []:
                lines.append(f"| {method} | {name} | {fmt([r['global_moved'][name] for r in rs], 1.0, 3)} |")
        lines.append("")
    private = [r for r in records if r.get("epsilon") is not None]
    if private:
        setting = private[0]["setting"]
        lines += [f"### Central differential privacy (DP-FedAvg), pfeddc on {setting}: accuracy %", "",
                  "| epsilon (delta 1e-5, 10 rounds) | personalized | global prompts alone | seeds |",
                  "|---|---:|---:|---:|"]
        plain = chosen(records, setting, "pfeddc")
        lines.append(f"| no DP | {fmt([r['mean_accuracy'] for r in plain])} | "
                     f"{fmt([r['global_alone'] for r in plain])} | {len(plain)} |")
        for eps in sorted({r["epsilon"] for r in private}):
            rs = [r for r in private if r["epsilon"] == eps]
            accs, alone = [r["mean_accuracy"] for r in rs], [r["global_alone"] for r in rs]
            lines.append(f"| {eps:g} | {fmt(accs)} | {fmt(alone)} | {len(rs)} |")
        lines.append("")
    plot_rounds(records, chosen, methods)
    return "\n".join(lines)


def summary(records: Records, chosen: Callable[[Records, str, str], Records], settings: Mapping[str, Any],
            methods: list[str]) -> list[str]:
    """One line per method: mean personalized accuracy / mean worst client, and collapses, in every setting."""
    present = [s for s in settings if any(chosen(records, s, m) for m in methods)]
    if not present:
        return []
    lines = ["### Summary: personalized accuracy % / worst client % (mean over seeds), collapses in brackets", "",
             "| method | " + " | ".join(present) + " |", "|---|" + "---:|" * len(present)]
    for method in methods:
        cells = []
        for setting in present:
            rs = chosen(records, setting, method)
            cells.append(f"{100 * statistics.fmean(r['mean_accuracy'] for r in rs):.1f} / "
                         f"{100 * statistics.fmean(r['worst_client'] for r in rs):.1f} "
                         f"[{sum(len(r['failures']) for r in rs)}]" if rs else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def plot_rounds(records: Records, chosen: Callable[[Records, str, str], Records], methods: list[str]) -> None:
    """Accuracy (personalized, global alone) and global-prompt movement per round, dir0.5, mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for method in methods:
        rs = chosen(records, "dir0.5", method)
        if not rs or not rs[0]["rounds"]:
            continue
        rounds = [x["round"] for x in rs[0]["rounds"]]

        def series(key: str, runs: Records = rs, n: int = len(rounds)) -> list[float]:
            return [statistics.fmean(r["rounds"][i][key] for r in runs) for i in range(n)]

        axes[0].plot(rounds, series("accuracy_after"), marker="o", label=method)
        axes[1].plot(rounds, series("accuracy_global"), marker="o", label=method)
        change = [statistics.fmean(sum(v ** 2 for v in r["rounds"][i]["global_change"].values()) ** 0.5 for r in rs)
                  for i in range(len(rounds))]
        axes[2].plot(rounds, change, marker="o", label=method)
    for ax, title in zip(axes, ["personalized accuracy (after local training)", "global prompts alone",
                                "global prompts: L2 change per round"], strict=True):
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("dir0.5 (Fashion-MNIST, 10 clients, Dirichlet 0.5), mean over seeds")
    fig.tight_layout()
    fig.savefig(RESULTS / "accuracy_rounds.png", dpi=100)
    plt.close(fig)
