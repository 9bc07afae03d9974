"""numba CPU kernel for asynchronous execution, identical to the reference engine.

The dense input delivery (each timestep's input through the input projections, plus the
biases) is computed by PyTorch exactly as the reference does it, one timestep at a time, and
handed over as a (timesteps, batch, neurons) current. The kernel does the rest, for chunks of
samples on a pool of threads (samples are independent): leak, integration, threshold, reset,
refractoriness and refractory dropout (a neuron then holds up to ``max_queued_per_neuron``
queue places), the queue, the policy, network spike dropout, group delivery through
per-source tables, stop rules, output spikes, synaptic operations, forward-step counts and
the membrane of a non-spiking readout. Input spike dropout is applied to the input before.

A group's currents are summed first, in the order of the senders' index, and then added to
the membranes once; only neurons whose current is non-zero are checked (docs/semantics.md,
section 3), in inference and training alike. With gradients the kernel also records the
tape that :mod:`asyncsnn.kernels.cpu_grad` differentiates.

Cost follows the spikes: a forward step touches the chosen spikes' table rows and their
targets only, and only the neurons that received current are checked against the threshold.
The group is chosen from the queued spikes only: a heap of their keys for the policies whose
priority stays fixed while a spike waits (momentum, fifo, layered), a selection over fresh
keys for ``random``. Every key is the priority above the slot's tie-break (the lower slot
first), as in the reference, so the chosen set is the reference's, and the priorities are
the reference's bit for bit: the ``random`` keys and the momentum noise come from the same
counter-based hash as :class:`asyncsnn.rng.SampleRNG`, and float32 arithmetic is done in the
same order.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
from numba import njit

from ..dynamics import decay_factor
from ..errors import QueueOverflowError
from ..hooks import MaxForwardSteps, NetworkSpikeDropout, StepContext, StopOnOutputSpike, overrides
from ..network import INPUT, Network
from ..options import RunOptions
from ..queue import queue_layout
from ..result import RunResult
from ..rng import Stream
from ..scheduling import FIFO, Layered, Momentum, Random
from . import lif

# policy codes
RANDOM, MOMENTUM_NOISE, MOMENTUM, FIFO_CODE, LAYERED = 0, 1, 2, 3, 4

_DEAD = np.iinfo(np.int64).min  # key of an empty slot: below every live key
# the named streams as plain ints for numba; counters are rng.step_counter's (t << 16) + step
_RANDOM_STREAM = int(Stream.RANDOM_POLICY)
_NOISE_STREAM = int(Stream.MOMENTUM_NOISE)
_REFRACTORY_STREAM = int(Stream.REFRACTORY_DROPOUT)
_UNIT = np.float32(1.0 / (1 << 24))


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
    return potential + lam * (np.float32(bits) * _UNIT)


@njit(cache=True)
def momentum_priorities(potential, lam, bits):
    """:func:`momentum_priority` of arrays (for tests)."""
    out = np.empty(potential.shape[0], np.float32)
    for i in range(potential.shape[0]):
        out[i] = momentum_priority(potential[i], lam, bits[i])
    return out


# ------------------------------------------------------------------ binary heaps of int64 keys
@njit(cache=True, inline="always")
def _max_push(heap, size, key):
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if heap[parent] >= key:
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = key
    return size + 1


@njit(cache=True, inline="always")
def _max_pop(heap, size):
    """Remove the root of a max-heap of ``size`` keys; returns the new size."""
    size -= 1
    key = heap[size]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] > heap[child]:
            child += 1
        if heap[child] <= key:
            break
        heap[i] = heap[child]
        i = child
    if size > 0:
        heap[i] = key
    return size


@njit(cache=True, inline="always")
def _min_sift_down(heap, size, i):
    key = heap[i]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] >= key:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = key


@njit(cache=True, inline="always")
def _min_push(heap, size, key):
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if heap[parent] <= key:
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = key
    return size + 1


@njit(cache=True)
def select_largest(keys, n, m, heap, chosen):
    """The slots of the ``m`` largest of the distinct ``keys[:n]`` (each ``priority << 32 |
    (2**32 - 1 - slot)``) into ``chosen``, in no particular order; returns how many."""
    size = 0
    for k in range(n):
        key = keys[k]
        if size < m:
            size = _min_push(heap, size, key)
        elif key > heap[0]:
            heap[0] = key
            _min_sift_down(heap, size, 0)
    for k in range(size):
        chosen[k] = 0xFFFFFFFF - (heap[k] & 0xFFFFFFFF)
    return size


@njit(cache=True, inline="always")
def _ordered(bits):
    """The reference's order-preserving map of float32 bits (an int32 value) to int64."""
    b = np.int64(bits)
    return b ^ ((b >> 31) & 0x7FFFFFFF)


