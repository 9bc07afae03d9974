"""Helpers of the cross-library oracle tests (snnTorch, Norse): random weights, layered
execution, and the spike-for-spike comparison that refuses a vacuous test."""

from __future__ import annotations

import torch
from torch import nn

import asyncsnn

DT = 1e-3
SEEDS = [0, 1, 2]


def init_weights(module: nn.Module, gen: torch.Generator, mean: float, std: float) -> nn.Module:
    """Random weights (excitatory and inhibitory) and small random biases."""
    with torch.no_grad():
        module.weight.normal_(mean, std, generator=gen)
        if module.bias is not None:
            module.bias.normal_(0.0, 0.1, generator=gen)
    return module


def layered(net: asyncsnn.Network, x: torch.Tensor) -> asyncsnn.RunResult:
    with torch.no_grad():
        return asyncsnn.run(net, x, dt=DT, execution="layered")


def assert_same_spikes(result: asyncsnn.RunResult, reference: list[torch.Tensor]) -> None:
    """Every population's spikes equal the oracle's layer by layer, and every layer fires,
    but not all the time (else the comparison says little)."""
    names = [p.name for p in result.network.populations]
    assert len(names) == len(reference)
    for name, ref in zip(names, reference, strict=True):
        ours = result.population_spikes(name)
        assert ours.shape == ref.shape, name
        assert torch.equal(ours, ref), (
            f"{name}: {int((ours != ref).sum())} of {ref.numel()} spikes differ "
            f"(first at {(ours != ref).nonzero()[0].tolist()})"
        )
    for name, ref in zip(names, reference, strict=True):
        assert 0 < ref.sum() < ref.numel(), f"{name} is silent or saturated: a weak test"
