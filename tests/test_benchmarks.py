"""The benchmark entry point ``python -m benchmarks``: a smoke run, and its snnTorch twins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import asyncsnn

pytest.importorskip("snntorch")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the benchmarks package sits beside src/, not installed

from benchmarks import workloads  # noqa: E402

FIELDS = {
    "name",
    "engine",
    "mode",
    "batch",
    "ms_per_sample",
    "synaptic_events_per_s",
    "peak_rss_mb",
    "ratio_to_snntorch",
}


@pytest.mark.parametrize(
    ("network", "samples", "timesteps"), [("fc", 3, 30), ("conv", 3, 30), ("dvs", 1, 4)]
)
def test_snntorch_twin_matches_layered_execution(shared_data, network, samples, timesteps):
    """The snnTorch network of each workload holds the same weights: its spikes are asyncsnn's
    layered spikes, and its synaptic events are counted as asyncsnn counts them."""
    work = workloads.build(network)
    net = workloads.asyncsnn_network(work)
    x, _ = workloads.inputs(work, shared_data, samples, timesteps)
    with torch.no_grad():
        _, record = workloads.SnnTorchNet(work)(x)
        r = asyncsnn.run(net, x, dt=work.dt, execution="layered")
    for pop, spikes in zip(net.populations, record, strict=True):
        ref = torch.stack(spikes)
        assert torch.equal(r.population_spikes(pop.name), ref), pop.name
        assert ref.sum() > 0, f"{pop.name} is silent: a vacuous benchmark"
    ours = float(r.synops.double().sum())
    assert workloads.layered_synops(net, x, record) == pytest.approx(ours, rel=1e-6)


def test_quick_json_run(shared_data, tmp_path):
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--json"]
    cmd += ["--data", str(shared_data), "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)  # stdout holds the JSON object and nothing else
    rows = report["configs"]
    assert rows
    for row in rows:
        assert not FIELDS - row.keys(), row["name"]
        assert "error" not in row, row
        assert row["engine"] in ("asyncsnn-async", "asyncsnn-layered", "snntorch")
        assert row["mode"] in ("inference", "train")
        assert row["ms_per_sample"] > 0
        assert row["synaptic_events_per_s"] > 0
        assert row["peak_rss_mb"] > 0
        assert row["ratio_to_snntorch"] > 0
        if row["engine"] == "snntorch":
            assert row["ratio_to_snntorch"] == 1.0
    assert {r["engine"] for r in rows} == {"asyncsnn-async", "asyncsnn-layered", "snntorch"}
    assert {(r["mode"], r["batch"]) for r in rows if r["network"] == "fc"} == {
        ("inference", 1),
        ("inference", 32),
        ("train", 32),
    }
    assert {r["network"] for r in rows} == {"fc", "conv", "dvs"}
    assert all(t["met"] in (True, False, None) for t in report["targets"])
    assert json.loads((tmp_path / "latest.json").read_text())["configs"] == rows
    table = (tmp_path / "latest.md").read_text()
    assert "| fc | inference | 1 |" in table and "Targets" in table


def test_both_backends_are_benchmarked():
    from asyncsnn.kernels import numba_available
    from benchmarks.suite import available_backends

    assert available_backends() == (["numba", "torch"] if numba_available() else ["torch"])


def _row(name, engine, ms, extra=10.0, cpu=None):
    network, mode, batch, label = name.split("/")
    rounds = [
        {
            "ms_per_sample": v,
            "cpu_ms_per_sample": (cpu or v),
            "extra_peak_mb": extra,
            "peak_rss_mb": 300.0,
            "synops_per_sample": 1e6,
        }
        for v in ms
    ]
    for r, v in zip(rounds, ms, strict=True):
        if v is None:
            r.clear()
            r["error"] = "exit status 1: boom"
        r.update(
            name=name,
            network=network,
            mode=mode,
            batch=int(batch[1:]),
            engine=engine,
            label=label,
            policy=None,
            backend=None,
        )
    return rounds


def test_round_statistics_on_fixed_numbers():
    """Each round's ratio is taken against snnTorch's time of the same round, the median and
    spread over rounds; a failed round drops out of both; the A/B pairs are per round."""
    from benchmarks.suite import add_ratios, combine, paired, round_ratios, spread

    assert spread([3.0, None, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert spread([None]) is None
    assert round_ratios([2.0, None, 3.0], [1.0, 2.0, 0.0]) == [2.0, None, None]

    ours = combine(_row("fc/inference/b32/async", "asyncsnn-async", [1.0, 3.0, None, 2.0]))
    ref = combine(_row("fc/inference/b32/snntorch", "snntorch", [2.0, 2.0, 2.0, 8.0], extra=4))
    assert ours["ms_per_sample"] == 2.0  # median of the rounds that succeeded
    assert ours["rounds_ms_per_sample"] == [1.0, 3.0, None, 2.0]
    assert ours["synaptic_events_per_s"] == pytest.approx(1e6 / 2e-3)
    rows = [ours, ref]
    add_ratios(rows)
    # per round 0.5, 1.5, -, 0.25: the median of the ratios, not the ratio of the medians (1.0)
    assert ours["ratio_to_snntorch_rounds"] == [0.5, 1.5, None, 0.25]
    assert ours["ratio_to_snntorch"] == 0.5
    assert (ours["ratio_to_snntorch_min"], ours["ratio_to_snntorch_max"]) == (0.25, 1.5)
    assert ours["extra_peak_ratio_to_snntorch"] == 2.5
    assert ref["ratio_to_snntorch"] == 1.0

    old = combine(_row("fc/inference/b32/async", "asyncsnn-async", [2.0, 2.0, 2.0, 1.0], 5.0))
    ab = paired(ours, old)
    assert ab["new_over_old_rounds"] == [0.5, 1.5, None, 2.0]
    assert ab["new_over_old"] == {"median": 1.5, "min": 0.5, "max": 2.0, "n": 3}
    assert (ab["new_extra_peak_mb"], ab["old_extra_peak_mb"]) == (10.0, 5.0)
    assert not ab["error"]


def test_schedule_interleaves_engines_and_trees():
    """In every round the engines of one network, mode and batch run one after another, in
    alternating order; with two trees each configuration's two runs are back to back."""
    from benchmarks.suite import Tree, plan, schedule

    configs = plan(False, ["fc"], ["numba"])
    trees = [Tree("new", REPO), Tree("old", REPO)]
    order = schedule(configs, 3, trees)
    assert len(order) == 3 * 2 * len(configs)
    assert sorted(r for r, _, _ in order) == [r for r, _, _ in order]
    for r in range(3):
        this = [(cfg, t.name) for k, cfg, t in order if k == r]
        groups = [(c.network, c.mode, c.batch) for c, _ in this]
        runs = [g for k, g in enumerate(groups) if k == 0 or g != groups[k - 1]]
        assert len(runs) == len(set(runs))  # each group's runs are contiguous
        for i in range(0, len(this), 2):
            assert this[i][0] == this[i + 1][0] and this[i][1] != this[i + 1][1]
    first = [cfg for k, cfg, t in order if k == 0 and t.name == "new"]
    second = [cfg for k, cfg, t in order if k == 1 and t.name == "new"]
    head = [c for c in first if (c.mode, c.batch) == ("inference", 1)]
    assert [c for c in second if (c.mode, c.batch) == ("inference", 1)] == head[::-1]
    firsts = [t.name for k, cfg, t in order[::2] if cfg == configs[0]]
    assert firsts == ["new", "old", "new"]  # which tree goes first alternates by round


