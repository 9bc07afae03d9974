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
# # What it costs on Loihi, SpiNNaker 2 and SENeCA
#
# Fewer spikes and fewer forward steps matter because a chip pays for them. asyncsnn's cost
# model turns a run's own counts (synaptic operations, spikes, neuron updates, forward steps)
# into energy and time per sample under a chip's published constants. It is a first-order
# model, a weighted sum of counts, meant to compare executions with each other, not to
# predict a chip's measured figures; [the cost model's page](../cost.md) gives every formula
# and the source of every constant.
#
# This tutorial trains a small model on the digits, runs it layered and asynchronously, and
# prices each run on three chips.

# %%
import math

import matplotlib.pyplot as plt
import torch

import asyncsnn
from asyncsnn.cost import PROFILES, sample_cost
from asyncsnn.metrics import decision_latency
from asyncsnn.training import TrainConfig, Trainer, load_run, load_test_split

# %% [markdown]
# ## The chips' constants
#
# Energies in picojoules, times in nanoseconds; NaN where a chip publishes no figure.

# %%
chips = ["loihi", "spinnaker2", "seneca"]
keys = ["e_synop_pj", "e_spike_pj", "e_neuron_pj", "t_step_ns", "t_barrier_ns", "t_spike_ns"]
print(f"{'profile':<12}" + "".join(f"{k:>14}" for k in keys))
for name in chips:
    p = PROFILES[name]
    print(f"{name:<12}" + "".join(f"{getattr(p, k):>14g}" for k in keys))

# %% [markdown]
# One of these numbers is an assumption, and it decides a comparison: Loihi publishes the
# time of a barrier (113 ns), not of a forward step without one, so the profile *assumes* an
# asynchronous forward step costs a barrier's time (`t_step_ns = t_barrier_ns`). An
# asynchronous run that takes more forward steps than the layered one is then slower by that
# ratio; a cheaper step would change the verdict.

# %%
print(PROFILES["loihi"].source)

# %% [markdown]
# ## A model and its runs
#
# A layered model trained for a few seconds, and an unlayered one trained through
# asynchronous execution (momentum policy, `F = 8`), each run on 300 test digits.

# %%
settings = dict(
    dataset="digits",
    dt=0.03,
    hidden=(64,),
    epochs=3,
    batch_size=32,
    lr=2e-3,
    tau_m=20e-3,
    threshold=0.5,
    scheduler="momentum",
    group_size=8,
    limit_train=400,
    limit_test=300,
)
runs = {}
for training in ("layered", "unlayered"):
    Trainer(TrainConfig(training=training, **settings), f"runs/{training}", quiet=True).fit()
    net, cfg, _ = load_run(f"runs/{training}")
    test = load_test_split(cfg)
    x = test.x.transpose(0, 1)
    for execution in ("layered", "async"):
        with torch.no_grad():
            r = asyncsnn.run(
                net,
                x,
                dt=cfg.dt,
                execution=execution,
                scheduler="momentum",
                group_size=8,
                seed=0,
                hooks=[asyncsnn.OutputTrace()],
            )
        runs[training, execution] = (r, decision_latency(r.records["output_trace"], test.y))

# %% [markdown]
# ## Energy and time per sample
#
# `sample_cost` prices each sample of a run: energy from the synaptic operations, spikes and
# neuron updates, time from the forward steps (layered: one barrier per layer that sends
# spikes) and the spikes routed, and the time to decision from the decision latency.

# %%
rows = []
for (training, execution), (r, latency) in runs.items():
    for chip in chips:
        c = sample_cost(r, execution, PROFILES[chip], latency)
        settled = ~torch.isnan(c["latency_time_us"])
        rows.append(
            {
                "model": training,
                "execution": execution,
                "chip": chip,
                "energy_nj": float(c["energy_nj"].mean()),
                "time_us": float(c["time_us"].mean()),
                "decision_us": float(c["latency_time_us"][settled].median())
                if settled.any()
                else math.nan,
            }
        )
header = f"{'model':<10}{'execution':<10}{'chip':<12}{'energy nJ':>10}{'time us':>9}"
print(header + f"{'decision us':>12}")
for row in rows:
    print(
        f"{row['model']:<10}{row['execution']:<10}{row['chip']:<12}{row['energy_nj']:>10.1f}"
        f"{row['time_us']:>9.2f}{row['decision_us']:>12.2f}"
    )

# %% [markdown]
# The energy of a run, by hand, for one sample: Loihi charges 23.6 pJ per synaptic
# operation, 1.7 pJ per spike and 81 pJ per neuron update, and the cost model counts one
# update per neuron per timestep.

# %%
r, _ = runs["layered", "layered"]
synops, spikes = float(r.synops[:, 0].sum()), float(r.spikes[:, 0].sum())
updates = r.spikes.shape[0] * r.spikes.shape[2]  # timesteps x neurons
by_hand = (synops * 23.6 + spikes * 1.7 + updates * 81.0) / 1e3
model = float(sample_cost(r, "layered", PROFILES["loihi"])["energy_nj"][0])
print(f"sample 0 on Loihi: {by_hand:.3f} nJ by hand, {model:.3f} nJ by the cost model")
assert abs(by_hand - model) < 1e-6 * by_hand

# %% [markdown]
# Energy differs little between these runs: most synaptic operations are the input's events,
# the same for every execution, and the neuron updates (counted as neurons x timesteps, the
# same for every execution too) weigh heavily on Loihi and SpiNNaker 2. SENeCA is charged for
# synaptic operations only. Time is where the executions part: a layered timestep costs a
# barrier per layer, an asynchronous one a step per group of `F` spikes.

# %%
fig, axes = plt.subplots(1, len(chips), figsize=(11, 3.2))
labels = [f"{m}\n{e}" for m, e in runs]
for ax, chip in zip(axes, chips, strict=True):
    energy = [row["energy_nj"] for row in rows if row["chip"] == chip]
    ax.bar(range(len(energy)), energy, color=["tab:gray", "tab:blue"] * 2)
    ax.set_xticks(range(len(energy)), labels, fontsize=7)
    ax.set_title(chip)
axes[0].set_ylabel("energy per sample (nJ)")
plt.tight_layout()
plt.show()

# %% [markdown]
# Your own chip is a TOML file of the same constants (`--cost-profile chip.toml` on the
# command line, `asyncsnn.cost.load_profile` in Python): see
# [a profile of your own](../cost.md#a-profile-of-your-own).
