"""``asyncsnn reproduce``: the study's grid on every data set found, resumable, with its report.

The grid (section 1 of the specification; ``docs/results.md`` is one run of it): for each data
set of the budget (:data:`BUDGETS`) found under the data root, each training recipe of the
budget (:data:`BUDGET_RECIPES`, from :data:`RECIPES`) and each seed of the data set, one
training into ``OUT/runs/DATASET/RECIPE/seedS``; each trained model is evaluated on the
validation and test splits under every execution of :data:`EXECUTIONS`, on the compiled
kernel wherever it applies, into ``OUT/evaluations/DATASET/RECIPE-seedS.json``. Then
``results.json`` (the rows, one per data set, recipe, seed and execution; the claims with
their intervals and verdicts; the choice of each data set's headline recipe), ``results.md``
and the plots in ``OUT/plots``. The claims and the choice are :mod:`asyncsnn.claims`'s.

A second call goes on where the first stopped: a training is run until its record says it
has finished, an unfinished one resumes from its last checkpoint, an evaluation of an
unchanged checkpoint is read back. A run directory trained with other settings than the
grid's (another budget, say) is an error, not silently reused.

Models are chosen on validation data only (each training keeps its best epoch by validation
accuracy, and the headline recipe is chosen on validation); the test split is only evaluated.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .claims import CLAIMS, REFERENCE, choose, claims, robustness, to_json
from .cost import Profile, get_profile
from .demo import DEMO
from .evaluation import Execution
from .rundir import RunDir, atomic_write_text, write_json
from .training import PRESETS

__all__ = [
    "BUDGETS",
    "BUDGET_RECIPES",
    "EXECUTIONS",
    "GRID_RECIPES",
    "RECIPES",
    "ROW_KEYS",
    "SEEDS",
    "Study",
    "analyse",
    "reproduce",
    "studies",
    "summarise",
]

SEEDS = (0, 1, 2)
GROUP_SIZES = (1, 8, 64)
POLICIES = ("random", "momentum")
#: Every trained model runs under each: layered; random and momentum with F in 1, 8, 64; fifo
#: with F = 8 (a policy no recipe trains under).
EXECUTIONS: tuple[Execution, ...] = (
    (Execution("layered"),)
    + tuple(Execution("async", p, f) for p in POLICIES for f in GROUP_SIZES)
    + (Execution("async", "fifo", 8),)
)
#: The policy of the second curve in the accuracy-against-budget plots.
OTHER = Execution("async", "random", 8)

#: The columns of a row of ``results.json``: one (data set, recipe, seed, execution); the
#: measures on the test split, ``val_*`` on the validation split.
ROW_KEYS = (
    "dataset", "training", "seed", "execution", "policy", "group_size", "label", "engine",
    "accuracy", "val_accuracy", "val_spikes_per_sample", "val_latency_steps",
    "spikes_per_sample", "spike_density", "synops_per_sample", "forward_steps_per_timestep",
    "latency_steps", "latency_spikes", "settled_fraction", "test_samples",
    "cost_profile", "energy_nj", "time_us", "latency_time_us",
)  # fmt: skip

_MIX = {  # a policy and a group size drawn per batch; F = 1 queues more spikes per neuron
    "mix_schedulers": ["random", "momentum"],
    "mix_group_sizes": [1, 8, 64],
    "max_queued_per_neuron": 16,
}
#: The training recipes: layer-synchronous BPTT; unlayered backprop under each policy; and
#: the candidate improvements, alone and together (surrogate gradients through silent
#: neurons, a mix of policies and group sizes; silent neurons' credit with only the last of
#: a neuron's checks in a timestep passing its surrogate, docs/semantics.md 8.7-8.8; a loss
#: on the running decision for early decisions, TrainConfig.decision_weight). The headline
#: recipe of a data set is chosen among the unlayered recipes of its grid by
#: :data:`asyncsnn.claims.SELECTION_RULE`, on validation data.
RECIPES: dict[str, dict] = {
    "layered": {"training": "layered"},
    "unlayered-random": {"training": "unlayered", "scheduler": "random"},
    "unlayered-momentum": {"training": "unlayered", "scheduler": "momentum"},
    "unlayered-silent": {
        "training": "unlayered",
        "scheduler": "momentum",
        "silent_gradients": True,
    },
    "unlayered-mix": {"training": "unlayered", "scheduler": "momentum", **_MIX},
    "unlayered-silent-mix": {
        "training": "unlayered",
        "scheduler": "momentum",
        "silent_gradients": True,
        **_MIX,
    },
    "unlayered-momentum-silent-last": {
        "training": "unlayered",
        "scheduler": "momentum",
        "silent_gradients": True,
        "surrogate_checks": "last",
    },
    "unlayered-momentum-early": {
        "training": "unlayered",
        "scheduler": "momentum",
        "decision_weight": 0.5,
    },
}


@dataclasses.dataclass(frozen=True)
class Study:
    """One data set's part of the grid.

    ``folders``: candidate folders under the data root, the first present is used (an empty
    tuple: a built-in data set, always found). ``settings``: the TrainConfig settings shared by
    every recipe (a recipe's own settings override them). ``seeds``: its seeds. ``smoke``: a
    reduced run that checks the pipeline and says nothing about the claims (its tables are
    marked so, without verdicts).
    """

    dataset: str
    folders: tuple[str, ...]
    settings: dict
    note: str = ""
    seeds: tuple[int, ...] = SEEDS
    smoke: bool = False

    def locate(self, data_root: Path) -> Path | None | bool:
        """The data folder, ``None`` for a built-in data set, ``False`` where it is missing."""
        if not self.folders:
            return None
        for folder in self.folders:
            if (data_root / folder).is_dir():
                return data_root / folder
        return False


_NMNIST = {**PRESETS["nmnist-study"], "hidden": [128, 128], "batch_size": 32}
"""The study's Table 6 (the ``nmnist-study`` preset) at batch 32."""
_FSDD = {  # docs/experiments.md: the recurrent model on spoken digits
    "dataset": "fsdd",
    "arch": "recurrent",
    "loss": "membrane",
    "tau_m": 1.0,
    "threshold": 10.0,
    "lr": 2e-3,
    "lr_schedule": "cosine",
    "batch_size": 32,
    "input_dropout": 0.0,
    "refractory_dropout": 0.0,
    "group_size": 8,
}
_DIGITS = {**DEMO, "hidden": list(DEMO["hidden"])}  # the demo's settings
_MNIST_SACCADES = {**_NMNIST, "dataset": "mnist-saccades"}

#: The grid's data sets per budget (docs/results.md says what each is for):
#:
#: - ``quick``: a smoke test of the whole pipeline, under 30 minutes on a 2-core CPU with
#:   ``--jobs 2``; every data set reduced, two seeds; its figures decide nothing;
#: - ``standard``: the run that decides, under 2.5 hours on a 2-core CPU with ``--jobs 2``:
#:   the full MNIST-saccades split (7,200 training, 800 validation, 2,000 test images: about
#:   0.5 points of standard error) at the study's preset for 15 epochs, the N-MNIST subset at
#:   the study's settings with 5 seeds, the digits, and FSDD's full split at the settings of
#:   docs/experiments.md; 3 seeds elsewhere;
#: - ``full``: for a GPU or a cluster.
BUDGETS: dict[str, tuple[Study, ...]] = {
    "quick": (
        Study(
            "nmnist",
            ("nmnist", "nmnist-subset"),
            {**_NMNIST, "epochs": 8},
            "the study's settings for 8 epochs instead of 50",
            seeds=(0, 1),
            smoke=True,
        ),
        Study(
            "mnist-saccades",
            ("mnist",),
            {**_MNIST_SACCADES, "epochs": 4, "limit_train": 600, "limit_test": 500},
            "600 training (of which 60 for validation) and 500 test images of the "
            "8,000/2,000 split, 4 epochs",
            seeds=(0, 1),
            smoke=True,
        ),
        Study("digits", (), {**_DIGITS, "epochs": 8}, "8 epochs", seeds=(0, 1), smoke=True),
        Study(
            "fsdd",
            ("fsdd",),
            {**_FSDD, "hidden": [64], "epochs": 3, "limit_train": 300, "limit_test": 100},
            "300 training (of which 30 for validation) and 100 test recordings, 64 hidden "
            "neurons, 3 epochs",
            seeds=(0, 1),
            smoke=True,
        ),
    ),
    "standard": (
        Study(
            "mnist-saccades",
            ("mnist",),
            {**_MNIST_SACCADES, "epochs": 15},
            "the full split: 7,200 training, 800 validation, 2,000 test images; 15 epochs",
        ),
        Study(
            "nmnist",
            ("nmnist", "nmnist-subset"),
            _NMNIST,
            "the study's settings (50 epochs); the subset's 100 test samples confirm, they "
            "cannot decide (about 4 points of standard error per seed)",
            seeds=(0, 1, 2, 3, 4),
        ),
        Study("digits", (), {**_DIGITS, "epochs": 20}, "the demo's settings, 20 epochs"),
        Study(
            "fsdd",
            ("fsdd",),
            {**_FSDD, "hidden": [256], "epochs": 30},
            "FSDD's own split (2,700 training, of which 270 for validation; 300 test), the "
            "settings of docs/experiments.md",
        ),
    ),
    "full": (
        Study("nmnist", ("nmnist", "nmnist-subset"), _NMNIST, seeds=(0, 1, 2, 3, 4)),
        Study("mnist-saccades", ("mnist",), {**_MNIST_SACCADES, "epochs": 30}),
        Study("digits", (), {**_DIGITS, "epochs": 50}),
        Study("fsdd", ("fsdd",), {**_FSDD, "hidden": [256], "epochs": 60}),
    ),
}
#: The recipes each budget trains (``layered`` always: the claims compare with it). The
#: standard grid's candidates are plain unlayered backprop under momentum and the mix of
#: policies and group sizes; unlayered-random and the silent-gradient recipes are there on
#: request (``--recipes``).
BUDGET_RECIPES: dict[str, tuple[str, ...]] = {
    "quick": ("layered", "unlayered-momentum", "unlayered-mix"),
    "standard": ("layered", "unlayered-momentum", "unlayered-mix"),
    "full": ("layered", "unlayered-random", "unlayered-momentum", "unlayered-mix"),
}
#: The recipes of the quick grid (``reproduce``'s default).
GRID_RECIPES = BUDGET_RECIPES["quick"]


def studies(budget: str, data_root: Path, datasets: Sequence[str] | None = None):
    """The (study, data folder) pairs of ``budget`` found under ``data_root``, and the names of
    the data sets not found (with the folders looked for)."""
    if budget not in BUDGETS:
        raise ValueError(f"the budget is one of {sorted(BUDGETS)}, got {budget!r}")
    chosen = BUDGETS[budget]
    if datasets:
        known = {s.dataset for s in chosen}
        unknown = sorted(set(datasets) - known)
        if unknown:
            raise ValueError(f"unknown data sets {unknown}; the grid has {sorted(known)}")
        chosen = tuple(s for s in chosen if s.dataset in datasets)
    found, missing = [], []
    for study in chosen:
        where = study.locate(Path(data_root))
        if where is False:
            folders = " or ".join(str(Path(data_root) / f) for f in study.folders)
            missing.append(f"{study.dataset} (looked for {folders})")
        else:
            found.append((study, where))
    return found, missing


# ---------------------------------------------------------------------------- one task
def _task_config(study: Study, data_dir: Path | None, recipe: str, seed: int) -> dict:
    settings = {**study.settings, **RECIPES[recipe], "seed": seed}
    if data_dir is not None:
        settings["data_dir"] = str(data_dir)
    return settings


#: The evaluation record's format; a record of another version is evaluated again.
RECORD_VERSION = 2


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _stamp(run: RunDir, which: str) -> dict:
    """What identifies checkpoint ``which`` of a run: its epoch, its validation accuracy and
    a digest of its weights."""
    meta = json.loads(run.checkpoint_json(which).read_text())
    return {
        "epoch": meta.get("epoch"),
        "best_val_accuracy": meta.get("best_val_accuracy"),
        "sha256": _digest(run.checkpoint(which)),
    }


def _row(task: dict, how: Execution, result: dict, on_val: dict, n_test: int) -> dict:
    s, v = result["summary"], on_val["summary"]
    return {
        "dataset": task["dataset"],
        "training": task["recipe"],
        "seed": task["seed"],
        "execution": how.execution,
        "policy": how.scheduler if how.execution == "async" else None,
        "group_size": how.group_size if how.execution == "async" else None,
        "label": how.label,
        "engine": result["engine"],
        "accuracy": s["accuracy"],
        "val_accuracy": v["accuracy"],
        "val_spikes_per_sample": v["spikes_per_sample"],
        "val_latency_steps": v.get("latency_steps_median", math.nan),
        "spikes_per_sample": s["spikes_per_sample"],
        "spike_density": s["spike_density"],
        "synops_per_sample": s["synops_per_sample"],
        "forward_steps_per_timestep": s["forward_steps_per_timestep"],
        "latency_steps": s.get("latency_steps_median", math.nan),
        "latency_spikes": s.get("latency_spikes_median", math.nan),
        "settled_fraction": s.get("settled_fraction", math.nan),
        "test_samples": n_test,
        "cost_profile": result["cost_profile"],
        "energy_nj": s["energy_nj"],
        "time_us": s["time_us"],
        "latency_time_us": s.get("latency_time_us_median", math.nan),
    }


def _bits(correct) -> str:
    """Each sample's correctness as a string of ``0`` and ``1``."""
    return "".join("1" if c else "0" for c in correct.tolist())


def _run_task(task: dict) -> dict:
    """Train (or resume, or skip) one run and evaluate it under every execution; returns the
    evaluation record (also written to ``task["evaluation"]``). Runs in a worker process.

    A training is run (or resumed) until its record says it has finished
    (:func:`asyncsnn.training.unfinished`); the evaluation of its ``best`` checkpoint (chosen
    on validation) is kept as long as that checkpoint's weights are unchanged. The ``last``
    checkpoint is evaluated too, under :data:`~asyncsnn.claims.REFERENCE` and layered, so that
    the bias of choosing on validation can be seen."""
    import torch

    from .evaluation import evaluate
    from .training import TrainConfig, Trainer, load_run, unfinished

    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    profile = task.get("cost_profile") or get_profile("loihi")
    cfg = TrainConfig.from_dict(task["config"])
    run_dir = Path(task["run_dir"])
    run = RunDir(run_dir)
    trained = 0.0
    if not run.checkpoint("best").is_file() or unfinished(run_dir) is not None:
        start = time.perf_counter()
        splits = _splits(cfg)
        Trainer(cfg, run_dir, quiet=True, splits=splits).fit(resume=run.holds_run())
        trained = time.perf_counter() - start
    stamp = _stamp(run, "best")
    labels = [h.label for h in EXECUTIONS]
    path = Path(task["evaluation"])
    if path.is_file():
        old = json.loads(path.read_text())
        same = (
            old.get("version") == RECORD_VERSION
            and [r["label"] for r in old["rows"]] == labels
            and all(
                set(r) == set(ROW_KEYS) and r["cost_profile"] == profile.name for r in old["rows"]
            )
        )
        if old.get("checkpoint") == stamp and same:
            return {**old, "trained_s": trained, "evaluated_s": 0.0}
    start = time.perf_counter()
    _, val, test, _ = _splits(cfg)  # the task's own data (its dt may be left to the data set)
    record = {
        "version": RECORD_VERSION,
        "dataset": task["dataset"],
        "recipe": task["recipe"],
        "seed": task["seed"],
        "checkpoint": stamp,
        "rows": [],
        "correct": {},
        "budget": {},
        "latency_steps": {},
        "spikes_per_population": {},
    }
    net, run_cfg, _ = load_run(run_dir, "best")
    net.to(cfg.device)
    for how in EXECUTIONS:
        result = evaluate(
            net, test, run_cfg, how, seed=0, stop_on_first_output=False, cost_profile=profile
        )
        on_val = evaluate(net, val, run_cfg, how, seed=0, stop_on_first_output=False)
        record["rows"].append(_row(task, how, result, on_val, len(test)))
        record["correct"][how.label] = _bits(result["per_sample"]["correct"])
        record["budget"][how.label] = result["budget"]
        if "latency_steps" in result["per_sample"]:
            record["latency_steps"][how.label] = result["per_sample"]["latency_steps"].tolist()
        record["spikes_per_population"][how.label] = result["spikes_per_population"]
    record["last"] = _evaluate_last(run, run_dir, test, profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    return {**record, "trained_s": trained, "evaluated_s": time.perf_counter() - start}


def _evaluate_last(run: RunDir, run_dir: Path, test, profile) -> dict:
    """The last epoch's model on the test split under layered execution and
    :data:`~asyncsnn.claims.REFERENCE` (accuracy and spikes), beside its epoch and
    validation accuracy (the metrics' last line)."""
    from .evaluation import evaluate
    from .training import load_run

    net, run_cfg, _ = load_run(run_dir, "last")
    metrics = run.read_metrics()
    out = {
        "epoch": len(metrics),
        "val_accuracy": metrics[-1]["val_accuracy"] if metrics else math.nan,
        "rows": {},
    }
    for how in (EXECUTIONS[0], REFERENCE):
        s = evaluate(
            net, test, run_cfg, how, seed=0, stop_on_first_output=False, cost_profile=profile
        )["summary"]
        out["rows"][how.label] = {
            "accuracy": s["accuracy"],
            "spikes_per_sample": s["spikes_per_sample"],
        }
    return out


_LOADED: dict = {}


def _splits(cfg):
    """:func:`~asyncsnn.training.load_splits` of ``cfg``, the last one kept in this process: the
    grid's tasks are ordered so that consecutive ones share their data (one data set and seed,
    four recipes)."""
    from .training import load_splits

    key = tuple(
        getattr(cfg, k)
        for k in (
            "dataset",
            "data_dir",
            "dt",
            "timesteps",
            "limit_train",
            "limit_test",
            "val_fraction",
            "first_saccade",
            "seed",
        )
    )
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load_splits(cfg)
    return _LOADED[key]


def _check_recorded(run_dir: Path, planned: dict) -> None:
    """A run directory of the grid must hold the grid's training: its recorded settings equal
    the planned ones (the data folder may have moved)."""
    from .training import TrainConfig, recorded_config

    if not RunDir(run_dir).holds_run():
        return
    recorded = TrainConfig.from_dict(recorded_config(run_dir)).to_dict()
    want = TrainConfig.from_dict(planned).to_dict()
    differ = [
        f"{k} (recorded {recorded[k]!r}, planned {want[k]!r})"
        for k in want
        if k not in ("data_dir", "dt", "device") and recorded.get(k) != want[k]
    ]
    if differ:
        raise ValueError(
            f"{run_dir} holds a training with other settings than this grid's: "
            f"{', '.join(differ)}; give another --out (or remove that run)"
        )


# ---------------------------------------------------------------------------- the grid
def reproduce(
    out: str | Path,
    *,
    data_root: str | Path,
    budget: str = "quick",
    datasets: Sequence[str] | None = None,
    jobs: int = 1,
    command: str = "",
    grid: Sequence[tuple[Study, Path | None]] | None = None,
    seeds: Sequence[int] | None = None,
    recipes: Sequence[str] | None = None,
    cost_profile: str | Path | Profile = "loihi",
    say: Callable[[str], None] = print,
    executor: str = "process",
    address: str | None = None,
    device: str = "cpu",
) -> dict:
    """Run (or go on with) the grid into ``out``; returns what ``results.json`` holds:
    ``rows``, ``summary``, ``claims`` (test split), ``val_claims``, ``robustness``,
    ``choices`` (the headline recipe of each data set, chosen on validation) and
    ``selection`` (each training's chosen and last epoch).

    ``jobs``: trainings run in parallel, each in its own process with one thread.
    ``executor``: ``"process"`` (a pool of ``jobs`` processes, or this one for ``jobs`` = 1)
    or ``"ray"``: each task one Ray Tune trial of one CPU, tried once more where it fails
    (:func:`asyncsnn.sweep.run_tasks`), on the Ray cluster at ``address`` or on an embedded Ray
    of ``jobs`` CPUs. ``grid`` replaces the budget's data sets (tests and custom grids:
    ``(Study, data folder)`` pairs). ``seeds``: every study's seeds instead of its own.
    ``recipes``: names of :data:`RECIPES`, the budget's (:data:`BUDGET_RECIPES`) by default
    (``layered`` is always trained: the claims compare with it). The report covers every
    evaluation in ``out`` of the grid's data sets, those of earlier calls with other recipes
    included. ``cost_profile``: the hardware profile of the energy and time columns
    (:func:`asyncsnn.cost.get_profile`); an evaluation recorded under another profile is
    evaluated again (the training is kept). ``device``: where the trainings and evaluations
    run (``cpu``, ``cuda``, ``cuda:N``); a run trained on another device is the same run (a
    resume may change the device).
    """
    out = Path(out)
    profile = get_profile(cost_profile)
    if executor not in ("process", "ray"):
        raise ValueError(f"the executor is 'process' or 'ray', got {executor!r}")
    if address is not None and executor != "ray":
        raise ValueError("an address names a Ray cluster: it needs the Ray executor")
    if budget not in BUDGETS:
        raise ValueError(f"the budget is one of {sorted(BUDGETS)}, got {budget!r}")
    recipes = BUDGET_RECIPES[budget] if recipes is None else recipes
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        raise ValueError(f"unknown recipes {unknown}; known: {', '.join(RECIPES)}")
    recipes = ["layered", *(r for r in dict.fromkeys(recipes) if r != "layered")]
    if grid is None:
        grid, missing = studies(budget, Path(data_root), datasets)
    else:
        missing = []
    if not grid:
        raise ValueError(f"no data set of the grid found under {data_root}: {'; '.join(missing)}")
    for line in missing:
        say(f"not found, skipped: {line}")
    tasks = []
    for study, data_dir in grid:
        for seed in study.seeds if seeds is None else seeds:
            for recipe in recipes:
                config = {**_task_config(study, data_dir, recipe, seed), "device": device}
                run_dir = out / "runs" / study.dataset / recipe / f"seed{seed}"
                _check_recorded(run_dir, config)
                tasks.append(
                    {
                        "dataset": study.dataset,
                        "recipe": recipe,
                        "seed": seed,
                        "config": config,
                        "run_dir": str(run_dir),
                        "evaluation": str(
                            out / "evaluations" / study.dataset / f"{recipe}-seed{seed}.json"
                        ),
                        "threads": 1 if jobs > 1 or executor == "ray" else None,
                        "cost_profile": profile,
                    }
                )
    # the first task of each data set goes first: one that encodes on first use (FSDD's
    # cochlea) does it once, early, while the other workers train
    firsts = {t["dataset"]: i for i, t in reversed(list(enumerate(tasks)))}
    tasks = [tasks[i] for i in firsts.values()] + [
        t for i, t in enumerate(tasks) if i not in firsts.values()
    ]
    start = time.perf_counter()
    names = [f"{t['dataset']}/{t['recipe']}/seed{t['seed']}" for t in tasks]
    _execute(
        tasks, jobs, _run_task, _reporter(tasks, say), executor=executor, address=address,
        names=names, say=say,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    records = _evaluations(out, [study.dataset for study, _ in grid])
    results = analyse(records, grid)
    header = _header(command, budget, elapsed, grid, missing, jobs, records)
    results["meta"] = {"budget": budget, "header": header, "wall_s": elapsed}
    write_json(out / "results.json", results)
    plots = _plots(records, out / "plots")
    atomic_write_text(out / "results.md", results_markdown(results, grid, header, plots))
    say(f"written: {out}/results.md, results.json, plots/ ({elapsed:.0f} s)")
    return results


def analyse(records: Sequence[dict], grid: Sequence[tuple[Study, Path | None]]) -> dict:
    """Everything ``results.json`` holds, from the evaluation ``records`` of the ``grid``'s
    data sets: the rows, their summary over seeds, the claims with their intervals on the
    test and validation splits, the robustness columns, the choice of each data set's
    headline recipe and the selection table (chosen and last epoch of each training)."""
    rows = [r for rec in records for r in rec["rows"]]
    by_ds = {study.dataset: study for study, _ in grid}
    settings = {}
    for rec in records:
        study = by_ds.get(rec["dataset"])
        if study is not None:
            settings[(rec["dataset"], rec["recipe"])] = {**study.settings, **RECIPES[rec["recipe"]]}
    correct = {
        (rec["dataset"], rec["recipe"], rec["seed"], label): bits
        for rec in records
        for label, bits in rec.get("correct", {}).items()
    }
    found = claims(rows, settings, "test", correct)
    on_val = claims(rows, settings, "val")
    choices = {}
    for study, _ in grid:
        pick = choose(rows, on_val, study.dataset)
        if pick is not None:
            choices[study.dataset] = pick
    return {
        "rows": rows,
        "summary": summarise(rows),
        "claims": [to_json(c) for c in found],
        "val_claims": [to_json(c) for c in on_val],
        "robustness": [to_json(r) for r in robustness(rows, settings)],
        "choices": choices,
        "selection": _selection(records),
    }


def _selection(records: Sequence[dict]) -> list[dict]:
    """Per training: the epoch chosen on validation and its validation and test accuracy,
    beside the last epoch's (under layered execution and :data:`REFERENCE`)."""
    out = []
    for rec in records:
        last = rec.get("last")
        if last is None:
            continue
        rows = {r["label"]: r for r in rec["rows"]}
        line = {
            "dataset": rec["dataset"],
            "training": rec["recipe"],
            "seed": rec["seed"],
            "best_epoch": rec["checkpoint"].get("epoch"),
            "best_val_accuracy": rec["checkpoint"].get("best_val_accuracy"),
            "last_epoch": last["epoch"],
            "last_val_accuracy": last["val_accuracy"],
        }
        for how in (EXECUTIONS[0], REFERENCE):
            line[f"best_test_accuracy {how.label}"] = rows[how.label]["accuracy"]
            line[f"last_test_accuracy {how.label}"] = last["rows"][how.label]["accuracy"]
        out.append(line)
    return out


def _evaluations(out: Path, datasets: Sequence[str]) -> list[dict]:
    """Every evaluation record in ``out`` of ``datasets``, ordered by data set, recipe (in the
    order of :data:`RECIPES`) and seed."""
    order = {name: i for i, name in enumerate(RECIPES)}
    records = []
    for d, dataset in enumerate(datasets):
        for path in sorted((out / "evaluations" / dataset).glob("*-seed*.json")):
            rec = json.loads(path.read_text())
            if rec.get("recipe") not in order:
                continue
            records.append(((d, order[rec["recipe"]], rec["seed"]), rec))
    return [rec for _, rec in sorted(records, key=lambda kv: kv[0])]


def _execute(
    tasks: Sequence,
    jobs: int,
    work: Callable = _run_task,
    done=None,
    *,
    executor: str = "process",
    address: str | None = None,
    names: Sequence[str] | None = None,
    say: Callable[[str], None] = print,
) -> list:
    """``work(task)`` of each task, in the tasks' order; ``done(i, result)`` as each finishes.
    With ``jobs`` > 1, in that many worker processes (spawned: each imports asyncsnn afresh,
    with one thread). With ``executor="ray"``, as Ray Tune trials of one CPU each
    (:func:`asyncsnn.sweep.run_tasks`, on the cluster at ``address`` or an embedded Ray of
    ``jobs`` CPUs; ``names`` name the trials); a task that fails twice raises
    :class:`asyncsnn.sweep.TrialsFailed` once every task has ended."""
    if executor == "ray":
        from .sweep import Resources, TrialsFailed, run_tasks

        outcomes = run_tasks(
            tasks,
            work,
            names=names,
            executor="ray",
            address=address,
            resources=Resources(cpus=1, local_cpus=None if address else max(jobs, 1)),
            done=done,
            say=say,
        )
        if any(o.error is not None for o in outcomes):
            raise TrialsFailed(outcomes)
        return [o.result for o in outcomes]
    if jobs <= 1:
        results = []
        for i, task in enumerate(tasks):
            results.append(work(task))
            if done is not None:
                done(i, results[-1])
        return results
    import concurrent.futures
    import multiprocessing

    from .sweep import _environ

    env = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    with _environ(**env):  # the spawned workers inherit them
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            futures = {pool.submit(work, t): i for i, t in enumerate(tasks)}
            results: list = [None] * len(tasks)
            for f in concurrent.futures.as_completed(futures):
                i = futures[f]
                results[i] = f.result()
                if done is not None:
                    done(i, results[i])
    return results


def _reporter(tasks: Sequence[dict], say):
    count = 0

    def done(i: int, rec: dict) -> None:
        nonlocal count
        count += 1
        task = tasks[i]
        ref = next(r for r in rec["rows"] if r["label"] == REFERENCE.label)
        what = f"trained {rec['trained_s']:.0f} s" if rec["trained_s"] else "trained before"
        say(
            f"[{count}/{len(tasks)}] {task['dataset']} {task['recipe']} seed {task['seed']}: "
            f"{what}; accuracy {ref['accuracy']:.3f} under {REFERENCE.label}"
        )

    return done


# ---------------------------------------------------------------------------- statistics
_MEASURES = (
    "accuracy",
    "val_accuracy",
    "spikes_per_sample",
    "spike_density",
    "synops_per_sample",
    "latency_steps",
    "latency_spikes",
    "energy_nj",
    "time_us",
    "latency_time_us",
)


def _mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (NaN for one value) and count of the finite values."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return math.nan, math.nan, 0
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else math.nan), len(v)


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Means and spreads over the seeds per (data set, training, execution)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["training"], r["label"]), []).append(r)
    out = []
    for (dataset, training, label), members in groups.items():
        line = {"dataset": dataset, "training": training, "execution": label, "seeds": len(members)}
        line["cost_profile"] = ", ".join(sorted({str(r.get("cost_profile")) for r in members}))
        for m in _MEASURES:
            mean, sd, _ = _mean_sd([r.get(m) for r in members])
            line[m] = mean
            line[f"{m}_sd"] = sd
        out.append(line)
    return out


