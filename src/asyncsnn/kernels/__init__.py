"""Compiled fast paths of the asynchronous engine, behind the interface of ``asyncsnn.run``.

``run(..., backend="auto")`` (the default) runs asynchronous execution through the numba CPU
kernel of :mod:`asyncsnn.kernels.cpu` where it applies, and through the plain PyTorch engine
(:func:`asyncsnn.asynchronous.run_async`, the reference) everywhere else: :func:`engine_for`
tells :func:`asyncsnn.run` which. The kernels never import the reference engine, nor it
them. ``backend="torch"`` always runs the reference; ``backend="numba"`` insists on the
kernel and raises a ``ValueError`` naming the reason where it cannot run.

- Inference (no gradient required) gives the reference's result bit for bit.
- With gradients (unlayered backprop) the forward pass gives the reference's spikes bit for
  bit, and :mod:`asyncsnn.kernels.cpu_grad` computes the gradients by
  hand, recomputing one timestep at a time: equal to autograd through the reference up to the
  rounding of float sums, in time and memory that follow the spikes.

The kernel applies to: the LIF neuron with both its variants (current-based, per-neuron
``tau_syn``, and the reset by subtraction), float32 CPU tensors, prioritized input, the
built-in policies (``random``, ``momentum``, ``fifo``, ``layered``, exactly these classes),
the hooks
``MaxForwardSteps``, ``StopOnOutputSpike``, ``InputSpikeDropout`` and ``NetworkSpikeDropout``,
the monitors ``OutputTrace`` and ``SpikeEvents`` (their records read off each spike's forward
step, :func:`asyncsnn.hooks.monitor_records`; without refractory dropout), refractory
dropout, and the surrogates ``ArcTan`` and ``FastSigmoid``. Anything else (a user's
policy, hook or surrogate, queued input, float64, a GPU without Triton) runs the reference.
numba is a dependency of the package; where it cannot be imported, ``auto`` runs the
reference.

On CUDA tensors ``auto`` runs the Triton kernel of :mod:`asyncsnn.kernels.triton_async`
(and, with gradients, :mod:`asyncsnn.kernels.triton_grad`) where it applies: the same calls
as the numba kernel, on float32 CUDA tensors, with ``F`` up to
:data:`~asyncsnn.kernels.triton_limits.MAX_GROUP`; Triton is the optional ``gpu`` extra
(``pip install asyncsnn[gpu]``). ``backend="triton"`` insists on it and says why where it
cannot run; under Triton's interpreter (``TRITON_INTERPRET=1``) it runs on CPU tensors too.

This module imports neither numba, Triton nor the kernels: they load on the first run that
uses them.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import torch

from ..dynamics import LIF
from ..hooks import (
    MONITORS,
    InputSpikeDropout,
    MaxForwardSteps,
    NetworkSpikeDropout,
    StopOnOutputSpike,
)
from ..options import RunOptions
from ..scheduling import BUILTIN_POLICIES
from ..surrogate import ArcTan, FastSigmoid

_STOP_RULES = (MaxForwardSteps, StopOnOutputSpike)
_DROPOUTS = (InputSpikeDropout, NetworkSpikeDropout)
_SURROGATES = (ArcTan, FastSigmoid)


def numba_available() -> bool:
    """Whether numba can be imported (checked without importing it)."""
    return importlib.util.find_spec("numba") is not None


def _load_cpu():
    """The kernel module and ``None``, or ``None`` and why it cannot be loaded."""
    if not numba_available():
        return None, "numba is not installed (pip install numba)"
    try:
        from . import cpu
    except ImportError as e:  # numba present but unusable, e.g. against this NumPy
        return None, f"numba cannot be imported ({e})"
    return cpu, None


def triton_available() -> bool:
    """Whether Triton can be imported (checked without importing it)."""
    return importlib.util.find_spec("triton") is not None


def _load_triton(grad: bool):
    """The Triton engine for this call and ``None``, or ``None`` and why it cannot load."""
    if not triton_available():
        return None, "Triton is not installed (pip install asyncsnn[gpu], or triton)"
    try:
        if grad:
            from .triton_grad import run_async_triton_grad as engine
        else:
            from .triton_async import run_async_triton as engine
    except ImportError as e:
        return None, f"Triton cannot be imported ({e})"
    return engine, None


def _cpu_device(x: torch.Tensor) -> str | None:
    if x.device.type != "cpu":
        return f"the tensors are on {x.device}, the kernel runs on the CPU"
    return None


def _triton_device(x: torch.Tensor) -> str | None:
    if x.device.type == "cuda":
        return None
    if x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None  # Triton's interpreter runs the kernel on CPU tensors
    return (
        f"the tensors are on {x.device}; the Triton kernel runs on CUDA tensors (or on CPU "
        "tensors under Triton's interpreter, TRITON_INTERPRET=1)"
    )


def triton_unsupported_reason(net, x: torch.Tensor, options: RunOptions) -> str | None:
    """Why the Triton kernel cannot run this call, or ``None`` where it can: the numba
    kernel's conditions on a CUDA device, and a forward group it can sort."""
    reason = unsupported_reason(net, x, options, device=_triton_device)
    if reason is not None:
        return reason
    if options.silent_gradients:
        return (
            "silent_gradients (docs/semantics.md, section 8.7) is not in the Triton kernel's "
            "backward pass; the reference engine runs it"
        )
    if options.surrogate_checks != "every":
        return (
            f"surrogate_checks={options.surrogate_checks!r} (docs/semantics.md, section 8.8) "
            "is not in the Triton kernel's backward pass; the reference engine runs it"
        )
    from .triton_limits import MAX_GROUP

    largest = min(options.group_size, (net.n_neurons - net.n_input) * options.slots)
    if largest > MAX_GROUP:
        return f"group_size {options.group_size} is above the kernel's {MAX_GROUP}"
    return None


