"""The promotion gate: does a new model version replace the champion?

Pure decision logic (no MLflow calls), so every branch is cheap to test and the reason a
person reads in ``reports/registry.json`` is exactly what was decided. A version stands on
test Recall@1 on catalog shots and category@1 on the shopper-photo benchmark through its own
query pipeline, and, where both versions have it, category@1 on the small-photo benchmark. A
challenger must beat the champion on one of them by *more than* ``margin`` without losing more
than ``tolerance`` on any other: test sets are small enough
that a difference of a few queries is noise, a tie never churns the alias, and a large gain
for shoppers' photos may cost a little on catalog shots (the registry says how much). A
champion registered before the photo benchmark existed has no photo number; a challenger that
has one replaces it unless it loses more than ``tolerance`` on catalog shots.

Any other number the champion lacks (``None``: never measured, or measured in a way that is
not comparable with today's, e.g. on another benchmark) is *not compared*: it neither wins nor
loses, the reason says so, and the numbers both have decide. Where none is comparable, the
challenger (which passed its own bar) replaces the champion: every registry (query pipeline,
localizer, super-resolver) states its champion this way instead of special-casing it.
"""

from __future__ import annotations

from dataclasses import dataclass

CHAMPION, CHALLENGER = "champion", "challenger"
EPS = 1e-9  # 0.805 - 0.800 is 0.00500000000000012 in floats: that is not "more than 0.005"


@dataclass(frozen=True)
class Standing:
    """A model version's test numbers, and where they come from."""

    version: int
    recall: float | None  # test Recall@1, catalog shots (the primary number; None: see above)
    data_version: str
    note: str = ""  # e.g. that the champion was re-measured on this test set
    photo: float | None = None  # shopper-photo category@1 of its query pipeline
    small: float | None = None  # small-photo category@1 of its query pipeline


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str

    @property
    def alias(self) -> str:
        return CHAMPION if self.promote else CHALLENGER


# What the numbers are called in a reason: the query pipeline's by default.
NAMES = ("recall@1", "photo category@1", "small-photo category@1")


def _describe(s: Standing, names: tuple[str, ...]) -> str:
    photo = f", {names[1]} {s.photo:.4f}" if s.photo is not None else ""
    small = f", {names[2]} {s.small:.4f}" if s.small is not None and len(names) > 2 else ""
    primary = f"{s.recall:.4f}" if s.recall is not None else "not comparable"
    return f"test {names[0]} {primary}{photo}{small}"


def _gain(name: str, gain: float, margin: float) -> str:
    if gain - margin > EPS:
        return f"{name} +{gain:.4f} beats the margin {margin:g}"
    if gain > 0:
        return f"{name} +{gain:.4f} is within the margin {margin:g}"
    return f"{name} {gain:+.4f}, not better"


def decide(
    candidate: Standing,
    champion: Standing | None,
    margin: float,
    names: tuple[str, ...] = NAMES,
    tolerance: float | None = None,
    same_networks: bool = False,
    refused: str = "",
) -> Decision:
    """Champion if there is none, if the candidate already is it, if it is the champion's
    networks and query pipeline re-registered (``same_networks``: only its packaging changed,
    e.g. it now carries no-match calibration), or if it wins as above.
    ``names``: what the primary and the photo number are (the localizer's gate passes its own).
    ``refused``: why the candidate may not serve whatever it measures (e.g. its ONNX export
    disagrees with torch): never promoted, and the reason says so."""
    v = candidate.version
    tolerance = margin if tolerance is None else tolerance
    mine = _describe(candidate, names)
    if refused:
        return Decision(False, f"v{v} ({mine}) is not promoted: {refused}")
    if champion is None:
        return Decision(True, f"no champion yet: v{v} ({mine}) becomes champion")
    if champion.version == v:
        return Decision(True, f"v{v} is already the champion ({mine})")
    if same_networks:
        return Decision(
            True,
            f"v{v} holds champion v{champion.version}'s checkpoints and query pipeline, "
            f"registered again with new artifacts ({mine}): v{v} becomes champion",
        )
    note = f" {champion.note}" if champion.note else ""
    versus = f"v{v} {mine} vs champion v{champion.version} {_describe(champion, names)}"
    # (name, candidate's, champion's, whether the champion lacking it is the candidate's win)
    numbers = [(names[0], candidate.recall, champion.recall, False)]
    if len(names) > 1:  # a champion from before the photo benchmark: measuring photos wins
        numbers.append((names[1], candidate.photo, champion.photo, True))
    if len(names) > 2:  # the small-photo benchmark counts only where both have it
        numbers.append((names[2], candidate.small, champion.small, False))
    verdicts, wins, holds, compared = [], False, True, False
    for name, mine_value, theirs, absence_wins in numbers:
        if mine_value is None:
            continue
        if theirs is None:
            verdicts.append(f"the champion has no {'' if absence_wins else 'comparable '}{name}")
            wins |= absence_wins
            continue
        gain = round(mine_value - theirs, 9)
        verdicts.append(_gain(name, gain, margin))
        wins |= gain - margin > EPS
        holds &= gain >= -tolerance - EPS
        compared = True
    if not compared and not wins:
        verdicts.append("nothing to compare")
        wins = True
    verdict = "; ".join(verdicts)
    if wins and holds:
        return Decision(True, f"{versus}: {verdict}; v{v} becomes champion{note}")
    if wins:
        verdict += f"; another loses more than the tolerance {tolerance:g}"
    return Decision(False, f"{versus}: {verdict}; champion stays, v{v} is challenger{note}")
