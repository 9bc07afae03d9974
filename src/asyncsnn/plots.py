"""PNG plots (matplotlib, without a display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def _pyplot():
    """What the plots use of pyplot (``subplots``, ``close``, ``cm``), without pyplot: each
    figure is a plain ``matplotlib.figure.Figure`` that ``savefig`` draws with Agg, so that
    writing a PNG never changes the backend of the caller's session (a notebook's figures
    keep showing after a training)."""
    from types import SimpleNamespace

    import matplotlib
    from matplotlib.figure import Figure

    def subplots(*args, figsize=None, **kwargs):
        fig = Figure(figsize=figsize)
        return fig, fig.subplots(*args, **kwargs)

    return SimpleNamespace(subplots=subplots, close=lambda fig: None, cm=matplotlib.cm)


def training_curves(lines: Sequence[dict], path: Path) -> None:
    """Loss and accuracy per epoch from the ``metrics.jsonl`` lines."""
    plt = _pyplot()
    epochs = [ln["epoch"] for ln in lines]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [ln["train_loss"] for ln in lines], marker="o")
    ax1.set(xlabel="epoch", ylabel="training loss")
    ax2.plot(epochs, [ln["train_accuracy"] for ln in lines], marker="o", label="train")
    ax2.plot(epochs, [ln["val_accuracy"] for ln in lines], marker="o", label="validation")
    ax2.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def budget_curves(curves: dict[str, tuple[Sequence[int], Sequence[float]]], path: Path) -> None:
    """Accuracy against a forward-step budget, one line per (model, execution)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if len(curves) > 10:  # the default cycle repeats after 10 colours
        ax.set_prop_cycle(color=plt.cm.tab20.colors[: len(curves)])
    for name, (budgets, acc) in curves.items():
        ax.plot(budgets, acc, label=name, marker=".", linewidth=1.2)
    ax.set(
        xlabel="forward-step budget per sample (early exit)", ylabel="test accuracy", ylim=(0, 1)
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def spikes_per_layer(bars: dict[str, Sequence[float]], layers: Sequence[str], path: Path) -> None:
    """Grouped bars: mean spikes per sample of each population, per (model, execution)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    n = len(bars)
    width = 0.8 / max(n, 1)
    for i, (name, values) in enumerate(bars.items()):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(layers))]
        ax.bar(xs, values, width=width, label=name)
    ax.set_xticks(range(len(layers)), layers)
    ax.set(ylabel="spikes per sample")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def raster(runs: dict[str, torch.Tensor], boundaries: Sequence[int], path: Path) -> None:
    """Spike rasters of one sample, one panel per execution; ``runs`` maps a title to that
    sample's spikes (timesteps, neurons); ``boundaries`` separates the populations."""
    plt = _pyplot()
    cols = min(len(runs), 2)
    rows = -(-len(runs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), sharey=True, squeeze=False)
    axes = list(axes.flat)
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    for ax, (title, spikes) in zip(axes, runs.items(), strict=False):
        t, n = torch.nonzero(spikes.detach().cpu() > 0, as_tuple=True)
        ax.scatter(t.numpy(), n.numpy(), s=2, marker="|", color="black")
        for b in boundaries:
            ax.axhline(b - 0.5, color="tab:red", linewidth=0.5)
        ax.set(title=f"{title}: {int(spikes.sum())} spikes", xlabel="timestep")
    for ax in axes[::cols]:
        ax.set(ylabel="neuron (network order)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency_histograms(samples: dict[str, Sequence[float]], path: Path, title: str = "") -> None:
    """Distributions of per-sample decision latencies (forward steps), one per model."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    values = [v for vs in samples.values() for v in vs]
    top = max(values) if values else 1.0
    bins = [top * j / 30 for j in range(31)]
    for name, vs in samples.items():
        ax.hist(vs, bins=bins, histtype="step", linewidth=1.5, label=f"{name} (n={len(vs)})")
    ax.set(xlabel="forward steps to a settled correct decision", ylabel="samples", title=title)
    if samples:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