# ------------------------------------------------------------------ the phases of a timestep
@njit(cache=True, inline="always")
def leak_and_input(v, beta, current, touched):
    """The start of a timestep: every membrane leaks and receives the input and bias
    ``current``; the neurons whose current is non-zero go to ``touched`` (they are checked).
    Returns their number."""
    n_touched = 0
    for i in range(v.shape[0]):
        c = current[i]
        v[i] = lif.integrate(lif.leak(v[i], beta[i]), c)
        if c != 0:
            touched[n_touched] = i
            n_touched += 1
    return n_touched


@njit(cache=True, inline="always")
def deliver_group(chosen, slots, t, net, state):
    """Deliver the queue places ``chosen`` (in ascending order: the senders' order) of
    forward step ``stamp``: each target's current is summed over the group, then added to
    its membrane once. ``state`` is ``(stamp, refractory, acc, touch, touched, v)``.
    Returns the number of neurons to check (in ``touched``) and the synaptic operations."""
    stamp, refractory, acc, touch, touched, v = state
    n_touched = 0
    syn = 0
    for k in range(chosen.shape[0]):
        row = chosen[k] // slots
        syn += net.slot_fanout[row]
        n_touched = deliver_row(
            row,
            t,
            stamp,
            n_touched,
            net.ent_start,
            net.ent_dst,
            net.ent_w,
            refractory,
            acc,
            touch,
            touched,
        )
    return apply_summed(n_touched, touched, acc, v), syn


@njit(cache=True, inline="always")
def _queue_place(skey, row, rules, mixed, counter, i):
    """The queue place a new spike of neuron ``i`` (queue row ``row``) takes: the first free
    one of the neuron; -1 where network spike dropout drops the spike, -2 where every place
    is taken."""
    for d in range(rules.drop_stream.shape[0]):
        u = np.float32(uniform_bits(mixed, counter_key(rules.drop_stream[d], counter), i))
        if u * _UNIT < rules.drop_p[d]:
            return -1
    for s in range(rules.slots):
        if skey[row * rules.slots + s] == _DEAD:
            return row * rules.slots + s
    return -2


@njit(cache=True, inline="always")
def _spike_key(rules, pre, mixed, noise_key, step, layer, q, fbuf):
    """The key of a spike entering queue place ``q``: its priority above the tie-break (the
    lower place first), as the reference orders them; 0 for ``random`` (drawn per step).
    ``pre``: the membrane before the spike; ``fbuf``: a float32 scratch cell."""
    tie = 0xFFFFFFFF - q
    policy = rules.policy
    if policy in (MOMENTUM_NOISE, MOMENTUM):
        fbuf[0] = pre
        if policy == MOMENTUM_NOISE:
            fbuf[0] = momentum_priority(pre, rules.lam, uniform_bits(mixed, noise_key, q))
        return (_ordered(fbuf.view(np.int32)[0]) << 32) | tie
    if policy == FIFO_CODE:
        return ((-np.int64(step)) << 32) | tie
    if policy == LAYERED:
        return ((-np.int64(layer)) << 32) | tie
    return np.int64(0)


@njit(cache=True, inline="always")
def _choose(rules, mixed, t, step, live, n_live, heap, n_heap, kv, ki, chosen):
    """The group of forward step ``step``: the ``F`` largest keys of the queued spikes, fresh
    ones for ``random`` (``kv``, ``ki`` scratch), else the heap's, into ``chosen`` in
    ascending order. Returns their number and the heap's new size."""
    if rules.policy == RANDOM:
        step_key = counter_key(_RANDOM_STREAM, (t << 16) + step)
        for k in range(n_live):
            q = live[k]
            kv[k] = (uniform_bits(mixed, step_key, q) << 32) | (0xFFFFFFFF - q)
        n_chosen = select_largest(kv, n_live, rules.group, ki, chosen)
    else:
        n_chosen = 0
        while n_chosen < rules.group and n_heap > 0:
            chosen[n_chosen] = 0xFFFFFFFF - (heap[0] & 0xFFFFFFFF)
            n_chosen += 1
            n_heap = _max_pop(heap, n_heap)
    chosen[:n_chosen].sort()
    return n_chosen, n_heap


