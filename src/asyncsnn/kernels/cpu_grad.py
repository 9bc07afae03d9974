r"""Unlayered backprop on the CPU: the numba kernel's forward pass and a hand-written backward.

The reference engine trains by recording every forward step in PyTorch's autograd graph: a
dozen (batch, neurons) tensors per forward step, so its memory grows with the number of
forward steps and every step pays for whole layers. Here the forward pass is the compiled
kernel (:mod:`asyncsnn.kernels.cpu`), and it writes a *tape*
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
  spike was delivered, the sum over its targets :math:`m` of :math:`w_{im} g_m` at the
  delivery; then :math:`\lambda_i \leftarrow \lambda_i (1 - z) + \sigma'(V - \theta)\,
  \partial L/\partial z` (a reset to zero passes no gradient; a reset by subtraction
  passes :math:`\lambda_i` unchanged: :math:`\lambda_i + \sigma'\,\partial L/\partial z`);
- a delivery of a spike to target :math:`m`: :math:`\partial L/\partial w_{im}
  \mathrel{+}= g_m`, with :math:`g_m = \lambda_m` if :math:`m` was not refractory (else
  nothing) and, in a current-based network, :math:`g_m = \mu_m + \lambda_m` (:math:`\mu_m`
  only if refractory), :math:`\mu = \partial L/\partial I` the current's adjoint, which
  the forward steps leave unchanged (the spike's value is 1);
- the start of timestep :math:`t`: :math:`\partial L/\partial c_t = \lambda` for the input
  and bias current :math:`c_t` (current-based: :math:`\mu + \lambda`, and then
  :math:`\mu \leftarrow \alpha(\mu + \lambda)`), then :math:`\lambda \leftarrow
  \beta\lambda` (+ the gradients of a non-spiking readout's membrane and current at the
  end of timestep :math:`t - 1`);
- which checks pass their surrogate gradient (docs/semantics.md, sections 8.7 and 8.8):
  after a timestep's replay, :func:`_gates` walks its checks forwards and gives each a gate
  (1 or 0) by ``surrogate_checks`` (every check; the neuron's last; the firing ones, else
  the last), the :math:`\sigma'` of a check above is multiplied by it; with silent
  gradients it also decides the end checks: a spiking neuron not refractory at the end,
  never checked in the timestep or reached by a would-be spike after its last check;
- with silent gradients, a check of neuron :math:`i` that did not fire sends a would-be
  spike (value 0) with the next forward step: walking that step backwards, once its
  targets' adjoints are known, its :math:`\partial L/\partial z` is
  :math:`\sum_m w_{im} g_m` over its targets (:math:`g_m` as for a delivery), which the
  check then passes on through its :math:`\sigma'` as above;
- with silent gradients, the end of timestep :math:`t` (walked first): population by
  population in reverse network order, the population's would-be spikes (of its end
  checks, and of its checks of the last forward step that did not fire) take
  :math:`\partial L/\partial z_i = \sum_m w_{im} g_m`, all summed before any of its
  adjoints changes (they leave together); then each end check, a check of value 0 on the
  membrane :math:`V_i` at the end, gives :math:`\lambda_i \mathrel{+}= \sigma'(V_i -
  \theta_i)\,(\partial L/\partial S_{t,i} + \partial L/\partial z_i)` (it joins the spike
  count). Would-be spikes' value is 0, so they add nothing to the weights' gradients; the
  tape is the same with the option on or off.

The current of the input projections and the biases is computed by PyTorch (as in inference)
and receives its gradient through autograd; the populations' weights receive theirs through
the per-entry weights (``weight x coefficient``) the kernel reads.

Scheduling decisions are not differentiated (docs/semantics.md, section 8), as in the reference.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from numba import njit
from torch.autograd.function import once_differentiable

from ..options import RunOptions
from ..result import RunResult
from ..surrogate import ArcTan, FastSigmoid
from . import lif
from .cpu import simulate
from .plan import Plan, map_chunks
from .shared import _grow, deliver_group, leak_and_input, new_neurons

ARCTAN, FAST_SIGMOID = 0, 1
EVERY, LAST, FIRING = 0, 1, 2  # options.SURROGATE_CHECKS, in order


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


class Tape(NamedTuple):
    """What the forward pass recorded for one chunk of samples (see the module docstring)."""

    code: np.ndarray  # per check that fired: neuron << 2 | made refractory << 1 | 1
    slot: np.ndarray  # its queue place, or -1
    deliveries: np.ndarray  # per delivered spike: its queue place
    rows: np.ndarray  # per step: timestep, first delivery, deliveries, first check, checks
    first: np.ndarray  # per sample: its first row


class Adjoint(NamedTuple):
    """What the backward pass reads besides the tape and the network, and writes."""

    current: np.ndarray  # (T, B, n) the forward pass's input and bias current
    v_end: np.ndarray  # (T, B, n) each timestep's final membranes
    syn_end: np.ndarray  # (T, B, n) and synaptic currents (current-based), or empty
    kind: int  # ARCTAN or FAST_SIGMOID
    parameter: np.float32  # the surrogate's alpha or slope
    grad_spikes: np.ndarray  # (T, B, n) dL/dS
    grad_membrane: np.ndarray  # (T, B, outputs) dL/dV of a non-spiking readout, or empty
    grad_readout_current: np.ndarray  # (T, B, outputs) dL/dI of its current, or empty
    grad_current: np.ndarray  # (T, B, n) written: dL/dI of the input and bias current
    ghosts: np.ndarray  # (k, 2) silent gradients: the spiking populations, or empty
    mode: int  # which checks pass their surrogate gradient: EVERY, LAST or FIRING


class Replay(NamedTuple):
    """One timestep's checks as the backward pass replays them (grown as needed)."""

    code: np.ndarray  # per check: neuron << 2 | made refractory << 1 | fired
    place: np.ndarray  # the queue place its spike took, or -1
    v: np.ndarray  # the membrane it was checked with
    rows: np.ndarray  # per step: its first check and its number of checks
    gate: np.ndarray  # per check: whether its surrogate gradient passes (1 or 0)
    dz: np.ndarray  # per check that did not fire: dL/dz of its would-be spike


