"""Search spaces in Hydra's override grammar (``tag(log, interval(1e-4, 3e-3))``, ``choice(1,
2)``, a value) sampled define-by-run; command-line overrides win. Conditional blocks add keys
when another took a value, under their own names (``loss.metric.margin [loss=arcface]``)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.distributions import CategoricalDistribution as Categorical

_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./:-]*$")


def format_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back (type preserved)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float):
        return repr(value) if math.isfinite(value) else str(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in {"true", "false", "null", "nan", "inf"}:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_distribution(override: Override) -> BaseDistribution:
    sweep, log = override.value(), "log" in override.value().tags
    if isinstance(sweep, ChoiceSweep):
        return Categorical(list(sweep.list))
    if isinstance(sweep, RangeSweep):
        if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
            return IntDistribution(sweep.start, sweep.stop - sweep.step, step=sweep.step, log=log)
        return Categorical(list(override.sweep_iterator()))
    if isinstance(sweep, IntervalSweep):
        if "int" in sweep.tags:
            return IntDistribution(int(sweep.start), int(sweep.end), log=log)
        return FloatDistribution(sweep.start, sweep.end, log=log)
    raise ValueError(f"{override.input_line}: Optuna cannot search {type(sweep).__name__}")


@dataclass(frozen=True)
class Dim:
    """One override of every trial: searched (``distribution``) or ``fixed``."""

    key: str  # as written, with any +/++/~ prefix
    name: str  # the Optuna parameter name
    distribution: BaseDistribution | None = None
    fixed: str | None = None  # the override's original text
    fixed_value: Any = None

    def sample(self, trial: Any) -> tuple[str, Any]:
        """The override string and value of this dimension for ``trial``."""
        d = self.distribution
        if d is None:
            return self.fixed, self.fixed_value
        if isinstance(d, Categorical):
            value = trial.suggest_categorical(self.name, d.choices)
        elif isinstance(d, IntDistribution):
            value = trial.suggest_int(self.name, d.low, d.high, step=d.step, log=d.log)
        else:
            value = trial.suggest_float(self.name, d.low, d.high, step=d.step, log=d.log)
        return f"{self.key}={format_value(value)}", value


def _dims(lines: Sequence[str] | Mapping[str, Any], suffix: str = "") -> dict[str, Dim]:
    if isinstance(lines, Mapping):  # YAML `key: value` (YAML already typed the plain values)
        lines = [f"{k}={v if isinstance(v, str) else format_value(v)}" for k, v in lines.items()]
    dims: dict[str, Dim] = {}
    for o in OverridesParser.create().parse_overrides(list(lines)):
        key = o.get_key_element()
        if o.is_sweep_override():
            dims[o.key_or_group] = Dim(key, key + suffix, distribution=to_distribution(o))
        else:
            dims[o.key_or_group] = Dim(key, key + suffix, fixed=o.input_line, fixed_value=o.value())
    return dims


class SearchSpace:
    """Fixed and searched overrides, plus conditional blocks evaluated in order."""

    def __init__(
        self,
        params: Mapping[str, Any] | None,
        arguments: Sequence[str],
        conditional: Mapping[str, Mapping[str, Any]] | None = None,
        default: Callable[[str], Any] = lambda key: None,
    ):
        self.dims = {**_dims(params or {}), **_dims(arguments)}  # the command line wins
        self.blocks: list[tuple[str, str, dict[str, Dim]]] = []
        for condition, block in (conditional or {}).items():
            key, sep, value = str(condition).partition("=")
            if not sep:
                raise ValueError(f"conditional block {condition!r} must read key=value")
            self.blocks.append((key.strip(), value.strip(), _dims(block, f" [{condition}]")))
        self.default = default

    def sample(self, trial: Any) -> list[str]:
        """Suggest every active dimension on ``trial``; return the trial's overrides."""
        values: dict[str, Any] = {}
        overrides: dict[str, str] = {}
        for bare, dim in self.dims.items():
            overrides[bare], values[bare] = dim.sample(trial)
        for key, expected, dims in self.blocks:
            current = values[key] if key in values else self.default(key)
            if format_value(current) != expected and str(current) != expected:
                continue
            for bare, dim in dims.items():
                if bare not in overrides:  # a fixed value on the command line wins
                    overrides[bare], values[bare] = dim.sample(trial)
        return list(overrides.values())

    def grid(self) -> dict[str, list[Any]]:
        """The search space for Optuna's GridSampler: finite, unconditional dimensions only."""
        if self.blocks:
            raise ValueError("sampler=grid does not support conditional parameters")
        grid: dict[str, list[Any]] = {}
        for dim in self.dims.values():
            d = dim.distribution
            if isinstance(d, Categorical):
                grid[dim.name] = list(d.choices)
            elif isinstance(d, IntDistribution) and not d.log:
                grid[dim.name] = list(range(d.low, d.high + 1, d.step))
            elif d is not None:
                raise ValueError(f"sampler=grid needs choice() or range(), not {dim.name}: {d}")
        return grid
