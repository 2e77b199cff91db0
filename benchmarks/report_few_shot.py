"""Tables of the few-shot federation benchmark's recorded runs (benchmarks/results/few_shot_runs.jsonl)."""

from __future__ import annotations

import functools
import math
import statistics
from typing import Any

Records = list[dict[str, Any]]
HEADROOM_MIN = 5.0  # points: the cells where pooling pays, which the capture goal is measured on


def _runs(records: Records, cell: str, method: str) -> Records:
    return [r for r in records if r["cell"] == cell and r["method"] == method and not r.get("too_small")]


def _mean_of(rs: Records, key: str) -> float:
    """Mean over seeds of the mean over sites of `key` (a site -> accuracy map), in points; NaN when absent."""
    per_seed = [statistics.fmean(r[key].values()) for r in rs if r.get(key)]
    return 100 * statistics.fmean(per_seed) if per_seed else math.nan


def _late(rs: Records, which: str) -> float:
    values = [statistics.fmean(v[which] for v in r["late"].values()) for r in rs if r.get("late")]
    return 100 * statistics.fmean(values) if values else math.nan


def _f(value: float, sign: bool = False) -> str:
    return "-" if not math.isfinite(value) else (f"{value:+.1f}" if sign else f"{value:.1f}")


def cell_figures(records: Records, cell: str) -> dict[str, float]:
    refs, pf = _runs(records, cell, "references"), _runs(records, cell, "pfeddc")
    head = _runs(records, cell, "fedavg-head")
    alone, pooled = _mean_of(refs, "lr_alone"), _mean_of(refs, "lr_pooled")
    out = {"zeroshot": _mean_of(_runs(records, cell, "zeroshot"), "zeroshot"),
           "alone": alone, "pooled": pooled, "headroom": pooled - alone, "pfeddc": _mean_of(pf, "final"),
           "pfeddc_global": _mean_of(pf, "final_global"), "pfeddc_alone": _mean_of(_runs(records, cell,
                                                                                          "pfeddc-alone"), "final"),
           "head_global": _mean_of(head, "global"), "head_ft": _mean_of(head, "finetuned"),
           "late_global": _late(pf, "global"), "late_round": _late(pf, "one_epoch"),
           "late_pooled": _mean_of(refs, "late_lr_pooled"),
           "failed": float(sum(len(r["failures"]) for r in pf + _runs(records, cell, "pfeddc-alone"))),
           "seeds": float(len(pf)), "round_s": 0.0,
           "residual": _mean_of(_runs(records, cell, "pfeddc-noresidual"), "final"),
           "late_residual": _late(_runs(records, cell, "pfeddc-noresidual"), "global"),
           "pfeddc0": _mean_of([r for r in pf if r["seed"] == 0], "final")}  # beside the seed-0 runs without it
    seconds = [r["round_seconds"] for r in pf if "round_seconds" in r]
    out["round_s"] = statistics.fmean(seconds) if seconds else math.nan
    for name in ("pfeddc", "head_ft", "head_global", "pfeddc_global", "residual", "pfeddc0"):
        out[f"captured_{name}"] = (100 * (out[name] - alone) / out["headroom"]
                                   if out["headroom"] > 0 else math.nan)
    return out


def render(records: Records) -> str:
    cells = sorted({r["cell"] for r in records}, key=_order)
    small = [c for c in cells if all(r.get("too_small") for r in records if r["cell"] == c)]
    present = [c for c in cells if c not in small and _runs(records, c, "pfeddc")]
    figures = {c: cell_figures(records, c) for c in present}
    lines = [*summary(figures), "",
             "### Accuracy % per cell (mean over sites, then over seeds); captured = share of the headroom "
             "(pooled LR - LR alone) a method closes", "",
             "| cell (source/sites x shots/alpha) | zero-shot | LR alone | LR pooled | headroom | **pfeddc** | "
             "captured | pfeddc "
             "global alone | pfeddc each site alone | FedAvg head: global / fine-tuned | captured (fine-tuned) | "
             "late sites: global alone / 1 round | late sites: pooled LR | failed rounds | site s/round | seeds | "
             "seed 0: pfeddc / pfeddc-noresidual (late sites) |",
             "|---|" + "---:|" * 16]
    for c in present:
        f = figures[c]
        lines.append(
            f"| {c} | {_f(f['zeroshot'])} | {_f(f['alone'])} | {_f(f['pooled'])} "
            f"| {_f(f['headroom'], True)} | **{_f(f['pfeddc'])}** | "
            f"{_f(f['captured_pfeddc'])}% | {_f(f['pfeddc_global'])} | {_f(f['pfeddc_alone'])} | "
            f"{_f(f['head_global'])} / {_f(f['head_ft'])} | {_f(f['captured_head_ft'])}% | "
            f"{_f(f['late_global'])} / {_f(f['late_round'])} | {_f(f['late_pooled'])} | {f['failed']:.0f} | "
            f"{f['round_s']:.2f} | {f['seeds']:.0f} | {_f(f['pfeddc0'])} / {_f(f['residual'])} "
            f"({_f(f['late_residual'])}) |")
    if small:
        lines += ["", "Cells whose source holds too few images of some class (never shrunk): " + ", ".join(small)
                  + "."]
    lines += ["", *goals(figures), "", *ablation(records)]
    return "\n".join(lines)


