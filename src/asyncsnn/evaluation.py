"""Evaluate a trained network under a chosen execution: every metric of ``docs/semantics.md``
(metrics)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cost import Profile, get_profile, sample_cost
from .hooks import OutputTrace, SpikeEvents, StopOnOutputSpike
from .metrics import accuracy_at_budgets, aggregate, sample_metrics
from .network import Network
from .scheduling import Momentum, get_scheduler
from .training import Split, TrainConfig, batch_seed, forward


@dataclass(frozen=True)
class Execution:
    """How to run a model: ``layered``, or ``async`` with a policy and a group size."""

    execution: str = "async"
    scheduler: str = "momentum"
    group_size: int = 8

    def __post_init__(self) -> None:
        if self.execution not in ("layered", "async"):
            raise ValueError(f"an execution is 'layered' or 'async', got {self.execution!r}")
        get_scheduler(self.scheduler)  # raises for an unknown policy
        g = self.group_size
        if isinstance(g, bool) or not isinstance(g, int) or g < 1:
            raise ValueError(f"the group size F must be an int >= 1, got {g!r}")

    @property
    def label(self) -> str:
        if self.execution == "layered":
            return "layered"
        return f"async-{self.scheduler} F={self.group_size}"

    @classmethod
    def parse(cls, text: str) -> Execution:
        """``layered``, ``async-momentum``, ``async-random:4`` (policy and F)."""
        text = text.strip()
        if text == "layered":
            return cls("layered")
        if not text.startswith("async"):
            raise ValueError(f"an execution is 'layered' or 'async-POLICY[:F]', got {text!r}")
        rest = text[len("async") :].lstrip("-")
        policy, _, f = rest.partition(":")
        policy = policy or "momentum"
        try:
            group_size = int(f) if f else 8
        except ValueError:
            raise ValueError(f"F in {text!r} must be an int >= 1, got {f!r}") from None
        return cls("async", policy, group_size)


def evaluate(
    net: Network,
    split: Split,
    cfg: TrainConfig,
    how: Execution,
    *,
    batch_size: int = 128,
    seed: int = 0,
    n_budgets: int = 30,
    stop_on_first_output: bool = True,
    cost_profile: str | Profile = "loihi",
    keep_results: int = 0,
    backend: str = "auto",
    progress: bool = False,
) -> dict:
    """Per-sample and aggregated metrics of ``net`` on ``split`` under ``how``, on the device
    ``net`` is on.

        Returns a dict with ``summary`` (aggregates), ``per_sample`` (tensors), ``budget``
        (forward-step budgets and the accuracy at each), ``spikes_per_population`` and, with
        ``stop_on_first_output``, ``stop_on_first_output`` (aggregates of a run in which each
        sample ends a timestep at its first output spike).

        ``cost_profile`` (a :class:`~asyncsnn.cost.Profile`, a built-in profile's name or a
        ``.toml`` file): the summary's ``energy_nj`` and ``time_us`` per sample and
        ``latency_time_us_mean``/``_median`` (time to decision) under it (docs/cost.md); the
        profile's name is ``cost_profile``.

        ``keep_results``: also return, under ``results``, the runs (:class:`RunResult`, batch by
        batch, each with a :class:`~asyncsnn.hooks.SpikeEvents` monitor's records) of the batches
        that hold the first ``keep_results`` samples, and the ``batch_size`` (what
        :func:`asyncsnn.spikelog.save_spikes` writes).

        ``backend``: that of :func:`asyncsnn.run`; ``"auto"`` runs the compiled kernel wherever
        it applies (it gives the monitors' records too, so every figure is the reference
        engine's to the last digit), and ``engine`` in the result names the engines that ran
        (``RunResult.engine``). ``progress``: a progress bar over the batches (on a terminal).
    """
    profile = get_profile(cost_profile)
    scheduler = Momentum(cfg.lambda_ms) if how.scheduler == "momentum" else how.scheduler
    options = {"execution": how.execution, "scheduler": scheduler, "group_size": how.group_size}
    options["backend"] = backend
    per: dict[str, list] = {}
    traces, labels, pops, kept, engines = [], [], [], [], set()
    net.eval()
    device = next(net.parameters()).device  # the batches go where the network is
    with torch.no_grad():
        for i, (x, y) in enumerate(_batches(split, batch_size, progress, how.label)):
            x, y = x.to(device), y.to(device)
            s = batch_seed(seed, 0xE7A1, i)
            keep = i * batch_size < keep_results
            hooks = [OutputTrace(), SpikeEvents()] if keep else [OutputTrace()]
            r = forward(net, x, cfg, training=False, seed=s, hooks=hooks, **options)
            engines.add(r.engine)
            if keep:
                kept.append(r)
            metrics = sample_metrics(r, y)
            latency = metrics if "latency_steps" in metrics else None
            metrics.update(sample_cost(r, how.execution, profile, latency))
            for k, v in metrics.items():
                per.setdefault(k, []).append(v.cpu())
            traces.append(r.records["output_trace"])
            labels.append(y)
            pops.append(
                torch.stack(
                    [r.population_spikes(p.name).flatten(2).sum((0, 2)) for p in net.populations], 1
                )
            )
    per_sample = {k: torch.cat(v) for k, v in per.items()}
    summary = aggregate(per_sample)
    max_steps = int(max(int(t["forward_steps"][-1].max()) for t in traces))
    budgets = sorted({round(max_steps * j / (n_budgets - 1)) for j in range(n_budgets)})
    if net.output.spiking:
        acc = sum(
            accuracy_at_budgets(t, y, budgets) * len(y) for t, y in zip(traces, labels, strict=True)
        )
        budget = {"forward_steps": budgets, "accuracy": (acc / len(split)).tolist()}
    else:
        budget = {"forward_steps": [], "accuracy": []}
    out = {
        "execution": how.label,
        "cost_profile": profile.name,
        "summary": summary,
        "per_sample": per_sample,
        "budget": budget,
        "spikes_per_population": dict(
            zip(
                [p.name for p in net.populations],
                torch.cat(pops).double().mean(0).tolist(),
                strict=True,
            )
        ),
    }
    if keep_results:
        out["results"], out["batch_size"] = kept, batch_size
    if stop_on_first_output and how.execution == "async" and net.output.spiking:
        per_stop: dict[str, list] = {}
        with torch.no_grad():
            for i, (x, y) in enumerate(split.batches(batch_size)):
                r = forward(
                    net,
                    x.to(device),
                    cfg,
                    training=False,
                    seed=batch_seed(seed, 0xE7A1, i),
                    hooks=[StopOnOutputSpike(0)],
                    **options,
                )
                engines.add(r.engine)
                for k, v in sample_metrics(r, y).items():
                    per_stop.setdefault(k, []).append(v.cpu())
        out["stop_on_first_output"] = aggregate({k: torch.cat(v) for k, v in per_stop.items()})
    out["engine"] = "+".join(sorted(engines))
    return out


def _batches(split: Split, batch_size: int, progress: bool, label: str):
    """``split``'s batches in order, with a progress bar where asked (and on a terminal)."""
    batches = split.batches(batch_size)
    if not progress:
        return batches
    from tqdm import tqdm

    total = -(-len(split) // batch_size)
    return tqdm(batches, total=total, desc=f"evaluating {label}", leave=False, disable=None)
