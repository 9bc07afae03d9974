"""``asyncsnn.run``: one entry point for both executions; it chooses the engine.

Layered execution runs :func:`asyncsnn.layered.run_layered`; asynchronous execution runs
the compiled kernel (:mod:`asyncsnn.kernels`) where it applies and the backend allows it,
else the PyTorch reference engine, :func:`asyncsnn.asynchronous.run_async`. Every engine
takes the same :class:`~asyncsnn.options.RunOptions` and returns a :class:`RunResult`.
"""

from __future__ import annotations

import torch

from . import kernels
from .asynchronous import run_async
from .layered import run_layered
from .network import Network
from .options import RunSettings, resolve
from .result import RunResult

__all__ = ["RunResult", "RunSettings", "run"]


def run(
    network: Network, x: torch.Tensor, settings: RunSettings | None = None, /, **overrides
) -> RunResult:
    """Run ``network`` on input ``x`` layered or asynchronously.

    Args:
        network: the :class:`Network`.
        x: input of shape (timesteps, batch, *input_shape): event counts per bin (or analogue
            currents), finite.
        settings: a :class:`~asyncsnn.options.RunSettings`, or none: then the keyword
            arguments give the settings (``dt`` is required; the others have defaults).
        **overrides: settings by name, applied over ``settings``: ``dt``, ``execution``
            (``"async"`` default or ``"layered"``), ``scheduler`` (``"random"`` default,
            ``"momentum"``, ``"fifo"``, ``"layered"`` or a :class:`Scheduler`),
            ``group_size`` (``F``, default 8), ``seed``, ``hooks``, ``prioritized_input``,
            ``refractory_dropout``, ``refractory_dropout_at_eval``, ``training``,
            ``surrogate``, ``max_queued_per_neuron``, ``backend`` (``"auto"`` default,
            ``"torch"``, ``"numba"``) and ``recompute``; each is described at
            :class:`~asyncsnn.options.RunSettings`. A name that is not a setting is a
            ``TypeError``.

    >>> net = Network.sequential([torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)], threshold=0.3)
    >>> x = (torch.rand(20, 5, 4) < 0.3).float()
    >>> run(net, x, dt=1e-3, scheduler="momentum").spikes.shape
    torch.Size([20, 5, 5])
    """
    settings = RunSettings.of(settings, overrides)
    if not isinstance(network, Network):
        raise TypeError(f"network must be an asyncsnn.Network, got {type(network).__name__}")
    network.check_ready()
    _check_input(network, x)
    options = resolve(network, x, settings)
    if options.execution == "layered":
        result, name = run_layered(network, x, options), "layered"
    else:
        engine = kernels.engine_for(network, x, options)
        if engine is None:
            result, name = run_async(network, x, options), "torch"
        else:
            result, name = engine(network, x, options), kernels.engine_name(engine)
    result.engine = name
    return result


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
