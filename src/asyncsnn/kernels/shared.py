"""numba helpers shared by the kernel's forward pass (:mod:`asyncsnn.kernels.cpu`) and its
backward pass (:mod:`asyncsnn.kernels.cpu_grad`): the counter-based random numbers of
:mod:`asyncsnn.rng`, bit for bit, and the phases of a timestep (leak and input, delivery of a
group). The neuron update itself is :mod:`asyncsnn.kernels.lif`; the queue is
:mod:`asyncsnn.kernels.queue`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from ..rng import Stream
from . import lif

# the named streams as plain ints for numba; counters are rng.step_counter's (t << 16) + step
RANDOM_STREAM = int(Stream.RANDOM_POLICY)
NOISE_STREAM = int(Stream.MOMENTUM_NOISE)
REFRACTORY_STREAM = int(Stream.REFRACTORY_DROPOUT)
UNIT = np.float32(1.0 / (1 << 24))  # a uniform number is its 24 random bits times UNIT


# ------------------------------------------------------------------ counter-based RNG (rng.py)
@njit(cache=True, inline="always")
def hash32(x):
    """``asyncsnn.rng.hash32`` for one int64 in ``[0, 2**32)``."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & 0xFFFFFFFF
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & 0xFFFFFFFF
    return x ^ (x >> 15)


@njit(cache=True, inline="always")
def counter_key(stream, counter):
    """``SampleRNG._counter_key``."""
    return hash32(hash32((stream * 0x27D4EB2F) & 0xFFFFFFFF) ^ (counter & 0xFFFFFFFF))


@njit(cache=True, inline="always")
def uniform_bits(mixed, key, position):
    """The 24 random bits of ``SampleRNG.uniform``: the value is ``bits * 2**-24``."""
    pos = (position * 0x1E3779B9) & 0xFFFFFFFF
    return hash32((mixed + key + pos) & 0xFFFFFFFF) >> 8


@njit(cache=True)
def uniform(seeds, stream, counter, size):
    """``SampleRNG(seeds).uniform(stream, counter, size)`` as a (batch, size) float32 array."""
    out = np.empty((seeds.shape[0], size), np.float32)
    key = counter_key(stream, counter)
    for b in range(seeds.shape[0]):
        mixed = hash32((seeds[b] & 0xFFFFFFFF) ^ 0x5BD1E995)
        for i in range(size):
            out[b, i] = np.float32(uniform_bits(mixed, key, i)) * np.float32(1.0 / (1 << 24))
    return out


@njit(cache=True, inline="always")
def momentum_priority(potential, lam, bits):
    """``Momentum.priority`` of one queued spike, in float32 as PyTorch computes it:
    ``potential + lambda_ms * noise`` with the noise ``bits * 2**-24``."""
    return potential + lam * (np.float32(bits) * UNIT)


@njit(cache=True)
def momentum_priorities(potential, lam, bits):
    """:func:`momentum_priority` of arrays (for tests)."""
    out = np.empty(potential.shape[0], np.float32)
    for i in range(potential.shape[0]):
        out[i] = momentum_priority(potential[i], lam, bits[i])
    return out


# ------------------------------------------------------------------ the phases of a timestep
@njit(cache=True, inline="always")
def leak_and_input(v, beta, current, touched, syn, alpha, synaptic):
    """The start of a timestep: every membrane leaks and receives the input and bias
    ``current``; in a current-based network (``synaptic``) that current first joins the
    decayed synaptic current ``syn`` and the membrane receives all of it. The neurons whose
    current is non-zero go to ``touched`` (they are checked). Returns their number."""
    n_touched = 0
    if synaptic:
        for i in range(v.shape[0]):
            c = lif.integrate(lif.decay_current(syn[i], alpha[i]), current[i])
            syn[i] = c
            v[i] = lif.integrate(lif.leak(v[i], beta[i]), c)
            if c != 0:
                touched[n_touched] = i
                n_touched += 1
        return n_touched
    for i in range(v.shape[0]):
        c = current[i]
        v[i] = lif.integrate(lif.leak(v[i], beta[i]), c)
        if c != 0:
            touched[n_touched] = i
            n_touched += 1
    return n_touched


class Neurons(NamedTuple):
    """The population neurons' state of one sample, reused from sample to sample (index: the
    neuron's global index minus the input's size)."""

    v: np.ndarray  # (n,) float32 membranes
    syn: np.ndarray  # (n,) float32 synaptic currents (current-based networks)
    acc: np.ndarray  # (n,) float32 a group's currents, summed before they are added
    refractory: np.ndarray  # (n,) int64 the timestep in which the neuron was made so, or -1
    touch: np.ndarray  # (n,) int64 the last forward step that delivered to it
    touched: np.ndarray  # (n,) int64 the neurons to check (a prefix)
    fired: np.ndarray  # (n,) int64 one step's checks that fired: neuron << 2 | flags | 1
    fired_place: np.ndarray  # (n,) int64 and the queue place each spike took, or -1