# ---------------------------------------------------------------------------- the report
def _fmt(mean: float, sd: float, f: str) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    text = f.format(mean)
    if sd is None or not math.isfinite(sd):
        return text
    return f"{text} ± {f.replace('+', '').format(sd)}"


_TABLE = (
    ("val_accuracy", "val. accuracy", "{:.3f}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("spikes_per_sample", "spikes/sample", "{:.0f}"),
    ("spike_density", "spike density", "{:.4f}"),
    ("synops_per_sample", "SynOps/sample", "{:.0f}"),
    ("latency_steps", "latency (steps)", "{:.1f}"),
    ("latency_spikes", "latency (spikes)", "{:.0f}"),
    ("energy_nj", "energy (nJ)", "{:.1f}"),
    ("time_us", "time/sample (us)", "{:.1f}"),
    ("latency_time_us", "time to decision (us)", "{:.2f}"),
)


def _interval_text(d: dict | None, f: str) -> str:
    """An interval read back from ``results.json`` as ``mean [lo, hi]`` (``mean`` alone for
    one seed; ``-`` for none)."""
    if not d or d.get("n", 0) == 0 or d.get("mean") is None or not math.isfinite(d["mean"]):
        return "-"
    lo, hi = d.get("lo"), d.get("hi")
    if lo is None or not math.isfinite(lo):
        return f.format(d["mean"])
    return f"{f.format(d['mean'])} [{f.format(lo)}, {f.format(hi)}]"


_CLAIM_FORMATS = {"accuracy": "{:+.1f}", "spikes": "{:.0f} %", "latency": "{:.2f}x",
                  "robustness": "{:+.1f}"}  # fmt: skip


def _headline(c: dict, smoke: bool) -> list[str]:
    lines = [
        "| claim | the study | target | measured: mean [95 % interval] | verdict |",
        "|---|---|---|---:|---|",
    ]
    for claim in CLAIMS:
        cell = _interval_text(c.get(claim.key), _CLAIM_FORMATS[claim.key])
        said = "-" if smoke else c["verdicts"][claim.key]
        lines.append(f"| {claim.heading} | {claim.study} | {claim.text} | {cell} | {said} |")
    n = (c.get("accuracy") or {}).get("n", 0)
    lines += ["", f"n = {n} seeds, each paired with the layered-trained model of the same seed."]
    m = c.get("mcnemar")
    if m:
        lines += [
            "",
            f"Accuracy, McNemar's exact test over the {m['n']} test samples of every seed "
            f"pooled: right under {c['training']} only {m['only_a']}, under the layered model "
            f"only {m['only_b']}; p = {m['p']:.3g}.",
        ]
    return lines


def _candidates_table(mine: Sequence[dict], smoke: bool) -> list[str]:
    lines = [
        "| recipe | " + " | ".join(c.heading for c in CLAIMS) + " |",
        "|---|" + "---:|" * len(CLAIMS),
    ]
    for c in mine:
        cells = []
        for claim in CLAIMS:
            cell = _interval_text(c.get(claim.key), _CLAIM_FORMATS[claim.key])
            if not smoke and cell != "-":
                cell += f" ({c['verdicts'][claim.key]})"
            cells.append(cell)
        lines.append(f"| {c['training']} | " + " | ".join(cells) + " |")
    return lines


def _choice_table(choice: dict) -> list[str]:
    lines = [
        f"| candidate | validation accuracy under {REFERENCE.label} (mean over seeds) | other "
        "targets met on validation | chosen |",
        "|---|---:|---:|---|",
    ]
    for c in choice["candidates"]:
        mark = "**chosen**" if c["training"] == choice["chosen"] else ""
        lines.append(
            f"| {c['training']} | {c['val_accuracy']:.3f} | {c['other_targets_met']} of 3 | "
            f"{mark} |"
        )
    return lines


def _robustness_table(mine: Sequence[dict]) -> list[str]:
    labels = list(dict.fromkeys(k for r in mine for k in r["losses"]))
    if not labels:
        return []
    lines = [
        "| recipe | measured against | " + " | ".join(labels) + " |",
        "|---|---|" + "---:|" * len(labels),
    ]
    for r in mine:
        cells = [_interval_text(r["losses"].get(k), "{:+.1f}") for k in labels]
        lines.append(f"| {r['training']} | {r['own']} | " + " | ".join(cells) + " |")
    return lines


def _selection_table(mine: Sequence[dict]) -> list[str]:
    lines = [
        "| recipe | chosen epoch | last epoch | val. accuracy (chosen) | "
        f"test, layered (chosen / last) | test, {REFERENCE.label} (chosen / last) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for recipe in dict.fromkeys(m["training"] for m in mine):
        ms = [m for m in mine if m["training"] == recipe]

        def mean(key, ms=ms):
            return statistics.fmean(float(m[key]) for m in ms)

        lay, ref = EXECUTIONS[0].label, REFERENCE.label
        lines.append(
            f"| {recipe} | {mean('best_epoch'):.1f} | {mean('last_epoch'):.1f} | "
            f"{mean('best_val_accuracy'):.3f} | {mean(f'best_test_accuracy {lay}'):.3f} / "
            f"{mean(f'last_test_accuracy {lay}'):.3f} | {mean(f'best_test_accuracy {ref}'):.3f}"
            f" / {mean(f'last_test_accuracy {ref}'):.3f} |"
        )
    return lines


def results_markdown(results: dict, grid, header: str, plots=()) -> str:
    """``results.md`` from what ``results.json`` holds (:func:`analyse`): the header, then per
    data set the headline recipe chosen on validation and its claims with intervals and
    verdicts, every candidate's claims, the choice, the robustness columns, the chosen
    against the last epoch, the full table and the ``plots`` (names of the files written in
    ``plots/``). A smoke study's figures are marked as such, without verdicts."""
    lines = [header]
    for study, _ in grid:
        ds = study.dataset
        lines += [f"## {ds}", ""]
        if study.smoke:
            lines += [
                f"**Smoke test**, reduced ({study.note}): these figures check the pipeline "
                "and decide nothing; no verdicts are given.",
                "",
            ]
        elif study.note:
            lines += [f"Settings: {study.note}.", ""]
        choice = results["choices"].get(ds)
        mine = [c for c in results["claims"] if c["dataset"] == ds]
        if choice is not None:
            chosen = next((c for c in mine if c["training"] == choice["chosen"]), None)
            lines += [
                f"Headline recipe, chosen on validation by the rule of docs/results.md: "
                f"**{choice['chosen']}**. Its claims on the test split:",
                "",
            ]
            if chosen is not None:
                lines += [*_headline(chosen, study.smoke), ""]
            lines += ["The choice, on the validation split only:", "", *_choice_table(choice), ""]
        if mine:
            lines += [
                "Every unlayered recipe on the test split (mean [95 % interval] over seeds, "
                "verdict):",
                "",
                *_candidates_table(mine, study.smoke),
                "",
            ]
        rob = _robustness_table([r for r in results["robustness"] if r["dataset"] == ds])
        if rob:
            lines += [
                "Accuracy lost (points) under each execution outside a recipe's training mix, "
                "against the execution it is measured against:",
                "",
                *rob,
                "",
            ]
        sel = [m for m in results["selection"] if m["dataset"] == ds]
        if sel:
            lines += [
                "The epoch chosen on validation against the last epoch (means over seeds): "
                "the gap between validation and test accuracy is the bias of choosing on "
                "validation.",
                "",
                *_selection_table(sel),
                "",
            ]
        lines += [
            "All figures (mean ± sd over seeds):",
            "",
            "| training | execution | " + " | ".join(t for _, t, _ in _TABLE) + " |",
            "|---|---|" + "---:|" * len(_TABLE),
        ]
        for s in results["summary"]:
            if s["dataset"] != ds:
                continue
            cells = [_fmt(s[k], s[f"{k}_sd"], f) for k, _, f in _TABLE]
            lines.append(f"| {s['training']} | {s['execution']} | " + " | ".join(cells) + " |")
        profiles = sorted({s["cost_profile"] for s in results["summary"] if s["dataset"] == ds})
        lines += [
            "",
            f"Energy and time under the cost profile {', '.join(profiles)} (docs/cost.md): "
            "estimates from the runs' own counts, not measurements on a chip.",
            "",
        ]
        for name, title in _PLOTS:
            if f"{ds}_{name}.png" in plots:
                lines.append(f"![{title}](plots/{ds}_{name}.png)")
        lines.append("")
    return "\n".join(lines) + "\n"


_PLOTS = (
    ("accuracy_vs_budget", "accuracy against the forward-step budget"),
    ("spikes_per_layer", "spikes per layer"),
    ("latency", "decision latency"),
)


def _header(command: str, budget: str, elapsed: float, grid, missing, jobs: int, records) -> str:
    import torch

    from . import __version__

    commit = "unknown"
    try:
        here = Path(__file__).resolve().parent
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=here,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        pass
    machine = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}, torch {torch.__version__}, asyncsnn {__version__}"
    )
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# asyncsnn reproduce ({budget} budget)",
        "",
        f"- command: `{command or 'asyncsnn reproduce'}`",
        f"- commit: {commit}; date: {date}; wall time of this call: {elapsed / 60:.1f} min "
        f"({jobs} parallel job{'s' if jobs != 1 else ''})",
        f"- machine: {machine}",
        f"- data sets: {', '.join(s.dataset for s, _ in grid)}"
        + (f"; not found: {'; '.join(missing)}" if missing else ""),
        f"- trainings: {', '.join(dict.fromkeys(r['recipe'] for r in records))}; seeds "
        f"{', '.join(map(str, sorted({r['seed'] for r in records})))}; the epoch of "
        "each training chosen on validation accuracy; every figure on the test split, "
        "evaluated without dropout",
        "",
    ]
    return "\n".join(lines)


