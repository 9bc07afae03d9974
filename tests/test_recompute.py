"""``run(..., recompute=True)``: unlayered backprop through the PyTorch engine, one timestep
kept at a time.

Recomputing a timestep during the backward pass must give the same run, the same gradients
(bit for bit: the same operations run again) and the same monitor records, and the memory the
graph keeps must no longer grow with the number of forward steps.
"""

from __future__ import annotations

import pytest
import torch
from test_kernels import POLICIES, Youngest, make

import asyncsnn
from asyncsnn.training import TrainConfig, forward

DT = 1e-3


def run_and_backward(net, x, **kw):
    net.zero_grad(set_to_none=True)
    r = asyncsnn.run(net, x, dt=DT, backend="torch", seed=3, **kw)
    score = r.output_counts if r.membrane is None else r.membrane.sum(0)
    gen = torch.Generator().manual_seed(2)
    (score * torch.randn(score.shape, generator=gen)).sum().backward()
    return r, {n: p.grad.clone() for n, p in net.named_parameters()}


HOOKS = {
    "none": {},
    "stops_monitor_dropouts": {
        "refractory_dropout": 0.5,
        "max_queued_per_neuron": 16,
        "hooks": [
            asyncsnn.StopOnOutputSpike(1),
            asyncsnn.MaxForwardSteps(4),
            asyncsnn.OutputTrace(),
            asyncsnn.InputSpikeDropout(0.2),
            asyncsnn.NetworkSpikeDropout(0.2),
        ],
    },
}


@pytest.mark.parametrize("hooks", list(HOOKS))
@pytest.mark.parametrize("policy", ["random", "momentum_noisy", "fifo", "youngest"])
@pytest.mark.parametrize("name", ["fc_bias_membrane", "conv", "recurrent"])
def test_recomputation_changes_nothing(name, policy, hooks):
    net, x = make(name)
    net.train()
    scheduler = Youngest() if policy == "youngest" else POLICIES[policy]
    kw = {"scheduler": scheduler, "group_size": 3, **HOOKS[hooks]}
    ra, ga = run_and_backward(net, x, **kw)
    rb, gb = run_and_backward(net, x, recompute=True, **kw)
    for f in ("spikes", "forward_steps", "synops", "undelivered", "output_counts"):
        assert torch.equal(getattr(ra, f).detach(), getattr(rb, f).detach()), f
    for k in ga:
        assert torch.equal(ga[k], gb[k]), k
    assert ra.records.keys() == rb.records.keys()
    for key, rec in ra.records.items():  # monitors saw every step once
        for field, value in rec.items():
            assert torch.equal(value, rb.records[key][field]), (key, field)


def saved_bytes(net, x, **kw) -> int:
    """Bytes the autograd graph keeps (outside the recomputed timesteps) for one run."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        asyncsnn.run(net, x, dt=DT, backend="torch", scheduler="fifo", **kw)
    return total[0]


def test_kept_memory_does_not_grow_with_forward_steps():
    net, x = make("conv")
    net.train()
    steps = {}
    for f in (1, 8):
        with torch.no_grad():
            steps[f] = int(asyncsnn.run(net, x, dt=DT, group_size=f).forward_steps.sum())
    assert steps[1] > 3 * steps[8]  # F = 1 takes many more forward steps
    graph = {f: saved_bytes(net, x, group_size=f) for f in (1, 8)}
    kept = {f: saved_bytes(net, x, group_size=f, recompute=True) for f in (1, 8)}
    assert graph[1] > 2 * graph[8]  # the whole graph grows with the forward steps
    assert kept[1] == kept[8]  # per timestep: its input and membranes only
    assert kept[1] < graph[8] / 5


def test_recompute_is_a_flag_and_idle_without_gradients():
    net, x = make("fc")
    with pytest.raises(TypeError, match="recompute must be True or False"):
        asyncsnn.run(net, x, dt=DT, recompute="yes")
    with torch.no_grad():
        a = asyncsnn.run(net, x, dt=DT, backend="torch")
        b = asyncsnn.run(net, x, dt=DT, backend="torch", recompute=True)
    assert torch.equal(a.spikes, b.spikes)


def test_training_config_recompute():
    """``TrainConfig(recompute=True)`` reaches the run: the same gradients, less kept."""
    asyncsnn.register_scheduler("youngest-test", Youngest)
    net, x = make("fc")
    net.train()
    grads, kept = [], []
    for recompute in (False, True):
        cfg = TrainConfig(
            timesteps=x.shape[0], dt=DT, scheduler="youngest-test", recompute=recompute
        )
        net.zero_grad(set_to_none=True)
        total = [0]

        def pack(t, total=total):
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            r = forward(net, x.transpose(0, 1), cfg, training=True, seed=0)
        r.output_counts.sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
        kept.append(total[0])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
    assert kept[1] < kept[0] / 2
    with pytest.raises(ValueError, match="recompute must be true or false"):
        TrainConfig(recompute="sometimes")
