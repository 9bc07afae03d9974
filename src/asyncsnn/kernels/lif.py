"""The LIF phases of :mod:`asyncsnn.dynamics` for numba, on one neuron at a time.

The kernel's forward pass, its replay in the backward pass and its adjoint call these and
nothing else for the neuron update, so the model is written once for the kernel, as it is
once for PyTorch.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def leak(v, beta):
    """Start-of-timestep leak ``V <- beta * V``."""
    return v * beta


@njit(cache=True, inline="always")
def integrate(v, current):
    """``V <- V + c`` (and a current-based neuron's ``I <- I + c``)."""
    return v + current


@njit(cache=True, inline="always")
def decay_current(i, alpha):
    """Start-of-timestep decay of the synaptic current ``I <- alpha * I``."""
    return i * alpha


@njit(cache=True, inline="always")
def crossed(v, theta):
    """The strict threshold ``V > theta``."""
    return v > theta


@njit(cache=True, inline="always")
def reset(v, theta, subtract):
    """The membrane after a spike: zero, or ``V - theta`` where the neuron resets by
    subtraction."""
    if subtract:
        return v - theta
    return np.float32(0.0)


@njit(cache=True, inline="always")
def adjoint_check(lam, fired, g, dz, subtract):
    """``dL/dV`` before a threshold check, from ``lam`` after it: the spike's surrogate
    gradient ``g * dz``, plus ``lam`` where the neuron did not fire or resets by subtraction
    (a reset to zero passes no gradient, a subtraction passes it unchanged)."""
    if fired and not subtract:
        return g * dz
    return lam + g * dz


@njit(cache=True, inline="always")
def adjoint_leak(lam, beta):
    """``dL/dV`` at the end of the previous timestep, through the leak."""
    return lam * beta
