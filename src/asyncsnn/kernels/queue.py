"""The kernel's queue: per-sample queue places, the policies' keys and the choice of a group,
as the reference orders them (docs/semantics.md, section 3.4; the layout is
:mod:`asyncsnn.queue`).

A key is a spike's priority above its tie-break (the lower place first): ``priority << 32 |
(2**32 - 1 - place)``. The group is chosen from the queued spikes only: a heap of their keys
for the policies whose priority stays fixed while a spike waits (momentum, fifo, layered), a
selection over fresh keys for ``random``.
"""

from __future__ import annotations

from typing import NamedTuple

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
def queue_place(key, row, rules, mixed, counter, i):
    """The queue place a new spike of neuron ``i`` (queue row ``row``) takes: the first free
    one of the neuron; -1 where network spike dropout drops the spike, -2 where every place
    is taken."""
    for d in range(rules.drop_stream.shape[0]):
        u = np.float32(uniform_bits(mixed, counter_key(rules.drop_stream[d], counter), i))
        if u * UNIT < rules.drop_p[d]:
            return -1
    for s in range(rules.slots):
        if key[row * rules.slots + s] == DEAD:
            return row * rules.slots + s
    return -2


@njit(cache=True, inline="always")
def spike_key(rules, pre, mixed, noise_key, step, layer, q, fbuf):
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


class Queue(NamedTuple):
    """One sample's queue, reused from sample to sample (``places`` = rows x slots)."""

    key: np.ndarray  # (places,) int64 each place's key while queued, else DEAD
    live: np.ndarray  # (places,) int64 the queued places, unordered (a prefix)
    live_pos: np.ndarray  # (places,) int64 where each queued place is in ``live``
    heap: np.ndarray  # (places,) int64 max-heap of the fixed keys (not ``random``)
    kv: np.ndarray  # (places,) int64 ``random``: this step's keys of the queued spikes
    ki: np.ndarray  # (F,) int64 scratch of the selection
    chosen: np.ndarray  # (F,) int64 the group (a prefix)
    fbuf: np.ndarray  # (1,) float32 scratch cell
    size: np.ndarray  # (2,) int64 queued spikes (LIVE) and keys in the heap (HEAP)


LIVE, HEAP = 0, 1


@njit(cache=True)
def new_queue(places, group):
    """An empty :class:`Queue` of ``places`` places choosing groups of up to ``group``."""
    qa = max(places, 1)
    return Queue(
        np.full(qa, DEAD, np.int64),
        np.empty(qa, np.int64),
        np.empty(qa, np.int64),
        np.empty(qa, np.int64),
        np.empty(qa, np.int64),
        np.empty(max(group, 1), np.int64),
        np.empty(max(group, 1), np.int64),
        np.empty(1, np.float32),
        np.zeros(2, np.int64),
    )


@njit(cache=True, inline="always")
def enqueue(queue, rules, q, key):
    """Queue the spike of place ``q`` with ``key``."""
    n_live = queue.size[LIVE]
    queue.key[q] = key
    queue.live[n_live] = q
    queue.live_pos[q] = n_live
    queue.size[LIVE] = n_live + 1
    if rules.policy != RANDOM:  # a key fixed while the spike waits
        queue.size[HEAP] = _max_push(queue.heap, queue.size[HEAP], key)


@njit(cache=True, inline="always")
def clear(queue):
    """Empty the queue (a stop rule); returns how many spikes it held."""
    n_live = queue.size[LIVE]
    for k in range(n_live):
        queue.key[queue.live[k]] = DEAD
    queue.size[LIVE] = 0
    queue.size[HEAP] = 0
    return n_live


#: the largest group :func:`sort_group` sorts by insertion; numpy's sort beyond it
INSERTION_MAX = 16


@njit(cache=True, inline="always")
def sort_group(chosen, n):
    """Sort the group ``chosen[:n]`` (distinct places) in ascending order, in place: by
    insertion up to :data:`INSERTION_MAX` places (no call into numpy's sort, whose fixed cost
    is most of the work for a group of a few), by numpy's sort beyond."""
    if n > INSERTION_MAX:
        chosen[:n].sort()
        return
    for k in range(1, n):
        place = chosen[k]
        m = k - 1
        while m >= 0 and chosen[m] > place:
            chosen[m + 1] = chosen[m]
            m -= 1
        chosen[m + 1] = place


@njit(cache=True, inline="always")
def choose(queue, rules, mixed, t, step):
    """The group of forward step ``step``: the ``F`` largest keys of the queued spikes
    (fresh ones for ``random``, else the heap's), into ``queue.chosen`` in ascending order
    and out of the queue. Returns their number."""
    n_live = queue.size[LIVE]
    chosen = queue.chosen
    if rules.policy == RANDOM:
        step_key = counter_key(RANDOM_STREAM, (t << 16) + step)
        for k in range(n_live):
            q = queue.live[k]
            queue.kv[k] = (uniform_bits(mixed, step_key, q) << 32) | (0xFFFFFFFF - q)
        n_chosen = select_largest(queue.kv, n_live, rules.group, queue.ki, chosen)
    else:
        n_chosen = 0
        n_heap = queue.size[HEAP]
        while n_chosen < rules.group and n_heap > 0:
            chosen[n_chosen] = 0xFFFFFFFF - (queue.heap[0] & 0xFFFFFFFF)
            n_chosen += 1
            n_heap = _max_pop(queue.heap, n_heap)
        queue.size[HEAP] = n_heap
    sort_group(chosen, n_chosen)
    live, live_pos = queue.live, queue.live_pos
    for k in range(n_chosen):  # out of the queue
        q = chosen[k]
        queue.key[q] = DEAD
        p = live_pos[q]
        n_live -= 1
        last = live[n_live]
        live[p] = last
        live_pos[last] = p
    queue.size[LIVE] = n_live
    return n_chosen