class Credit(NamedTuple):
    """Per neuron, one timestep's facts that decide the gates (silent gradients and the
    accounting of repeated checks; docs/semantics.md, sections 8.7 and 8.8)."""

    last: np.ndarray  # int64 its last check, or -1
    step: np.ndarray  # int64 the step of its last check, or -1
    refractory: np.ndarray  # int64 the step in which it was made refractory, or a large one
    fired: np.ndarray  # bool it fired in this timestep
    arrived: np.ndarray  # int64 the last step at which a would-be spike reached it, or -1
    end: np.ndarray  # float32 the gate of its end-of-timestep check (0: none)
    dz: np.ndarray  # float32 dL/dz of the would-be spikes of its end-of-timestep check


@njit(cache=True)
def _new_replay(n):
    return Replay(
        np.empty(4 * n, np.int64),
        np.empty(4 * n, np.int64),
        np.empty(4 * n, np.float32),
        np.empty((64, 2), np.int64),
        np.empty(4 * n, np.float32),
        np.zeros(4 * n, np.float32),
    )


@njit(cache=True)
def _new_credit(n):
    return Credit(
        np.empty(n, np.int64),
        np.empty(n, np.int64),
        np.empty(n, np.int64),
        np.empty(n, np.bool_),
        np.empty(n, np.int64),
        np.zeros(n, np.float32),
        np.zeros(n, np.float32),
    )


@njit(cache=True, inline="always")
def _replay_checks(rr, r_start, n_touched, n_chk, t, tape, rep, nrn, net):
    """The checks of tape row ``rr`` replayed: the membranes are the forward pass's, the
    spikes come from the tape (and must be the same). Returns the number of checks so far."""
    v, theta = nrn.v, net.theta
    rep.rows[rr - r_start, 0] = n_chk
    f = tape.rows[rr, 3]
    f_end = f + tape.rows[rr, 4]
    for k in range(n_touched):
        i = nrn.touched[k]
        pre = v[i]
        if lif.crossed(pre, theta[i]):
            if f >= f_end or tape.code[f] >> 2 != i:
                raise AssertionError("the replay does not match the recorded spikes")
            rep.code[n_chk] = tape.code[f]
            rep.place[n_chk] = tape.slot[f]
            f += 1
            v[i] = lif.reset(pre, theta[i], net.subtract[i])
            if rep.code[n_chk] & 2:
                nrn.refractory[i] = t
        elif theta[i] != np.inf:
            rep.code[n_chk] = i << 2
            rep.place[n_chk] = -1
        else:
            continue
        rep.v[n_chk] = pre
        n_chk += 1
    if f != f_end:
        raise AssertionError("the replay does not match the recorded spikes")
    rep.rows[rr - r_start, 1] = n_chk - rep.rows[rr - r_start, 0]
    return n_chk