def unsupported_reason(net, x: torch.Tensor, options: RunOptions, device=_cpu_device) -> str | None:
    """Why the compiled kernel cannot run this call, or ``None`` where it can (``device``:
    the kernel's check of the tensors' device)."""
    neuron = net.neuron_model()
    if neuron is not LIF:  # the populations' declaration, never a silent plain LIF
        return f"the neuron model {neuron.name!r} is not one the kernel knows (lif)"
    spike_fn = options.spike_fn
    if spike_fn is not None and type(spike_fn) not in _SURROGATES:
        return (
            f"gradients are required with the surrogate {type(spike_fn).__name__}; the kernel "
            "knows ArcTan and FastSigmoid"
        )
    where = device(x)
    if where is not None:
        return where
    if x.dtype != torch.float32:
        return f"the tensors are {x.dtype}, the kernel runs float32 only"
    if not options.prioritized_input:
        return "the input is queued (prioritized_input=False)"
    if type(options.scheduler) not in BUILTIN_POLICIES:
        return (
            f"the policy {type(options.scheduler).__name__} is user-defined; the kernel knows "
            "random, momentum, fifo and layered"
        )
    for h in options.hooks:
        if type(h) in MONITORS:
            if options.refractory_dropout > 0:
                return (
                    f"the monitor {type(h).__name__} needs each neuron to fire at most once per "
                    "timestep; with refractory dropout it runs on the reference"
                )
        elif type(h) not in _STOP_RULES + _DROPOUTS:
            return f"the hook {type(h).__name__} is not supported by the kernel"
    return None


def engine_name(engine: Callable) -> str:
    """``"triton"`` for an engine of the Triton kernel, else ``"numba"``: the name a run's
    ``RunResult.engine`` gives a compiled engine that :func:`engine_for` returned."""
    return "triton" if "triton" in getattr(engine, "__module__", "") else "numba"


def engine_for(net, x: torch.Tensor, options: RunOptions) -> Callable | None:
    """The compiled engine ``(net, x, options) -> RunResult`` for this asynchronous run, or
    ``None`` where the reference must run: the Triton kernel for CUDA tensors (and for
    ``backend="triton"``), the numba kernel for CPU tensors. ``backend="numba"`` and
    ``backend="triton"`` raise a ``ValueError`` saying why instead of returning ``None``."""
    if options.backend == "torch":
        return None
    if options.backend == "triton" or (options.backend == "auto" and x.device.type == "cuda"):
        reason = triton_unsupported_reason(net, x, options)
        engine = None
        if reason is None:
            engine, reason = _load_triton(options.spike_fn is not None)
        if reason is not None and options.backend == "triton":
            raise ValueError(f"backend='triton' cannot run this call: {reason}")
        return engine
    reason = unsupported_reason(net, x, options)
    cpu = None
    if reason is None:
        cpu, reason = _load_cpu()
    if reason is not None:
        if options.backend == "numba":
            raise ValueError(f"backend='numba' cannot run this call: {reason}")
        return None
    if options.spike_fn is None:
        return cpu.run_async_cpu
    from .cpu_grad import run_async_cpu_grad

    return run_async_cpu_grad
