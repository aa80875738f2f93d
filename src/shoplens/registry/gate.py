"""The promotion gate: does a new model version replace the champion?

Pure decision logic (no MLflow calls), so every branch is cheap to test and the reason a
person reads in ``reports/registry.json`` is exactly what was decided. A challenger must beat
the champion's test Recall@1 by *more than* ``margin``: test sets are small enough that a
difference of a few queries is noise, and a tie never churns the alias.
"""

from __future__ import annotations

from dataclasses import dataclass

CHAMPION, CHALLENGER = "champion", "challenger"
EPS = 1e-9  # 0.805 - 0.800 is 0.00500000000000012 in floats: that is not "more than 0.005"


@dataclass(frozen=True)
class Standing:
    """A model version's test Recall@1, and where that number comes from."""

    version: int
    recall: float
    data_version: str
    note: str = ""  # e.g. that the champion was re-measured on this test set


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str

    @property
    def alias(self) -> str:
        return CHAMPION if self.promote else CHALLENGER


def decide(candidate: Standing, champion: Standing | None, margin: float) -> Decision:
    """Champion if there is none, if the candidate already is it, or if it wins by > margin."""
    v, r = candidate.version, candidate.recall
    if champion is None:
        return Decision(True, f"no champion yet: v{v} (test recall@1 {r:.4f}) becomes champion")
    if champion.version == v:
        return Decision(True, f"v{v} is already the champion (test recall@1 {r:.4f})")
    gain = round(r - champion.recall, 9)
    note = f" {champion.note}" if champion.note else ""
    versus = f"v{v} test recall@1 {r:.4f} vs champion v{champion.version} {champion.recall:.4f}"
    if gain - margin > EPS:
        reason = f"{versus}: +{gain:.4f} beats the margin {margin:g}; v{v} becomes champion"
        return Decision(True, reason + note)
    if gain > 0:
        verdict = f"+{gain:.4f} is within the margin {margin:g}"
    else:
        verdict = f"{gain:+.4f}, not better"
    reason = f"{versus}: {verdict}; champion stays, v{v} is challenger"
    return Decision(False, reason + note)
