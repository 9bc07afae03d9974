r"""The neuron model: leaky integrate-and-fire, as pure phase functions on explicit state.

Per timestep of length ``dt`` (seconds), with :math:`\beta = e^{-dt/\tau_m}`
(docs/semantics.md, section 2):

.. math::
    V \leftarrow \beta V \quad\text{(once, at the start of the timestep)}

    V \leftarrow V + I \quad\text{(each delivery; refractory neurons receive nothing)}

    S = H(V - \theta) \text{ (strict)},\qquad V \leftarrow 0 \text{ where } S = 1

Every engine runs these phases: the layered engine and the reference asynchronous engine call
the functions below, and the compiled kernel calls their numba twins in
:mod:`asyncsnn.kernels.lif` (forward pass, replay and adjoint alike). A population declares
its model (:attr:`asyncsnn.network.Population.neuron`); an engine that does not know a
model refuses it or, for ``backend="auto"``, leaves it to the reference engine.

>>> v = leak(torch.tensor([1.0, 0.5]), torch.tensor([0.5, 0.5]))
>>> reset(v, crossed(integrate(v, torch.tensor([0.0, 0.3])), torch.tensor([0.5, 0.5])))
tensor([0.5000, 0.0000])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


def decay_factor(dt: float, tau_m: torch.Tensor) -> torch.Tensor:
    r"""Per-neuron leak :math:`\beta = \exp(-dt/\tau_m)`; ``dt`` and ``tau_m`` in seconds."""
    return torch.exp(-dt / tau_m)


def leak(v: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Start-of-timestep leak ``V <- beta * V``."""
    return v * beta


def integrate(v: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """``V <- V + I`` (the engine has zeroed the current of refractory neurons)."""
    return v + current


def crossed(v: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Whether ``V > theta`` (strict), as a bool mask."""
    return v > threshold


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
        z = crossed(v, threshold)
        if checked is not None:
            z &= checked
        return z.to(v.dtype)
    z = spike_fn(v - threshold)
    if checked is not None:
        z = z * checked.to(v.dtype)
    return z


def reset(v: torch.Tensor, fired: torch.Tensor) -> torch.Tensor:
    """``V <- 0`` where a neuron fired (the reset itself passes no gradient)."""
    return v.masked_fill(fired, 0.0)


@dataclass(frozen=True)
class NeuronModel:
    """A neuron model: its name and its phase functions (the engines call nothing else)."""

    name: str
    leak: Callable = leak
    integrate: Callable = integrate
    crossed: Callable = crossed
    fire: Callable = fire
    reset: Callable = reset


#: the leaky integrate-and-fire neuron with reset to zero (every population's default)
LIF = NeuronModel("lif")