@njit(cache=True, inline="always")
def _replay(t, b, r_start, r_end, tape, net, slots, adj, nrn, rep, stamp):
    """Replay timestep ``t`` of sample ``b`` (tape rows ``r_start .. r_end``) from its start:
    the same float operations as the forward pass, so the same membranes, into ``rep``
    (grown where needed: the replay returned is the one to use). Returns it and the last
    forward-step stamp used."""
    steps = r_end - r_start + 1
    if steps > rep.rows.shape[0]:
        rep = Replay(
            rep.code, rep.place, rep.v, np.empty((2 * steps, 2), np.int64), rep.gate, rep.dz
        )
    if t > 0:
        nrn.v[:] = adj.v_end[t - 1, b]
        if net.synaptic:
            nrn.syn[:] = adj.syn_end[t - 1, b]
    else:
        nrn.v[:] = 0.0
        nrn.syn[:] = 0.0
    n_touched = leak_and_input(
        nrn.v, net.beta, adj.current[t, b], nrn.touched, nrn.syn, net.alpha, net.synaptic
    )
    n_chk = 0
    for rr in range(r_start, r_end + 1):
        if rr > r_start:  # the group delivered before this step's checks
            stamp += 1
            d0 = tape.rows[rr, 1]
            group = tape.deliveries[d0 : d0 + tape.rows[rr, 2]]
            n_touched = deliver_group(group, slots, t, net, nrn, stamp)[0]
        if n_chk + n_touched > rep.code.shape[0]:
            rep = Replay(
                _grow(rep.code, n_chk, n_touched),
                _grow(rep.place, n_chk, n_touched),
                _grow(rep.v, n_chk, n_touched),
                rep.rows,
                _grow(rep.gate, n_chk, n_touched),
                _grow(rep.dz, n_chk, n_touched),
            )
        n_chk = _replay_checks(rr, r_start, n_touched, n_chk, t, tape, rep, nrn, net)
    return rep, stamp


_NEVER = 1 << 40  # a step no timestep reaches


@njit(cache=True, inline="always")
def _gates(n_chk, steps, net, adj, rep, cr):
    """Which of the replayed timestep's checks pass their surrogate gradient
    (``rep.gate``), and, with silent gradients, which neurons get a check at the end of the
    timestep (``cr.end``, its gate): a would-be spike of a check that did not fire reaches
    the targets that are not refractory with the next forward step, or, after the last
    step, at the end, population by population in network order; a spiking neuron that is
    not refractory at the end and was never checked, or was reached after its last check,
    is checked at the end (docs/semantics.md, sections 8.7 and 8.8)."""
    silent = adj.ghosts.shape[0] > 0
    mode = adj.mode
    for c in range(n_chk):
        rep.dz[c] = 0.0
    if not silent and mode == EVERY:
        for c in range(n_chk):
            rep.gate[c] = 1.0
        return
    cr.last[:] = -1
    cr.step[:] = -1
    cr.refractory[:] = _NEVER
    cr.fired[:] = False
    cr.arrived[:] = -1
    cr.end[:] = 0.0
    for k in range(steps):
        if silent and k > 0:  # the would-be spikes of step k - 1 arrive
            p0 = rep.rows[k - 1, 0]
            for c in range(p0, p0 + rep.rows[k - 1, 1]):
                row = net.slot_of[rep.code[c] >> 2]
                if rep.code[c] & 1 or row < 0:
                    continue
                for e in range(net.ent_start[row], net.ent_start[row + 1]):
                    j = net.ent_dst[e]
                    if cr.refractory[j] >= k:
                        cr.arrived[j] = k
        c0 = rep.rows[k, 0]
        for c in range(c0, c0 + rep.rows[k, 1]):
            code = rep.code[c]
            i = code >> 2
            cr.last[i] = c
            cr.step[i] = k
            if code & 1:
                cr.fired[i] = True
            if code & 2 and cr.refractory[i] > k:
                cr.refractory[i] = k
    end = steps  # the end of the timestep, after its last step
    if silent:
        for p in range(adj.ghosts.shape[0]):
            lo, hi = adj.ghosts[p, 0], adj.ghosts[p, 1]
            for i in range(lo, hi):
                if cr.refractory[i] >= end and (cr.step[i] < 0 or cr.arrived[i] > cr.step[i]):
                    cr.step[i] = end  # the end check is its last
                    cr.end[i] = 0.0 if mode == FIRING and cr.fired[i] else 1.0
            for i in range(lo, hi):  # what the population sends reaches the later ones
                row = net.slot_of[i]
                if row < 0:
                    continue
                c = cr.last[i]
                sends = cr.step[i] == end or (
                    c >= 0 and cr.step[i] == steps - 1 and not rep.code[c] & 1
                )
                if sends:
                    for e in range(net.ent_start[row], net.ent_start[row + 1]):
                        j = net.ent_dst[e]
                        if cr.refractory[j] >= end:
                            cr.arrived[j] = end
    for c in range(n_chk):
        code = rep.code[c]
        i = code >> 2
        is_last = cr.last[i] == c and cr.step[i] != end
        if mode == EVERY:
            g = True
        elif mode == LAST:
            g = is_last
        else:
            g = (code & 1) != 0 or (not cr.fired[i] and is_last)
        rep.gate[c] = 1.0 if g else 0.0