def _plots(records: Sequence[dict], folder: Path) -> set[str]:
    """The plots of every data set into ``folder``; returns the names of the files written
    (a data set without a spiking readout has no budget curves and no latencies)."""
    from .plots import budget_curves, latency_histograms, spikes_per_layer

    folder.mkdir(parents=True, exist_ok=True)
    names: set[str] = set()
    by_ds: dict[str, list[dict]] = {}
    for rec in records:
        by_ds.setdefault(rec["dataset"], []).append(rec)
    for ds, recs_of_ds in by_ds.items():
        curves, bars, hists = {}, {}, {}
        for recipe in dict.fromkeys(rec["recipe"] for rec in recs_of_ds):
            recs = [rec for rec in recs_of_ds if rec["recipe"] == recipe]
            for how in (REFERENCE, OTHER):
                c = _mean_curve([rec["budget"][how.label] for rec in recs])
                if c is not None:
                    curves[f"{recipe}, {how.label}"] = c
            for how in (EXECUTIONS[0], REFERENCE):
                per_pop = [rec["spikes_per_population"][how.label] for rec in recs]
                layers = list(per_pop[0])
                bars[f"{recipe}, {how.label}"] = [
                    statistics.fmean(p[name] for p in per_pop) for name in layers
                ]
            lat = [
                v
                for rec in recs
                for v in rec["latency_steps"].get(REFERENCE.label, [])
                if v is not None and math.isfinite(v)
            ]
            if lat:
                hists[recipe] = lat
        written = [(f"{ds}_spikes_per_layer.png", spikes_per_layer, (bars, layers))]
        if curves:
            written.append((f"{ds}_accuracy_vs_budget.png", budget_curves, (curves,)))
        if hists:
            titled = functools.partial(latency_histograms, title=REFERENCE.label)
            written.append((f"{ds}_latency.png", titled, (hists,)))
        for name, plot, args in written:
            plot(*args, folder / name)
            names.add(name)
    return names


def _mean_curve(budgets: Sequence[dict]):
    """The mean over seeds of accuracy-against-budget curves, on the union of their budgets
    (each curve held at its last value beyond its own largest budget)."""
    import numpy as np

    budgets = [b for b in budgets if b["forward_steps"]]
    if not budgets:
        return None
    grid = sorted({k for b in budgets for k in b["forward_steps"]})
    acc = np.mean([np.interp(grid, b["forward_steps"], b["accuracy"]) for b in budgets], axis=0)
    return grid, acc.tolist()


def main_command() -> str:
    """The command line of this process, for the report's header."""
    return " ".join(["asyncsnn", *sys.argv[1:]]) if sys.argv else "asyncsnn reproduce"