@njit(cache=True, inline="always")
def _dequeue(chosen, n_chosen, skey, live, live_pos, n_live):
    """Remove the chosen places from the queue; returns the new number of queued spikes."""
    for k in range(n_chosen):
        q = chosen[k]
        skey[q] = _DEAD
        p = live_pos[q]
        n_live -= 1
        last = live[n_live]
        live[p] = last
        live_pos[last] = p
    return n_live


# ------------------------------------------------------------------ the kernel's arguments
class KernelNet(NamedTuple):
    """The network as the kernel reads it (population neurons in global order - n_in)."""

    beta: np.ndarray  # (n,) leak per timestep
    theta: np.ndarray  # (n,) threshold, inf for a non-spiking readout
    slot_of: np.ndarray  # (n,) queue row of a neuron with outgoing projections, else -1
    slot_layer: np.ndarray  # (rows,) layer of each queue row's neuron
    slot_fanout: np.ndarray  # (rows,) its fan-out
    ent_start: np.ndarray  # (rows + 1,) CSR: first synaptic entry of each row
    ent_dst: np.ndarray  # (entries,) target neuron
    ent_w: np.ndarray  # (entries,) weight x coefficient
    in_fanout: np.ndarray  # (n_input,) fan-out of the input positions
    out_lo: int  # the output population's neurons
    out_hi: int


class KernelRules(NamedTuple):
    """The run's policy, stop rules and dropouts."""

    policy: int  # RANDOM, MOMENTUM_NOISE, MOMENTUM, FIFO_CODE or LAYERED
    lam: np.float32  # momentum noise scale
    group: int  # F, at most the number of queue places
    max_steps: int  # MaxForwardSteps, -1 without
    extra_steps: int  # StopOnOutputSpike, -1 without
    slots: int  # queue places per neuron
    p_refractory: np.float32  # refractory dropout
    drop_stream: np.ndarray  # network spike dropouts that act: their streams
    drop_p: np.ndarray  # and probabilities


class KernelInputs(NamedTuple):
    current: np.ndarray  # (T, B, n) input and bias current of each timestep
    xin: np.ndarray  # (T, B, n_input) the input, for its synaptic operations
    seeds: np.ndarray  # (B,) per-sample seeds


class KernelOutputs(NamedTuple):
    """Written in place by the kernel (each sample its own rows)."""

    spikes: np.ndarray  # (T, B, n)
    forward_steps: np.ndarray  # (T, B)
    in_synops: np.ndarray  # (T, B)
    net_synops: np.ndarray  # (T, B)
    undelivered: np.ndarray  # (T, B)
    membrane: np.ndarray  # (T, B, outputs) or empty
    v_end: np.ndarray  # (T, B, n) with a tape, else empty


# ------------------------------------------------------------------ the simulation
@njit(cache=True, inline="always")
def deliver_row(
    row, t, stamp, n_touched, ent_start, ent_dst, ent_w, refractory, into, touch, touched
):
    """Add the synaptic entries of one queue row to ``into`` (the membranes, or the group's
    current), skipping neurons refractory in timestep ``t``; neurons reached for the first
    time in forward step ``stamp`` are appended to ``touched``. Returns its new length."""
    for e in range(ent_start[row], ent_start[row + 1]):
        j = ent_dst[e]
        if refractory[j] != t:  # refractory neurons ignore input
            into[j] += ent_w[e]
            if touch[j] != stamp:
                touch[j] = stamp
                touched[n_touched] = j
                n_touched += 1
    return n_touched


@njit(cache=True, inline="always")
def apply_summed(n_touched, touched, acc, v):
    """Add a group's summed current to the membranes (and clear it); keep in ``touched``
    only the neurons whose current is non-zero (a zero current checks nothing). Returns
    their number."""
    m = 0
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


