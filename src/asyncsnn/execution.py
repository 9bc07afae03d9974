"""``asyncsnn.run``: one entry point for both executions, and its result."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .asynchronous import run_async
from .hooks import Hook
from .kernels import check_backend
from .layered import run_layered
from .network import Network
from .rng import SampleRNG, sample_seeds
from .scheduling import Scheduler, get_scheduler
from .surrogate import get_surrogate

EXECUTIONS = ("layered", "async")


@dataclass
class RunResult:
    """What a run produced. Neurons are the populations' (not the input's), in network order.

    Attributes:
        spikes: (timesteps, batch, neurons) spikes per neuron per timestep (a count: with
            refractory dropout a neuron may fire more than once in a timestep).
        forward_steps: (timesteps, batch) forward steps each sample took (layered: the number
            of layers that send spikes).
        output_counts: (batch, outputs) output spikes summed over the run.
        membrane: (timesteps, batch, outputs) membrane of a non-spiking output, else ``None``.
        synops: (timesteps, batch) synaptic operations: delivered spikes times their fan-out
            (input events included).
        undelivered: (timesteps, batch) spikes dropped from the queue when a stop rule ended a
            sample's timestep.
        records: what monitors recorded, by name.
    """

    spikes: torch.Tensor
    forward_steps: torch.Tensor
    output_counts: torch.Tensor
    membrane: torch.Tensor | None
    synops: torch.Tensor
    undelivered: torch.Tensor
    network: Network = field(repr=False)
    records: dict = field(default_factory=dict)

    def population_spikes(self, name: str) -> torch.Tensor:
        """(timesteps, batch, *population shape) spikes of one population."""
        pop = self.network.population(name)
        start = pop.offset - self.network.n_input
        s = self.spikes[..., start : start + pop.size]
        return s.reshape(*s.shape[:2], *pop.shape)

    @property
    def spike_count(self) -> torch.Tensor:
        """(batch,) network spikes of each sample."""
        return self.spikes.sum((0, 2))

    @property
    def prediction(self) -> torch.Tensor:
        """(batch,) argmax of the output counts (or of the summed membrane for a non-spiking
        readout); ``-1`` where the maximum is tied."""
        score = self.output_counts if self.membrane is None else self.membrane.sum(0)
        score = score.detach()
        best = score.max(1, keepdim=True).values
        tied = (score == best).sum(1) > 1
        return torch.where(tied, -1, score.argmax(1))


def run(
    network: Network,
    x: torch.Tensor,
    *,
    dt: float,
    execution: str = "async",
    scheduler: str | Scheduler = "random",
    group_size: int = 8,
    seed: int | torch.Tensor | None = 0,
    hooks: Sequence[Hook] = (),
    prioritized_input: bool = True,
    refractory_dropout: float = 0.0,
    refractory_dropout_at_eval: bool = False,
    training: bool | None = None,
    surrogate=None,
    max_queued_per_neuron: int = 4,
    backend: str = "auto",
    recompute: bool = False,
) -> RunResult:
    """Run ``network`` on input ``x`` layered or asynchronously.

    Args:
        network: the :class:`Network`.
        x: input of shape (timesteps, batch, *input_shape): event counts per bin (or analogue
            currents), finite.
        dt: timestep length in seconds (> 0); the leak per timestep is ``exp(-dt / tau_m)``.
        execution: ``"async"`` or ``"layered"``.
        scheduler: policy name (``"random"``, ``"momentum"``, ``"fifo"``, ``"layered"``) or a
            :class:`Scheduler` instance.
        group_size: ``F``, spikes delivered per sample per forward step (>= 1).
        seed: int, or a (batch,) integer tensor of per-sample seeds.
        hooks: stop rules, interventions and monitors (see :mod:`asyncsnn.hooks`).
        prioritized_input: deliver a timestep's input at once (default) or queue it.
        refractory_dropout: probability that a spiking neuron is not made refractory; acts in
            training only unless ``refractory_dropout_at_eval``.
        training: whether training-only interventions act (default: ``network.training``).
        surrogate: surrogate gradient (``"arctan"`` default, ``"fast_sigmoid"`` or an
            instance); used when gradients are enabled and something requires them. Otherwise
            the run builds no graph (the inference path).
        max_queued_per_neuron: queue slots per neuron when refractory dropout acts.
        backend: ``"auto"`` (default) runs asynchronous execution, with or without gradients,
            through the compiled numba CPU kernel where it applies (see
            :mod:`asyncsnn.kernels`; the same spikes) and the PyTorch engine elsewhere;
            ``"torch"`` always runs the PyTorch engine; ``"numba"`` requires the kernel and
            raises a ``ValueError`` saying why where it cannot run.
        recompute: with gradients through the PyTorch engine (asynchronous execution on a
            GPU, or with a user's policy, hook or surrogate), keep only each timestep's
            input and membranes and recompute the timestep during the backward pass: memory
            then grows with timesteps, not with forward steps, for about one more forward
            pass of time. Policies and ``keep_spikes`` hooks must then be pure functions of
            what they are given (the built-in ones are); stop decisions are replayed, and
            monitors see each step once. The compiled CPU path always works so.

    >>> net = Network.sequential([torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)], threshold=0.3)
    >>> x = (torch.rand(20, 5, 4) < 0.3).float()
    >>> run(net, x, dt=1e-3, scheduler="momentum").spikes.shape
    torch.Size([20, 5, 5])
    """
    if not isinstance(network, Network):
        raise TypeError(f"network must be an asyncsnn.Network, got {type(network).__name__}")
    network.check_ready()
    if execution not in EXECUTIONS:
        raise ValueError(f"execution must be one of {EXECUTIONS}, got {execution!r}")
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    _check_input(network, x)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size (F) must be an int >= 1, got {group_size!r}")
    if not 0 <= refractory_dropout < 1:
        raise ValueError(f"refractory_dropout must be in [0, 1), got {refractory_dropout!r}")
    if not isinstance(max_queued_per_neuron, int) or max_queued_per_neuron < 1:
        raise ValueError(f"max_queued_per_neuron must be an int >= 1, got {max_queued_per_neuron}")
    hooks = list(hooks)
    for h in hooks:
        if not isinstance(h, Hook):
            raise TypeError(f"hooks must be asyncsnn.Hook instances, got {h!r}")
    check_backend(backend, execution)
    if not isinstance(recompute, bool):
        raise TypeError(f"recompute must be True or False, got {recompute!r}")
    training = network.training if training is None else bool(training)
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in network.parameters())
    )
    spike_fn = get_surrogate(surrogate) if needs_grad else None
    rng = SampleRNG(sample_seeds(seed, x.shape[1], x.device))
    if execution == "layered":
        bad = [type(h).__name__ for h in hooks if not h.layered_ok]
        if bad:
            raise ValueError(f"{bad} act on forward steps and need execution='async'")
        out = run_layered(
            network, x, dt=float(dt), rng=rng, hooks=hooks, spike_fn=spike_fn, training=training
        )
    else:
        policy = get_scheduler(scheduler)
        if policy.needs_potential and not prioritized_input:
            raise ValueError(
                f"the {policy.name!r} policy orders spikes by membrane potential, which input "
                "spikes do not have: use prioritized_input=True"
            )
        p = refractory_dropout if (training or refractory_dropout_at_eval) else 0.0
        out = run_async(
            network,
            x,
            dt=float(dt),
            scheduler=policy,
            group_size=group_size,
            rng=rng,
            hooks=hooks,
            prioritized_input=prioritized_input,
            refractory_dropout=p,
            spike_fn=spike_fn,
            training=training,
            max_queued_per_neuron=max_queued_per_neuron,
            backend=backend,
            recompute=recompute and spike_fn is not None,
        )
    return RunResult(network=network, **out)


def _check_input(network: Network, x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point tensor (event counts or currents), got {x.dtype}"
        )
    expected = network.input_shape
    if x.dim() != 2 + len(expected) or tuple(x.shape[2:]) != expected:
        raise ValueError(
            f"x must have shape (timesteps, batch, {', '.join(map(str, expected))}), got "
            f"{tuple(x.shape)}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x has no timesteps or no samples: shape {tuple(x.shape)}")
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    param = next(network.parameters(), None)
    if param is not None and x.dtype != param.dtype:
        raise TypeError(
            f"x is {x.dtype} but the network's parameters are {param.dtype}: convert one of "
            f"them (x.to({param.dtype}) or network.to({x.dtype}))"
        )
    dev = network.tau_m.device
    if x.device != dev:
        raise ValueError(f"x is on {x.device} but the network is on {dev}; move one of them")