def summary(figures: dict[str, dict[str, float]]) -> list[str]:
    """Per source and federation size: the mean over its cells (each a mean over sites and seeds)."""
    groups: dict[str, list[dict[str, float]]] = {}
    for cell, f in figures.items():
        source, size, _alpha = cell.split("/")
        groups.setdefault(f"{source}, {size.split('x')[0]} sites", []).append(f)
    lines = ["### Summary: accuracy % per source and federation size, mean over its cells (shots 2/6/16, "
             "alpha 100/1; cells the source can fill)", "",
             "| source, sites | cells | seeds | zero-shot | LR alone | LR pooled | **pfeddc** | "
             "pfeddc each site alone | "
             "FedAvg head fine-tuned | captured: pfeddc / FedAvg head | late sites: global alone / pooled LR | "
             "seed 0, captured: pfeddc / pfeddc-noresidual |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    def mean(fs: list[dict[str, float]], key: str) -> float:
        vals = [f[key] for f in fs if math.isfinite(f[key])]
        return statistics.fmean(vals) if vals else math.nan

    for name, fs in groups.items():
        m = functools.partial(mean, fs)
        seeds = sorted({int(f["seeds"]) for f in fs})
        lines.append(f"| {name} | {len(fs)} | {'-'.join(map(str, seeds)) if len(seeds) > 1 else seeds[0]} | "
                     f"{_f(m('zeroshot'))} | {_f(m('alone'))} | {_f(m('pooled'))} "
                     f"| **{_f(m('pfeddc'))}** | {_f(m('pfeddc_alone'))} | "
                     f"{_f(m('head_ft'))} | {_f(m('captured_pfeddc'))}% / {_f(m('captured_head_ft'))}% | "
                     f"{_f(m('late_global'))} / {_f(m('late_pooled'))} | {_f(m('captured_pfeddc0'))}% / "
                     f"{_f(m('captured_residual'))}% |")
    return lines


def goals(figures: dict[str, dict[str, float]]) -> list[str]:
    paying = {c: f for c, f in figures.items() if f["headroom"] >= HEADROOM_MIN}
    rest = {c: f for c, f in figures.items() if f["headroom"] < HEADROOM_MIN}
    captured = [f["captured_pfeddc"] for f in paying.values()]
    lines = ["### Goals", ""]
    if captured:
        worst = min(paying, key=lambda c: paying[c]["captured_pfeddc"])
        lines.append(f"- Cells where pooling pays (headroom >= {HEADROOM_MIN:g} points): {len(paying)}; pfeddc "
                     f"captures **{statistics.fmean(captured):.1f}%** of the headroom on average (goal >= 90%), "
                     f"at least {paying[worst]['captured_pfeddc']:.1f}% ({worst}; goal: no cell below 70%).")
    if rest:
        gaps = {c: f["pfeddc"] - f["alone"] for c, f in rest.items()}
        low = min(gaps, key=lambda c: gaps[c])
        lines.append(f"- The other {len(rest)} cells: pfeddc - LR alone is {gaps[low]:+.1f} points at worst ({low}; "
                     "goal: no worse than each site's own).")
    beats = {c: f["pfeddc"] - f["head_ft"] for c, f in figures.items()}
    if beats:
        low = min(beats, key=lambda c: beats[c])
        lines.append(f"- pfeddc - FedAvg head fine-tuned: {sum(v > 0 for v in beats.values())} of {len(beats)} "
                     f"cells above; smallest margin {beats[low]:+.1f} ({low}).")
    late = {c: f["late_global"] - (f["late_pooled"] - 5) for c, f in figures.items() if math.isfinite(f["late_global"])}
    if late:
        low = min(late, key=lambda c: late[c])
        met = sum(v >= 0 for v in late.values())
        lines.append(f"- Late sites, global model alone, within 5 points of the pooled LR: {met} of {len(late)} "
                     f"cells (smallest margin {late[low]:+.1f}, {low}).")
    lines.append(f"- Failed rounds (pfeddc and each site alone): {sum(f['failed'] for f in figures.values()):.0f}.")
    return lines


def ablation(records: Records) -> list[str]:
    methods = ["pfeddc", "pfeddc-noresidual", "pfeddc-nopersonal", "pfeddc-prompts", "pfeddc-nofusion",
               "pfeddc-novision", "pfeddc-notext", "pfeddc-nolocal", "pfeddc-noproto"]
    cells = sorted({r["cell"] for r in records if r["method"] == "pfeddc-prompts" and r["seed"] == 0
                    and not r.get("too_small")}, key=_order)
    if not cells:
        return []
    lines = ["### Ablation (seed 0, 10 sites): accuracy % per cell, mean over sites (failed rounds)", "",
             "| cell | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for c in cells:
        row = []
        for m in methods:
            rs = [r for r in _runs(records, c, m) if r["seed"] == 0]
            row.append(f"{_mean_of(rs, 'final'):.1f} ({sum(len(r['failures']) for r in rs)})" if rs else "-")
        lines.append(f"| {c} | " + " | ".join(row) + " |")
    means = []
    for m in methods:
        vals = [_mean_of([r for r in _runs(records, c, m) if r["seed"] == 0], "final") for c in cells]
        vals = [v for v in vals if math.isfinite(v)]
        means.append(f"{statistics.fmean(vals):.1f}" if len(vals) == len(cells) else "-")
    lines.append("| **mean** | " + " | ".join(means) + " |")
    return lines


def _order(cell: str) -> tuple[str, int, int, float]:
    source, size, alpha = cell.split("/")
    sites, shots = size.split("x")
    return source, int(sites), int(shots), -float(alpha[1:])
