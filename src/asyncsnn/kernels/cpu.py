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

import numpy as np
import torch
from numba import njit

from ..errors import QueueOverflowError
from ..network import Network
from ..options import RunOptions
from ..result import RunResult
from . import lif
from .plan import KernelOutputs, Plan, run_chunks
from .queue import DEAD, RANDOM, _choose, _dequeue, _max_push, _queue_place, _spike_key
from .shared import (
    NOISE_STREAM,
    REFRACTORY_STREAM,
    UNIT,
    _grow,
    _grow_rows,
    counter_key,
    deliver_group,
    hash32,
    leak_and_input,
    uniform_bits,
)


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
    skey = np.full(qa, DEAD, np.int64)  # per slot: its key while queued, else DEAD
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
        skey[:] = DEAD
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
            noise_key = counter_key(NOISE_STREAM, t)
            n_live = 0
            n_heap = 0
            step = 0
            first_out = -1
            dlv_first = n_dlv
            n_chosen = 0
            while True:
                # ---- threshold, reset, refractoriness; new spikes join the queue --------------
                counter = (t << 16) + step
                refr_key = counter_key(REFRACTORY_STREAM, counter)
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
                        u = np.float32(uniform_bits(mixed, refr_key, i)) * UNIT
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
                        skey[live[k]] = DEAD
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


def simulate(plan: Plan, current: torch.Tensor, ent_w: np.ndarray, record: bool):
    """Run the kernel on every sample of ``plan`` with the input and bias ``current`` and the
    per-entry weights ``ent_w``: the outputs (a dict of the fields of
    :class:`~asyncsnn.kernels.plan.KernelOutputs`), per chunk of samples ``(b0, b1, tape)``,
    and the :class:`~asyncsnn.kernels.plan.KernelNet` it read (the backward pass reads the
    same)."""
    out = plan.new_outputs(record)
    kernel_net = plan.kernel_net(ent_w)
    outputs = KernelOutputs(*(out[k].numpy() for k in KernelOutputs._fields))
    args = (kernel_net, plan.rules, plan.kernel_inputs(current), outputs, record)
    chunks = run_chunks(_simulate, plan.B, args)
    overflow = sum(int(tape[-1]) for _, _, tape in chunks)
    if overflow:
        raise QueueOverflowError(overflow, plan.max_queued_per_neuron)
    return out, chunks, kernel_net


def run_async_cpu(net: Network, x: torch.Tensor, options: RunOptions) -> RunResult:
    """Asynchronous inference of ``net`` on ``x``: the reference engine's result.

    The caller has checked that the kernel applies (see ``asyncsnn.kernels``).
    """
    with torch.no_grad():
        plan = Plan(net, x, options)
        current = plan.input_current()
        out, _, _ = simulate(plan, current, plan.entry_weights().numpy(), record=False)
        return plan.result(out, out["spikes"], out["membrane"])
