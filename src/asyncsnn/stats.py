"""Paired statistics for comparing training recipes: what a difference is, how sure it is.

A recipe is compared with the layered-trained model *of the same seed* (same data order, same
initialisation stream), so each seed gives one paired difference. Over seeds:

- :func:`t_interval`: the mean difference and its two-sided 95 % confidence interval, with
  Student's t over the seeds (``n - 1`` degrees of freedom);
- :func:`mcnemar`: for accuracy also an exact McNemar test over the test samples, the samples
  of every seed pooled (a sample is a pair: correct under one model, under the other);
- :func:`verdict`: what the interval says about a claim's target, where an interval that
  contains the value of no effect is "no difference found", never a hit or a miss.

>>> t_interval([1.0, 2.0, 3.0]).mean
2.0
>>> verdict(Interval(0.5, -0.2, 1.2, 3), target=0.0, no_effect=0.0, higher_is_better=True)
'no difference found'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Interval", "McNemar", "mcnemar", "ratio_interval", "t_interval", "verdict"]


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` paired values and its confidence interval ``[lo, hi]`` (NaN with
    fewer than two values)."""

    mean: float
    lo: float
    hi: float
    n: int

    def contains(self, value: float) -> bool:
        return self.lo <= value <= self.hi

    def to_dict(self) -> dict:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n}

    def text(self, fmt: str = "{:+.1f}") -> str:
        """``mean [lo, hi], n = k`` (``mean, n = 1`` without an interval)."""
        if self.n == 0 or not math.isfinite(self.mean):
            return "-"
        if not math.isfinite(self.lo):
            return f"{fmt.format(self.mean)}, n = {self.n}"
        return (
            f"{fmt.format(self.mean)} [{fmt.format(self.lo)}, {fmt.format(self.hi)}], n = {self.n}"
        )


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """The mean of the finite ``values`` and its two-sided ``level`` confidence interval by
    Student's t (``mean ± t_{(1+level)/2, n-1} * sd / sqrt(n)``); ``lo``/``hi`` are NaN for
    fewer than two values, and equal the mean where every value is the same."""
    from scipy.stats import t as student

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    n = len(v)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = math.fsum(v) / n
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in v) / (n - 1))
    half = float(student.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def ratio_interval(ratios: Sequence[float], level: float = 0.95) -> Interval:
    """The geometric mean of positive ``ratios`` and its ``level`` interval: :func:`t_interval`
    of their logarithms, mapped back (a ratio's interval stays positive, and 2x and 0.5x are
    equally far from 1x). Non-positive or undefined ratios are left out."""
    logs = [
        math.log(float(r)) for r in ratios if r is not None and math.isfinite(float(r)) and r > 0
    ]
    i = t_interval(logs, level)
    if i.n == 0:
        return i
    return Interval(math.exp(i.mean), math.exp(i.lo), math.exp(i.hi), i.n)


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test on paired correctness: ``only_a`` samples right under A only,
    ``only_b`` under B only, ``n`` pairs in all; ``p`` the two-sided p-value (binomial test of
    the discordant pairs against 1/2; 1.0 without any)."""

    only_a: int
    only_b: int
    n: int
    p: float

    def to_dict(self) -> dict:
        return {"only_a": self.only_a, "only_b": self.only_b, "n": self.n, "p": self.p}


def mcnemar(correct_a: Sequence, correct_b: Sequence) -> McNemar:
    """The exact McNemar test of two paired sequences of correctness (0/1 or bools, the same
    samples in the same order: several seeds' test sets may be concatenated)."""
    from scipy.stats import binomtest

    if len(correct_a) != len(correct_b):
        raise ValueError(
            f"paired correctness must be of equal length, got {len(correct_a)} and {len(correct_b)}"
        )
    only_a = sum(1 for a, b in zip(correct_a, correct_b, strict=True) if a and not b)
    only_b = sum(1 for a, b in zip(correct_a, correct_b, strict=True) if b and not a)
    k = only_a + only_b
    p = 1.0 if k == 0 else float(binomtest(only_a, k, 0.5).pvalue)
    return McNemar(only_a, only_b, len(correct_a), p)


def verdict(
    interval: Interval, *, target: float, no_effect: float, higher_is_better: bool = True
) -> str:
    """What ``interval`` says about a claim whose target is ``target`` (met at or above it
    where ``higher_is_better``, at or below it otherwise), ``no_effect`` being the value that
    means no difference (0 points, a ratio of 1):

    - ``"no difference found"``: the interval contains ``no_effect``;
    - ``"holds"``: the whole interval meets the target;
    - ``"missed"``: the whole interval misses it;
    - ``"undecided"``: the interval straddles the target (but excludes ``no_effect``);
    - ``"one seed"``: no interval (fewer than two seeds); ``"-"``: no value.
    """
    if interval.n == 0 or not math.isfinite(interval.mean):
        return "-"
    if not math.isfinite(interval.lo):
        return "one seed"
    if interval.contains(no_effect):
        return "no difference found"
    lo, hi = interval.lo, interval.hi
    meets_all = lo >= target if higher_is_better else hi <= target
    misses_all = hi < target if higher_is_better else lo > target
    if meets_all:
        return "holds"
    if misses_all:
        return "missed"
    return "undecided"
