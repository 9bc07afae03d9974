"""Metrics of a run, per sample and aggregated (accuracy, spikes, SynOps, latency).

Per sample:

- ``correct``: the argmax of the output counts (of the summed membrane for a membrane
  readout) is the label; a tie counts as wrong;
- ``spikes``: network spikes; ``spike_density``: spikes / (neurons x timesteps);
- ``synops``: synaptic operations, delivered spikes times their fan-out, the input's events
  included (a bin of ``k`` events is ``k``; :func:`asyncsnn.result.input_synops`);
- ``forward_steps``: forward steps per timestep (the asynchronous depth used);
- ``latency_steps`` / ``latency_spikes``: the forward steps (and network spikes) after which
  the running prediction becomes correct and stays correct to the end of the sample (NaN for
  a sample whose final prediction is wrong); needs an :class:`~asyncsnn.OutputTrace`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .result import RunResult, predict

__all__ = ["accuracy_at_budgets", "aggregate", "decision_latency", "predict", "sample_metrics"]


def sample_metrics(result: RunResult, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample metrics of one run (see the module docstring); all tensors of shape (batch,)."""
    labels = labels.to(result.spikes.device)
    spikes = result.spikes.detach()
    T, _, n = spikes.shape
    count = spikes.sum((0, 2))
    out = {
        "correct": (result.prediction == labels).float(),
        "spikes": count,
        "spike_density": count / (n * T),
        "synops": result.synops.detach().sum(0).float(),
        "forward_steps": result.forward_steps.float().mean(0),
    }
    trace = result.records.get("output_trace")
    if trace is not None and result.membrane is None:
        out.update(decision_latency(trace, labels))
    return out


def settled_rows(counts: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(R, B) bool: the prediction from ``counts`` (R, B, outputs) equals ``target`` (B,) at
    the row and at every later row."""
    hit = predict(counts) == target.to(counts.device)[None, :]
    return torch.flip(torch.cumprod(torch.flip(hit, [0]).long(), 0), [0]).bool()


def decision_latency(trace: dict, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Forward steps and network spikes after which the prediction is correct for good."""
    settled = settled_rows(trace["counts"], labels)  # correct at r and at every later row
    ok = settled[-1]
    first = settled.long().argmax(0)  # first settled row (0 where never: masked below)
    steps = trace["forward_steps"].gather(0, first[None]).squeeze(0).float()
    spikes = trace["network_spikes"].gather(0, first[None]).squeeze(0).float()
    nan = torch.tensor(float("nan"), device=steps.device)
    return {
        "latency_steps": torch.where(ok, steps, nan),
        "latency_spikes": torch.where(ok, spikes, nan),
    }


def accuracy_at_budgets(trace: dict, labels: torch.Tensor, budgets: Sequence[int]):
    """Accuracy when each sample stops right after its ``K``-th forward step, for each budget.

    A sample that finishes with fewer steps keeps its final prediction. Returns a tensor of
    shape (len(budgets),).
    """
    steps = trace["forward_steps"]  # (R, B)
    pred = predict(trace["counts"])  # (R, B)
    labels = labels.to(pred.device)
    last = steps.shape[0] - 1
    acc = []
    for k in budgets:
        reached = steps >= k
        row = torch.where(reached.any(0), reached.long().argmax(0), last)
        acc.append((pred.gather(0, row[None])[0] == labels).float().mean())
    return torch.stack(acc) if acc else torch.zeros(0)


def aggregate(per_sample: dict[str, torch.Tensor]) -> dict[str, float]:
    """Means over samples (latencies over the samples that settle on the right answer)."""
    out = {}
    names = {
        "correct": "accuracy",
        "spikes": "spikes_per_sample",
        "synops": "synops_per_sample",
        "forward_steps": "forward_steps_per_timestep",
    }
    for key, value in per_sample.items():
        value = value.double()
        if key.startswith("latency"):
            ok = ~torch.isnan(value)
            out[f"{key}_mean"] = float(value[ok].mean()) if ok.any() else math.nan
            out[f"{key}_median"] = float(value[ok].median()) if ok.any() else math.nan
            if key == "latency_steps":
                out["settled_fraction"] = float(ok.double().mean())
        else:
            out[names.get(key, key)] = float(value.mean())
    return out
