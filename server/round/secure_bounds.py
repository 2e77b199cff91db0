"""What one secure attempt's unmasked sum may be: the bounds a coordinator that never sees one change can hold.

No site's range can be checked under the masks (per-site range proofs are not built: docs/security.md), so a site
may mask values far outside its clip; only the unmasked sum shows it. Each part of the sum is therefore held to
the longest its survivors could send honestly, and a longer part is scaled down to that bound and reported
(aggregate_bounded) instead of failing the round, which would let that site stop every round:

- the whole vector: each survivor clips its change to its `clip_norm` before weighting (weight <= 1), so the sum
  is at most the weighted clips' total, plus the quantisation's error (under DP: plus six standard deviations of
  the noise's norm);
- each tensor of `SecureSettings.clipped_tensors` (`--adaptive-clip`: server/pipeline/clipping.py's rule, where
  the round's scale comes from what the sites report): each site sends the L2 norm of its change of each with its
  keys; when the keys stage closes, the coordinator announces bound_k = factor x s_k, s_k the median of the
  announced sites' reports (never above twice the previous committed round's; no bound above the whole-change
  clip), and each site clips its change of tensor k to bound_k. The sum's part k is then at most
  sum_i w_i bound_k, so whatever one site masks, the committed change of tensor k is at most bound_k: `factor`
  times a typical site's change of it;
- each row of a class-row tensor (CLASS_ROW_TENSORS: the class head's residual): each site clips it to
  common/clip.py's row_bound(bound_k, rows), a few times an even share of bound_k (per-row norms are never
  asked for: they would tell which classes a site holds), and the sum's row to the survivors' weighted total.

One site lying in its report moves the median no further than the honest reports reach (a secure round has at
least 3 sites). What the reports show the coordinator in the clear: one norm per bounded tensor per site and
round (docs/secure-aggregation.md); under DP none is asked for (a data-dependent bound voids the sensitivity).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ...common.clip import row_bound
from ...common.messages import Code, Refused
from ..pipeline.clipping import round_scale


@dataclass
class SumBounds:
    factor: float = 0.0  # --adaptive-clip; 0: no per-tensor bounds
    ceiling: float = math.inf  # no bound above the whole-change clip (every site clips its whole change to it)
    previous: Mapping[str, float] = field(default_factory=dict)  # the previous committed round's scale per tensor
    parts: Mapping[str, slice] = field(default_factory=dict)  # each bounded tensor's slice of the vector
    rows: Mapping[str, int] = field(default_factory=dict)  # class-row tensor -> its rows (each bounded on its own)
    reports: dict[str, dict[str, float]] = field(default_factory=dict)  # site -> its change norm per tensor
    clips: dict[str, float] = field(default_factory=dict)  # tensor -> bound_k, once the keys stage closed
    scale: dict[str, float] = field(default_factory=dict)  # tensor -> s_k (the next round's history term)
    clipped: dict[str, tuple[str, ...]] = field(default_factory=dict)  # tensor -> sites whose report exceeded it
    excess: dict[str, float] = field(default_factory=dict)  # part ("" the whole) -> its norm over its bound, > 1

    def __post_init__(self) -> None:
        self.previous = dict(self.previous)  # the committed round's scale as this attempt opened

    def check(self, norms: Mapping[str, float]) -> dict[str, float]:
        """A site's change norms, sent with its keys: exactly one finite norm >= 0 per bounded tensor (none when
        there are none), else Refused. `keep` them once its keys are accepted."""
        if set(norms) != set(self.parts):
            missing = sorted(set(self.parts) - set(norms))
            extra = sorted(set(norms) - set(self.parts))
            raise Refused(Code.INVALID_ARGUMENT, f"secure aggregation: the keys must carry the change norm of each "
                                                 f"bounded tensor and no other (missing {missing[:5]}, not bounded "
                                                 f"{[n[:60] for n in extra[:5]]})")
        bad = sorted(k for k, v in norms.items() if not (math.isfinite(v) and v >= 0))
        if bad:
            raise Refused(Code.INVALID_ARGUMENT, f"secure aggregation: change norms must be finite and >= 0: {bad[:5]}")
        return {k: float(v) for k, v in norms.items()}

    def keep(self, site: str, norms: dict[str, float]) -> None:
        self.reports.setdefault(site, norms)  # its first report: a re-sent advert changes nothing

    def announce(self, sites: Iterable[str]) -> dict[str, float]:
        """Each bounded tensor's bound from the reports of `sites` (those whose keys are announced)."""
        reports = {s: self.reports[s] for s in sites if s in self.reports}
        if self.parts and reports:
            self.scale = {k: min(s, self.ceiling) for k, s in round_scale(reports, self.previous).items()}
            self.clips = {k: min(self.factor * s, self.ceiling) for k, s in self.scale.items()}
            self.clipped = {k: tuple(s for s, r in sorted(reports.items()) if r[k] > bound)
                            for k, bound in self.clips.items()}
        return self.clips

    def hold(self, total: np.ndarray, weights: Iterable[float], whole_clips: float, slack: float) -> np.ndarray:
        """`total` with each bounded tensor's part, then the whole, scaled down to the longest the survivors (of
        `weights`) could send honestly; `slack`: the per-coordinate quantisation error (plus noise) allowed.
        Records the parts that were beyond their bound in `excess`."""
        out = np.array(total, np.float64)
        weight = math.fsum(weights)
        self.excess = {}
        for name, part in self.parts.items():
            if name in self.clips:
                self._scale(out, part, weight * self.clips[name] + slack * math.sqrt(part.stop - part.start), name)
            if name in self.clips and name in self.rows:  # each class row, to what its survivors could send
                rows = self.rows[name]
                width = (part.stop - part.start) // rows
                bound = weight * row_bound(self.clips[name], rows) + slack * math.sqrt(width)
                for i in range(rows):
                    self._scale(out, slice(part.start + i * width, part.start + (i + 1) * width), bound,
                                f"{name}[{i}]")
        self._scale(out, slice(0, out.size), whole_clips + slack * math.sqrt(out.size), "")
        return out

    def _scale(self, vector: np.ndarray, part: slice, bound: float, name: str) -> None:
        norm = float(np.linalg.norm(vector[part]))
        if norm > bound:
            self.excess[name] = norm / bound if bound > 0 else math.inf
            vector[part] *= bound / norm

    def findings(self) -> list[str]:
        """What had to be scaled down, as one incident for the operator (none when nothing was)."""
        if not self.excess:
            return []
        parts = ", ".join(f"{name or 'the whole vector'} {excess:.3g}x" for name, excess in sorted(self.excess.items()))
        return [f"the unmasked sum is longer than its survivors could send within their bounds ({parts}): a survivor "
                "masked values outside its range; scaled down to the bounds"]