@njit(cache=True, nogil=True)
def _simulate(b0, b1, net, rules, inp, out, record):
    """Samples ``b0 .. b1 - 1``; see the module docstring. ``net`` is a :class:`KernelNet`,
    ``rules`` :class:`KernelRules`, ``inp`` :class:`KernelInputs` and ``out``
    :class:`KernelOutputs` (written in place). ``record``: write the tape the backward pass
    reads (see :mod:`asyncsnn.kernels.cpu_grad`) and every timestep's final membranes into
    ``out.v_end``. Returns the tape and the number of spikes that found no free queue place.
    """
    beta, theta, slot_of, slot_layer = net.beta, net.theta, net.slot_of, net.slot_layer
    in_fanout, out_lo, out_hi = net.in_fanout, net.out_lo, net.out_hi
    policy, group, slots = rules.policy, rules.group, rules.slots
    max_steps, extra_steps, p_refractory = rules.max_steps, rules.extra_steps, rules.p_refractory
    current, xin, seeds = inp.current, inp.xin, inp.seeds
    spikes, forward_steps, in_synops = out.spikes, out.forward_steps, out.in_synops
    net_synops, undelivered, membrane, v_end = (
        out.net_synops,
        out.undelivered,
        out.membrane,
        out.v_end,
    )
    n_t_steps = current.shape[0]
    n = current.shape[2]
    q_n = slot_layer.shape[0] * slots
    qa = max(q_n, 1)
    v = np.zeros(n, np.float32)
    acc = np.zeros(n, np.float32)  # a group's currents, summed before they are added
    refractory = np.full(n, -1, np.int64)  # the timestep in which the neuron was made so
    touch = np.full(n, -1, np.int64)  # the last forward step that delivered to it
    touched = np.empty(n, np.int64)
    skey = np.full(qa, _DEAD, np.int64)  # per slot: its key while queued, else _DEAD
    live = np.empty(qa, np.int64)  # the queued slots, unordered
    live_pos = np.empty(qa, np.int64)
    heap = np.empty(qa, np.int64)
    kv = np.empty(qa, np.int64)  # random: this step's keys of the queued spikes
    ki = np.empty(max(group, 1), np.int64)
    chosen = np.empty(max(group, 1), np.int64)
    fbuf = np.empty(1, np.float32)
    record_membrane = membrane.shape[0] > 0
    # the tape: per spike (neuron << 2 | made refractory << 1 | 1, its queue slot or -1),
    # per delivery its slot, per step a row (timestep, first delivery, deliveries, first
    # spike, spikes), per sample its first row
    cap = 4096 if record else 1
    t_code = np.empty(cap, np.int32)
    t_slot = np.empty(cap, np.int32)
    t_dlv = np.empty(cap, np.int32)
    t_rows = np.empty((cap, 5), np.int64)
    t_first = np.zeros(b1 - b0 + 1, np.int64)
    n_chk = 0
    n_dlv = 0
    n_rows = 0
    overflow = 0
    stamp = 0
    for b in range(b0, b1):  # samples are independent: each starts from a fresh state
        t_first[b - b0] = n_rows
        v[:] = 0.0
        refractory[:] = -1
        skey[:] = _DEAD
        mixed = hash32((seeds[b] & 0xFFFFFFFF) ^ 0x5BD1E995)
        for t in range(n_t_steps):
            # ---- leak, then the input and the biases (not a forward step) --------------------
            xt = xin[t, b]
            syn = 0
            for i in range(xt.shape[0]):
                if xt[i] != 0:
                    syn += in_fanout[i]
            in_synops[t, b] = syn
            n_touched = leak_and_input(v, beta, current[t, b], touched)
            noise_key = counter_key(_NOISE_STREAM, t)
            n_live = 0
            n_heap = 0
            step = 0
            first_out = -1
            dlv_first = n_dlv
            n_chosen = 0
            while True:
                # ---- threshold, reset, refractoriness; new spikes join the queue --------------
                counter = (t << 16) + step
                refr_key = counter_key(_REFRACTORY_STREAM, counter)
                if record:
                    t_rows = _grow_rows(t_rows, n_rows)
                    t_rows[n_rows, 0] = t
                    t_rows[n_rows, 1] = dlv_first
                    t_rows[n_rows, 2] = n_chosen if step else 0
                    t_rows[n_rows, 3] = n_chk
                    t_code = _grow(t_code, n_chk, n_touched)
                    t_slot = _grow(t_slot, n_chk, n_touched)
                out_fired = False
                for k in range(n_touched):
                    i = touched[k]
                    pre = v[i]
                    if not lif.crossed(pre, theta[i]):
                        continue
                    made = True
                    if p_refractory > 0:
                        u = np.float32(uniform_bits(mixed, refr_key, i)) * _UNIT
                        made = u >= p_refractory
                    if made:
                        refractory[i] = t
                    v[i] = lif.reset(pre)
                    spikes[t, b, i] += 1.0
                    if out_lo <= i < out_hi:
                        out_fired = True
                    row = slot_of[i]
                    q = -1
                    if row >= 0:
                        q = _queue_place(skey, row, rules, mixed, counter, i)
                        if q == -2:  # every place of the neuron is taken
                            overflow += 1
                            q = -1
                    if record:
                        t_code[n_chk] = (i << 2) | (2 if made else 0) | 1
                        t_slot[n_chk] = q
                        n_chk += 1
                    if q < 0:
                        continue
                    key = _spike_key(rules, pre, mixed, noise_key, step, slot_layer[row], q, fbuf)
                    skey[q] = key
                    live[n_live] = q
                    live_pos[q] = n_live
                    n_live += 1
                    if policy != RANDOM:  # a key fixed while the spike waits
                        n_heap = _max_push(heap, n_heap, key)
                if record:
                    t_rows[n_rows, 4] = n_chk - t_rows[n_rows, 3]
                    n_rows += 1
                # ---- stop rules ---------------------------------------------------------------
                stop = max_steps >= 0 and step >= max_steps
                if extra_steps >= 0:
                    if out_fired and first_out < 0:
                        first_out = step
                    if first_out >= 0 and step >= first_out + extra_steps:
                        stop = True
                if stop:
                    undelivered[t, b] += n_live
                    for k in range(n_live):
                        skey[live[k]] = _DEAD
                    n_live = 0
                    n_heap = 0
                if n_live == 0:
                    break
                # ---- choose the F highest priorities, deliver them in slot order -------------
                step += 1
                n_chosen, n_heap = _choose(
                    rules, mixed, t, step, live, n_live, heap, n_heap, kv, ki, chosen
                )
                n_live = _dequeue(chosen, n_chosen, skey, live, live_pos, n_live)
                # ---- deliver the group ---------------------------------------------------------
                forward_steps[t, b] += 1
                stamp += 1
                if record:
                    t_dlv = _grow(t_dlv, n_dlv, n_chosen)
                    dlv_first = n_dlv
                    t_dlv[n_dlv : n_dlv + n_chosen] = chosen[:n_chosen]
                    n_dlv += n_chosen
                group_state = (stamp, refractory, acc, touch, touched, v)
                n_touched, syn = deliver_group(chosen[:n_chosen], slots, t, net, group_state)
                net_synops[t, b] += syn
            if record_membrane:
                for i in range(out_lo, out_hi):
                    membrane[t, b, i - out_lo] = v[i]
            if record:
                v_end[t, b] = v
    t_first[b1 - b0] = n_rows
    return t_code, t_slot, t_dlv, t_rows, t_first, overflow


