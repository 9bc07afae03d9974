"""Paired statistics (asyncsnn.stats) against hand-computed values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncsnn.stats import Interval, mcnemar, ratio_interval, t_interval, verdict


def test_t_interval_by_hand():
    # values 1, 2, 3: mean 2, sd 1, n 3; t(0.975, 2) = 4.30265272975
    i = t_interval([1.0, 2.0, 3.0])
    half = 4.30265272975 / math.sqrt(3)
    assert (i.mean, i.n) == (2.0, 3)
    assert i.lo == pytest.approx(2 - half, rel=1e-9) and i.hi == pytest.approx(2 + half, rel=1e-9)
    # five seeds: t(0.975, 4) = 2.7764451052
    v = [0.5, -0.3, 1.2, 0.8, 0.1]
    mean = sum(v) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / 4)
    i = t_interval(v)
    assert i.hi - i.mean == pytest.approx(2.7764451052 * sd / math.sqrt(5), rel=1e-9)


def test_t_interval_edge_cases():
    assert t_interval([]).n == 0 and math.isnan(t_interval([]).mean)
    one = t_interval([4.0])
    assert one.mean == 4.0 and one.n == 1 and math.isnan(one.lo)
    same = t_interval([2.0, 2.0, 2.0])
    assert same.lo == same.hi == 2.0
    assert t_interval([1.0, float("nan"), 3.0, None]).n == 2  # undefined values left out
    with pytest.raises(ValueError, match="level"):
        t_interval([1.0, 2.0], level=1.5)


@given(st.lists(st.floats(-100, 100), min_size=2, max_size=12))
def test_the_interval_holds_its_mean_and_widens_with_the_level(values):
    narrow, wide = t_interval(values, 0.8), t_interval(values, 0.99)
    assert narrow.lo <= narrow.mean <= narrow.hi
    assert wide.lo <= narrow.lo + 1e-9 and wide.hi >= narrow.hi - 1e-9


def test_ratio_interval_is_the_t_interval_of_the_logs():
    # ratios 2 and 0.5: logs +-ln 2, mean 0 -> geometric mean 1; half-width t(0.975, 1) * sd
    i = ratio_interval([2.0, 0.5])
    half = 12.706204736174698 * math.sqrt(2) * math.log(2) / math.sqrt(2)
    assert i.mean == pytest.approx(1.0) and i.n == 2
    assert (i.lo, i.hi) == pytest.approx((math.exp(-half), math.exp(half)))
    assert i.lo > 0  # a ratio's interval stays positive
    assert ratio_interval([2.0, -1.0, float("nan")]).n == 1  # non-positive, undefined left out


def test_mcnemar_by_hand():
    # 10 discordant pairs, 8 for A: two-sided exact p = 2 * P(X >= 8 | n=10, 1/2)
    a = [1] * 8 + [0] * 2 + [1] * 5 + [0] * 3
    b = [0] * 8 + [1] * 2 + [1] * 5 + [0] * 3
    m = mcnemar(a, b)
    assert (m.only_a, m.only_b, m.n) == (8, 2, 18)
    expect = 2 * sum(math.comb(10, k) for k in (8, 9, 10)) / 2**10
    assert m.p == pytest.approx(expect, rel=1e-12)
    assert mcnemar([1, 0], [1, 0]).p == 1.0  # no discordant pair
    with pytest.raises(ValueError, match="equal length"):
        mcnemar([1], [1, 0])


@pytest.mark.parametrize(
    "interval, target, no_effect, higher, expect",
    [
        (Interval(1.0, -0.5, 2.5, 3), 0.0, 0.0, True, "no difference found"),
        (Interval(1.5, 0.5, 2.5, 3), 0.0, 0.0, True, "holds"),
        (Interval(-3.0, -4.0, -2.0, 3), 0.0, 0.0, True, "missed"),
        (Interval(35.0, 31.0, 39.0, 3), 30.0, 0.0, True, "holds"),
        (Interval(25.0, 20.0, 29.0, 3), 30.0, 0.0, True, "missed"),
        (Interval(30.0, 22.0, 38.0, 3), 30.0, 0.0, True, "undecided"),
        (Interval(1.2, 1.05, 1.4, 3), 1.5, 1.0, True, "missed"),
        (Interval(2.0, 1.0, 5.0, 3), 3.0, 0.0, False, "undecided"),
        (Interval(2.0, 1.0, 2.9, 3), 3.0, 0.0, False, "holds"),
        (Interval(0.5, -1.0, 2.0, 3), 3.0, 0.0, False, "no difference found"),
        (Interval(2.0, math.nan, math.nan, 1), 0.0, 0.0, True, "one seed"),
        (Interval(math.nan, math.nan, math.nan, 0), 0.0, 0.0, True, "-"),
    ],
)
def test_verdicts(interval, target, no_effect, higher, expect):
    got = verdict(interval, target=target, no_effect=no_effect, higher_is_better=higher)
    assert got == expect
