"""``asyncsnn.run``: one entry point for both executions; it chooses the engine.

Layered execution runs :func:`asyncsnn.layered.run_layered`; asynchronous execution runs
the compiled kernel (:mod:`asyncsnn.kernels`) where it applies and the backend allows it,
else the PyTorch reference engine, :func:`asyncsnn.asynchronous.run_async`. Every engine
takes the same :class:`~asyncsnn.options.RunOptions` and returns a :class:`RunResult`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import kernels
from .asynchronous import run_async
from .hooks import Hook
from .layered import run_layered
from .network import Network
from .options import resolve
from .result import RunResult
from .scheduling import Scheduler

__all__ = ["RunResult", "run"]


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
    _check_input(network, x)
    options = resolve(
        network,
        x,
        dt=dt,
        execution=execution,
        scheduler=scheduler,
        group_size=group_size,
        seed=seed,
        hooks=hooks,
        prioritized_input=prioritized_input,
        refractory_dropout=refractory_dropout,
        refractory_dropout_at_eval=refractory_dropout_at_eval,
        training=training,
        surrogate=surrogate,
        max_queued_per_neuron=max_queued_per_neuron,
        backend=backend,
        recompute=recompute,
    )
    if options.execution == "layered":
        return run_layered(network, x, options)
    engine = kernels.engine_for(network, x, options) or run_async
    return engine(network, x, options)


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
