"""Tables of the new-domain benchmark's recorded runs (benchmarks/results/new_domains_runs.jsonl)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping
from typing import Any

Records = list[dict[str, Any]]
SHARED_STYLE = ("inverted", "mnist-m", "uci", "twemoji10", "twemoji64")  # every site the same unseen style


def _runs(records: Records, setting: str, method: str) -> Records:
    return [r for r in records if r["setting"] == setting and r["method"] == method]


def _per_seed(rs: Records, key: str, how: Callable[[list[float]], float]) -> list[float]:
    return [how(list(r[key].values())) for r in rs if r.get(key)]


def _mean(values: list[float]) -> float:
    return 100 * statistics.fmean(values) if values else float("nan")


def render(records: Records, settings: Mapping[str, Any], fmt: Callable[..., str]) -> str:
    present = [s for s in settings if _runs(records, s, "pfeddc")]
    lines = ["### Summary: accuracy % (mean over sites, then over seeds; mean / worst site)", "",
             "| setting | zero-shot | LR each site alone | LR pooled | coop | promptfl | vision-only | pfeddc "
             "each site alone | **pfeddc** | pfeddc global alone | new sites: global alone / 1 epoch | pfeddc "
             "failed rounds, with alone (others) | seeds |", "|---|" + "---:|" * 12]
    for s in present:
        def pair(method: str, key: str = "final", s: str = s) -> str:
            rs = _runs(records, s, method)
            if not rs:
                return "-"
            return (f"{_mean(_per_seed(rs, key, statistics.fmean)):.1f} / "
                    f"{_mean(_per_seed(rs, key, min)):.1f}")

        pf = _runs(records, s, "pfeddc")
        new = [v for r in pf for v in r["new_clients"].values()]
        new_cell = (f"{_mean([v['global'] for v in new]):.1f} / {_mean([v['one_epoch'] for v in new]):.1f}"
                    if new else "-")
        failed = sum(len(r["failures"]) for r in pf + _runs(records, s, "pfeddc-alone"))
        others = sum(len(r.get("failures", [])) for r in records if r["setting"] == s) - failed
        lines.append(f"| {s} | {_mean(_per_seed(_runs(records, s, 'zeroshot'), 'final', statistics.fmean)):.1f} | "
                     f"{pair('references', 'lr_alone')} | {pair('references', 'lr_pooled').split(' / ')[0]} | "
                     f"{pair('coop')} | {pair('promptfl')} | {pair('vision-only')} | {pair('pfeddc-alone')} | "
                     f"**{pair('pfeddc')}** | {_mean([r['global_alone'] for r in pf]):.1f} | {new_cell} | "
                     f"{failed} ({others}) | {len(pf)} |")
    lines += ["", *goals(records, present), ""]
    for s in present:
        lines += [f"### {s}: accuracy % (mean ± std over seeds)", "",
                  "| method | lr | mean | worst site | global prompts alone | new sites: global alone | new sites: 1 "
                  "epoch | failed rounds | seeds | wall s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for method in ["pfeddc", "pfeddc-noresidual", "pfeddc-nopersonal", "pfeddc-prompts", "pfeddc-noproto",
                       "pfeddc-alone", "vision-only", "coop", "promptfl", "zeroshot"]:
            rs = _runs(records, s, method)
            if not rs:
                continue
            new = [list(r["new_clients"].values()) for r in rs]
            lines.append(
                f"| {method} | {rs[0]['lr'] or '-'} | {fmt(_per_seed(rs, 'final', statistics.fmean))} | "
                f"{fmt(_per_seed(rs, 'final', min))} | "
                f"{fmt([r['global_alone'] for r in rs if r['global_alone'] is not None])} | "
                f"{fmt([statistics.fmean(v['global'] for v in n) for n in new if n])} | "
                f"{fmt([statistics.fmean(v['one_epoch'] for v in n) for n in new if n])} | "
                f"{sum(len(r['failures']) for r in rs)} | {len(rs)} | "
                f"{statistics.fmean(r['wall_s'] for r in rs):.0f} |")
        refs = _runs(records, s, "references")
        for key, label in (("lr_alone", "logistic regression, each site alone"),
                           ("lr_pooled", "logistic regression, pooled")):
            lines.append(f"| {label} | - | {fmt(_per_seed(refs, key, statistics.fmean))} | "
                         f"{fmt(_per_seed(refs, key, min))} | - | - | - | - | {len(refs)} | - |")
        lines.append("")
    return "\n".join(lines)


def _new_site_global(records: Records, setting: str, method: str) -> float:
    return _mean([v["global"] for r in _runs(records, setting, method) for v in r["new_clients"].values()])


def goals(records: Records, present: list[str]) -> list[str]:
    """The issue's goals, setting by setting: met, or missed by how much (points, mean over seeds)."""
    lines = ["### Goals (points; + = met by, - = missed by)", "",
             "| setting | mean - LR alone mean | worst - LR alone worst | new sites' global alone - (their zero-shot "
             "+ 20) | mean - pfeddc alone - 3 | worst - alone worst - 3 | mean - vision-only | mean - coop | "
             "pfeddc failed |",
             "|---|" + "---:|" * 8]

    def value(s: str, method: str, key: str, how: Callable[[list[float]], float]) -> float:
        return _mean(_per_seed(_runs(records, s, method), key, how))

    for s in present:
        mean, worst = value(s, "pfeddc", "final", statistics.fmean), value(s, "pfeddc", "final", min)
        new_sites = _new_site_global(records, s, "pfeddc")  # what a site that never trained gets
        shared = (f"{new_sites - _new_site_global(records, s, 'zeroshot') - 20:+.1f}"
                  if s in SHARED_STYLE and math.isfinite(new_sites) else "n/a")
        cells = [mean - value(s, "references", "lr_alone", statistics.fmean),
                 worst - value(s, "references", "lr_alone", min)]
        tail = [mean - value(s, "pfeddc-alone", "final", statistics.fmean) - 3,
                worst - value(s, "pfeddc-alone", "final", min) - 3,
                mean - value(s, "vision-only", "final", statistics.fmean),
                mean - value(s, "coop", "final", statistics.fmean)]
        failed = sum(len(r["failures"]) for r in _runs(records, s, "pfeddc") + _runs(records, s, "pfeddc-alone"))
        lines.append(f"| {s} | " + " | ".join(f"{c:+.1f}" for c in cells) + f" | {shared} | "
                     + " | ".join(f"{c:+.1f}" for c in tail) + f" | {failed} |")
    return lines
