"""numba CPU kernel for asynchronous execution, identical to the reference engine.

The dense input delivery (each timestep's input through the input projections, plus the
biases) is computed by PyTorch exactly as the reference does it, one timestep at a time, and
handed over as a (timesteps, batch, neurons) current. The kernel does the rest, for chunks of
samples on a pool of threads (samples are independent): leak, integration (and, in a
current-based network, the synaptic currents), threshold, reset (to zero or by subtraction),
refractoriness and refractory dropout (a neuron then holds up to ``max_queued_per_neuron``
queue places), the queue, the policy, network spike dropout, group delivery through
per-source tables, stop rules, output spikes, the network's synaptic operations,
forward-step counts, the event-driven neuron updates (the neurons checked, a counter of
each step's touched neurons) and the membrane of a non-spiking readout. Input spike dropout
is applied to the input before; the input's synaptic operations are counted on the host
(:meth:`asyncsnn.kernels.plan.Plan.result`, by :func:`asyncsnn.result.input_synops`).

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
from .queue import DEAD, HEAP, LIVE, choose, clear, enqueue, new_queue, queue_place, spike_key
from .shared import (
    NOISE_STREAM,
    REFRACTORY_STREAM,
    UNIT,
    _grow_rows,
    append,
    counter_key,
    deliver_group,
    hash32,
    leak_and_input,
    new_neurons,
    uniform_bits,
)


@njit(cache=True, inline="always")
def check_and_enqueue(n_touched, t, step, mixed, nrn, queue, net, rules, spikes_tb, steps_tb):
    """The checks of forward step ``step`` of timestep ``t``: each touched neuron above its
    threshold fires (into ``spikes_tb``, and its forward step into ``steps_tb`` unless that is
    empty: what the monitors read), is reset and, unless refractory dropout spares it,
    made refractory; its spike takes a queue place (unless network spike dropout drops it or
    none is free). The spikes go to ``nrn.fired`` and ``nrn.fired_place``, as the tape
    records them. Returns their number, whether an output neuron fired, and how many spikes
    found no free place."""
    counter = (t << 16) + step
    refr_key = counter_key(REFRACTORY_STREAM, counter)
    noise_key = counter_key(NOISE_STREAM, t)
    v, refractory = nrn.v, nrn.refractory
    n_fired = 0
    out_fired = False
    overflow = 0
    for k in range(n_touched):
        i = nrn.touched[k]
        pre = v[i]
        if not lif.crossed(pre, net.theta[i]):
            continue
        made = True
        if rules.p_refractory > 0:
            made = np.float32(uniform_bits(mixed, refr_key, i)) * UNIT >= rules.p_refractory
        if made:
            refractory[i] = t
        v[i] = lif.reset(pre, net.theta[i], net.subtract[i])
        spikes_tb[i] += 1.0
        if steps_tb.shape[0] > 0:
            steps_tb[i] = step
        if net.out_lo <= i < net.out_hi:
            out_fired = True
        row = net.slot_of[i]
        q = -1
        if row >= 0:
            q = queue_place(queue.key, row, rules, mixed, counter, i)
            if q == -2:  # every place of the neuron is taken
                overflow += 1
                q = -1
        nrn.fired[n_fired] = (i << 2) | (2 if made else 0) | 1
        nrn.fired_place[n_fired] = q
        n_fired += 1
        if q >= 0:
            layer = net.slot_layer[row]
            enqueue(
                queue, rules, q, spike_key(rules, pre, mixed, noise_key, step, layer, q, queue.fbuf)
            )
    return n_fired, out_fired, overflow


@njit(cache=True, inline="always")
def stop_now(rules, step, out_fired, first_out):
    """Whether the stop rules end the timestep after the checks of ``step``; and the step in
    which an output neuron first fired (-1 while none has)."""
    stop = rules.max_steps >= 0 and step >= rules.max_steps
    if rules.extra_steps >= 0:
        if out_fired and first_out < 0:
            first_out = step
        if first_out >= 0 and step >= first_out + rules.extra_steps:
            stop = True
    return stop, first_out


@njit(cache=True, nogil=True)
def _simulate(b0, b1, net, rules, inp, out, record):
    """Samples ``b0 .. b1 - 1``; see the module docstring. ``net`` is a :class:`KernelNet`,
    ``rules`` :class:`KernelRules`, ``inp`` :class:`KernelInputs` and ``out``
    :class:`KernelOutputs` (written in place). ``record``: write the tape the backward pass
    reads (see :mod:`asyncsnn.kernels.cpu_grad`) and every timestep's final membranes into
    ``out.v_end``. Returns the tape and the number of spikes that found no free queue place.
    """
    n = inp.current.shape[2]
    nrn = new_neurons(n)
    queue = new_queue(net.slot_layer.shape[0] * rules.slots, rules.group)
    record_membrane = out.membrane.shape[0] > 0
    record_current = out.current.shape[0] > 0
    log_steps = out.fire_step.shape[0] > 0
    no_steps = np.empty(0, np.int32)
    synaptic = net.synaptic
    # the tape: per spike (neuron << 2 | made refractory << 1 | 1, its queue place or -1),
    # per delivery its place, per step a row (timestep, first delivery, deliveries, first
    # spike, spikes), per sample its first row
    cap = 4096 if record else 1
    t_code = np.empty(cap, np.int32)
    t_slot = np.empty(cap, np.int32)
    t_dlv = np.empty(cap, np.int32)
    t_rows = np.empty((cap, 5), np.int64)
    t_first = np.zeros(b1 - b0 + 1, np.int64)
    n_chk = n_dlv = n_rows = 0
    overflow = 0
    stamp = 0
    for b in range(b0, b1):  # samples are independent: each starts from a fresh state
        t_first[b - b0] = n_rows
        nrn.v[:] = 0.0
        nrn.syn[:] = 0.0
        nrn.refractory[:] = -1
        queue.key[:] = DEAD
        mixed = hash32((inp.seeds[b] & 0xFFFFFFFF) ^ 0x5BD1E995)
        for t in range(inp.current.shape[0]):
            # ---- leak, then the input and the biases (not a forward step) --------------------
            n_touched = leak_and_input(
                nrn.v, net.beta, inp.current[t, b], nrn.touched, nrn.syn, net.alpha, synaptic
            )
            out.updates[t, b] += n_touched
            queue.size[LIVE] = queue.size[HEAP] = 0
            step = 0
            first_out = -1
            dlv_first = n_dlv
            n_chosen = 0
            while True:
                # ---- threshold, reset, refractoriness; new spikes join the queue --------------
                n_fired, out_fired, lost = check_and_enqueue(
                    n_touched, t, step, mixed, nrn, queue, net, rules, out.spikes[t, b],
                    out.fire_step[t, b] if log_steps else no_steps,
                )  # fmt: skip
                overflow += lost
                if record:
                    t_rows = _grow_rows(t_rows, n_rows)
                    t_rows[n_rows, 0] = t
                    t_rows[n_rows, 1] = dlv_first
                    t_rows[n_rows, 2] = n_chosen if step else 0
                    t_rows[n_rows, 3] = n_chk
                    t_rows[n_rows, 4] = n_fired
                    n_rows += 1
                    t_code = append(t_code, n_chk, nrn.fired, n_fired)
                    t_slot = append(t_slot, n_chk, nrn.fired_place, n_fired)
                    n_chk += n_fired
                # ---- stop rules ---------------------------------------------------------------
                stop, first_out = stop_now(rules, step, out_fired, first_out)
                if stop:
                    out.undelivered[t, b] += clear(queue)
                if queue.size[LIVE] == 0:
                    break
                # ---- choose the F highest priorities, deliver them in place order ------------
                step += 1
                n_chosen = choose(queue, rules, mixed, t, step)
                out.forward_steps[t, b] += 1
                stamp += 1
                if record:
                    dlv_first = n_dlv
                    t_dlv = append(t_dlv, n_dlv, queue.chosen, n_chosen)
                    n_dlv += n_chosen
                n_touched, syn = deliver_group(
                    queue.chosen[:n_chosen], rules.slots, t, net, nrn, stamp
                )
                out.net_synops[t, b] += syn
                out.updates[t, b] += n_touched  # the neurons this step checks
            if record_membrane:
                for i in range(net.out_lo, net.out_hi):
                    out.membrane[t, b, i - net.out_lo] = nrn.v[i]
            if record_current:
                for i in range(net.out_lo, net.out_hi):
                    out.current[t, b, i - net.out_lo] = nrn.syn[i]
            if record:
                out.v_end[t, b] = nrn.v
                if synaptic:
                    out.syn_end[t, b] = nrn.syn
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
        return plan.result(out, out["spikes"], out["membrane"], out["current"])