# ------------------------------------------------------------------ host side
def _structure(net: Network) -> dict:
    """The queue's layout (:mod:`asyncsnn.queue`, prioritized input) as CSR delivery tables,
    with the weights re-indexed for the kernel (cached on the network's tables).

    A row's synaptic entries keep the order of ``Network.tables()``, which is the reference's
    table-column order.
    """
    tab = net.tables()
    cached = tab.derived.get("numba-cpu")
    if cached is not None:
        return cached
    n_in = tab.n_input
    n_pop = tab.n_neurons - n_in
    layout = queue_layout(net, queued_input=False)
    neuron = layout.neuron.cpu().numpy()
    first, ent_start = layout.csr()  # the input's entries come before the rows'
    ent_start = ent_start.cpu().numpy()
    if first + ent_start[-1] != len(tab.entries_src):
        raise AssertionError("the synaptic entries are not sorted by source")
    slot_of = np.full(n_pop, -1, np.int64)
    slot_of[neuron - n_in] = np.arange(len(neuron))
    spiking = np.zeros(n_pop, bool)
    for pop in net.populations:
        spiking[pop.offset - n_in : pop.offset - n_in + pop.size] = pop.spiking
    # the entries' weights index Network.weight_vector() (all weights, then 1 and 0); the
    # kernel's entries only need the weights of projections from populations: re-index them
    # into the concatenation of those, then 1 and 0 (the same values, less to copy)
    widx = tab.entries_widx.cpu().numpy()[first:]
    remap = np.full(widx.max(initial=0) + 1, -1, np.int64)
    weighted, off_all, off_sub = [], 0, 0
    for p in net.projections:
        w = p.weighted
        if w is None:
            continue
        numel = w.weight.numel()
        if p.source != INPUT:
            hi = min(off_all + numel, len(remap))
            remap[off_all:hi] = off_sub + np.arange(hi - off_all)
            weighted.append(p)
            off_sub += numel
        off_all += numel
    if off_all < len(remap):  # the fixed weight 1 (chains without a weighted module)
        remap[off_all] = off_sub
    ent_widx = remap[widx]
    if (ent_widx < 0).any():
        raise AssertionError("an entry from a population points at an input weight")
    in_fanout = tab.fanout.cpu().numpy()[:n_in].astype(np.int64)
    out = {
        "slot_of": slot_of,
        "slot_layer": layout.layer.cpu().numpy(),
        "slot_fanout": layout.fanout.cpu().numpy().astype(np.int64),
        "ent_start": ent_start,
        "ent_dst": (tab.entries_dst.cpu().numpy()[first:] - n_in).astype(np.int64),
        "ent_widx": ent_widx,
        "ent_widx_t": torch.from_numpy(ent_widx),
        "ent_coef_t": tab.entries_coef.cpu()[first:].contiguous(),
        "weighted": weighted,
        "spiking": torch.from_numpy(spiking),
        "in_fanout": in_fanout,
        # input synaptic operations are exact integers in float32 below 2**24 per sample and
        # timestep, whatever the summation order: the kernel may count them then
        "in_synops_exact": int(in_fanout.sum()) < 2**24,
    }
    tab.derived["numba-cpu"] = out
    return out