def test_ab_mode_against_head(shared_data, tmp_path):
    """--against HEAD checks HEAD out into a temporary worktree, runs both trees' workers on
    their own src, reports paired ratios per round, and removes the worktree."""
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if git.returncode != 0:
        pytest.skip("not a git checkout")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    cmd = [sys.executable, "-m", "benchmarks", "--quick", "--json", "--rounds", "2"]
    cmd += ["--backends", "torch", "--against", "HEAD", "--networks", "fc"]
    cmd += ["--only", "fc/inference/b1/async-*", "fc/inference/b1/snntorch"]
    cmd += ["--data", str(shared_data), "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    rev = report["meta"]["trees"]["old"]["rev"]  # HEAD then (others may commit meanwhile)
    assert (
        subprocess.run(["git", "merge-base", "--is-ancestor", rev, "HEAD"], cwd=REPO).returncode
        == 0
    )
    assert [a["label"] for a in report["ab"]] == ["async-momentum[torch]", "snntorch"]
    for a in report["ab"]:
        assert not a["error"], a
        assert len(a["new_over_old_rounds"]) == 2 and all(a["new_over_old_rounds"])
        assert a["new_over_old"]["min"] <= a["new_over_old"]["median"] <= a["new_over_old"]["max"]
    old = {r["name"]: r for r in report["old_configs"]}
    for row in report["configs"]:
        assert row["asyncsnn"] == str(REPO / "src" / "asyncsnn")
        assert old[row["name"]]["asyncsnn"] != row["asyncsnn"]  # the worktree's own src
        assert len(row["rounds_ms_per_sample"]) == 2 and row["cpu_ms_per_sample"] > 0
    assert "new / old" in (tmp_path / "latest-ab.md").read_text()
    root = report["meta"]["trees"]["old"]["root"]
    assert not Path(root).exists()  # the temporary worktree is removed, and unregistered:
    listed = subprocess.run(["git", "worktree", "list"], cwd=REPO, capture_output=True, text=True)
    assert root not in listed.stdout
