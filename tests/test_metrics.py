"""Metrics on hand-made traces."""

from __future__ import annotations

import math

import torch
from torch import nn

import asyncsnn
from asyncsnn.metrics import accuracy_at_budgets, aggregate, decision_latency, predict


def test_predict_counts_a_tie_as_no_prediction():
    scores = torch.tensor([[1.0, 3.0, 2.0], [2.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    assert predict(scores).tolist() == [1, -1, -1]


def _trace():
    # two samples, rows after the input delivery and each forward step; 2 outputs
    counts = torch.tensor(
        [
            [[0, 0], [0, 0]],
            [[1, 0], [0, 1]],  # step 1: s0 predicts 0, s1 predicts 1
            [[1, 1], [0, 2]],  # step 2: s0 tied
            [[1, 2], [1, 2]],  # step 3: s0 predicts 1, s1 predicts 1
            [[1, 3], [3, 2]],  # step 4 (s1 only): s1 predicts 0
        ],
        dtype=torch.float32,
    )
    return {
        "counts": counts,
        "forward_steps": torch.tensor([[0, 0], [1, 1], [2, 2], [3, 3], [3, 4]]),
        "network_spikes": torch.tensor([[2, 3], [4, 5], [6, 7], [8, 9], [8, 12]]),
    }


def test_decision_latency_is_when_the_prediction_becomes_right_for_good():
    lat = decision_latency(_trace(), torch.tensor([1, 1]))
    # sample 0: right from step 3 on; sample 1 is right at steps 1-3 but wrong at the end
    assert lat["latency_steps"][0].item() == 3
    assert lat["latency_spikes"][0].item() == 8
    assert math.isnan(lat["latency_steps"][1].item())
    lat = decision_latency(_trace(), torch.tensor([0, 0]))
    assert math.isnan(lat["latency_steps"][0].item())
    assert lat["latency_steps"][1].item() == 4 and lat["latency_spikes"][1].item() == 12


def test_accuracy_at_a_forward_step_budget():
    acc = accuracy_at_budgets(_trace(), torch.tensor([1, 1]), [0, 1, 2, 3, 4, 10])
    # budget k: the row where the sample reaches k steps (its last row if it never does)
    # s0: none, 0, tie, 1, 1(final), 1; s1: none, 1, 1, 1, 0, 0
    assert acc.tolist() == [0.0, 0.5, 0.5, 1.0, 0.5, 0.5]


def test_aggregate_and_sample_metrics_on_a_run():
    torch.manual_seed(0)
    layers = [nn.Linear(6, 5, bias=False), nn.Linear(5, 3, bias=False)]
    for layer in layers:
        nn.init.uniform_(layer.weight, 0.2, 0.6)
    net = asyncsnn.Network.sequential(layers, tau_m=1e-3, threshold=0.5)
    x = (torch.rand(7, 4, 6) < 0.5).float()
    with torch.no_grad():
        r = asyncsnn.run(net, x, dt=1e-3, hooks=[asyncsnn.OutputTrace()])
    from asyncsnn.metrics import sample_metrics

    labels = r.prediction.clamp(min=0)
    m = sample_metrics(r, labels)
    assert torch.equal(m["spikes"], r.spikes.sum((0, 2)))
    assert torch.allclose(m["spike_density"], r.spikes.sum((0, 2)) / (8 * 7))
    assert torch.equal(m["synops"], r.synops.sum(0))
    trace = r.records["output_trace"]
    assert torch.equal(trace["forward_steps"][-1], r.forward_steps.sum(0))
    assert torch.equal(trace["counts"][-1], r.output_counts)
    summary = aggregate(m)
    assert summary["accuracy"] == float((r.prediction == labels).float().mean())
    assert summary["spikes_per_sample"] == float(r.spike_count.double().mean())