@njit(cache=True)
def new_neurons(n):
    """Zeroed :class:`Neurons` of ``n`` neurons (never refractory, never touched)."""
    return Neurons(
        np.zeros(n, np.float32),
        np.zeros(n, np.float32),
        np.zeros(n, np.float32),
        np.full(n, -1, np.int64),
        np.full(n, -1, np.int64),
        np.empty(n, np.int64),
        np.empty(n, np.int64),
        np.empty(n, np.int64),
    )


@njit(cache=True, inline="always")
def deliver_group(chosen, slots, t, net, nrn, stamp):
    """Deliver the queue places ``chosen`` (in ascending order: the senders' order) in forward
    step ``stamp`` of timestep ``t``: each target's current is summed over the group, then
    added to its membrane once. Returns the number of neurons to check (in ``nrn.touched``)
    and the synaptic operations."""
    n_touched = 0
    syn = 0
    for k in range(chosen.shape[0]):
        row = chosen[k] // slots
        syn += net.slot_fanout[row]
        n_touched = deliver_row(row, t, stamp, n_touched, net, nrn)
    return apply_summed(n_touched, t, net.synaptic, nrn), syn


@njit(cache=True, inline="always")
def deliver_row(row, t, stamp, n_touched, net, nrn):
    """Add the synaptic entries of one queue row to the group's current ``nrn.acc``, skipping
    neurons refractory in timestep ``t`` (unless the network is current-based: their
    current still receives it); neurons reached for the first time in forward step
    ``stamp`` are appended to ``nrn.touched``. Returns its new length."""
    refractory, touch, touched, acc = nrn.refractory, nrn.touch, nrn.touched, nrn.acc
    synaptic = net.synaptic
    for e in range(net.ent_start[row], net.ent_start[row + 1]):
        j = net.ent_dst[e]
        if synaptic or refractory[j] != t:  # refractory neurons' membranes ignore input
            acc[j] += net.ent_w[e]
            if touch[j] != stamp:
                touch[j] = stamp
                touched[n_touched] = j
                n_touched += 1
    return n_touched


@njit(cache=True, inline="always")
def apply_summed(n_touched, t, synaptic, nrn):
    """Add a group's summed current to the membranes (and clear it); keep in ``nrn.touched``
    only the neurons whose current is non-zero (a zero current checks nothing). In a
    current-based network (``synaptic``) the current joins every target's synaptic current
    and reaches the membranes of those not refractory in timestep ``t`` only. Returns the
    number of neurons to check."""
    touched, acc, v = nrn.touched, nrn.acc, nrn.v
    m = 0
    if synaptic:
        syn, refractory = nrn.syn, nrn.refractory
        for k in range(n_touched):
            j = touched[k]
            c = acc[j]
            acc[j] = 0.0
            if c != 0:
                syn[j] = lif.integrate(syn[j], c)
                if refractory[j] != t:
                    v[j] = lif.integrate(v[j], c)
                    touched[m] = j
                    m += 1
        return m
    for k in range(n_touched):
        j = touched[k]
        c = acc[j]
        acc[j] = 0.0
        if c != 0:
            v[j] = lif.integrate(v[j], c)
            touched[m] = j
            m += 1
    return m


@njit(cache=True, inline="always")
def _grow(a, used, need):
    """``a`` itself, or a copy with room for ``need`` more entries after ``used``."""
    if used + need <= a.shape[0]:
        return a
    out = np.empty(max(2 * a.shape[0], used + need), a.dtype)
    out[:used] = a[:used]
    return out


@njit(cache=True, inline="always")
def _grow_rows(a, used):
    if used < a.shape[0]:
        return a
    out = np.empty((2 * a.shape[0], a.shape[1]), a.dtype)
    out[:used] = a[:used]
    return out


@njit(cache=True, inline="always")
def append(a, used, src, n):
    """``a`` (or a grown copy) with ``src[:n]`` written after its ``used`` entries."""
    a = _grow(a, used, n)
    a[used : used + n] = src[:n]
    return a


@njit(cache=True, nogil=True)
def input_synops_rows(x, fanout, out):
    """``out[r] = sum_j ceil(|x[r, j]|) * fanout[j]`` over the non-zero ``x`` of each row, in
    float64 (``asyncsnn.result.input_synops`` in one pass over the input: every term is an
    integer, so the sum is exact in any order and equals it)."""
    for r in range(x.shape[0]):
        total = 0.0
        for j in range(x.shape[1]):
            v = x[r, j]
            if v != 0:
                total += np.ceil(abs(np.float64(v))) * fanout[j]
        out[r] = total
