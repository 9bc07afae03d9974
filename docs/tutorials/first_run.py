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
# # Your first asynchronous run
#
# A spiking network is usually simulated *layer by layer*: in every timestep, each layer waits
# for the whole layer below before its neurons integrate and fire. A neuromorphic chip has no
# such barrier. This tutorial runs one small network both ways on handwritten digits and looks
# at what changes: the spikes, the depth of a timestep in *forward steps*, and the moment the
# network settles on its answer.
#
# Everything here runs on a CPU in a few seconds and uses scikit-learn's digits, turned into
# event streams by an emulated event camera (nothing is downloaded).

# %%
import matplotlib.pyplot as plt
import torch

import asyncsnn
from asyncsnn.training import TrainConfig, Trainer, load_run, load_test_split

# %% [markdown]
# ## A small trained network
#
# We train a layered model for a few seconds (the tutorial
# [Training through asynchrony](training.md) says more about training): 2 x 16 x 16 input
# events, 64 hidden neurons, 10 outputs, 10 timesteps of 30 ms.

# %%
cfg = TrainConfig(
    dataset="digits",
    dt=0.03,
    hidden=(64,),
    epochs=4,
    batch_size=32,
    lr=2e-3,
    tau_m=20e-3,
    threshold=0.5,
    limit_train=500,
    limit_test=200,
    training="layered",
)
Trainer(cfg, "runs/first-run", quiet=True).fit()
net, cfg, facts = load_run("runs/first-run")
test = load_test_split(cfg)
print(net.extra_repr())
print("test input:", tuple(test.x.shape), "(samples, timesteps, polarity, height, width)")

# %% [markdown]
# ## Layered and asynchronous execution
#
# `asyncsnn.run` takes the input as (timesteps, batch, *input_shape). Asynchronous execution
# delivers the queued spikes in groups of `F` per forward step, in the order a scheduling
# policy chooses (`momentum`: the spikes of the neurons that crossed their threshold furthest
# first); a neuron fires as soon as its membrane crosses the threshold.

# %%
x = test.x.transpose(0, 1)  # (timesteps, samples, ...)
with torch.no_grad():
    runs = {
        "layered": asyncsnn.run(net, x, dt=cfg.dt, execution="layered"),
        "async-momentum F=8": asyncsnn.run(
            net, x, dt=cfg.dt, execution="async", scheduler="momentum", group_size=8, seed=0
        ),
        "async-random F=8": asyncsnn.run(
            net, x, dt=cfg.dt, execution="async", scheduler="random", group_size=8, seed=0
        ),
    }
print(f"{'execution':<20}{'accuracy':>9}{'spikes/sample':>15}{'steps/timestep':>16}")
for name, r in runs.items():
    accuracy = float((r.prediction == test.y).float().mean())
    print(
        f"{name:<20}{accuracy:>9.3f}{r.spike_count.mean():>15.1f}"
        f"{r.forward_steps.float().mean():>16.2f}"
    )
    assert accuracy > 0.5  # a few seconds of training already read most digits

# %% [markdown]
# Layered execution takes one forward step per layer that sends spikes: here 1 per timestep
# (the hidden layer's spikes reach the output in one step). Asynchronously, the hidden
# layer's spikes travel in groups of 8, so a timestep takes as many forward steps as it
# needs. The spikes change a little too: a neuron that fires on a partial sum, before all
# its input arrived, has fired for good.
#
# With the `layered` policy and `F` at least the widest layer, asynchronous execution *is*
# layered execution, spike for spike:

# %%
with torch.no_grad():
    same = asyncsnn.run(net, x, dt=cfg.dt, execution="async", scheduler="layered", group_size=64)
print(
    "async with the layered policy, F=64, equals layered:",
    torch.equal(same.spikes, runs["layered"].spikes),
)
assert torch.equal(same.spikes, runs["layered"].spikes)

# %% [markdown]
# ## How the decision forms
#
# Monitors record what happens inside a run. `OutputTrace` keeps the running output counts
# after every forward step; `SpikeEvents` the forward step at which each spike fired. We run
# one test digit both ways with them.

# %%
sample = 3
one = test.x[sample][:, None]  # (timesteps, 1, ...)
traces = {}
for name, kw in [
    ("layered", dict(execution="layered")),
    ("async-momentum F=8", dict(execution="async", scheduler="momentum", group_size=8)),
]:
    with torch.no_grad():
        r = asyncsnn.run(
            net,
            one,
            dt=cfg.dt,
            seed=0,
            hooks=[asyncsnn.OutputTrace(), asyncsnn.SpikeEvents()],
            **kw,
        )
    traces[name] = r
    print(f"{name}: predicted {int(r.prediction[0])}, label {int(test.y[sample])}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
for ax, (name, r) in zip(axes, traces.items(), strict=True):
    trace = r.records["output_trace"]
    steps = trace["forward_steps"][:, 0]
    counts = trace["counts"][:, 0]
    for c in range(counts.shape[1]):
        ax.step(
            steps, counts[:, c], where="post", label=str(c), lw=2 if c == int(test.y[sample]) else 1
        )
    ax.set_title(name)
    ax.set_xlabel("forward steps since the start")
axes[0].set_ylabel("output spike count")
axes[1].legend(title="class", ncol=2, fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# The thick line is the true class. Each execution's running prediction (the class with the
# most output spikes) changes while the counts race; the *decision latency* is the number of
# forward steps after which it is right and stays right.
#
# The raster shows every spike at the frame at which it fired: each timestep is its input
# delivery, which makes hidden neurons fire, and then its forward steps. Layered execution
# takes one forward step per timestep here, in which the whole hidden layer reaches the
# output; asynchronously, the hidden spikes travel in groups of 8 and the output fires
# after each group, as soon as its membrane crosses the threshold.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
for ax, (name, r) in zip(axes, traces.items(), strict=True):
    ev = r.records["spike_events"]
    # a timestep's frames: its input delivery (forward step 0), then its forward steps
    frames = r.forward_steps[:, 0].float() + 1
    start = torch.cat([torch.zeros(1), frames.cumsum(0)[:-1]])
    when = start[ev["timestep"]] + ev["forward_step"].float()
    out = ev["neuron"] >= net.population("hidden1").size
    ax.scatter(when[~out], ev["neuron"][~out], s=4, c="tab:blue", label="hidden")
    ax.scatter(when[out], ev["neuron"][out], s=10, c="tab:red", label="output")
    for b in start[1:]:
        ax.axvline(float(b), color="0.85", lw=0.8)
    ax.set_title(name)
    ax.set_xlabel("frame: input delivery, then forward steps (grey: a new timestep)")
axes[0].set_ylabel("neuron")
axes[0].legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What next
#
# - `asyncsnn explore runs/first-run --sample 3 --executions layered,async-momentum` writes
#   an HTML page that plays this run frame by frame ([the explorer](../how-to/explore.md)).
# - [From snnTorch to asynchronous execution](from_snntorch.md) brings a model trained
#   elsewhere.
# - [Training through asynchrony](training.md) trains a model that expects no barrier.
