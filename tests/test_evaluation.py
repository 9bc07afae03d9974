"""``evaluate`` on the compiled kernel gives the reference engine's figures to the last digit.

Every metric of ``asyncsnn.evaluate`` (accuracy, spikes, SynOps, forward steps, the decision
latency in forward steps and spikes, the accuracy at each forward-step budget, the
stop-on-first-output run, the cost) is computed from the same records on both engines: the
kernel reads the monitors' records off each spike's forward step.
"""

from __future__ import annotations

import io
import math
import sys

import pytest
import torch
from factories import tiny_split
from torch import nn

import asyncsnn
from asyncsnn.evaluation import Execution, evaluate
from asyncsnn.training import Split, TrainConfig

pytest.importorskip("numba")


def _network(seed: int) -> asyncsnn.Network:
    gen = torch.Generator().manual_seed(seed)
    layers = [nn.Linear(24, 20, bias=False), nn.Linear(20, 16, bias=False)]
    layers.append(nn.Linear(16, 4, bias=False))
    for layer, mean in zip(layers, (0.12, 0.12, 0.0), strict=True):
        with torch.no_grad():
            layer.weight.normal_(mean, 0.4 if mean else 0.3, generator=gen)
    return asyncsnn.Network.sequential(layers, tau_m=2e-3, threshold=0.4)


def _split(n: int, seed: int) -> Split:
    return tiny_split(n, seed, classes=4, timesteps=10, background=0.1)


def _same(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a.nan_to_num(-1.0), b.nan_to_num(-1.0)), where
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            _same(u, v, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


EXECUTIONS = [
    Execution("async", "random", 1),
    Execution("async", "random", 8),
    Execution("async", "momentum", 3),
    Execution("async", "fifo", 8),
    Execution("async", "layered", 4),
]


@pytest.mark.parametrize("how", EXECUTIONS, ids=lambda h: h.label)
def test_every_metric_is_the_reference_engines(how):
    net = _network(2)
    split = _split(37, 2)  # batches of 16: a short last batch too
    cfg = TrainConfig(dt=1e-3, lambda_ms=0.05)
    kw = {"batch_size": 16, "seed": 7, "keep_results": 20}
    fast = evaluate(net, split, cfg, how, **kw)
    ref = evaluate(net, split, cfg, how, backend="torch", **kw)
    assert fast["engine"] == "numba" and ref["engine"] == "torch"
    s = ref["summary"]
    assert 0 < s["accuracy"] < 1 and s["settled_fraction"] > 0  # something to compare
    assert s["latency_steps_median"] > 0 and len(ref["budget"]["forward_steps"]) > 5
    for key in ("summary", "per_sample", "budget", "spikes_per_population"):
        _same(fast[key], ref[key], key)
    _same(fast["stop_on_first_output"], ref["stop_on_first_output"], "stop_on_first_output")
    assert ref["stop_on_first_output"] != ref["summary"]  # the stop rule acted
    for rf, rr in zip(fast["results"], ref["results"], strict=True):  # what --spikes-out writes
        _same(rf.records, rr.records, "records")
        assert torch.equal(rf.spikes, rr.spikes)


def test_layered_evaluation_names_its_engine():
    out = evaluate(_network(0), _split(9, 0), TrainConfig(dt=1e-3), Execution("layered"))
    assert out["engine"] == "layered"


def test_refractory_dropout_at_evaluation_runs_the_reference():
    """The monitors need a neuron to fire at most once per timestep; a run that asks for
    refractory dropout at evaluation still gets every figure, from the reference."""
    net, split = _network(3), _split(8, 3)
    r = asyncsnn.run(
        net,
        split.x.transpose(0, 1),
        dt=1e-3,
        refractory_dropout=0.5,
        refractory_dropout_at_eval=True,
        hooks=[asyncsnn.OutputTrace()],
    )
    assert r.engine == "torch" and "output_trace" in r.records
    plain = asyncsnn.run(net, split.x.transpose(0, 1), dt=1e-3, hooks=[asyncsnn.OutputTrace()])
    assert plain.engine == "numba" and "output_trace" in plain.records


def test_a_long_evaluation_shows_its_progress(monkeypatch, tmp_path):
    """``evaluate(progress=True)`` iterates its batches through a progress bar that knows
    their number and names the execution; ``asyncsnn evaluate`` asks for it unless --json."""
    from tqdm import tqdm

    from asyncsnn import evaluation

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())  # the bar shows on a terminal only
    bar = evaluation._batches(_split(37, 0), 16, True, "async-random F=8")
    assert isinstance(bar, tqdm) and bar.total == 3 and "async-random F=8" in bar.desc
    assert [len(y) for _, y in bar] == [16, 16, 5]
    assert (
        "evaluating async-random F=8:" in sys.stderr.getvalue() and "/3 " in sys.stderr.getvalue()
    )
    monkeypatch.undo()
    assert not isinstance(evaluation._batches(_split(5, 0), 16, False, "x"), tqdm)

    from click.testing import CliRunner

    from asyncsnn.cli import main

    run = tmp_path / "run"
    args = ["train", "--out", str(run), "--epochs", "1", "--hidden", "8", "-q"]
    assert (
        CliRunner().invoke(main, [*args, "--limit-train", "60", "--limit-test", "20"]).exit_code
        == 0
    )
    asked = []
    real = evaluation.evaluate

    def spy(*a, **kw):
        asked.append(kw.get("progress"))
        return real(*a, **kw)

    monkeypatch.setattr(evaluation, "evaluate", spy)
    assert CliRunner().invoke(main, ["evaluate", str(run)]).exit_code == 0
    assert CliRunner().invoke(main, ["evaluate", str(run), "--json"]).exit_code == 0
    assert asked == [True, False]