def _policy(scheduler) -> tuple[int, float]:
    if type(scheduler) is Random:
        return RANDOM, 0.0
    if type(scheduler) is Momentum:
        lam = float(scheduler.lambda_ms)
        return (MOMENTUM, 0.0) if lam == 0 else (MOMENTUM_NOISE, lam)
    if type(scheduler) is FIFO:
        return FIFO_CODE, 0.0
    if type(scheduler) is Layered:
        return LAYERED, 0.0
    raise ValueError(f"the kernel has no policy {scheduler!r}")


def _stop_rules(hooks) -> tuple[int, int]:
    max_steps, extra = -1, -1
    for h in hooks:
        if type(h) is MaxForwardSteps:
            max_steps = h.max_steps if max_steps < 0 else min(max_steps, h.max_steps)
        elif type(h) is StopOnOutputSpike:
            extra = h.extra_steps if extra < 0 else min(extra, h.extra_steps)
    return max_steps, extra


def input_current(net: Network, x: torch.Tensor) -> torch.Tensor:
    """(timesteps, batch, population neurons) current of each timestep's input delivery:
    the input projections applied to the timestep's input, plus the biases, computed as the
    reference computes it (one timestep at a time: a batched product may round otherwise)."""
    T, B = x.shape[0], x.shape[1]
    n_in = net.n_input
    n_pop = net.n_neurons - n_in
    dtype = x.dtype
    out = torch.zeros(T, B, n_pop, dtype=dtype)
    projs = [p for p in net.projections if p.source == INPUT]
    by_pop = []
    for pop in net.populations:
        mine = [p for p in projs if p.target == pop.name]
        if mine:
            by_pop.append((slice(pop.offset - n_in, pop.offset - n_in + pop.size), mine))
    for sl, mine in by_pop:
        per_t = []
        for t in range(T):
            x_t = x[t]
            cur = mine[0].apply(x_t)
            for p in mine[1:]:
                cur = cur + p.apply(x_t)
            per_t.append(cur)
        out[:, :, sl] = torch.stack(per_t)
    bias = net.bias_vector()[n_in:].to(dtype)
    if bool((bias != 0).any()):
        out += bias
    return out


