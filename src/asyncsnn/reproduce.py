"""``asyncsnn reproduce``: the study's grid on every data set found, resumable, with its report.

The grid (section 1 of the specification; ``docs/results.md`` is one run of it): for each data
set found under the data root, each training recipe of :data:`RECIPES` and each seed of
:data:`SEEDS`, one training into ``OUT/runs/DATASET/RECIPE/seedS``; each trained model is
evaluated on the test split under every execution of :data:`EXECUTIONS` (layered, and
asynchronous under the random and momentum policies with F in 1, 8, 64), into
``OUT/evaluations/DATASET/RECIPE-seedS.json``. Then ``results.json`` (one row per data set,
recipe, seed and execution), ``results.md`` (means and spreads over the seeds, and the gap to
each of the study's claims) and the plots in ``OUT/plots``.

A second call goes on where the first stopped: a finished training is not run again, an
unfinished one resumes from its last checkpoint, an evaluation of an unchanged checkpoint is
read back. A run directory trained with other settings than the grid's (another budget, say)
is an error, not silently reused.

Models are chosen on validation data only (each training keeps its best epoch by validation
accuracy); the test split is only evaluated.
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

from .cost import Profile, get_profile
from .demo import DEMO
from .evaluation import Execution
from .rundir import RunDir, atomic_write_text, write_json
from .training import PRESETS

__all__ = [
    "BUDGETS",
    "CLAIMS",
    "EXECUTIONS",
    "GRID_RECIPES",
    "RECIPES",
    "REFERENCE",
    "ROW_KEYS",
    "SEEDS",
    "Study",
    "choose",
    "claims",
    "reproduce",
    "studies",
    "summarise",
]

SEEDS = (0, 1, 2)
GROUP_SIZES = (1, 8, 64)
POLICIES = ("random", "momentum")
EXECUTIONS: tuple[Execution, ...] = (Execution("layered"),) + tuple(
    Execution("async", p, f) for p in POLICIES for f in GROUP_SIZES
)
#: The asynchronous execution the claims compare under: the study's momentum policy, F = 8.
REFERENCE = Execution("async", "momentum", 8)
#: The policy an unlayered model was not trained with, for the robustness claim.
OTHER = Execution("async", "random", 8)

#: The columns of a row of ``results.json``: one (data set, recipe, seed, execution); the
#: measures on the test split, ``val_*`` on the validation split.
ROW_KEYS = (
    "dataset", "training", "seed", "execution", "policy", "group_size", "label",
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
#: The training recipes: layer-synchronous BPTT; unlayered backprop under each policy; the
#: candidate improvements, one option each (surrogate gradients through silent neurons, a mix
#: of policies and group sizes); and the best unlayered recipe, chosen among them on the
#: validation accuracy of the N-MNIST subset (docs/results.md, "choosing the recipe").
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
    "unlayered-best": {
        "training": "unlayered",
        "scheduler": "momentum",
        "silent_gradients": True,
        **_MIX,
    },
}
BEST = "unlayered-best"
#: The recipes of the study's grid (``reproduce``'s default; the others on request).
GRID_RECIPES = ("layered", "unlayered-random", "unlayered-momentum", BEST)


@dataclasses.dataclass(frozen=True)
class Study:
    """One data set's part of the grid.

    ``folders``: candidate folders under the data root, the first present is used (an empty
    tuple: a built-in data set, always found). ``settings``: the TrainConfig settings shared by
    every recipe (a recipe's own settings override them).
    """

    dataset: str
    folders: tuple[str, ...]
    settings: dict
    note: str = ""

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
    "lr": 3e-3,
    "batch_size": 32,
    "input_dropout": 0.0,
    "refractory_dropout": 0.0,
    "group_size": 8,
}
_DIGITS = {**DEMO, "hidden": list(DEMO["hidden"])}  # the demo's settings

#: The grid's data sets per budget. ``quick`` took 40 minutes on a 2-core CPU (docs/results.md): the
#: N-MNIST subset at the study's settings (50 epochs), the others reduced; ``full`` is for a
#: GPU or a cluster.
BUDGETS: dict[str, tuple[Study, ...]] = {
    "quick": (
        Study("nmnist", ("nmnist", "nmnist-subset"), _NMNIST),
        Study(
            "mnist-saccades",
            ("mnist",),
            {
                **_NMNIST,
                "dataset": "mnist-saccades",
                "epochs": 10,
                "limit_train": 600,
                "limit_test": 500,
            },
            "600 training (of which 60 for validation) and 500 test images of the "
            "8,000/2,000 split, 10 epochs",
        ),
        Study("digits", (), {**_DIGITS, "epochs": 8}, "8 epochs"),
        Study(
            "fsdd",
            ("fsdd",),
            {**_FSDD, "hidden": [128], "epochs": 5, "limit_train": 300, "limit_test": 100},
            "300 training (of which 30 for validation) and 100 test recordings, 128 hidden "
            "neurons, 5 epochs",
        ),
    ),
    "full": (
        Study("nmnist", ("nmnist", "nmnist-subset"), _NMNIST),
        Study("mnist-saccades", ("mnist",), {**_NMNIST, "dataset": "mnist-saccades"}),
        Study("digits", (), {**_DIGITS, "epochs": 50}),
        Study("fsdd", ("fsdd",), {**_FSDD, "hidden": [256], "epochs": 60}),
    ),
}

#: The study's three claims and this project's targets for them (docs/results.md).
CLAIMS = (
    ("accuracy", "accuracy gap (points)", "up to +10", ">= 0"),
    ("spikes", "fewer spikes", "up to 50%", ">= 30%"),
    ("latency", "decision speed-up", "up to 2x", ">= 1.5x"),
    ("robustness", "loss under the other policy (points)", "-", "<= 3"),
)


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


def _run_task(task: dict) -> dict:
    """Train (or resume, or skip) one run and evaluate it under every execution; returns the
    evaluation record (also written to ``task["evaluation"]``). Runs in a worker process."""
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
    best = json.loads(run.checkpoint_json("best").read_text())
    stamp = {"epoch": best.get("epoch"), "best_val_accuracy": best.get("best_val_accuracy")}
    labels = [h.label for h in EXECUTIONS]
    path = Path(task["evaluation"])
    if path.is_file():
        old = json.loads(path.read_text())
        same = [r["label"] for r in old["rows"]] == labels and all(
            set(r) == set(ROW_KEYS) and r["cost_profile"] == profile.name for r in old["rows"]
        )
        if old.get("checkpoint") == stamp and same:
            return {**old, "trained_s": trained, "evaluated_s": 0.0}
    start = time.perf_counter()
    net, run_cfg, _ = load_run(run_dir, "best")
    net.to(cfg.device)
    _, val, test, _ = _splits(cfg)  # the task's own data (its dt may be left to the data set)
    rows, curves, latencies, layers = [], {}, {}, {}
    for how in EXECUTIONS:
        result = evaluate(
            net, test, run_cfg, how, seed=0, stop_on_first_output=False, cost_profile=profile
        )
        on_val = evaluate(net, val, run_cfg, how, seed=0, stop_on_first_output=False)
        s = result["summary"]
        rows.append(
            {
                "dataset": task["dataset"],
                "training": task["recipe"],
                "seed": task["seed"],
                "execution": how.execution,
                "policy": how.scheduler if how.execution == "async" else None,
                "group_size": how.group_size if how.execution == "async" else None,
                "label": how.label,
                "accuracy": s["accuracy"],
                "val_accuracy": on_val["summary"]["accuracy"],
                "val_spikes_per_sample": on_val["summary"]["spikes_per_sample"],
                "val_latency_steps": on_val["summary"].get("latency_steps_median", math.nan),
                "spikes_per_sample": s["spikes_per_sample"],
                "spike_density": s["spike_density"],
                "synops_per_sample": s["synops_per_sample"],
                "forward_steps_per_timestep": s["forward_steps_per_timestep"],
                "latency_steps": s.get("latency_steps_median", math.nan),
                "latency_spikes": s.get("latency_spikes_median", math.nan),
                "settled_fraction": s.get("settled_fraction", math.nan),
                "test_samples": len(test),
                "cost_profile": result["cost_profile"],
                "energy_nj": s["energy_nj"],
                "time_us": s["time_us"],
                "latency_time_us": s.get("latency_time_us_median", math.nan),
            }
        )
        curves[how.label] = result["budget"]
        if "latency_steps" in result["per_sample"]:
            latencies[how.label] = result["per_sample"]["latency_steps"].tolist()
        layers[how.label] = result["spikes_per_population"]
    record = {
        "dataset": task["dataset"],
        "recipe": task["recipe"],
        "seed": task["seed"],
        "checkpoint": stamp,
        "rows": rows,
        "budget": curves,
        "latency_steps": latencies,
        "spikes_per_population": layers,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    return {**record, "trained_s": trained, "evaluated_s": time.perf_counter() - start}


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
    seeds: Sequence[int] = SEEDS,
    recipes: Sequence[str] = GRID_RECIPES,
    cost_profile: str | Path | Profile = "loihi",
    say: Callable[[str], None] = print,
    executor: str = "process",
    address: str | None = None,
    device: str = "cpu",
) -> dict:
    """Run (or go on with) the grid into ``out``; returns ``{"rows", "summary", "claims"}``.

    ``jobs``: trainings run in parallel, each in its own process with one thread.
    ``executor``: ``"process"`` (a pool of ``jobs`` processes, or this one for ``jobs`` = 1)
    or ``"ray"``: each task one Ray Tune trial of one CPU, tried once more where it fails
    (:func:`asyncsnn.sweep.run_tasks`), on the Ray cluster at ``address`` or on an embedded Ray
    of ``jobs`` CPUs. ``grid``
    replaces the budget's data sets (tests and custom grids: ``(Study, data folder)`` pairs).
    ``recipes``: names of :data:`RECIPES` (``layered`` is always trained: the claims compare
    with it). The report covers every evaluation in ``out`` of the grid's data sets, those of
    earlier calls with other recipes included. ``cost_profile``: the hardware profile of the
    energy and time columns (:func:`asyncsnn.cost.get_profile`); an evaluation recorded under
    another profile is evaluated again (the training is kept). ``device``: where the trainings
    and evaluations run (``cpu``, ``cuda``, ``cuda:N``); a run trained on another device is
    the same run (a resume may change the device).
    """
    out = Path(out)
    profile = get_profile(cost_profile)
    if executor not in ("process", "ray"):
        raise ValueError(f"the executor is 'process' or 'ray', got {executor!r}")
    if address is not None and executor != "ray":
        raise ValueError("an address names a Ray cluster: it needs the Ray executor")
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
        for seed in seeds:
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
    rows = [r for rec in records for r in rec["rows"]]
    summary = summarise(rows)
    found = claims(rows)
    on_val = claims(rows, "val")
    write_json(out / "results.json", rows)
    plots = _plots(records, out / "plots")
    header = _header(command, budget, elapsed, grid, missing, jobs, records)
    report = results_markdown(summary, found, grid, header, on_val, plots)
    atomic_write_text(out / "results.md", report)
    say(f"written: {out}/results.md, results.json, plots/ ({elapsed:.0f} s)")
    return {"rows": rows, "summary": summary, "claims": found, "val_claims": on_val}


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


def claims(rows: Sequence[dict], split: str = "test") -> list[dict]:
    """The gap to each of the study's claims, per data set and unlayered recipe, paired by
    seed against the layered-trained model of the same seed, on the test split or, with
    ``split="val"``, on the validation split (where a recipe is chosen):

    - ``accuracy``: the recipe under :data:`REFERENCE` minus the layered model run layered
      (points);
    - ``spikes``: 1 - spikes of the recipe / spikes of the layered model, both under
      :data:`REFERENCE`;
    - ``latency``: the layered model's median decision latency (forward steps) / the recipe's,
      both under :data:`REFERENCE`;
    - ``robustness``: the recipe under :data:`REFERENCE` minus under :data:`OTHER` (points).
    """
    if split not in ("test", "val"):
        raise ValueError(f"split is 'test' or 'val', got {split!r}")
    pre = "val_" if split == "val" else ""
    acc, spikes, latency = f"{pre}accuracy", f"{pre}spikes_per_sample", f"{pre}latency_steps"
    at = {(r["dataset"], r["training"], r["seed"], r["label"]): r for r in rows}
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        seeds = sorted({r["seed"] for r in rows if r["dataset"] == dataset})
        for recipe in [r for r in RECIPES if r != "layered"]:
            per: dict[str, list[float]] = {c[0]: [] for c in CLAIMS}
            for s in seeds:
                ours = at.get((dataset, recipe, s, REFERENCE.label))
                base = at.get((dataset, "layered", s, REFERENCE.label))
                base_layered = at.get((dataset, "layered", s, "layered"))
                other = at.get((dataset, recipe, s, OTHER.label))
                if ours is None or base is None or base_layered is None or other is None:
                    continue
                per["accuracy"].append(100 * (ours[acc] - base_layered[acc]))
                per["spikes"].append(100 * (1 - ours[spikes] / base[spikes]))
                per["latency"].append(_num(base[latency]) / _num(ours[latency]))
                per["robustness"].append(100 * (ours[acc] - other[acc]))
            if not per["accuracy"]:
                continue
            line = {"dataset": dataset, "training": recipe}
            for key, values in per.items():
                mean, sd, n = _mean_sd(values)
                line[key], line[f"{key}_sd"], line[f"{key}_n"] = mean, sd, n
            line["holds"] = {
                "accuracy": line["accuracy"] >= 0,
                "spikes": line["spikes"] >= 30,
                "latency": line["latency"] >= 1.5,
                "robustness": line["robustness"] <= 3,
            }
            out.append(line)
    return out


def _num(value) -> float:
    """A measure read back from JSON, where an undefined one (NaN) is ``null``."""
    return math.nan if value is None else float(value)


def choose(found: Sequence[dict], dataset: str) -> str | None:
    """The recipe of ``dataset`` that meets the most targets in ``found`` (:func:`claims` on
    the validation split), ties broken by the smaller accuracy gap; ``None`` without any."""
    mine = [c for c in found if c["dataset"] == dataset and math.isfinite(c["accuracy"])]
    if not mine:
        return None
    return max(mine, key=lambda c: (sum(c["holds"].values()), c["accuracy"]))["training"]


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


def _claims_table(mine: Sequence[dict], mark: bool) -> list[str]:
    lines = [
        "| recipe | accuracy gap to layered-run-layered (points) | fewer spikes | "
        "decision speed-up | loss under async-random F=8 (points) | targets met |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in mine:
        cells = [
            _fmt(c["accuracy"], c["accuracy_sd"], "{:+.1f}"),
            _fmt(c["spikes"], c["spikes_sd"], "{:.0f} %"),
            _fmt(c["latency"], c["latency_sd"], "{:.2f}x"),
            _fmt(c["robustness"], c["robustness_sd"], "{:+.1f}"),
        ]
        if mark and c["training"] == BEST:
            cells = [
                f"{cell} {'(holds)' if ok else '(missed)'}"
                for cell, ok in zip(cells, c["holds"].values(), strict=True)
            ]
        met = f"{sum(c['holds'].values())} of {len(c['holds'])}"
        lines.append(f"| {c['training']} | " + " | ".join(cells) + f" | {met} |")
    return lines


def results_markdown(summary, found, grid, header: str, on_val=(), plots=()) -> str:
    """``results.md``: the header, then per data set the claims (test split), the same on the
    validation split (where the recipe is chosen), the full table and the ``plots`` (names
    of the files written in ``plots/``)."""
    lines = [header]
    for study, _ in grid:
        ds = study.dataset
        lines += [f"## {ds}", ""]
        if study.note:
            lines += [f"Reduced: {study.note}.", ""]
        mine = [c for c in found if c["dataset"] == ds]
        if mine:
            lines += [
                f"The study's claims on the test split, each unlayered recipe against the "
                f"layered-trained model of the same seed (mean ± sd over seeds; under "
                f"{REFERENCE.label} unless said):",
                "",
                *_claims_table(mine, mark=True),
                "",
                f"Targets for {BEST}: accuracy gap >= 0, fewer spikes >= 30 %, speed-up >= "
                "1.5x, loss under the other policy <= 3 points. The study: up to +10 points, "
                "up to 50 % fewer spikes, up to 2x sooner.",
                "",
            ]
        val = [c for c in on_val if c["dataset"] == ds]
        if val:
            lines += [
                "The same on the validation split, where a recipe is chosen (the most targets "
                f"met, then the smaller accuracy gap): **{choose(on_val, ds)}**.",
                "",
                *_claims_table(val, mark=False),
                "",
            ]
        lines += [
            "| training | execution | " + " | ".join(t for _, t, _ in _TABLE) + " |",
            "|---|---|" + "---:|" * len(_TABLE),
        ]
        for s in summary:
            if s["dataset"] != ds:
                continue
            cells = [_fmt(s[k], s[f"{k}_sd"], f) for k, _, f in _TABLE]
            lines.append(f"| {s['training']} | {s['execution']} | " + " | ".join(cells) + " |")
        profiles = sorted({s["cost_profile"] for s in summary if s["dataset"] == ds})
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
