r"""The neuron model: leaky integrate-and-fire, as pure phase functions on explicit state.

Per timestep of length ``dt`` (seconds), with :math:`\beta = e^{-dt/\tau_m}`
(docs/semantics.md, section 2):

.. math::
    V \leftarrow \beta V \quad\text{(once, at the start of the timestep)}

    V \leftarrow V + c \quad\text{(each delivery of a current } c\text{; refractory neurons
    receive nothing)}

    S = H(V - \theta) \text{ (strict)},\qquad V \leftarrow 0 \text{ (reset "zero") or }
    V \leftarrow V - \theta \text{ (reset "subtract") where } S = 1

Two variants are parameters of every neuron, not separate models: the reset (``"zero"`` or
``"subtract"``, per population) and a synaptic current (*current-based* LIF, ``tau_syn``
per neuron, :math:`\alpha = e^{-dt/\tau_{syn}}`). A current-based neuron keeps a current
:math:`I`, never reset: :math:`I \leftarrow \alpha I` at the start of a timestep, every
delivered current joins :math:`I` (refractory or not) and reaches :math:`V` as above; the
carried current :math:`\alpha I` reaches :math:`V` with the input. ``tau_syn = 0`` (the
default) is :math:`\alpha = 0`: no current is carried, the plain LIF.

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


def decay_factor(dt: float, tau: torch.Tensor) -> torch.Tensor:
    r"""Per-neuron decay :math:`\exp(-dt/\tau)` of a membrane (:math:`\beta`, ``tau_m``) or
    a synaptic current (:math:`\alpha`, ``tau_syn``); ``dt`` and ``tau`` in seconds. A
    ``tau`` of 0 gives 0 (no synaptic current is carried)."""
    return torch.exp(-dt / tau)


def leak(v: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Start-of-timestep leak ``V <- beta * V``."""
    return v * beta


def integrate(v: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """``V <- V + c`` (the engine has zeroed the current of refractory neurons); also a
    current-based neuron's ``I <- I + c``."""
    return v + current


def decay_current(i: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Start-of-timestep decay of the synaptic current ``I <- alpha * I``."""
    return i * alpha


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


def reset(
    v: torch.Tensor,
    fired: torch.Tensor,
    threshold: torch.Tensor | None = None,
    subtract: torch.Tensor | None = None,
) -> torch.Tensor:
    """The membrane after the spikes ``fired``: ``V <- 0`` (reset "zero"), or, where the
    bool mask ``subtract`` is set, ``V <- V - theta`` (reset "subtract"); ``subtract=None``
    resets every neuron to zero. A reset to zero passes no gradient to ``V``; a subtraction
    passes it unchanged (the spike that triggers either passes none)."""
    if subtract is None:
        return v.masked_fill(fired, 0.0)
    return torch.where(fired, torch.where(subtract, v - threshold, 0.0), v)


@dataclass(frozen=True)
class NeuronModel:
    """A neuron model: its name and its phase functions (the engines call nothing else)."""

    name: str
    leak: Callable = leak
    integrate: Callable = integrate
    decay_current: Callable = decay_current
    crossed: Callable = crossed
    fire: Callable = fire
    reset: Callable = reset

    def __deepcopy__(self, memo) -> NeuronModel:  # immutable: a copied network keeps its model
        return self


#: the leaky integrate-and-fire neuron (every population's), with its two variants as
#: parameters: the reset and the synaptic current
LIF = NeuronModel("lif")

#: the resets a population may declare
RESETS = ("zero", "subtract")