@njit(cache=True, inline="always")
def _target_adjoint(j, t, lam, mu, nrn, synaptic):
    """``dL/dc`` of a current ``c`` delivered to neuron ``j`` in timestep ``t``: its
    membrane's adjoint if it was not refractory, plus, in a current-based network, its
    current's."""
    g = np.float32(0.0)
    if nrn.refractory[j] != t:
        g = lam[j]
    if synaptic:
        g = mu[j] + g
    return g


@njit(cache=True, inline="always")
def _fanout_adjoint(i, t, net, lam, mu, nrn):
    """``dL/dz`` of a spike of value 0 of neuron ``i`` delivered now: the sum over its
    targets of ``w g`` (``g``: :func:`_target_adjoint`)."""
    total = np.float32(0.0)
    row = net.slot_of[i]
    if row >= 0:
        for e in range(net.ent_start[row], net.ent_start[row + 1]):
            j = net.ent_dst[e]
            total += net.ent_w[e] * _target_adjoint(j, t, lam, mu, nrn, net.synaptic)
    return total


@njit(cache=True, inline="always")
def _adjoint(t, b, r_start, r_end, tape, net, slots, adj, nrn, rep, lam, mu, dz_place, grad_w):
    """Backwards through timestep ``t`` of sample ``b`` after its replay: each step's checks,
    then the delivery that caused them (with silent gradients, also the would-be spikes of
    the previous step's checks); then the start of the timestep (the input and bias
    current's gradient, the current's decay and the leak)."""
    theta = net.theta
    synaptic = net.synaptic
    silent = adj.ghosts.shape[0] > 0
    gs = adj.grad_spikes[t, b]
    for rr in range(r_end, r_start - 1, -1):
        c0 = rep.rows[rr - r_start, 0]
        for c in range(c0 + rep.rows[rr - r_start, 1] - 1, c0 - 1, -1):
            code = rep.code[c]
            i = code >> 2
            dz = gs[i]
            g = _derivative(adj.kind, adj.parameter, rep.v[c] - theta[i]) * rep.gate[c]
            if code & 1:
                q = rep.place[c]
                if q >= 0:
                    dz += dz_place[q]
                    dz_place[q] = 0.0
            else:
                dz += rep.dz[c]
            lam[i] = lif.adjoint_check(lam[i], code & 1, g, dz, net.subtract[i])
            if code & 2:
                nrn.refractory[i] = -1  # not refractory before this check
        for d in range(tape.rows[rr, 1], tape.rows[rr, 1] + tape.rows[rr, 2]):
            q = tape.deliveries[d]
            row = q // slots
            total = np.float32(0.0)
            if synaptic:
                for e in range(net.ent_start[row], net.ent_start[row + 1]):
                    lj = _target_adjoint(net.ent_dst[e], t, lam, mu, nrn, True)
                    grad_w[e] += lj
                    total += net.ent_w[e] * lj
            else:  # the plain LIF: the refractory targets took nothing
                for e in range(net.ent_start[row], net.ent_start[row + 1]):
                    j = net.ent_dst[e]
                    if nrn.refractory[j] != t:
                        lj = lam[j]
                        grad_w[e] += lj
                        total += net.ent_w[e] * lj
            dz_place[q] = total
        if silent and rr > r_start:  # the previous step's would-be spikes came with the group
            p0 = rep.rows[rr - r_start - 1, 0]
            for c in range(p0, p0 + rep.rows[rr - r_start - 1, 1]):
                if not rep.code[c] & 1 and rep.gate[c] != 0.0:
                    rep.dz[c] = _fanout_adjoint(rep.code[c] >> 2, t, net, lam, mu, nrn)
    gc = adj.grad_current[t, b]
    if synaptic:  # the input current joined I, which reached V
        for i in range(lam.shape[0]):
            g = mu[i] + lam[i]
            gc[i] = g
            mu[i] = lif.adjoint_leak(g, net.alpha[i])
            lam[i] = lif.adjoint_leak(lam[i], net.beta[i])
    else:
        for i in range(lam.shape[0]):
            gc[i] = lam[i]
            lam[i] = lif.adjoint_leak(lam[i], net.beta[i])


