"""asyncsnn.neurobench: NeuroBench's Benchmark on an asyncsnn network, its static metrics and
the workload metrics against asyncsnn's own figures."""

from __future__ import annotations

import pytest
import torch
from factories import tiny_split

import asyncsnn
from asyncsnn.hooks import OutputTrace
from asyncsnn.metrics import aggregate, decision_latency


def test_benchmark_figures_equal_asyncsnn_figures():
    pytest.importorskip("neurobench", reason="NeuroBench is an optional extra")
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint, ParameterCount

    from asyncsnn.neurobench import (
        AsyncSNNModel,
        DecisionLatency,
        EffectiveACs,
        SpikeActivationSparsity,
    )

    torch.manual_seed(0)
    net = asyncsnn.Network.sequential(
        [torch.nn.Linear(24, 16), torch.nn.Linear(16, 3)], threshold=0.3, tau_m=5e-3
    )
    with torch.no_grad():
        net.projections[0].chain[0].weight[:, :4] = 0.0  # 64 of 432 weights zero
    s = tiny_split(20, 1)
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(s.x, s.y), batch_size=8)
    model = AsyncSNNModel(net, dt=1e-3, seed=3, decision_latency=True)
    static = [Footprint, ParameterCount, ConnectionSparsity]
    workload = [EffectiveACs, SpikeActivationSparsity, DecisionLatency]
    res = Benchmark(model, dl, [], [], [static, workload]).run(quiet=True)
    n_params = 24 * 16 + 16 + 16 * 3 + 3
    assert res["ParameterCount"] == n_params == 451
    assert res["Footprint"] == 4 * n_params + 4 * 3 * 19  # float32 weights, 3 buffers per neuron
    assert res["ConnectionSparsity"] == round(64 / 432, 4)
    synops, active, total, lat = 0.0, 0, 0, {"latency_steps": [], "latency_spikes": []}
    for x, y in dl:
        r = asyncsnn.run(net, x.transpose(0, 1), dt=1e-3, seed=3, hooks=[OutputTrace()])
        synops += float(r.synops.double().sum())
        active += int(torch.count_nonzero(r.spikes))
        total += r.spikes.numel()
        for k, v in decision_latency(r.records["output_trace"], y).items():
            lat[k].append(v)
    assert res["EffectiveACs"] == synops / 20
    assert res["SpikeActivationSparsity"] == 1 - active / total
    assert res["DecisionLatency"] == aggregate({k: torch.cat(v) for k, v in lat.items()})


def _linear(weight) -> torch.nn.Linear:
    w = torch.tensor(weight)
    m = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        m.weight.copy_(w)
    return m


def test_membrane_updates_follow_the_chip_rule_by_hand():
    """input -> 2 hidden (weights 1, threshold 0.5) -> 1 output (weights 1, threshold 1.5),
    3 timesteps. Sample 0 has input at t=0 and t=2, sample 1 at t=2. Where there is input,
    both hidden neurons receive it and fire; layered execution updates them and the output
    once (3), asynchronous execution with F=1 delivers each hidden spike in its own forward
    step, so the output is updated twice (4). Event rule: layered (6 + 3) / 2 = 4.5,
    asynchronous (8 + 4) / 2 = 6. Timestep rule: 3 neurons x 3 timesteps = 9 for both."""
    pytest.importorskip("neurobench", reason="NeuroBench is an optional extra")
    from neurobench.benchmarks import Benchmark

    from asyncsnn.neurobench import (
        AsyncSNNModel,
        EventMembraneUpdateCount,
        MembraneUpdateCount,
        membrane_update_metric,
    )

    net = asyncsnn.Network.sequential(
        [_linear([[1.0], [1.0]]), _linear([[1.0, 1.0]])], tau_m=2e-3, threshold=[0.5, 1.5]
    )
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])[:, :, None]  # (batch, timesteps, 1)
    dl = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, torch.zeros(2, dtype=torch.long)), batch_size=2
    )
    metrics = [MembraneUpdateCount, EventMembraneUpdateCount]
    expected = {"layered": 4.5, "async": 6.0}
    for execution, event in expected.items():
        model = AsyncSNNModel(net, dt=1e-3, execution=execution, scheduler="fifo", group_size=1)
        res = Benchmark(model, dl, [], [], [[], metrics]).run(quiet=True)
        assert res["EventMembraneUpdateCount"] == event, execution
        assert res["MembraneUpdateCount"] == 9.0, execution
    assert membrane_update_metric("loihi") is MembraneUpdateCount
    chip = asyncsnn.cost.Profile("chip", e_synop_pj=1.0, update_rule="event")
    assert membrane_update_metric(chip) is EventMembraneUpdateCount


