"""``asyncsnn reproduce``: the grid, its resumption, its statistics and the claims."""

from __future__ import annotations

import json
import math
import os
import statistics

import pytest
from click.testing import CliRunner

from asyncsnn.cli import main
from asyncsnn.reproduce import (
    BUDGETS,
    EXECUTIONS,
    GRID_RECIPES,
    OTHER,
    RECIPES,
    REFERENCE,
    Study,
    _execute,
    choose,
    claims,
    reproduce,
    studies,
    summarise,
)


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


def test_claims_pair_each_recipe_with_the_layered_model_of_the_same_seed():
    rows = []
    for seed, (acc_l, acc_u, acc_other, sp_l, sp_u, lat_l, lat_u) in enumerate(
        [(0.80, 0.85, 0.83, 1000, 600, 60, 30), (0.90, 0.88, 0.80, 2000, 1500, 40, 40)]
    ):
        rows += [
            _row("layered", seed, "layered", acc_l, 900, math.nan),
            _row("layered", seed, REFERENCE.label, 0.5, sp_l, lat_l),
            _row("layered", seed, OTHER.label, 0.4, sp_l, lat_l),
            _row("unlayered-best", seed, REFERENCE.label, acc_u, sp_u, lat_u),
            _row("unlayered-best", seed, OTHER.label, acc_other, sp_u, lat_u),
        ]
    (c,) = claims(rows)
    assert c["training"] == "unlayered-best" and c["dataset"] == "d"
    # accuracy: 100 * (0.85 - 0.80) = 5 and 100 * (0.88 - 0.90) = -2 points
    assert c["accuracy"] == pytest.approx(1.5)
    assert c["accuracy_sd"] == pytest.approx(statistics.stdev([5.0, -2.0]))
    # spikes: 1 - 600/1000 = 40 %, 1 - 1500/2000 = 25 %
    assert c["spikes"] == pytest.approx(32.5)
    # latency: 60/30 = 2, 40/40 = 1
    assert c["latency"] == pytest.approx(1.5)
    # robustness: 2 and 8 points lost under the other policy
    assert c["robustness"] == pytest.approx(5.0)
    assert c["holds"] == {"accuracy": True, "spikes": True, "latency": True, "robustness": False}


def test_the_recipe_is_chosen_on_validation_by_targets_met_then_accuracy():
    def claim(name, holds, accuracy, dataset="d"):
        keys = ("accuracy", "spikes", "latency", "robustness")
        return {"dataset": dataset, "training": name, "accuracy": accuracy,
                "holds": dict(zip(keys, holds, strict=True))}  # fmt: skip

    found = [
        claim("a", (True, False, False, False), 1.0),
        claim("b", (False, True, True, False), -4.0),
        claim("c", (False, True, False, True), -2.0),
        claim("z", (True, True, True, True), 0.0, dataset="other"),
    ]
    assert choose(found, "d") == "c"  # b and c meet two each; c loses less accuracy
    assert choose(found, "other") == "z"
    assert choose(found, "none") is None


def test_claims_on_the_validation_split_read_the_val_columns():
    rows = []
    for training, label, acc, spikes, lat in [
        ("layered", "layered", 0.9, 500, math.nan),
        ("layered", REFERENCE.label, 0.8, 1000, 40),
        ("layered", OTHER.label, 0.7, 1000, 40),
        ("unlayered-best", REFERENCE.label, 0.85, 700, 20),
        ("unlayered-best", OTHER.label, 0.84, 700, 20),
    ]:
        row = _row(training, 0, label, 0.0, 1.0, 1.0)  # test columns: not read
        row.update(val_accuracy=acc, val_spikes_per_sample=spikes, val_latency_steps=lat)
        rows.append(row)
    (c,) = claims(rows, "val")
    assert c["accuracy"] == pytest.approx(-5.0)
    assert c["spikes"] == pytest.approx(30.0)
    assert c["latency"] == pytest.approx(2.0)
    assert c["robustness"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="split is"):
        claims(rows, "train")


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
    assert GRID_RECIPES == ("layered", "unlayered-random", "unlayered-momentum", "unlayered-best")
    assert set(GRID_RECIPES) < set(RECIPES)
    labels = [e.label for e in EXECUTIONS]
    assert labels[0] == "layered"
    assert {(e.scheduler, e.group_size) for e in EXECUTIONS[1:]} == {
        (p, f) for p in ("random", "momentum") for f in (1, 8, 64)
    }
    quick = {s.dataset: s for s in BUDGETS["quick"]}
    assert set(quick) == {"nmnist", "mnist-saccades", "digits", "fsdd"}
    nm = quick["nmnist"].settings
    assert (nm["epochs"], nm["batch_size"], nm["hidden"]) == (50, 32, [128, 128])


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
)


def test_a_tiny_grid_runs_resumes_and_reports(tmp_path):
    out = tmp_path / "rep"
    lines = []
    first = reproduce(out, data_root=tmp_path, grid=[(TINY, None)], seeds=(0,), say=lines.append)
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == len(GRID_RECIPES) * len(EXECUTIONS) == len(first["rows"])
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
    assert "## digits" in md and "| unlayered-best |" in md and "commit:" in md
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
    with pytest.raises(ValueError, match="unknown recipes"):
        reproduce(out, data_root=tmp_path, grid=[(TINY, None)], recipes=["fast"])
    # the same folder with other settings is refused, not silently reused
    other = Study("digits", (), {**TINY.settings, "hidden": [13]})
    with pytest.raises(ValueError, match="other settings than this grid's: hidden"):
        reproduce(out, data_root=tmp_path, grid=[(other, None)], seeds=(0,), say=lines.append)


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