@njit(cache=True, inline="always")
def _end_adjoint(t, b, steps, net, adj, nrn, lam, mu, rep, cr):
    """Backwards through the end of timestep ``t`` (silent gradients), after its replay: the
    populations in reverse network order, each one's would-be spikes (of its end checks and
    of its checks of the last step that did not fire) summed before its adjoints change,
    then its end checks."""
    v_end = adj.v_end[t, b]
    gs = adj.grad_spikes[t, b]
    k0 = rep.rows[steps - 1, 0]  # the first check of the last step
    for p in range(adj.ghosts.shape[0] - 1, -1, -1):
        lo, hi = adj.ghosts[p, 0], adj.ghosts[p, 1]
        for i in range(lo, hi):
            c = cr.last[i]
            last_step = c >= k0 and not rep.code[c] & 1 and rep.gate[c] != 0.0
            total = np.float32(0.0)
            if cr.end[i] != 0.0 or last_step:
                total = _fanout_adjoint(i, t, net, lam, mu, nrn)
            cr.dz[i] = total
            if last_step:
                rep.dz[c] = total
        for i in range(lo, hi):
            if cr.end[i] != 0.0:
                g = _derivative(adj.kind, adj.parameter, v_end[i] - net.theta[i])
                lam[i] = lam[i] + g * (gs[i] + cr.dz[i])


@njit(cache=True, nogil=True)
def _backward(b0, b1, tape, net, slots, adj):
    """Gradients of samples ``b0 .. b1 - 1`` from their :class:`Tape`, on the network
    ``net`` (a :class:`~asyncsnn.kernels.plan.KernelNet`): writes ``adj.grad_current`` and
    returns the chunk's per-entry weight gradient."""
    n = net.beta.shape[0]
    grad_w = np.zeros(net.ent_w.shape[0], np.float64)
    lam = np.zeros(n, np.float32)  # the adjoint dL/dV of each neuron
    mu = np.zeros(n, np.float32)  # and dL/dI of its synaptic current (current-based)
    nrn = new_neurons(n)
    # dL/dz of a queued spike, once delivered
    dz_place = np.zeros(max(net.slot_layer.shape[0] * slots, 1), np.float32)
    rep = _new_replay(n)
    cr = _new_credit(n)
    readout = adj.grad_membrane.shape[0] > 0
    readout_current = adj.grad_readout_current.shape[0] > 0
    stamp = 0
    for b in range(b0, b1):
        lam[:] = 0.0
        mu[:] = 0.0
        nrn.refractory[:] = -1
        r = tape.first[b - b0 + 1] - 1
        r_lo = tape.first[b - b0]
        for t in range(adj.current.shape[0] - 1, -1, -1):
            if readout:
                for k in range(adj.grad_membrane.shape[2]):
                    lam[net.out_lo + k] += adj.grad_membrane[t, b, k]
            if readout_current:
                for k in range(adj.grad_readout_current.shape[2]):
                    mu[net.out_lo + k] += adj.grad_readout_current[t, b, k]
            r_end = r
            while r >= r_lo and tape.rows[r, 0] == t:
                r -= 1
            r_start = r + 1
            rep, stamp = _replay(t, b, r_start, r_end, tape, net, slots, adj, nrn, rep, stamp)
            steps = r_end - r_start + 1
            n_chk = rep.rows[steps - 1, 0] + rep.rows[steps - 1, 1]
            _gates(n_chk, steps, net, adj, rep, cr)
            if adj.ghosts.shape[0]:
                _end_adjoint(t, b, steps, net, adj, nrn, lam, mu, rep, cr)
            _adjoint(
                t, b, r_start, r_end, tape, net, slots, adj, nrn, rep, lam, mu, dz_place, grad_w
            )
    return grad_w


