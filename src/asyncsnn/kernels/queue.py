"""The kernel's queue: per-sample queue places, the policies' keys and the choice of a group,
as the reference orders them (docs/semantics.md, section 3.4; the layout is
:mod:`asyncsnn.queue`).

A key is a spike's priority above its tie-break (the lower place first): ``priority << 32 |
(2**32 - 1 - place)``. The group is chosen from the queued spikes only: a heap of their keys
for the policies whose priority stays fixed while a spike waits (momentum, fifo, layered), a
selection over fresh keys for ``random``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .shared import RANDOM_STREAM, UNIT, counter_key, momentum_priority, uniform_bits

# policy codes
RANDOM, MOMENTUM_NOISE, MOMENTUM, FIFO_CODE, LAYERED = 0, 1, 2, 3, 4

DEAD = np.iinfo(np.int64).min  # key of an empty place: below every live key


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


@njit(cache=True, inline="always")
def _queue_place(skey, row, rules, mixed, counter, i):
    """The queue place a new spike of neuron ``i`` (queue row ``row``) takes: the first free
    one of the neuron; -1 where network spike dropout drops the spike, -2 where every place
    is taken."""
    for d in range(rules.drop_stream.shape[0]):
        u = np.float32(uniform_bits(mixed, counter_key(rules.drop_stream[d], counter), i))
        if u * UNIT < rules.drop_p[d]:
            return -1
    for s in range(rules.slots):
        if skey[row * rules.slots + s] == DEAD:
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
        step_key = counter_key(RANDOM_STREAM, (t << 16) + step)
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
        skey[q] = DEAD
        p = live_pos[q]
        n_live -= 1
        last = live[n_live]
        live[p] = last
        live_pos[last] = p
    return n_live
