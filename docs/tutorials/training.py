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
# # Training through asynchrony
#
# A model trained layer by layer (BPTT behind the barrier) learned dynamics that the barrier
# provides. *Unlayered backprop* trains through a simulation of asynchronous execution
# instead: the forward pass delivers spikes in groups of `F` in the order of a scheduling
# policy, and the surrogate gradients flow back through every forward step. This tutorial
# trains one model each way on the digits (a few seconds each, on a fraction of the data) and
# compares them under layered and asynchronous execution: accuracy, spikes, and how soon
# each settles on its answer.

# %%
import matplotlib.pyplot as plt

from asyncsnn.evaluation import Execution, evaluate
from asyncsnn.training import TrainConfig, Trainer, load_run, load_test_split

# %% [markdown]
# ## Two trainings
#
# The same settings but one: `training="layered"` or `"unlayered"` (through asynchronous
# execution with the momentum policy and `F = 8`). `TrainConfig` validates every setting;
# `Trainer.fit` writes a run directory (settings, metrics per epoch, checkpoints) that
# `load_run` reads back, as the command line's `asyncsnn train` does.

# %%
settings = dict(
    dataset="digits",
    dt=0.03,
    hidden=(64,),
    epochs=4,
    batch_size=32,
    lr=2e-3,
    tau_m=20e-3,
    threshold=0.5,
    input_dropout=0.1,
    scheduler="momentum",
    group_size=8,
    limit_train=500,
    limit_test=300,
    seed=0,
)
models = {}
for training in ("layered", "unlayered"):
    Trainer(TrainConfig(training=training, **settings), f"runs/{training}", quiet=True).fit()
    models[training] = load_run(f"runs/{training}")  # (network, config, data facts)
    print(training, "trained:", models[training][0].extra_repr())

# %% [markdown]
# ## Under each execution
#
# `evaluate` runs a model on a split under one execution and returns per-sample metrics and
# their summary: accuracy, spikes, forward steps, and the *decision latency* (the forward
# steps after which the running prediction is right for good, over the samples it gets
# right).

# %%
executions = [Execution.parse(e) for e in ("layered", "async-random:8", "async-momentum:8")]
results = {}
print(f"{'model':<10}{'execution':<20}{'accuracy':>9}{'spikes':>8}{'steps/t':>8}{'latency':>8}")
for training, (net, cfg, _) in models.items():
    test = load_test_split(cfg)
    for how in executions:
        res = evaluate(net, test, cfg, how)
        results[training, how.label] = res
        s = res["summary"]
        print(
            f"{training:<10}{how.label:<20}{s['accuracy']:>9.3f}{s['spikes_per_sample']:>8.1f}"
            f"{s['forward_steps_per_timestep']:>8.2f}{s['latency_steps_median']:>8.0f}"
        )
        assert s["accuracy"] > 0.5

# %% [markdown]
# With these few seconds of training the figures move with the seed; the
# [demo](../getting-started.md#the-demo) trains for longer on the whole split, and the
# [results page](../results.md) says what the study's runs measured, with intervals.
# Typically the unlayered model spends fewer spikes, and under the policy it was trained
# with it settles sooner.
#
# An early exit after a budget of forward steps shows the same from another side: the
# accuracy of the running prediction after each number of forward steps.

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.5))
for (training, label), res in results.items():
    b = res["budget"]
    style = "-" if training == "unlayered" else "--"
    ax.plot(b["forward_steps"], b["accuracy"], style, label=f"{training}, {label}")
ax.set_xlabel("forward-step budget per sample (early exit)")
ax.set_ylabel("test accuracy")
ax.set_ylim(0, 1)
ax.legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## On the command line
#
# The same two trainings and the comparison:
#
# ```bash
# asyncsnn train --dataset digits --training layered --epochs 4 --out runs/layered
# asyncsnn train --dataset digits --training unlayered -F 8 --epochs 4 --out runs/unlayered
# asyncsnn compare runs/layered runs/unlayered --executions layered,async-random,async-momentum
# ```
#
# [Train unlayered](../how-to/train.md) lists the settings, resuming and the run directory;
# [fine-tuning](../how-to/fine-tune.md) starts from a layered model instead of from scratch.