#: the outputs of :class:`AsyncTrainFunction`, in order; only the first three carry gradients
OUTPUTS = (
    "spikes",
    "membrane",
    "current",
    "forward_steps",
    "net_synops",
    "undelivered",
    "updates",  # event-driven neuron updates (Plan.result; empty where not counted)
    "fire_step",  # each spike's forward step, for the monitors (Plan.result)
)


class AsyncTrainFunction(torch.autograd.Function):
    """``(current, entry weights) -> OUTPUTS`` through the kernel, with the backward pass
    above; ``plan`` is a :class:`asyncsnn.kernels.plan.Plan`. The counts are outputs too
    (not differentiable), so that nothing leaves the function on the side."""

    @staticmethod
    def forward(ctx, current, ent_w, plan, surrogate):
        ent_np = ent_w.detach().contiguous().numpy()
        current = current.detach().contiguous()
        out, chunks, kernel_net = simulate(plan, current, ent_np, record=True)
        ctx.plan, ctx.chunks, ctx.net, ctx.surrogate = plan, chunks, kernel_net, surrogate
        ctx.arrays = (current.numpy(), out["v_end"].numpy(), out["syn_end"].numpy())
        counts = [out[k] for k in OUTPUTS[3:]]
        ctx.mark_non_differentiable(*counts)
        return (out["spikes"], out["membrane"], out["current"], *counts)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spikes, grad_membrane, grad_readout_current, *_):
        if ctx.plan is None:
            raise RuntimeError(
                "the graph of a compiled asynchronous run can be differentiated once: its "
                "tape is released by the first backward pass (retain_graph=True does not keep "
                "it). Run again, or use backend='torch'"
            )
        plan = ctx.plan
        current, v_end, syn_end = ctx.arrays
        kind, parameter = ctx.surrogate
        gm = grad_membrane.contiguous() if plan.readout else torch.zeros(0, 0, 0)
        gi = grad_readout_current.contiguous() if plan.readout_current else torch.zeros(0, 0, 0)
        gc = torch.zeros(plan.T, plan.B, plan.n_pop, dtype=plan.dtype)
        adj = Adjoint(
            current=current,
            v_end=v_end,
            syn_end=syn_end,
            kind=kind,
            parameter=np.float32(parameter),
            grad_spikes=grad_spikes.contiguous().numpy(),
            grad_membrane=gm.to(plan.dtype).numpy(),
            grad_readout_current=gi.to(plan.dtype).numpy(),
            grad_current=gc.numpy(),
            ghosts=plan.ghosts,
            mode=plan.check_mode,
        )
        tapes = {b0: Tape(*tape[:5]) for b0, _, tape in ctx.chunks}
        bounds = [(b0, b1) for b0, b1, _ in ctx.chunks]
        kernel_net = ctx.net
        # the tape is read once: what the graph holds goes as soon as possible
        ctx.chunks = ctx.arrays = ctx.plan = ctx.net = None
        results = map_chunks(
            lambda b0, b1: _backward(b0, b1, tapes[b0], kernel_net, plan.slots, adj), bounds
        )
        grad_w = results[0]
        for g in results[1:]:
            grad_w += g
        return gc, torch.from_numpy(grad_w).to(plan.dtype), None, None


def run_async_cpu_grad(net, x: torch.Tensor, options: RunOptions) -> RunResult:
    """Asynchronous execution with gradients (unlayered backprop): the run's result, whose
    ``spikes`` (and ``membrane``) carry gradients to the weights, the biases and, where it
    requires them, the input. The caller has checked that it applies."""
    plan = Plan(net, x, options)
    current = plan.input_current()
    ent_w = plan.entry_weights()
    surrogate = surrogate_code(options.spike_fn)
    out = dict(zip(OUTPUTS, AsyncTrainFunction.apply(current, ent_w, plan, surrogate), strict=True))
    result = plan.result(out, out["spikes"], out["membrane"], out["current"])
    plan.x = None  # not kept alive by the graph
    return result
