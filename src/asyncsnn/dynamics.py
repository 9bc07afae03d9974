r"""Leaky integrate-and-fire dynamics shared by both executions.

Each function is a pure step on explicit state (membrane ``v``, refractory mask): the layered
and the asynchronous engine call the same functions and differ only in *when* currents arrive.

Per timestep of length ``dt`` (seconds), with :math:`\beta = e^{-dt/\tau_m}`:

.. math::
    V \leftarrow \beta V \quad\text{(once, at the start of the timestep)}

    V \leftarrow V + I \quad\text{(each delivery, unless refractory)}

    S = H(V - \theta) \text{ (strict)},\qquad V \leftarrow 0 \text{ where } S = 1
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def decay_factor(dt: float, tau_m: torch.Tensor) -> torch.Tensor:
    r"""Per-neuron leak :math:`\beta = \exp(-dt/\tau_m)`; ``dt`` and ``tau_m`` in seconds."""
    return torch.exp(-dt / tau_m)


def leak(v: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Start-of-timestep leak ``V <- beta * V``."""
    return v * beta


def integrate(
    v: torch.Tensor, current: torch.Tensor, refractory: torch.Tensor | None = None
) -> torch.Tensor:
    """``V <- V + I``; refractory neurons ignore their input."""
    if refractory is not None:
        current = current.masked_fill(refractory, 0.0)
    return v + current


def fire(
    v: torch.Tensor,
    threshold: torch.Tensor,
    checked: torch.Tensor | None,
    spike_fn: Callable[[torch.Tensor], torch.Tensor] | None,
) -> torch.Tensor:
    """Spikes ``H(V - theta)`` (strict) of the neurons in ``checked`` (all if ``None``).

    With ``spike_fn`` (a surrogate) the result carries surrogate gradients; with ``None`` it is
    a plain float tensor of zeros and ones.
    """
    if spike_fn is None:
        z = v > threshold
        if checked is not None:
            z &= checked
        return z.to(v.dtype)
    z = spike_fn(v - threshold)
    if checked is not None:
        z = z * checked.to(v.dtype)
    return z


def reset_to_zero(v: torch.Tensor, fired: torch.Tensor) -> torch.Tensor:
    """``V <- 0`` where a neuron fired (the reset itself passes no gradient)."""
    return v.masked_fill(fired, 0.0)
