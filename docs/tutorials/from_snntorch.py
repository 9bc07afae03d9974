# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # From snnTorch to asynchronous execution
#
# You have a spiking network trained in snnTorch, layer by layer. Would it still work on a chip
# without the layer barrier? This tutorial trains a small model in snnTorch, exports it with
# snnTorch's own NIR exporter, imports the file into asyncsnn, checks that layered execution
# gives snnTorch's spikes exactly, and then runs it without the barrier under each scheduling
# policy. It takes well under a minute on a CPU (`pip install snntorch nir`).
#
# Two snnTorch conventions matter:
#
# - snnTorch writes NIR with a fixed internal time step of 1e-4 s and Euler's leak
#   `beta = 1 - dt/tau`: import with `dt=SNNTORCH_DT, discretization="euler"` and run with the
#   same `dt`;
# - snnTorch 1.0's exporter needs per-neuron `beta` and `threshold` tensors and
#   `reset_mechanism="zero"` (it writes `v_reset = 0` whatever the reset).

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import nir
import snntorch as snn
import snntorch.utils
import torch
from sklearn.datasets import load_digits
from snntorch.export_nir import export_to_nir
from torch import nn

import asyncsnn
from asyncsnn.interchange import SNNTORCH_DT

torch.manual_seed(0)
gen = torch.Generator().manual_seed(0)

# %% [markdown]
# ## A model in snnTorch
#
# The 8x8 digits, rate-coded: in each of 20 timesteps a pixel spikes with probability
# pixel / 16. A 64-64-10 network of `Leaky` neurons, trained on the output spike counts.

# %%
TIMESTEPS = 20
digits = load_digits()
images = torch.tensor(digits.data, dtype=torch.float32)
labels = torch.tensor(digits.target)
order = torch.randperm(len(labels), generator=gen)
train, test = order[:1400], order[1400:]


def encode(batch: torch.Tensor) -> torch.Tensor:
    """(timesteps, batch, 64) spikes with probability pixel / 16."""
    return torch.bernoulli((batch / 16.0).expand(TIMESTEPS, *batch.shape), generator=gen)


def leaky(n: int, **kw) -> snn.Leaky:
    return snn.Leaky(
        beta=torch.full((n,), 0.9),
        threshold=torch.ones(n),
        reset_mechanism="zero",
        init_hidden=True,
        **kw,
    )


model = nn.Sequential(nn.Linear(64, 64), leaky(64), nn.Linear(64, 10), leaky(10, output=True))


def run_snntorch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Output spike counts (batch, 10) and all spikes (timesteps, batch, neurons)."""
    snntorch.utils.reset(model)
    counts, spikes = 0, []
    for t in range(x.shape[0]):
        hidden = model[1](model[0](x[t]))
        out, _ = model[3](model[2](hidden))
        counts = counts + out
        spikes.append(torch.cat([hidden, out], 1))
    return counts, torch.stack(spikes)


optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
for epoch in range(4):
    for batch in train[torch.randperm(len(train), generator=gen)].split(64):
        counts, _ = run_snntorch(encode(images[batch]))
        loss = nn.functional.cross_entropy(counts, labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    print(f"epoch {epoch + 1}: loss {loss.item():.3f}")

# %% [markdown]
# ## Through NIR into asyncsnn
#
# `export_to_nir` writes the graph; `asyncsnn.from_nir` builds a `Network` from it.

# %%
x, y = encode(images[test]), labels[test]
with torch.no_grad():
    counts, reference = run_snntorch(x)
    graph = export_to_nir(model, torch.zeros(1, 64), ignore_dims=[0])
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "digits.nir"
    nir.write(path, graph)
    net = asyncsnn.from_nir(path, dt=SNNTORCH_DT, discretization="euler", reset="zero")
print(net.extra_repr())

with torch.no_grad():
    layered = asyncsnn.run(net, x, dt=SNNTORCH_DT, execution="layered")
print("layered execution gives snnTorch's spikes exactly:", torch.equal(layered.spikes, reference))
assert torch.equal(layered.spikes, reference)

# %% [markdown]
# ## Without the barrier
#
# The same network, asynchronously, under each built-in policy with groups of 8 spikes. A
# tie of the output counts counts as wrong.


# %%
def accuracy(scores: torch.Tensor) -> float:
    best = scores.max(1, keepdim=True).values
    unique = (scores == best).sum(1) == 1
    return float(((scores.argmax(1) == y) & unique).float().mean())


rows = {"snnTorch": (accuracy(counts), float(reference.sum((0, 2)).mean()))}
with torch.no_grad():
    for policy in ("layered", "fifo", "random", "momentum"):
        r = asyncsnn.run(
            net, x, dt=SNNTORCH_DT, execution="async", scheduler=policy, group_size=8, seed=0
        )
        rows[f"async {policy}"] = (accuracy(r.output_counts), float(r.spike_count.mean()))
print(f"{'execution':<16}{'accuracy':>9}{'spikes/sample':>15}")
for name, (acc, spikes) in rows.items():
    print(f"{name:<16}{acc:>9.3f}{spikes:>15.1f}")
assert rows["snnTorch"][0] > 0.6

fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(list(rows), [a for a, _ in rows.values()], color=["0.5"] + ["tab:blue"] * 4)
ax.set_ylabel("test accuracy")
ax.set_ylim(0, 1)
plt.tight_layout()
plt.show()

# %% [markdown]
# A model trained with the barrier may lose accuracy without it: its neurons learned to
# integrate the whole layer below before firing, and asynchronously they fire on partial
# sums. How much depends on the model and the policy. [Training through
# asynchrony](training.md) trains a model that expects it; the [NIR guide](../nir.md) lists
# the other exporters (Norse, SpikingJelly, Sinabs) and their conventions.