def run_async_cpu(net: Network, x: torch.Tensor, options: RunOptions) -> RunResult:
    """Asynchronous inference of ``net`` on ``x``: the reference engine's result.

    The caller has checked that the kernel applies (see ``asyncsnn.kernels``).
    """
    with torch.no_grad():
        plan = Plan(net, x, options)
        current = plan.input_current()
        out, _ = plan.simulate(current, plan.entry_weights().numpy(), record=False)
        return plan.result(out, out["spikes"], out["membrane"])


def transformed_input(net: Network, x: torch.Tensor, rng, hooks, training: bool):
    """The input after the hooks that transform it (input spike dropout), as the reference
    applies them, one timestep at a time."""
    active = [h for h in hooks if overrides(h, "transform_input")]
    if not active:
        return x
    ctx = StepContext(net, x.shape[1], rng, training)
    frames = []
    for t in range(x.shape[0]):
        ctx.timestep = t
        x_t = x[t]
        for h in active:
            x_t = h.transform_input(ctx, x_t)
        frames.append(x_t)
    return torch.stack(frames)


class Plan:
    """Everything one run of the kernel needs, prepared from the network and the call; shared
    by inference (:func:`run_async_cpu`) and training (:mod:`asyncsnn.kernels.cpu_grad`)."""

    def __init__(self, net: Network, x: torch.Tensor, options: RunOptions):
        o = options
        self.net = net
        self.x = transformed_input(net, x, o.rng, o.hooks, o.training)
        self.T, self.B = x.shape[0], x.shape[1]
        tab = net.tables()
        self.n_in = tab.n_input
        self.n_pop = tab.n_neurons - self.n_in
        self.dtype = x.dtype
        self.st = st = _structure(net)
        self.slots = o.slots
        self.max_queued_per_neuron = o.max_queued_per_neuron
        n_slots = len(st["slot_layer"]) * self.slots
        self.group = min(o.group_size, n_slots)
        self.policy, self.lam = _policy(o.scheduler)
        self.max_steps, self.extra = _stop_rules(o.hooks)
        drops = [h for h in o.hooks if type(h) is NetworkSpikeDropout and o.training and h.p > 0]
        self.drop_stream = np.array([h.stream for h in drops], np.int64)
        self.drop_p = np.array([h.p for h in drops], np.float32)
        self.p_refractory = np.float32(o.refractory_dropout)
        self.beta = decay_factor(o.dt, net.tau_m.to(self.dtype)).detach().contiguous()
        theta = net.threshold.to(self.dtype).masked_fill(~st["spiking"], float("inf"))
        self.theta = theta.detach().contiguous()
        out = net.output
        self.out_lo = out.offset - self.n_in
        self.out_hi = self.out_lo + out.size
        self.readout = not out.spiking
        self.seeds = o.rng.seeds.to(device="cpu", dtype=torch.int64).contiguous()

    def entry_weights(self) -> torch.Tensor:
        """Per synaptic entry of the populations' projections: weight x coefficient (carries
        gradients to the weights where they require them)."""
        st = self.st
        w_sub = torch.cat(
            [p.weighted.weight.flatten().to(self.dtype) for p in st["weighted"]]
            + [torch.tensor([1.0, 0.0], dtype=self.dtype)]
        )
        return w_sub[st["ent_widx_t"]] * st["ent_coef_t"].to(self.dtype)

    def input_current(self) -> torch.Tensor:
        return input_current(self.net, self.x)

    def simulate(self, current: torch.Tensor, ent_w: np.ndarray, record: bool):
        """Run the kernel: the outputs (with ``record``, ``v_end``: every timestep's final
        membranes), and per chunk of samples ``(b0, b1, tape)``."""
        T, B, st = self.T, self.B, self.st
        out = {
            "spikes": torch.zeros(T, B, self.n_pop, dtype=self.dtype),
            "forward_steps": torch.zeros(T, B, dtype=torch.long),
            "in_synops": torch.zeros(T, B, dtype=torch.long),
            "net_synops": torch.zeros(T, B, dtype=torch.long),
            "undelivered": torch.zeros(T, B, dtype=torch.long),
            "membrane": torch.zeros(
                (T, B, self.out_hi - self.out_lo) if self.readout else (0, 0, 0),
                dtype=self.dtype,
            ),
            "v_end": torch.zeros((T, B, self.n_pop) if record else (0, 0, 0), dtype=self.dtype),
        }
        xin = self.x.detach().reshape(T, B, -1)  # a view of batch-first input: no copy
        if xin.stride(2) != 1:
            xin = xin.contiguous()
        kernel_net = KernelNet(
            beta=self.beta.numpy(),
            theta=self.theta.numpy(),
            slot_of=st["slot_of"],
            slot_layer=st["slot_layer"],
            slot_fanout=st["slot_fanout"],
            ent_start=st["ent_start"],
            ent_dst=st["ent_dst"],
            ent_w=ent_w,
            in_fanout=st["in_fanout"],
            out_lo=self.out_lo,
            out_hi=self.out_hi,
        )
        rules = KernelRules(
            policy=self.policy,
            lam=np.float32(self.lam),
            group=self.group,
            max_steps=self.max_steps,
            extra_steps=self.extra,
            slots=self.slots,
            p_refractory=self.p_refractory,
            drop_stream=self.drop_stream,
            drop_p=self.drop_p,
        )
        inputs = KernelInputs(
            current=current.detach().contiguous().numpy(),
            xin=xin.numpy(),
            seeds=self.seeds.numpy(),
        )
        outputs = KernelOutputs(*(out[k].numpy() for k in KernelOutputs._fields))
        self.kernel_net = kernel_net  # the backward pass reads the same network
        args = (kernel_net, rules, inputs, outputs, record)
        chunks = run_chunks(_simulate, B, args)
        overflow = sum(int(tape[-1]) for _, _, tape in chunks)
        if overflow:
            raise QueueOverflowError(overflow, self.max_queued_per_neuron)
        return out, chunks

    def result(self, out: dict, spikes: torch.Tensor, membrane: torch.Tensor | None) -> RunResult:
        """The run's result around ``spikes`` and ``membrane`` (which may carry gradients)."""
        if self.st["in_synops_exact"]:
            input_synops = out["in_synops"].to(self.dtype)
        else:  # as the reference computes them
            fanout = self.net.tables().fanout[: self.n_in].to(self.dtype)
            xin = self.x.detach().reshape(self.T, self.B, -1)
            input_synops = (xin != 0).to(self.dtype) @ fanout
        return RunResult(
            spikes=spikes,
            forward_steps=out["forward_steps"],
            synops=input_synops + out["net_synops"].to(self.dtype),
            undelivered=out["undelivered"],
            output_counts=spikes[:, :, self.out_lo : self.out_hi].sum(0),
            membrane=membrane if self.readout else None,
            network=self.net,
        )


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def _threads() -> int:
    """Worker threads: PyTorch's intra-op setting (``torch.set_num_threads``)."""
    return max(1, torch.get_num_threads())


