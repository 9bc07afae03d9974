"""The settings of one run, as a caller chooses them (:class:`RunSettings`), and the options
that every engine reads (:class:`RunOptions`), validated once by :func:`resolve`."""

from __future__ import annotations

import dataclasses
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
#: what a neuron's repeated threshold checks in one timestep contribute to the backward pass
#: (docs/semantics.md, section 8.8)
SURROGATE_CHECKS = ("every", "last", "firing")
BACKENDS = ("auto", "torch", "numba", "triton")


@dataclass(frozen=True)
class RunSettings:
    """What the caller of :func:`asyncsnn.run` chooses: every setting of a run and its default,
    defined here once (``run(net, x, dt=1e-3, scheduler="momentum")`` fills one in).

    Attributes:
        dt: timestep length in seconds (> 0); the leak per timestep is ``exp(-dt / tau_m)``.
        execution: ``"async"`` or ``"layered"``.
        scheduler: policy name (``"random"``, ``"momentum"``, ``"fifo"``, ``"layered"``) or a
            :class:`~asyncsnn.scheduling.Scheduler` instance.
        group_size: ``F``, spikes delivered per sample per forward step (>= 1).
        seed: int, or a (batch,) integer tensor of per-sample seeds.
        hooks: stop rules, interventions and monitors (see :mod:`asyncsnn.hooks`).
        prioritized_input: deliver a timestep's input at once (default) or queue it.
        refractory_dropout: probability that a spiking neuron is not made refractory; acts in
            training only unless ``refractory_dropout_at_eval``.
        refractory_dropout_at_eval: let refractory dropout act outside training too.
        training: whether training-only interventions act (default: ``network.training``).
        surrogate: surrogate gradient (``"arctan"`` default, ``"fast_sigmoid"`` or an
            instance); used when gradients are enabled and something requires them. Otherwise
            the run builds no graph (the inference path).
        max_queued_per_neuron: queue places per neuron when refractory dropout acts.
        backend: ``"auto"`` (default) runs asynchronous execution, with or without gradients,
            through a compiled kernel where one applies (see :mod:`asyncsnn.kernels`; the
            same spikes): the numba kernel for CPU tensors, the Triton kernel for CUDA
            tensors; the PyTorch engine elsewhere. ``"torch"`` always runs the PyTorch
            engine; ``"numba"`` and ``"triton"`` require that kernel and raise a
            ``ValueError`` saying why where it cannot run.
        recompute: with gradients through the PyTorch engine (asynchronous execution on a
            GPU, or with a user's policy, hook or surrogate), keep only each timestep's
            input and membranes and recompute the timestep during the backward pass: memory
            then grows with timesteps, not with forward steps, for about one more forward
            pass of time. Policies and ``keep_spikes`` hooks must then be pure functions of
            what they are given (the built-in ones are); stop decisions are replayed, and
            monitors see each step once. The compiled CPU path always works so.
        silent_gradients: with gradients, also pass surrogate gradients through the neurons
            that did not fire, as layered BPTT does: a check that does not fire sends a
            would-be spike of value 0, carrying the surrogate's gradient, to its targets with
            the next forward step; a neuron not checked since its last input gets a check of
            value 0 at the end of the timestep (docs/semantics.md, section 8.7). It changes
            no membrane, spike or count and costs the forward pass nothing that grows with
            the network; the backward pass pays a sum over the fan-out of each such spike.
        surrogate_checks: what a neuron's repeated threshold checks in one timestep
            contribute to the backward pass: ``"every"`` check its surrogate gradient (the
            default), only the ``"last"`` check of the timestep, or the ``"firing"`` checks
            (those that fired, else the last one); docs/semantics.md, section 8.8.
    """

    dt: float
    execution: str = "async"
    scheduler: str | Scheduler = "random"
    group_size: int = 8
    seed: int | torch.Tensor | None = 0
    hooks: Sequence[Hook] = ()
    prioritized_input: bool = True
    refractory_dropout: float = 0.0
    refractory_dropout_at_eval: bool = False
    training: bool | None = None
    surrogate: object = None
    max_queued_per_neuron: int = 4
    backend: str = "auto"
    recompute: bool = False
    silent_gradients: bool = False
    surrogate_checks: str = "every"

    @classmethod
    def of(cls, settings: RunSettings | None, overrides: dict) -> RunSettings:
        """``settings`` (or the defaults) with ``overrides`` (setting names) applied; a name
        that is not a setting, or a missing ``dt``, is a ``TypeError`` that says so."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown run setting(s) {unknown}; the settings are {sorted(names)}")
        if settings is None:
            if "dt" not in overrides:
                raise TypeError("a run needs dt, the timestep length in seconds (dt=1e-3)")
            return cls(**overrides)
        if not isinstance(settings, cls):
            raise TypeError(f"settings must be a RunSettings, got {type(settings).__name__}")
        return dataclasses.replace(settings, **overrides) if overrides else settings


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
        backend: ``"auto"``, ``"torch"``, ``"numba"`` or ``"triton"``.
        recompute: the PyTorch engine recomputes each timestep in the backward pass.
        silent_gradients: surrogate gradients also pass through the neurons that did not fire
            (only where gradients are required).
        surrogate_checks: ``"every"``, ``"last"`` or ``"firing"``: which of a neuron's checks
            in a timestep pass their surrogate gradient (only where gradients are required;
            ``"every"`` otherwise).
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
    silent_gradients: bool = False
    surrogate_checks: str = "every"

    @property
    def slots(self) -> int:
        """Queue places per neuron: one, unless refractory dropout lets a neuron fire again
        before its spike was delivered."""
        return self.max_queued_per_neuron if self.refractory_dropout > 0 else 1


def resolve(network: Network, x: torch.Tensor, settings: RunSettings) -> RunOptions:
    """Validate the settings of a run of ``network`` on ``x`` (``x`` already checked) into the
    options that the engines read."""
    s = settings
    if s.execution not in EXECUTIONS:
        raise ValueError(f"execution must be one of {EXECUTIONS}, got {s.execution!r}")
    if (
        isinstance(s.dt, bool)
        or not isinstance(s.dt, (int, float))
        or not math.isfinite(s.dt)
        or s.dt <= 0
    ):
        raise ValueError(f"dt must be a positive number of seconds, got {s.dt!r}")
    if isinstance(s.group_size, bool) or not isinstance(s.group_size, int) or s.group_size < 1:
        raise ValueError(f"group_size (F) must be an int >= 1, got {s.group_size!r}")
    if not 0 <= s.refractory_dropout < 1:
        raise ValueError(f"refractory_dropout must be in [0, 1), got {s.refractory_dropout!r}")
    if not isinstance(s.max_queued_per_neuron, int) or s.max_queued_per_neuron < 1:
        raise ValueError(
            f"max_queued_per_neuron must be an int >= 1, got {s.max_queued_per_neuron}"
        )
    hooks = tuple(s.hooks)
    for h in hooks:
        if not isinstance(h, Hook):
            raise TypeError(f"hooks must be asyncsnn.Hook instances, got {h!r}")
    if s.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {s.backend!r}")
    if s.backend in ("numba", "triton") and s.execution != "async":
        raise ValueError(
            f"backend={s.backend!r} runs asynchronous execution only, not "
            f"execution={s.execution!r}; use backend='auto' or 'torch'"
        )
    for name in ("recompute", "silent_gradients"):
        if not isinstance(getattr(s, name), bool):
            raise TypeError(f"{name} must be True or False, got {getattr(s, name)!r}")
    if s.surrogate_checks not in SURROGATE_CHECKS:
        raise ValueError(
            f"surrogate_checks must be one of {SURROGATE_CHECKS}, got {s.surrogate_checks!r}"
        )
    training = network.training if s.training is None else bool(s.training)
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in network.parameters())
    )
    policy = get_scheduler(s.scheduler)
    if s.execution == "layered":
        bad = [type(h).__name__ for h in hooks if not h.layered_ok]
        if bad:
            raise ValueError(f"{bad} act on forward steps and need execution='async'")
    elif policy.needs_potential and not s.prioritized_input:
        raise ValueError(
            f"the {policy.name!r} policy orders spikes by membrane potential, which input "
            "spikes do not have: use prioritized_input=True"
        )
    spike_fn = get_surrogate(s.surrogate) if needs_grad else None
    return RunOptions(
        dt=float(s.dt),
        execution=s.execution,
        scheduler=policy,
        group_size=s.group_size,
        rng=SampleRNG(sample_seeds(s.seed, x.shape[1], x.device)),
        hooks=hooks,
        prioritized_input=bool(s.prioritized_input),
        refractory_dropout=s.refractory_dropout
        if (training or s.refractory_dropout_at_eval)
        else 0.0,
        spike_fn=spike_fn,
        training=training,
        max_queued_per_neuron=s.max_queued_per_neuron,
        backend=s.backend,
        recompute=s.recompute and spike_fn is not None,
        silent_gradients=s.silent_gradients and spike_fn is not None,
        surrogate_checks=s.surrogate_checks if spike_fn is not None else "every",
    )
