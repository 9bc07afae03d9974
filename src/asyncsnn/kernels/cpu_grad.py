r"""Unlayered backprop on the CPU: the numba kernel's forward pass and a hand-written backward.

The reference engine trains by recording every forward step in PyTorch's autograd graph: a
dozen (batch, neurons) tensors per forward step, so its memory grows with the number of
forward steps and every step pays for whole layers. Here the forward pass is the compiled
kernel (:mod:`asyncsnn.kernels.cpu`, in the reference's gradient mode: a group's currents are
summed first and only neurons whose current is non-zero are checked), and it writes a *tape*
of what the gradient needs and nothing else:

- per threshold check of a spiking neuron: the neuron, whether it fired and was made
  refractory, the queue place its spike took, and its membrane before the check;
- per delivered spike: its queue place; per forward step: where its records start.

The tape grows with the checks and deliveries (the events), not with neurons times forward
steps. The backward pass walks it in reverse with one adjoint per neuron,
:math:`\lambda = \partial L / \partial V`, and gives exactly the gradients of the reference's
autograd graph (up to the order of float additions):

- a check of neuron :math:`i` with membrane :math:`V` (spike :math:`z = H(V - \theta)`):
  :math:`\partial L/\partial z = \partial L/\partial S_{t,i}` (the spike output) plus, if the
  spike was delivered, the sum over its targets :math:`m` of :math:`w_{im}\lambda_m` at the
  delivery; then :math:`\lambda_i \leftarrow \lambda_i (1 - z) + \sigma'(V - \theta)\,
  \partial L/\partial z` (the reset passes no gradient);
- a delivery of a spike to target :math:`m` that was not refractory:
  :math:`\partial L/\partial w_{im} \mathrel{+}= \lambda_m` (the spike's value is 1);
- the start of timestep :math:`t`: :math:`\partial L/\partial I_t = \lambda` for the input
  and bias current, then :math:`\lambda \leftarrow \beta\lambda` (+ the gradient of a
  non-spiking readout's membrane at the end of timestep :math:`t - 1`).

The current of the input projections and the biases is computed by PyTorch (as in inference)
and receives its gradient through autograd; the populations' weights receive theirs through
the per-entry weights (``weight x coefficient``) the kernel reads.

Scheduling decisions are not differentiated (SPEC section 3), as in the reference.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit

from ..surrogate import ArcTan, FastSigmoid
from .cpu import Plan, map_chunks

ARCTAN, FAST_SIGMOID = 0, 1


def surrogate_code(spike_fn) -> tuple[int, float] | None:
    """``(kind, parameter)`` of a surrogate the backward kernel knows, else ``None``."""
    if type(spike_fn) is ArcTan:
        return ARCTAN, float(spike_fn.alpha)
    if type(spike_fn) is FastSigmoid:
        return FAST_SIGMOID, float(spike_fn.slope)
    return None


@njit(cache=True, inline="always")
def _derivative(kind, parameter, x):
    if kind == ARCTAN:
        y = np.float32(math.pi) * parameter * x / np.float32(2.0)
        return (parameter / np.float32(2.0)) / (np.float32(1.0) + y * y)
    d = parameter * abs(x) + np.float32(1.0)
    return np.float32(1.0) / (d * d)


@njit(cache=True, nogil=True)
def _backward(
    b0,
    b1,
    t_code,
    t_slot,
    t_v,
    t_dlv,
    t_rows,
    t_first,
    n_timesteps,
    slots,
    n_slots,
    ent_start,
    ent_dst,
    ent_w,
    beta,
    theta,
    kind,
    parameter,
    grad_spikes,
    grad_membrane,
    out_lo,
    grad_current,
):
    """Gradients of samples ``b0 .. b1 - 1`` from their tape: writes ``grad_current``
    (timesteps, batch, neurons) and returns the chunk's per-entry weight gradient."""
    n = beta.shape[0]
    grad_w = np.zeros(ent_w.shape[0], np.float64)
    lam = np.zeros(n, np.float32)
    refractory = np.zeros(n, np.bool_)
    dz_slot = np.zeros(max(n_slots, 1), np.float32)  # dL/dz of a queued spike, once delivered
    readout = grad_membrane.shape[0] > 0
    n_out = grad_membrane.shape[2]
    for b in range(b0, b1):
        lam[:] = 0.0
        r = t_first[b - b0 + 1] - 1
        r_lo = t_first[b - b0]
        for t in range(n_timesteps - 1, -1, -1):
            if readout:
                for k in range(n_out):
                    lam[out_lo + k] += grad_membrane[t, b, k]
            r_end = r
            while r >= r_lo and t_rows[r, 0] == t:
                r -= 1
            # refractory at the end of the timestep: the neurons made so in it
            for rr in range(r + 1, r_end + 1):
                for c in range(t_rows[rr, 3], t_rows[rr, 3] + t_rows[rr, 4]):
                    if t_code[c] & 2:
                        refractory[t_code[c] >> 2] = True
            gs = grad_spikes[t, b]
            for rr in range(r_end, r, -1):
                # ---- the checks of this step, then the delivery that caused them ----------
                for c in range(t_rows[rr, 3] + t_rows[rr, 4] - 1, t_rows[rr, 3] - 1, -1):
                    code = t_code[c]
                    i = code >> 2
                    dz = gs[i]
                    g = _derivative(kind, parameter, t_v[c] - theta[i])
                    if code & 1:
                        q = t_slot[c]
                        if q >= 0:
                            dz += dz_slot[q]
                            dz_slot[q] = 0.0
                        lam[i] = g * dz
                    else:
                        lam[i] += g * dz
                    if code & 2:
                        refractory[i] = False
                for d in range(t_rows[rr, 1], t_rows[rr, 1] + t_rows[rr, 2]):
                    q = t_dlv[d]
                    row = q // slots
                    acc = np.float32(0.0)
                    for e in range(ent_start[row], ent_start[row + 1]):
                        j = ent_dst[e]
                        if not refractory[j]:
                            lj = lam[j]
                            grad_w[e] += lj
                            acc += ent_w[e] * lj
                    dz_slot[q] = acc
            gc = grad_current[t, b]
            for i in range(n):
                gc[i] = lam[i]
                lam[i] *= beta[i]
    return grad_w


