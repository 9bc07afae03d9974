"""The options of one run, validated once by :func:`asyncsnn.run` and read by every engine."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .hooks import Hook
from .network import Network
from .rng import SampleRNG, sample_seeds
from .scheduling import Scheduler, get_scheduler
from .surrogate import get_surrogate

EXECUTIONS = ("layered", "async")
BACKENDS = ("auto", "torch", "numba")


@dataclass(frozen=True)
class RunOptions:
    """How a run goes, resolved from the arguments of :func:`asyncsnn.run`.

    Attributes:
        dt: timestep length in seconds.
        execution: ``"layered"`` or ``"async"``.
        scheduler: the policy (asynchronous execution).
        group_size: ``F``, spikes delivered per sample per forward step.
        rng: the per-sample random streams.
        hooks: stop rules, interventions and monitors.
        prioritized_input: the input of a timestep is delivered at once (else queued).
        refractory_dropout: the refractory dropout that acts in this run (0 where it does
            not: at evaluation, unless asked for).
        spike_fn: the surrogate spike function where gradients are required, else ``None``
            (the run then builds no graph).
        training: whether training-only interventions act.
        max_queued_per_neuron: queue places per neuron where refractory dropout acts.
        backend: ``"auto"``, ``"torch"`` or ``"numba"``.
        recompute: the PyTorch engine recomputes each timestep in the backward pass.
    """

    dt: float
    execution: str
    scheduler: Scheduler
    group_size: int
    rng: SampleRNG
    hooks: tuple[Hook, ...]
    prioritized_input: bool
    refractory_dropout: float
    spike_fn: Callable[[torch.Tensor], torch.Tensor] | None
    training: bool
    max_queued_per_neuron: int
    backend: str
    recompute: bool

    @property
    def slots(self) -> int:
        """Queue places per neuron: one, unless refractory dropout lets a neuron fire again
        before its spike was delivered."""
        return self.max_queued_per_neuron if self.refractory_dropout > 0 else 1


def resolve(
    network: Network,
    x: torch.Tensor,
    *,
    dt: float,
    execution: str,
    scheduler: str | Scheduler,
    group_size: int,
    seed,
    hooks: Sequence[Hook],
    prioritized_input: bool,
    refractory_dropout: float,
    refractory_dropout_at_eval: bool,
    training: bool | None,
    surrogate,
    max_queued_per_neuron: int,
    backend: str,
    recompute: bool,
) -> RunOptions:
    """Validate the arguments of :func:`asyncsnn.run` (``x`` already checked) into options."""
    if execution not in EXECUTIONS:
        raise ValueError(f"execution must be one of {EXECUTIONS}, got {execution!r}")
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size (F) must be an int >= 1, got {group_size!r}")
    if not 0 <= refractory_dropout < 1:
        raise ValueError(f"refractory_dropout must be in [0, 1), got {refractory_dropout!r}")
    if not isinstance(max_queued_per_neuron, int) or max_queued_per_neuron < 1:
        raise ValueError(f"max_queued_per_neuron must be an int >= 1, got {max_queued_per_neuron}")
    hooks = tuple(hooks)
    for h in hooks:
        if not isinstance(h, Hook):
            raise TypeError(f"hooks must be asyncsnn.Hook instances, got {h!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "numba" and execution != "async":
        raise ValueError(
            f"backend='numba' runs asynchronous execution only, not execution={execution!r}; "
            "use backend='auto' or 'torch'"
        )
    if not isinstance(recompute, bool):
        raise TypeError(f"recompute must be True or False, got {recompute!r}")
    training = network.training if training is None else bool(training)
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in network.parameters())
    )
    policy = get_scheduler(scheduler)
    if execution == "layered":
        bad = [type(h).__name__ for h in hooks if not h.layered_ok]
        if bad:
            raise ValueError(f"{bad} act on forward steps and need execution='async'")
    elif policy.needs_potential and not prioritized_input:
        raise ValueError(
            f"the {policy.name!r} policy orders spikes by membrane potential, which input "
            "spikes do not have: use prioritized_input=True"
        )
    spike_fn = get_surrogate(surrogate) if needs_grad else None
    return RunOptions(
        dt=float(dt),
        execution=execution,
        scheduler=policy,
        group_size=group_size,
        rng=SampleRNG(sample_seeds(seed, x.shape[1], x.device)),
        hooks=hooks,
        prioritized_input=bool(prioritized_input),
        refractory_dropout=refractory_dropout if (training or refractory_dropout_at_eval) else 0.0,
        spike_fn=spike_fn,
        training=training,
        max_queued_per_neuron=max_queued_per_neuron,
        backend=backend,
        recompute=recompute and spike_fn is not None,
    )
