"""The study's claims measured on a grid's evaluations, with paired statistics, and the rule
that chooses the headline recipe on validation data.

Every claim compares an unlayered recipe with the layered-trained model *of the same seed*
(:mod:`asyncsnn.stats`): one paired value per seed, their mean and 95 % t interval, and for
accuracy also an exact McNemar test over the test samples of every seed pooled. A claim's
verdict (:func:`asyncsnn.stats.verdict`) is "holds" or "missed" only where the whole interval
says so; an interval that contains the value of no effect is "no difference found".

``rows`` are those of ``results.json`` (one per data set, recipe, seed and execution: see
:data:`asyncsnn.reproduce.ROW_KEYS`); ``correct`` maps ``(data set, recipe, seed, execution
label)`` to each test sample's correctness (a string of ``0``/``1``, the evaluation records'
``correct``); ``settings`` maps ``(data set, recipe)`` to the recipe's training settings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from .evaluation import Execution
from .stats import Interval, mcnemar, ratio_interval, t_interval, verdict

__all__ = [
    "CLAIMS",
    "OTHER_POLICIES",
    "REFERENCE",
    "SELECTION_RULE",
    "TOLERANCE_POINTS",
    "choose",
    "claims",
    "own_execution",
    "robustness",
    "trained_under",
]

#: The asynchronous execution the claims compare under: the study's momentum policy, F = 8.
REFERENCE = Execution("async", "momentum", 8)
#: The built-in policies whose robustness is measured (at F = 8).
OTHER_POLICIES = ("random", "momentum", "fifo")


class Claim(tuple):
    """key, heading, the study's figure, the target's text, the target, the value of no
    effect, and whether higher is better."""

    key = property(lambda self: self[0])
    heading = property(lambda self: self[1])
    study = property(lambda self: self[2])
    text = property(lambda self: self[3])
    target = property(lambda self: self[4])
    no_effect = property(lambda self: self[5])
    higher = property(lambda self: self[6])


CLAIMS = (
    Claim(("accuracy", "accuracy gap to layered run layered (points)", "up to +10", ">= 0",
           0.0, 0.0, True)),
    Claim(("spikes", "fewer spikes than layered run async-momentum F=8 (%)", "up to 50 %",
           ">= 30 %", 30.0, 0.0, True)),
    Claim(("latency", "decision speed-up over layered run async-momentum F=8", "up to 2x",
           ">= 1.5x", 1.5, 1.0, True)),
    Claim(("robustness", "worst loss under a policy outside its training mix (points)", "-",
           "<= 3", 3.0, 0.0, False)),
)  # fmt: skip

#: Recipes whose mean validation accuracy is within this many points of the best are tied on
#: accuracy.
TOLERANCE_POINTS = 0.5
SELECTION_RULE = (
    "Among a data set's unlayered recipes (the candidates), the one with the highest mean "
    "validation accuracy under async-momentum F=8 over its seeds is chosen; recipes within "
    f"{TOLERANCE_POINTS} points of it are tied on accuracy, and among those the one that meets "
    "the most of the other targets on validation (by their means over seeds: >= 30 % fewer "
    "spikes and >= 1.5x sooner than the layered-trained model run async-momentum F=8, <= 3 "
    "points lost under a policy outside its training mix) is chosen, then the higher "
    "validation accuracy. The test split is not read."
)


def trained_under(settings: Mapping) -> tuple[set[str], set[int]]:
    """The policies and group sizes a recipe trained under (``settings``: the study's and the
    recipe's together); both empty for layered training."""
    if settings.get("training", "layered") != "unlayered":
        return set(), set()
    policies = set(settings.get("mix_schedulers") or [settings.get("scheduler", "momentum")])
    sizes = set(settings.get("mix_group_sizes") or [settings.get("group_size", 8)])
    return policies, sizes


def own_execution(settings: Mapping) -> Execution:
    """The execution a recipe's robustness is measured against: layered for a layered
    training; else momentum where it trained under momentum (else its first policy), at
    F = 8 where it trained with 8 (else its largest F)."""
    policies, sizes = trained_under(settings)
    if not policies:
        return Execution("layered")
    policy = "momentum" if "momentum" in policies else sorted(policies)[0]
    return Execution("async", policy, 8 if 8 in sizes else max(sizes))


def outside_executions(settings: Mapping, labels: Sequence[str]) -> list[Execution]:
    """The evaluated executions outside a recipe's training mix: each built-in policy it did
    not train under (F = 8), and its own policy under each evaluated F it did not train with
    (none for a layered training)."""
    policies, sizes = trained_under(settings)
    out = [Execution("async", p, 8) for p in OTHER_POLICIES if p not in policies]
    own = own_execution(settings)
    if own.execution == "async":
        evaluated = sorted({int(lb.split("F=")[1]) for lb in labels if " F=" in lb})
        out += [Execution("async", own.scheduler, f) for f in evaluated if f not in sizes]
    return [h for h in out if h.label in labels]


def _num(value) -> float:
    """A measure read back from JSON, where an undefined one (NaN) is ``null``."""
    return math.nan if value is None else float(value)


def _seeds(rows: Sequence[dict], dataset: str, recipe: str) -> list[int]:
    return sorted({r["seed"] for r in rows if r["dataset"] == dataset and r["training"] == recipe})


def robustness(rows: Sequence[dict], settings: Mapping, split: str = "test") -> list[dict]:
    """Per data set and recipe of ``settings``: the accuracy (points) lost under each
    execution outside its training mix (:func:`outside_executions`) against its own
    (:func:`own_execution`), one paired value per seed, as intervals by execution label
    (``losses``); ``worst``, per seed the largest loss under an outside *policy* at F = 8
    (``None`` where it trained under every policy)."""
    pre = _prefix(split)
    at = {(r["dataset"], r["training"], r["seed"], r["label"]): r for r in rows}
    labels = list(dict.fromkeys(r["label"] for r in rows))
    out = []
    for (dataset, recipe), s in settings.items():
        seeds = _seeds(rows, dataset, recipe)
        if not seeds:
            continue
        own = own_execution(s)
        outside = outside_executions(s, labels)
        per_label: dict[str, list[float]] = {h.label: [] for h in outside}
        worst: list[float] = []
        for seed in seeds:
            base = at.get((dataset, recipe, seed, own.label))
            if base is None:
                continue
            policy_losses = []
            for h in outside:
                other = at.get((dataset, recipe, seed, h.label))
                if other is None:
                    continue
                loss = 100 * (_num(base[f"{pre}accuracy"]) - _num(other[f"{pre}accuracy"]))
                per_label[h.label].append(loss)
                another_policy = h.group_size == 8 and h.scheduler != own.scheduler
                if another_policy or own.execution == "layered":
                    policy_losses.append(loss)
            if policy_losses:
                worst.append(max(policy_losses))
        out.append(
            {
                "dataset": dataset,
                "training": recipe,
                "own": own.label,
                "losses": {k: t_interval(v) for k, v in per_label.items() if v},
                "worst": worst or None,
            }
        )
    return out


def _prefix(split: str) -> str:
    if split not in ("test", "val"):
        raise ValueError(f"split is 'test' or 'val', got {split!r}")
    return "val_" if split == "val" else ""


def claims(
    rows: Sequence[dict],
    settings: Mapping,
    split: str = "test",
    correct: Mapping | None = None,
) -> list[dict]:
    """The study's claims per data set and unlayered recipe of ``settings``, each recipe
    paired by seed with the layered-trained model of the same seed, on the test split (or,
    with ``split="val"``, the validation split, where a recipe is chosen):

    - ``accuracy``: the recipe under :data:`REFERENCE` minus the layered model run layered
      (points);
    - ``spikes``: 100 (1 - the recipe's spikes / the layered model's), both under
      :data:`REFERENCE`;
    - ``latency``: the layered model's median decision latency (forward steps) over the
      recipe's, both under :data:`REFERENCE` (over seeds: the geometric mean, its interval
      on the log scale, :func:`~asyncsnn.stats.ratio_interval`);
    - ``robustness``: the recipe's worst accuracy loss under a policy outside its training mix
      (:func:`robustness`; absent for a recipe trained under every policy).

    Each is an :class:`~asyncsnn.stats.Interval` (95 %, t over seeds) with its ``verdicts``;
    ``per_seed`` holds the paired values; with ``correct`` (test split), ``mcnemar`` is the
    exact McNemar test of the accuracy claim over the test samples of every seed pooled.
    """
    pre = _prefix(split)
    at = {(r["dataset"], r["training"], r["seed"], r["label"]): r for r in rows}
    robust = {(r["dataset"], r["training"]): r for r in robustness(rows, settings, split)}
    out = []
    for (dataset, recipe), s in settings.items():
        if s.get("training") != "unlayered":
            continue
        per: dict[str, list[float]] = {c.key: [] for c in CLAIMS}
        pooled_a: list[str] = []
        pooled_b: list[str] = []
        for seed in _seeds(rows, dataset, recipe):
            ours = at.get((dataset, recipe, seed, REFERENCE.label))
            base = at.get((dataset, "layered", seed, REFERENCE.label))
            base_layered = at.get((dataset, "layered", seed, "layered"))
            if ours is None or base is None or base_layered is None:
                continue
            acc = f"{pre}accuracy"
            per["accuracy"].append(100 * (_num(ours[acc]) - _num(base_layered[acc])))
            spikes = f"{pre}spikes_per_sample"
            per["spikes"].append(100 * (1 - _num(ours[spikes]) / _num(base[spikes])))
            lat = f"{pre}latency_steps"
            per["latency"].append(_num(base[lat]) / _num(ours[lat]))
            if correct is not None:
                a = correct.get((dataset, recipe, seed, REFERENCE.label))
                b = correct.get((dataset, "layered", seed, "layered"))
                if a is not None and b is not None:
                    pooled_a.append(a)
                    pooled_b.append(b)
        if not per["accuracy"]:
            continue
        r = robust.get((dataset, recipe))
        per["robustness"] = list(r["worst"]) if r is not None and r["worst"] else []
        line: dict = {"dataset": dataset, "training": recipe, "split": split, "per_seed": per}
        line["verdicts"] = {}
        for c in CLAIMS:  # a speed-up is a ratio: its geometric mean, interval on log scale
            interval = (ratio_interval if c.key == "latency" else t_interval)(per[c.key])
            line[c.key] = interval
            line["verdicts"][c.key] = verdict(
                interval, target=c.target, no_effect=c.no_effect, higher_is_better=c.higher
            )
        if pooled_a:
            line["mcnemar"] = mcnemar(
                [ch == "1" for ch in "".join(pooled_a)], [ch == "1" for ch in "".join(pooled_b)]
            )
        out.append(line)
    return out


def targets_met(line: Mapping) -> dict[str, bool]:
    """Whether the *mean* of each claim of ``line`` (a :func:`claims` line) meets its target
    (a claim without a value, such as the robustness of a recipe trained under every policy,
    counts as met)."""
    met = {}
    for c in CLAIMS:
        interval: Interval = line[c.key]
        if interval.n == 0 or not math.isfinite(interval.mean):
            met[c.key] = c.key == "robustness"
            continue
        met[c.key] = interval.mean >= c.target if c.higher else interval.mean <= c.target
    return met


def choose(rows: Sequence[dict], val_claims: Sequence[dict], dataset: str) -> dict | None:
    """The headline recipe of ``dataset`` by :data:`SELECTION_RULE`, from the validation
    columns of ``rows`` and the claims on the validation split (``val_claims``). Returns
    ``{"rule", "candidates": [...], "chosen"}`` (each candidate with its mean validation
    accuracy under :data:`REFERENCE` and the other targets it meets), or ``None`` without a
    candidate."""
    lines = [c for c in val_claims if c["dataset"] == dataset]
    if not lines:
        return None
    candidates = []
    for c in lines:
        accs = [
            _num(r["val_accuracy"])
            for r in rows
            if (r["dataset"], r["training"], r["label"])
            == (dataset, c["training"], REFERENCE.label)
        ]
        met = targets_met(c)
        others = {k: v for k, v in met.items() if k != "accuracy"}
        candidates.append(
            {
                "training": c["training"],
                "val_accuracy": sum(accs) / len(accs) if accs else math.nan,
                "seeds": len(accs),
                "other_targets_met": sum(others.values()),
                "targets": met,
            }
        )
    finite = [c for c in candidates if math.isfinite(c["val_accuracy"])]
    if not finite:
        return None
    best = max(c["val_accuracy"] for c in finite)
    tied = [c for c in finite if 100 * (best - c["val_accuracy"]) <= TOLERANCE_POINTS + 1e-9]
    chosen = max(tied, key=lambda c: (c["other_targets_met"], c["val_accuracy"]))
    return {"rule": SELECTION_RULE, "candidates": candidates, "chosen": chosen["training"]}


def to_json(line: Mapping) -> dict:
    """A :func:`claims` or :func:`robustness` line with its intervals and tests as dicts."""
    out = {}
    for k, v in line.items():
        if hasattr(v, "to_dict"):  # an Interval or a McNemar test
            out[k] = v.to_dict()
        elif isinstance(v, dict):
            out[k] = {kk: vv.to_dict() if hasattr(vv, "to_dict") else vv for kk, vv in v.items()}
        else:
            out[k] = v
    return out