class AsyncTrainFunction(torch.autograd.Function):
    """``(current, entry weights) -> (spikes, membrane)`` through the kernel, with the
    backward pass above. ``plan`` is a :class:`asyncsnn.kernels.cpu.Plan`; the run's other
    outputs are stored on it (``plan.outputs``)."""

    @staticmethod
    def forward(ctx, current, ent_w, plan, surrogate):
        ent_np = ent_w.detach().contiguous().numpy()
        out, chunks = plan.simulate(current, ent_np, record=True)
        plan.outputs = out
        ctx.plan, ctx.chunks, ctx.ent_np, ctx.surrogate = plan, chunks, ent_np, surrogate
        return out["spikes"], out["membrane"]

    @staticmethod
    def backward(ctx, grad_spikes, grad_membrane):
        plan = ctx.plan
        st = plan.st
        kind, parameter = ctx.surrogate
        gm = grad_membrane.contiguous() if plan.readout else torch.zeros(0, 0, 0)
        gc = torch.zeros(plan.T, plan.B, plan.n_pop, dtype=plan.dtype)
        n_slots = len(st["slot_layer"]) * plan.slots
        args_common = (
            plan.T,
            plan.slots,
            n_slots,
            st["ent_start"],
            st["ent_dst"],
            ctx.ent_np,
            plan.beta.numpy(),
            plan.theta.numpy(),
            kind,
            np.float32(parameter),
            grad_spikes.contiguous().numpy(),
            gm.to(plan.dtype).numpy(),
            plan.out_lo,
            gc.numpy(),
        )
        tapes = {b0: tape for b0, _, tape in ctx.chunks}
        bounds = [(b0, b1) for b0, b1, _ in ctx.chunks]
        ctx.chunks = None  # the tape is read once: let it go as soon as possible

        def chunk(b0, b1):
            tape = tapes[b0]
            return _backward(b0, b1, *tape[:6], *args_common)

        results = map_chunks(chunk, bounds)
        grad_w = results[0]
        for g in results[1:]:
            grad_w += g
        return gc, torch.from_numpy(grad_w).to(plan.dtype), None, None


def run_async_cpu_grad(
    net,
    x: torch.Tensor,
    *,
    dt: float,
    scheduler,
    group_size: int,
    rng,
    hooks,
    training: bool,
    refractory_dropout: float,
    max_queued_per_neuron: int,
    spike_fn,
) -> dict:
    """Asynchronous execution with gradients (unlayered backprop): the reference's result
    dictionary, whose ``spikes`` (and ``membrane``) carry gradients to the weights, the
    biases and, where it requires them, the input. The caller has checked that it applies."""
    plan = Plan(
        net,
        x,
        dt=dt,
        scheduler=scheduler,
        group_size=group_size,
        rng=rng,
        hooks=hooks,
        training=training,
        refractory_dropout=refractory_dropout,
        max_queued_per_neuron=max_queued_per_neuron,
        buffered=True,
    )
    current = plan.input_current()
    ent_w = plan.entry_weights()
    spikes, membrane = AsyncTrainFunction.apply(current, ent_w, plan, surrogate_code(spike_fn))
    return plan.result(plan.outputs, spikes, membrane)