def test_a_model_that_is_not_an_asyncsnn_network_is_refused():
    pytest.importorskip("neurobench", reason="NeuroBench is an optional extra")
    from asyncsnn.neurobench import AsyncSNNModel

    with pytest.raises(TypeError, match="asyncsnn.Network"):
        AsyncSNNModel(torch.nn.Linear(2, 2), dt=1e-3)


def test_benchmark_on_a_trained_model(tmp_path):
    """A model trained with ``Trainer`` (unlayered, through the kernel): NeuroBench's accuracy
    and static metrics, and the workload metrics, against asyncsnn's evaluation and runs."""
    pytest.importorskip("neurobench", reason="NeuroBench is an optional extra")
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, ParameterCount
    from neurobench.metrics.workload import ClassificationAccuracy

    from asyncsnn.evaluation import Execution, evaluate
    from asyncsnn.neurobench import AsyncSNNModel, EffectiveACs, SpikeActivationSparsity
    from asyncsnn.training import TrainConfig, Trainer, load_run, load_test_split

    cfg = TrainConfig(
        dataset="digits", limit_train=120, limit_test=40, epochs=1, hidden=(16,), timesteps=8,
        batch_size=32,
    )  # fmt: skip
    Trainer(cfg, tmp_path / "run", quiet=True).fit()
    net, cfg, _ = load_run(tmp_path / "run")
    test = load_test_split(cfg)
    dl = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(test.x, test.y), batch_size=16, shuffle=False
    )
    weights = [p for name, p in net.named_parameters() if name.endswith("weight")]
    zeros = sum(int((w == 0).sum()) for w in weights)
    for how in (Execution("layered"), Execution("async", "momentum", 8)):
        model = AsyncSNNModel(
            net, dt=cfg.dt, execution=how.execution, scheduler=how.scheduler or "random",
            group_size=how.group_size or 8, seed=5,
        )  # fmt: skip
        static = [ParameterCount, ConnectionSparsity]
        workload = [ClassificationAccuracy, EffectiveACs, SpikeActivationSparsity]
        res = Benchmark(model, dl, [], [], [static, workload]).run(quiet=True)
        assert res["ParameterCount"] == sum(p.numel() for p in net.parameters())
        assert res["ConnectionSparsity"] == round(zeros / sum(w.numel() for w in weights), 4)
        synops, correct, active, total = 0.0, 0, 0, 0
        with torch.no_grad():
            for x, y in dl:
                r = asyncsnn.run(net, x.transpose(0, 1), dt=cfg.dt, seed=5, **{
                    k: v for k, v in model.settings.items() if k not in ("dt", "seed")
                })  # fmt: skip
                synops += float(r.synops.double().sum())
                correct += int((r.prediction == y).sum())
                active += int(torch.count_nonzero(r.spikes))
                total += r.spikes.numel()
        assert res["EffectiveACs"] == pytest.approx(synops / len(test), rel=1e-12)
        assert res["ClassificationAccuracy"] == pytest.approx(correct / len(test))
        assert res["SpikeActivationSparsity"] == pytest.approx(1 - active / total)
        assert synops > 0 and 0 < active < total
        if how.execution == "layered":  # deterministic: the evaluation's own figures
            s = evaluate(net, test, cfg, how, stop_on_first_output=False)["summary"]
            assert res["ClassificationAccuracy"] == pytest.approx(s["accuracy"])
            assert res["EffectiveACs"] == pytest.approx(s["synops_per_sample"])


def test_without_neurobench_the_import_says_how_to_install(monkeypatch):
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "neurobench", None)
    monkeypatch.setitem(sys.modules, "neurobench.metrics.abstract", None)
    monkeypatch.delitem(sys.modules, "asyncsnn.neurobench", raising=False)
    with pytest.raises(ImportError, match="needs NeuroBench: pip install --no-deps neurobench"):
        importlib.import_module("asyncsnn.neurobench")
