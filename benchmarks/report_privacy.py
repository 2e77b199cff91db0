"""Tables of benchmarks/privacy.py's runs: the splits, every view's attack metrics beside the accuracy, the goal."""

from __future__ import annotations

import statistics
from typing import Any

from membership import null_auc_std

VIEWS = {"a": "a: site's update (plain)", "a'": "a': round aggregate (secagg)", "b": "b: final global",
         "c": "c: personalized"}
COORDINATOR_SECAGG = [("a'", "loss"), ("a'", "calibrated"), ("b", "loss"), ("b", "calibrated")]
GOAL_AUC = 0.55


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _groups(records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, list[dict[str, Any]]]]:
    out: dict[tuple[str, int], dict[str, list[dict[str, Any]]]] = {}
    for r in records:
        out.setdefault((r["setting"], r["rounds"]), {}).setdefault(r["level"], []).append(r)
    return out


def _metric(runs: list[dict[str, Any]], view: str, attack: str, key: str) -> float:
    return _mean([r["views"][view][attack][key] for r in runs if attack in r["views"].get(view, {})])


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _control(by_level: dict[str, list[dict[str, Any]]]) -> str:
    """The loss attack's AUC on the initial prompts (never trained) over the same splits: the blind baseline."""
    runs = by_level.get("control", [])
    return f"{_metric(runs, '0', 'loss', 'auc'):.3f}" if runs else "-"


def splits(setting: str, by_level: dict[str, list[dict[str, Any]]]) -> str:
    runs = next(iter(by_level.values()))
    sites = runs[0]["sites"]
    train = [s["train"] for s in sites.values()]
    held = [s["held"] for s in sites.values()]
    cand = [s["candidates"] for s in sites.values()]
    total = sum(cand)
    return (f"| {setting} | {len(sites)} | {min(train)} / {statistics.median(train):g} / {max(train)} | "
            f"{min(held)} / {statistics.median(held):g} / {max(held)} | {min(cand)} / {statistics.median(cand):g} / "
            f"{max(cand)} | {total} + {total} | {null_auc_std(total, total):.3f} | {_control(by_level)} |")


def level_label(runs: list[dict[str, Any]]) -> tuple[str, str, str]:
    r = runs[0]
    if r["noise_multiplier"] is None:
        return r["level"] + (" (class rows shared)" if r["classes_shared"] else " (class rows local)"), "-", "-"
    return r["level"], f"{r['noise_multiplier']:.3g}", f"{r['epsilon']:.2f}"


def main_table(by_level: dict[str, list[dict[str, Any]]], order: list[str]) -> list[str]:
    lines = ["| DP | sigma | epsilon | view | loss AUC | loss TPR@1%FPR | calibrated AUC | calibrated TPR@1%FPR | "
             "personalized acc % | global alone acc % | seeds |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for level in [lv for lv in order if lv in by_level]:
        runs = by_level[level]
        name, sigma, eps = level_label(runs)
        acc, glob = _mean([r["mean_accuracy"] for r in runs]), _mean([r["global_alone"] for r in runs])
        for view, title in VIEWS.items():
            cells = [f"{_metric(runs, view, a, 'auc'):.3f} | {_pct(_metric(runs, view, a, 'tpr'))}%"
                     for a in ("loss", "calibrated")]
            lines.append(f"| {name} | {sigma} | {eps} | {title} | {' | '.join(cells)} | {_pct(acc)} | {_pct(glob)} | "
                         f"{len(runs)} |")
    return lines


def goal_row(setting: str, by_level: dict[str, list[dict[str, Any]]]) -> str | None:
    if "shipped" not in by_level:
        return None
    runs = by_level["shipped"]
    worst = max(COORDINATOR_SECAGG, key=lambda va: _metric(runs, va[0], va[1], "auc"))
    value = _metric(runs, worst[0], worst[1], "auc")
    n = runs[0]["views"][worst[0]][worst[1]]["members"]
    band = 2 * null_auc_std(n, n)
    ref = by_level.get("off-local")
    cost = "-"
    if ref:
        d_acc = _mean([r["mean_accuracy"] for r in runs]) - _mean([r["mean_accuracy"] for r in ref])
        d_glob = _mean([r["global_alone"] for r in runs]) - _mean([r["global_alone"] for r in ref])
        cost = f"{100 * d_acc:+.1f} / {100 * d_glob:+.1f}"
    verdict = "met" if value <= GOAL_AUC else "not met"
    return (f"| {setting} | {runs[0]['epsilon']:.2f} | {value:.3f} ({worst[0]} {worst[1]}) | +-{band:.3f} | "
            f"{_control(by_level)} | {verdict} | {cost} | {len(runs)} |")


def render(records: list[dict[str, Any]], order: list[str] | None = None) -> str:
    if not records:
        return "No runs recorded."
    order = order or ["off", "off-local", "eps16", "shipped", "eps4", "eps1"]
    groups = _groups(records)
    out = ["### Splits (per target site: min / median / max)", "",
           "| setting | sites (all targets) | training images | held-out images (val + test) | members = non-members "
           "| pooled members + non-members | AUC std of a blind attack | control: loss AUC of the initial prompts |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    out += [splits(f"{s} ({r} rounds)", g) for (s, r), g in groups.items()]
    goals = []
    for (setting, rounds), by_level in groups.items():
        out += ["", f"### {setting}, {rounds} rounds x 1 local epoch", ""] + main_table(by_level, order)
        row = goal_row(f"{setting} ({rounds} rounds)", by_level)
        if row:
            goals.append(row)
    if goals:
        attacks = ", ".join(f"{v} {a}" for v, a in COORDINATOR_SECAGG)
        out += ["", "### Goal: the coordinator's view of a site under secure aggregation + DP at the shipped setting",
                "", f"Worst of the attacks the coordinator can run under secure aggregation ({attacks}); goal AUC "
                f"<= {GOAL_AUC}. The band is 2 standard "
                "deviations of a blind attack's AUC on the same split sizes. Cost: personalized / global-alone "
                "accuracy in points against the same federation without DP (class rows local).", "",
                "| setting | epsilon | worst AUC (attack) | blind band | control | goal | accuracy cost (points) | "
                "seeds |", "|---|---:|---:|---:|---:|---|---:|---:|", *goals]
    return "\n".join(out)