def run_chunks(kernel, batch: int, args: tuple, per_thread: int = 4) -> list:
    """``kernel(b0, b1, *args)`` on all samples, in chunks over a pool of threads (the kernels
    release the GIL; a chunk's samples write disjoint parts of the outputs). Returns
    ``[(b0, b1, result), ...]`` in sample order."""
    threads = min(_threads(), batch)
    size = batch if threads == 1 else max(1, batch // (per_thread * threads))
    bounds = [(b0, min(b0 + size, batch)) for b0 in range(0, batch, size)]
    results = map_chunks(lambda b0, b1: kernel(b0, b1, *args), bounds)
    return [(b0, b1, r) for (b0, b1), r in zip(bounds, results, strict=True)]


def map_chunks(fn, bounds: list) -> list:
    """``[fn(b0, b1) for b0, b1 in bounds]``, on the pool of threads where there are several
    chunks and threads."""
    global _POOL, _POOL_SIZE
    threads = min(_threads(), len(bounds))
    if threads <= 1:
        return [fn(b0, b1) for b0, b1 in bounds]
    with _POOL_LOCK:
        if _POOL is None or threads > _POOL_SIZE:
            _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="asyncsnn")
            _POOL_SIZE = threads
        pool = _POOL
    futures = [pool.submit(fn, b0, b1) for b0, b1 in bounds]
    return [f.result() for f in futures]
