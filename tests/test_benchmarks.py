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
