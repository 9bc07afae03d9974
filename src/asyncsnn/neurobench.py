"""NeuroBench for asyncsnn networks: a ``NeuroBenchModel`` wrapper and workload metrics that
read asyncsnn's own counters (docs/neurobench.md).

NeuroBench's hook-based counters do not see the compiled kernel, so these metrics read the
:class:`~asyncsnn.RunResult` of the wrapped run instead. Needs NeuroBench:
``pip install --no-deps neurobench==2.3.0 tqdm`` (and snntorch, which it imports).
"""

from __future__ import annotations

import torch

try:
    from neurobench.metrics.abstract import AccumulatedMetric
    from neurobench.models import NeuroBenchModel
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "asyncsnn.neurobench needs NeuroBench: pip install --no-deps neurobench==2.3.0 tqdm "
        "snntorch (--no-deps keeps the installed torch build)"
    ) from e

from .cost import Profile, get_profile, neuron_updates
from .execution import run
from .hooks import OutputTrace
from .metrics import aggregate, decision_latency
from .network import Network

__all__ = [
    "AsyncSNNModel",
    "DecisionLatency",
    "EffectiveACs",
    "EventMembraneUpdateCount",
    "MembraneUpdateCount",
    "SpikeActivationSparsity",
    "membrane_update_metric",
]


class AsyncSNNModel(NeuroBenchModel):
    """A :class:`~asyncsnn.Network` as a NeuroBench model.

    A batch is ``(batch, timesteps, *input)`` (NeuroBench's order); each batch runs
    ``asyncsnn.run`` with the given settings and ``seed``; the call returns the predictions
    ``(batch,)`` (ties are -1, wrong). ``decision_latency=True`` records an
    :class:`~asyncsnn.OutputTrace` (runs then use the reference engine).
    """

    def __init__(
        self,
        net,
        *,
        dt: float,
        execution: str = "async",
        scheduler="random",
        group_size: int = 8,
        seed: int = 0,
        decision_latency: bool = False,
        **settings,
    ) -> None:
        if not isinstance(net, Network):
            raise TypeError(
                f"AsyncSNNModel wraps an asyncsnn.Network, got {type(net).__name__}; wrap other "
                "torch modules with neurobench.models.TorchModel"
            )
        super().__init__()
        self.net = net
        self.net.eval()
        self.settings = dict(
            dt=dt, execution=execution, scheduler=scheduler, group_size=group_size, seed=seed
        )
        self.settings.update(settings)
        self.trace = decision_latency
        self.last_result = None

    def __call__(self, batch):
        hooks = [OutputTrace()] if self.trace else []
        with torch.no_grad():
            self.last_result = run(self.net, batch.transpose(0, 1), hooks=hooks, **self.settings)
        return self.last_result.prediction

    def __net__(self):
        return self.net


def _result(model):
    if not isinstance(model, AsyncSNNModel) or model.last_result is None:
        raise TypeError("this metric reads an AsyncSNNModel's run; wrap the network in one")
    return model.last_result


class EffectiveACs(AccumulatedMetric):
    """Accumulates per sample: delivered spikes times fan-out (``RunResult.synops``)."""

    def __init__(self):
        super().__init__(requires_hooks=False)
        self.reset()

    def reset(self):
        self.total, self.samples = 0.0, 0

    def __call__(self, model, preds, data):
        self.total += float(_result(model).synops.double().sum())
        self.samples += data[0].size(0)
        return self.compute()

    def compute(self):
        return self.total / self.samples if self.samples else 0.0


class SpikeActivationSparsity(AccumulatedMetric):
    """1 - (neuron-timesteps with a spike) / (neurons x timesteps), over all samples."""

    def __init__(self):
        super().__init__(requires_hooks=False)
        self.reset()

    def reset(self):
        self.active, self.total = 0, 0

    def __call__(self, model, preds, data):
        s = _result(model).spikes
        self.active += int(torch.count_nonzero(s))
        self.total += s.numel()
        return self.compute()

    def compute(self):
        return 1.0 - self.active / self.total if self.total else 0.0


class MembraneUpdateCount(AccumulatedMetric):
    """Membrane updates per sample under the update rule ``"timestep"`` of
    :mod:`asyncsnn.cost`: populations' neurons x timesteps, what a time-stepped chip updates,
    the same for every execution."""

    rule = "timestep"

    def __init__(self):
        super().__init__(requires_hooks=False)
        self.reset()

    def reset(self):
        self.total, self.samples = 0.0, 0

    def __call__(self, model, preds, data):
        self.total += float(neuron_updates(_result(model), self.rule).sum())
        self.samples += data[0].size(0)
        return self.compute()

    def compute(self):
        return self.total / self.samples if self.samples else 0.0


class EventMembraneUpdateCount(MembraneUpdateCount):
    """Membrane updates per sample under the update rule ``"event"``: the engine's own count
    (``RunResult.event_updates``: the neurons that received a non-zero current, once per
    forward step asynchronously, once per layer pass in layered execution)."""

    rule = "event"


def membrane_update_metric(profile: str | Profile) -> type[MembraneUpdateCount]:
    """The membrane-update metric that follows a cost profile's ``update_rule``:
    :class:`MembraneUpdateCount` (``"timestep"``) or :class:`EventMembraneUpdateCount`
    (``"event"``)."""
    rule = get_profile(profile).update_rule
    return EventMembraneUpdateCount if rule == "event" else MembraneUpdateCount


class DecisionLatency(AccumulatedMetric):
    """Decision latency (asyncsnn.metrics.decision_latency), aggregated as asyncsnn does."""

    def __init__(self):
        super().__init__(requires_hooks=False)
        self.reset()

    def reset(self):
        self.per = {"latency_steps": [], "latency_spikes": []}

    def __call__(self, model, preds, data):
        trace = _result(model).records.get("output_trace")
        if trace is None:
            raise ValueError("DecisionLatency needs AsyncSNNModel(..., decision_latency=True)")
        for k, v in decision_latency(trace, data[1]).items():
            self.per[k].append(v.cpu())
        return self.compute()

    def compute(self):
        if not self.per["latency_steps"]:
            return {}
        return aggregate({k: torch.cat(v) for k, v in self.per.items()})
