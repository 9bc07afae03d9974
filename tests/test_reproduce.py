"""``asyncsnn reproduce``: the grid, its resumption, its statistics and the claims."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics

import pytest
from click.testing import CliRunner

from asyncsnn.claims import REFERENCE, SELECTION_RULE, choose, claims, robustness
from asyncsnn.cli import main
from asyncsnn.evaluation import Execution
from asyncsnn.reproduce import (
    BUDGET_RECIPES,
    BUDGETS,
    EXECUTIONS,
    GRID_RECIPES,
    RECIPES,
    Study,
    _execute,
    reproduce,
    results_markdown,
    studies,
    summarise,
)
from asyncsnn.training import unfinished

RANDOM8, FIFO8 = Execution("async", "random", 8).label, Execution("async", "fifo", 8).label
MOMENTUM1 = Execution("async", "momentum", 1).label
MOMENTUM64 = Execution("async", "momentum", 64).label
SETTINGS = {
    ("d", "layered"): {"training": "layered", "scheduler": "momentum", "group_size": 8},
    ("d", "unlayered-momentum"): {"training": "unlayered", "scheduler": "momentum",
                                  "group_size": 8},
}  # fmt: skip
T_975_1 = 12.706204736174698  # Student's t, 97.5 %, one degree of freedom


def _row(training, seed, label, accuracy, spikes, latency, dataset="d"):
    return {
        "dataset": dataset,
        "training": training,
        "seed": seed,
        "label": label,
        "accuracy": accuracy,
        "spikes_per_sample": spikes,
        "spike_density": spikes / 1000,
        "synops_per_sample": 10 * spikes,
        "latency_steps": latency,
        "latency_spikes": 2 * latency,
    }


def _two_seeds():
    rows = []
    for seed, (acc_l, acc_u, acc_rand, acc_fifo, sp_l, sp_u, lat_l, lat_u) in enumerate(
        [(0.80, 0.85, 0.83, 0.84, 1000, 600, 60, 30), (0.90, 0.88, 0.80, 0.86, 2000, 1500, 40, 40)]
    ):
        rows += [
            _row("layered", seed, "layered", acc_l, 900, math.nan),
            _row("layered", seed, REFERENCE.label, 0.5, sp_l, lat_l),
            _row("layered", seed, RANDOM8, 0.4, sp_l, lat_l),
            _row("layered", seed, FIFO8, 0.45, sp_l, lat_l),
            _row("unlayered-momentum", seed, REFERENCE.label, acc_u, sp_u, lat_u),
            _row("unlayered-momentum", seed, RANDOM8, acc_rand, sp_u, lat_u),
            _row("unlayered-momentum", seed, FIFO8, acc_fifo, sp_u, lat_u),
        ]
    return rows


def test_claims_pair_each_recipe_with_the_layered_model_of_the_same_seed():
    (c,) = claims(_two_seeds(), SETTINGS)
    assert c["training"] == "unlayered-momentum" and c["dataset"] == "d"
    # accuracy: 100 * (0.85 - 0.80) = 5 and 100 * (0.88 - 0.90) = -2 points
    assert c["per_seed"]["accuracy"] == pytest.approx([5.0, -2.0])
    acc = c["accuracy"]
    assert acc.mean == pytest.approx(1.5) and acc.n == 2
    half = T_975_1 * statistics.stdev([5.0, -2.0]) / math.sqrt(2)
    assert (acc.lo, acc.hi) == pytest.approx((1.5 - half, 1.5 + half))
    # spikes: 1 - 600/1000 = 40 %, 1 - 1500/2000 = 25 %; latency: 60/30 = 2, 40/40 = 1
    assert c["spikes"].mean == pytest.approx(32.5)
    assert c["latency"].mean == pytest.approx(math.sqrt(2))  # geometric mean of 2 and 1
    # robustness: the worst of random and fifo F=8 per seed: max(2, 1) = 2, max(8, 2) = 8
    assert c["per_seed"]["robustness"] == pytest.approx([2.0, 8.0])
    # every interval of two seeds this far apart contains the value of no effect
    assert c["verdicts"] == {
        "accuracy": "no difference found",
        "spikes": "no difference found",
        "latency": "no difference found",
        "robustness": "no difference found",
    }


def test_verdicts_follow_the_intervals():
    rows = _two_seeds()
    for r in rows:  # the same gap on both seeds: a narrow interval
        if r["training"] == "unlayered-momentum" and r["label"] == REFERENCE.label:
            r["accuracy"] = {0: 0.83, 1: 0.93}[r["seed"]]  # +3 points on both
    (c,) = claims(rows, SETTINGS)
    assert c["accuracy"].mean == pytest.approx(3.0) and c["accuracy"].hi - c["accuracy"].lo < 1e-6
    assert c["verdicts"]["accuracy"] == "holds"


def test_mcnemar_pools_the_test_samples_of_every_seed():
    correct = {
        ("d", "unlayered-momentum", 0, REFERENCE.label): "1101",
        ("d", "layered", 0, "layered"): "1000",
        ("d", "unlayered-momentum", 1, REFERENCE.label): "0011",
        ("d", "layered", 1, "layered"): "0111",
    }
    (c,) = claims(_two_seeds(), SETTINGS, correct=correct)
    m = c["mcnemar"]
    assert (m.only_a, m.only_b, m.n) == (2, 1, 8)
    assert m.p == pytest.approx(1.0)  # 3 discordant pairs, 2 against 1


def test_robustness_is_measured_outside_each_recipes_training_mix():
    """A momentum-trained recipe loses under random and fifo (F = 8) and under momentum with
    the F it did not train with; a random+momentum mix over every F only under fifo; the
    layered model under every policy, against layered execution."""
    labels = [h.label for h in EXECUTIONS]
    rows = [
        _row(t, 0, lb, 0.9 - 0.01 * i, 100, 10)
        for t in ("layered", "unlayered-momentum", "unlayered-mix")
        for i, lb in enumerate(labels)
    ]
    settings = {
        **SETTINGS,
        ("d", "unlayered-mix"): {
            "training": "unlayered",
            "group_size": 8,
            **RECIPES["unlayered-mix"],
        },
    }
    by = {r["training"]: r for r in robustness(rows, settings)}
    assert by["unlayered-mix"]["own"] == REFERENCE.label
    assert set(by["unlayered-mix"]["losses"]) == {FIFO8}
    assert set(by["unlayered-momentum"]["losses"]) == {RANDOM8, FIFO8, MOMENTUM1, MOMENTUM64}
    assert set(by["layered"]["losses"]) == {RANDOM8, FIFO8, REFERENCE.label}
    assert by["layered"]["own"] == "layered"
    # fifo F=8 is the last execution: 0.9 - 0.01 * 7 against momentum F=8 (0.9 - 0.01 * 5)
    assert by["unlayered-mix"]["losses"][FIFO8].mean == pytest.approx(2.0)
    assert by["unlayered-mix"]["worst"] == pytest.approx([2.0])


def test_the_recipe_is_chosen_on_validation_accuracy_first():
    """The rule ranks validation accuracy first: a recipe meeting more of the other targets
    wins only within the tolerance of the most accurate."""
    rows, settings = [], dict(SETTINGS)
    for name, acc in (("a", 0.93), ("b", 0.904), ("c", 0.927)):
        settings[("d", name)] = {"training": "unlayered", "scheduler": "momentum"}
        for seed in (0, 1):
            r = _row(name, seed, REFERENCE.label, 0.0, 600 if name != "a" else 1000, 20)
            r.update(val_accuracy=acc, val_spikes_per_sample=r["spikes_per_sample"],
                     val_latency_steps=20 if name != "a" else 40)  # fmt: skip
            rows.append(r)
    for seed in (0, 1):
        for label, acc in (("layered", 0.95), (REFERENCE.label, 0.9)):
            r = _row("layered", seed, label, 0.0, 1000, 40)
            r.update(val_accuracy=acc, val_spikes_per_sample=1000, val_latency_steps=40)
            rows.append(r)
    on_val = claims(rows, settings, "val")
    pick = choose(rows, on_val, "d")
    assert pick["rule"] == SELECTION_RULE
    got = {c["training"]: c for c in pick["candidates"]}
    assert got["a"]["other_targets_met"] == 1  # robustness only (no outside policy measured)
    assert got["b"]["other_targets_met"] == got["c"]["other_targets_met"] == 3
    # b meets every target but is 2.6 points below a; c is within 0.5 points of a and meets more
    assert pick["chosen"] == "c"
    del settings[("d", "c")]
    rows = [r for r in rows if r["training"] != "c"]
    assert choose(rows, claims(rows, settings, "val"), "d")["chosen"] == "a"
    assert choose(rows, on_val, "none") is None


def test_summarise_gives_mean_and_sample_spread_over_seeds_ignoring_undefined_latencies():
    rows = [
        _row("layered", 0, "layered", 0.5, 100, 10),
        _row("layered", 1, "layered", 0.7, 300, math.nan),
        _row("layered", 2, "layered", 0.9, 200, 20),
    ]
    (s,) = summarise(rows)
    assert s["seeds"] == 3
    assert s["accuracy"] == pytest.approx(0.7)
    assert s["accuracy_sd"] == pytest.approx(0.2)
    assert s["spikes_per_sample"] == pytest.approx(200)
    assert s["latency_steps"] == pytest.approx(15)  # the seed without a latency left out
    assert s["latency_steps_sd"] == pytest.approx(statistics.stdev([10, 20]))


def test_the_budgets_cover_the_study_grid():
    assert GRID_RECIPES == BUDGET_RECIPES["quick"]
    for recipes in BUDGET_RECIPES.values():
        assert recipes[0] == "layered" and set(recipes) <= set(RECIPES)
        assert sum(RECIPES[r]["training"] == "unlayered" for r in recipes) >= 2  # candidates
    labels = [e.label for e in EXECUTIONS]
    assert labels[0] == "layered"
    assert {(e.scheduler, e.group_size) for e in EXECUTIONS[1:]} == {
        (p, f) for p in ("random", "momentum") for f in (1, 8, 64)
    } | {("fifo", 8)}
    quick = {s.dataset: s for s in BUDGETS["quick"]}
    assert set(quick) == {"nmnist", "mnist-saccades", "digits", "fsdd"}
    assert all(s.smoke for s in quick.values())  # the quick budget decides nothing
    standard = {s.dataset: s for s in BUDGETS["standard"]}
    assert not any(s.smoke for s in standard.values())
    mnist = standard["mnist-saccades"].settings
    assert "limit_train" not in mnist and "limit_test" not in mnist  # the full split
    assert mnist["epochs"] == 15 and mnist["refractory_dropout"] == 0.8  # the study's preset
    nm = standard["nmnist"]
    assert nm.seeds == (0, 1, 2, 3, 4)
    assert (nm.settings["epochs"], nm.settings["batch_size"], nm.settings["hidden"]) == (
        50,
        32,
        [128, 128],
    )
    assert "limit_train" not in standard["fsdd"].settings


def test_studies_report_what_is_missing(tmp_path):
    (tmp_path / "mnist").mkdir()
    found, missing = studies("quick", tmp_path)
    assert [s.dataset for s, _ in found] == ["mnist-saccades", "digits"]
    assert found[0][1] == tmp_path / "mnist"
    assert any(m.startswith("nmnist (looked for") and "nmnist-subset" in m for m in missing)
    with pytest.raises(ValueError, match="budget is one of"):
        studies("huge", tmp_path)
    with pytest.raises(ValueError, match="unknown data sets"):
        studies("quick", tmp_path, ["cifar"])


TINY = Study(
    "digits",
    (),
    {
        "dataset": "digits",
        "hidden": [12],
        "epochs": 1,
        "batch_size": 32,
        "limit_train": 120,
        "limit_test": 40,
        "lr": 3e-3,
        "tau_m": 20e-3,
        "threshold": 0.5,
        "max_queued_per_neuron": 16,
    },
    "a tiny grid",
    smoke=True,
)


def test_a_tiny_grid_runs_resumes_and_reports(tmp_path):
    out = tmp_path / "rep"
    lines = []
    first = reproduce(out, data_root=tmp_path, grid=[(TINY, None)], seeds=(0,), say=lines.append)
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert len(rows) == len(GRID_RECIPES) * len(EXECUTIONS) == len(first["rows"])
    assert {r["engine"] for r in rows} == {"layered", "numba"}  # the kernel evaluates
    choice = results["choices"]["digits"]
    candidates = {c["training"] for c in choice["candidates"]}
    assert candidates == set(GRID_RECIPES) - {"layered"} and choice["chosen"] in candidates
    assert choice["rule"] == SELECTION_RULE
    sel = results["selection"]
    assert len(sel) == len(GRID_RECIPES) and all(m["last_epoch"] == 1 for m in sel)
    ((c_first, *_),) = [[c for c in results["claims"] if c["training"] == choice["chosen"]]]
    assert set(c_first["accuracy"]) == {"mean", "lo", "hi", "n"} and "mcnemar" in c_first
    keys = {"dataset", "training", "seed", "execution", "policy", "group_size", "accuracy",
            "spikes_per_sample", "latency_steps", "synops_per_sample"}  # fmt: skip
    assert all(keys <= set(r) for r in rows)
    assert {r["training"] for r in rows} == set(GRID_RECIPES)
    assert all(0 <= r["val_accuracy"] <= 1 for r in rows)
    layered = [r for r in rows if r["execution"] == "layered"]
    assert all(r["policy"] is None and r["group_size"] is None for r in layered)
    assert all(0 <= r["accuracy"] <= 1 and r["test_samples"] == 40 for r in rows)
    assert sum("trained" in ln and "trained before" not in ln for ln in lines) == len(GRID_RECIPES)
    md = (out / "results.md").read_text()
    assert "## digits" in md and f"**{choice['chosen']}**" in md and "commit:" in md
    assert "Smoke test" in md and "(holds)" not in md and "no difference found" not in md
    real = results_markdown(results, [(dataclasses.replace(TINY, smoke=False), None)], "# h")
    assert "Smoke test" not in real and "McNemar" in real and " | one seed |" in real
    for name in ("accuracy_vs_budget", "spikes_per_layer", "latency"):
        assert (out / "plots" / f"digits_{name}.png").stat().st_size > 1000
    # a second call trains and evaluates nothing, and gives the same rows
    evaluation = out / "evaluations" / "digits" / "layered-seed0.json"
    stamp = evaluation.stat().st_mtime_ns
    lines.clear()
    again = reproduce(out, data_root=tmp_path, grid=[(TINY, None)], seeds=(0,), say=lines.append)
    assert sum("trained before" in ln for ln in lines) == len(GRID_RECIPES)
    assert evaluation.stat().st_mtime_ns == stamp
    assert again["rows"] == first["rows"]
    # a lost evaluation is made again, equal
    evaluation.unlink()
    third = reproduce(out, data_root=tmp_path, grid=[(TINY, None)], seeds=(0,), say=lines.append)
    assert third["rows"] == first["rows"]
    # another cost profile evaluates again, without training again: the same counts, other costs
    lines.clear()
    priced = reproduce(
        out, data_root=tmp_path, grid=[(TINY, None)], seeds=(0,), cost_profile="spinnaker2",
        say=lines.append,
    )  # fmt: skip
    assert sum("trained before" in ln for ln in lines) == len(GRID_RECIPES)
    assert evaluation.stat().st_mtime_ns != stamp
    costs = {"cost_profile", "energy_nj", "time_us", "latency_time_us"}
    for new, old in zip(priced["rows"], first["rows"], strict=True):
        assert new["cost_profile"] == "spinnaker2" and old["cost_profile"] == "loihi"
        assert {k: v for k, v in new.items() if k not in costs} == {
            k: v for k, v in old.items() if k not in costs
        }
        assert new["energy_nj"] > old["energy_nj"]  # 450 pJ per synop against Loihi's 23.6
        assert new["time_us"] is None  # SpiNNaker 2 publishes no timing (NaN, null in JSON)
    assert "spinnaker2" in (out / "results.md").read_text()
    third = reproduce(out, data_root=tmp_path, grid=[(TINY, None)], seeds=(0,), say=lines.append)
    assert third["rows"] == first["rows"]  # back to the default profile
    # another recipe joins the report beside those of the earlier calls
    lines.clear()
    more = reproduce(
        out, data_root=tmp_path, grid=[(TINY, None)], seeds=(0,), recipes=["unlayered-silent"],
        say=lines.append,
    )  # fmt: skip
    assert sum("trained before" in ln for ln in lines) == 1  # layered, for the claims
    assert len(more["rows"]) == (len(GRID_RECIPES) + 1) * len(EXECUTIONS)
    assert [r for r in more["rows"] if r["training"] != "unlayered-silent"] == first["rows"]
    assert {c["training"] for c in more["claims"]} == set(GRID_RECIPES[1:]) | {"unlayered-silent"}
    assert "unlayered-silent" in {c["training"] for c in more["choices"]["digits"]["candidates"]}
    with pytest.raises(ValueError, match="unknown recipes"):
        reproduce(out, data_root=tmp_path, grid=[(TINY, None)], recipes=["fast"])
    # the same folder with other settings is refused, not silently reused
    other = Study("digits", (), {**TINY.settings, "hidden": [13]})
    with pytest.raises(ValueError, match="other settings than this grid's: hidden"):
        reproduce(out, data_root=tmp_path, grid=[(other, None)], seeds=(0,), say=lines.append)


def test_a_kill_in_the_first_epoch_after_best_is_resumed_not_evaluated(tmp_path, monkeypatch):
    """A kill after the first ``best`` is written and before the first ``last``: the next call
    finishes the training (a training is finished only when its record says so) and evaluates
    the finished model, not the one-epoch one."""
    from asyncsnn.rundir import RunDir
    from asyncsnn.training import Trainer

    study = dataclasses.replace(TINY, settings={**TINY.settings, "epochs": 2})
    save = Trainer._save

    def killed(self, name, *args, **kw):
        if name == "last":
            raise RuntimeError("killed")
        return save(self, name, *args, **kw)

    monkeypatch.setattr(Trainer, "_save", killed)
    out, kw = tmp_path / "rep", {"grid": [(study, None)], "seeds": (0,), "recipes": ["layered"]}
    with pytest.raises(RuntimeError, match="killed"):
        reproduce(out, data_root=tmp_path, say=lambda _: None, **kw)
    run_dir = out / "runs" / "digits" / "layered" / "seed0"
    run = RunDir(run_dir)
    assert run.checkpoint("best").is_file() and not run.checkpoint("last").is_file()
    assert "first epoch" in unfinished(run_dir)
    monkeypatch.setattr(Trainer, "_save", save)
    lines = []
    done = reproduce(out, data_root=tmp_path, say=lines.append, **kw)
    assert any("trained" in ln and "trained before" not in ln for ln in lines)
    assert unfinished(run_dir) is None
    assert json.loads(run.checkpoint_json("last").read_text())["epoch"] == 2
    assert [m["last_epoch"] for m in done["selection"]] == [2]


def test_parallel_jobs_return_each_result_in_the_tasks_order(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    finished = []
    tasks = [[1, 2], [3], [], [4, 5, 6]]
    assert _execute(tasks, 2, sum, lambda i, r: finished.append((i, r))) == [3, 3, 0, 15]
    assert sorted(finished) == [(0, 3), (1, 3), (2, 0), (3, 15)]
    assert os.environ["OMP_NUM_THREADS"] == "7"  # the workers' setting is not left behind
    assert _execute(tasks, 1, len) == [2, 1, 0, 3]


def test_the_command_says_what_is_missing(tmp_path):
    r = CliRunner().invoke(
        main,
        [
            "reproduce",
            "--data-root",
            str(tmp_path),
            "--datasets",
            "nmnist,fsdd",
            "--out",
            str(tmp_path / "o"),
        ],  # fmt: skip
    )
    assert r.exit_code == 1
    assert "no data set of the grid found" in r.output and "nmnist-subset" in r.output
    r = CliRunner().invoke(main, ["reproduce", "--budget", "huge"])
    assert r.exit_code == 2 and "huge" in r.output
