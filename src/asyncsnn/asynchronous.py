"""Asynchronous execution: the forward-step loop.

One timestep (SPEC section 2):

1. leak ``V <- beta V``; clear refractory flags;
2. deliver the input (all at once when ``prioritized_input``, else queue it) and the biases;
3. repeat forward steps while a sample has queued spikes: the scheduler picks up to ``F``
   queued spikes per sample, their weight footprints are gathered and added to the targets,
   receiving neurons integrate and may fire, new spikes join the queue. Spikes of neurons
   without outgoing projections are recorded and never queued.

Everything is vectorised over the batch; each sample has its own queue, stop decisions and
random stream, so a sample's result does not depend on the rest of its batch. A forward step
gathers ``F x fan-out`` weights; the remaining bookkeeping is elementwise over the neurons.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from .dynamics import decay_factor
from .errors import QueueOverflowError
from .hooks import StepContext, overrides
from .network import INPUT, Network
from .options import RunOptions
from .result import RunResult
from .rng import Stream, step_counter
from .scheduling import QueueView

_INT64_MIN = torch.iinfo(torch.int64).min
_SINKS = 64


def _queue_tables(net: Network, queued_input: bool, slots: int):
    """Padded per-slot delivery tables (cached on the network's tables)."""
    tab = net.tables()
    cache = tab.derived
    key = ("queue", queued_input, slots)
    if key in cache:
        return cache[key]
    g = tab.n_neurons
    device = tab.entries_src.device
    neuron = torch.nonzero(tab.has_outgoing).flatten()
    if not queued_input:
        neuron = neuron[neuron >= tab.n_input]
    counts = torch.bincount(tab.entries_src, minlength=g)
    starts = torch.cumsum(counts, 0) - counts
    k = max(int(counts[neuron].max()) if len(neuron) else 1, 1)
    cols = torch.arange(k, device=device)
    pad = len(tab.entries_src)
    idx = torch.where(
        cols[None, :] < counts[neuron][:, None], starts[neuron][:, None] + cols[None, :], pad
    )
    # padding entries point at distinct sink neurons g, g+1, ... (a run of additions into one
    # address would serialise the scatter); the last row is all padding, for unused places
    n_sink = min(k, _SINKS)
    sink = g + cols % n_sink
    dst = torch.where(idx < pad, torch.cat([tab.entries_dst, tab.entries_dst[:1]])[idx], sink)
    dst = torch.cat([dst, sink[None, :]])
    layer = torch.zeros(g + 1, dtype=torch.long, device=device)
    for pop in net.populations:
        layer[pop.slice] = pop.layer
    slot_row = torch.arange(len(neuron), device=device).repeat_interleave(slots)
    slot_neuron = neuron[slot_row]
    out = {
        "entry_index": idx,  # (Q, K) into the entries (pad -> padding entry)
        "dst": dst,  # (Q + 1, K) global target, a sink for padding
        "n_sink": n_sink,
        "slot_row": slot_row,
        "slot_neuron": slot_neuron,
        "slot_layer": layer[slot_neuron],
        "slot_fanout": tab.fanout[slot_neuron],
        "slot_id": torch.arange(len(slot_row), device=device),
    }
    cache[key] = out
    return out


def _order_key(priority: torch.Tensor, live: torch.Tensor, tie_break: torch.Tensor):
    """int64 keys ordering by priority (descending), then by lower slot (neuron) index.

    The float32 priority's bits are mapped to an order-preserving integer and placed above
    the tie-break; empty slots get the smallest key.
    """
    bits = priority.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return ((ordered << 32) | tie_break).masked_fill(~live, _INT64_MIN)


def run_async(net: Network, x: torch.Tensor, options: RunOptions) -> RunResult:
    """Asynchronous execution of ``net`` on ``x`` (timesteps, batch, *input) under
    ``options``: the reference engine."""
    dt, scheduler, group_size = options.dt, options.scheduler, options.group_size
    rng, hooks, spike_fn = options.rng, options.hooks, options.spike_fn
    prioritized_input, training = options.prioritized_input, options.training
    refractory_dropout, recompute = options.refractory_dropout, options.recompute
    max_queued_per_neuron = options.max_queued_per_neuron
    neuron = net.neuron_model()
    T, B = x.shape[0], x.shape[1]
    tab = net.tables()
    n_in = tab.n_input
    n_pop = tab.n_neurons - n_in
    device, dtype = x.device, x.dtype
    grad = spike_fn is not None
    slots = options.slots
    qt = _queue_tables(net, not prioritized_input, slots)
    width = n_pop + qt["n_sink"]  # state: the populations (global index - n_in), then sinks
    slot_row, slot_neuron, slot_id = qt["slot_row"], qt["slot_neuron"], qt["slot_id"]
    slot_state = torch.where(slot_neuron >= n_in, slot_neuron - n_in, n_pop)  # input -> sink
    slot_fanout = qt["slot_fanout"].to(dtype)
    tie_break = 0xFFFFFFFF - slot_id  # equal priorities: the lower slot (neuron) first
    if (
        slots == 1
        and len(slot_state)
        and torch.equal(
            slot_state,
            torch.arange(int(slot_state[0]), int(slot_state[0]) + len(slot_state), device=device),
        )
    ):  # the usual case: the queued neurons are one contiguous range, so no gather is needed
        slot_state = slice(int(slot_state[0]), int(slot_state[0]) + len(slot_row))
    n_slots = len(slot_row)
    group = min(group_size, n_slots)
    track_value = grad or not prioritized_input
    track_potential = scheduler.needs_potential
    track_fired_at = scheduler.needs_fired_at

    # per-neuron constants; non-spiking neurons and the sink get an infinite threshold
    spiking = torch.zeros(width, dtype=torch.bool, device=device)
    for pop in net.populations:
        if pop.spiking:
            spiking[pop.offset - n_in : pop.offset - n_in + pop.size] = True
    one = torch.ones(width - n_pop, dtype=dtype, device=device)
    beta = decay_factor(dt, torch.cat([net.tau_m.to(dtype), one]))
    theta = torch.cat([net.threshold.to(dtype), one]).masked_fill(~spiking, float("inf"))
    bias = torch.cat([net.bias_vector()[n_in:].to(dtype), 0 * one])
    has_bias = bool((bias != 0).any())
    w_all = net.weight_vector().to(dtype)
    pad_entry = torch.tensor([w_all.numel() - 1], device=device)  # the trailing 0 weight
    widx = torch.cat([tab.entries_widx, pad_entry])[qt["entry_index"]]
    coef = torch.cat([tab.entries_coef.to(dtype), one[:1] * 0])[qt["entry_index"]]
    # one extra all-padding row: an unused place in a group points there
    tab_w = torch.cat([w_all[widx] * coef, torch.zeros_like(coef[:1])])  # differentiable
    tab_dst = qt["dst"] - n_in
    null_row = tab_dst.shape[0] - 1
    in_fanout = tab.fanout[:n_in].to(dtype)
    # without refractory dropout a neuron fires at most once per timestep: its refractory flag
    # is its spike record, and resetting it can wait for the masking after each delivery
    once = refractory_dropout == 0 and not grad
    input_projs = [p for p in net.projections if p.source == INPUT] if prioritized_input else []
    out = net.output
    out_slice = slice(out.offset - n_in, out.offset - n_in + out.size)

    ctx = StepContext(net, B, rng, training)
    call = {
        m: [h for h in hooks if overrides(h, m)]
        for m in ("start", "transform_input", "keep_spikes", "after_step", "end_timestep", "finish")
    }
    for h in call["start"]:
        h.start(ctx)

    input_synops = None  # input events x fan-out, for all timesteps at once when possible
    if prioritized_input and not call["transform_input"]:
        input_synops = (x.reshape(T, B, -1) != 0).to(dtype) @ in_fanout

    V = torch.zeros(B, width, dtype=dtype, device=device)
    out_counts = torch.zeros(B, out.size, dtype=dtype, device=device)
    net_spikes = torch.zeros(B, dtype=dtype, device=device)
    spikes, membrane = [], []
    forward_steps = torch.zeros(T, B, dtype=torch.long, device=device)
    synops = torch.zeros(T, B, dtype=dtype, device=device)
    undelivered = torch.zeros(T, B, dtype=torch.long, device=device)
    overflow = torch.zeros(T, dtype=torch.long, device=device)
    view = QueueView(None, qt["slot_layer"], slot_neuron, _rng=rng)
    slot_pos = torch.arange(slots, device=device)
    no_step = torch.zeros(B, dtype=torch.bool, device=device)
    q_value = q_potential = q_fired = None

    # per timestep with recomputation: the stop decisions of the first pass, for the second
    stop_log: dict[int, list] = {}

    def timestep(t: int, V: torch.Tensor, x_t: torch.Tensor):
        """One timestep from membrane ``V``: the new ``V`` and the timestep's spikes."""
        nonlocal q_value, q_potential, q_fired
        ctx.timestep, ctx.step = t, 0
        replay = stop_log.get(t)  # a recomputation replays the stop decisions of the first pass
        log = []
        ov = torch.zeros((), dtype=torch.long, device=device)
        V = neuron.leak(V, beta)
        refractory = torch.zeros(B, width, dtype=torch.bool, device=device)
        spk_t = None if once else torch.zeros(B, width, dtype=dtype, device=device)
        pending = torch.zeros(B, n_slots, dtype=torch.bool, device=device)
        if track_value:
            q_value = torch.zeros(B, n_slots, dtype=dtype, device=device)
        if track_potential:
            q_potential = torch.zeros(B, n_slots, dtype=dtype, device=device)
        if track_fired_at:
            q_fired = torch.zeros(B, n_slots, dtype=torch.long, device=device)
        steps = torch.zeros(B, dtype=torch.long, device=device)
        syn_t = torch.zeros(B, dtype=dtype, device=device)
        chosen, chosen_valid = [], []
        dropped = torch.zeros(B, dtype=torch.long, device=device)
        active = None  # all samples go on until a stop rule says otherwise
        x_flat = x_t.reshape(B, -1)

        # ---- input and bias delivery (not a forward step) ----------------------------------
        parts = []
        for pop in net.populations:
            cur = None
            for p in input_projs:
                if p.target == pop.name:
                    c = p.apply(x_t)
                    cur = c if cur is None else cur + c
            parts.append(
                cur if cur is not None else torch.zeros(B, pop.size, dtype=dtype, device=device)
            )
        parts.append(torch.zeros(B, width - n_pop, dtype=dtype, device=device))
        current = torch.cat(parts, 1)
        if has_bias:
            current = current + bias
        if prioritized_input:
            if input_synops is None:
                syn_t = syn_t + (x_flat != 0).to(dtype) @ in_fanout
            else:
                syn_t = syn_t + input_synops[t]
        else:  # input events queue like any other spike: layer 0, the oldest
            in_slots = (slot_neuron < n_in) & (slot_id % slots == 0)
            ev = x_flat[:, slot_neuron.clamp(max=n_in - 1)]
            pending = (ev != 0) & in_slots
            q_value = torch.where(pending, ev, q_value)
        V = neuron.integrate(V, current)
        checked = current != 0
        step = 0

        while True:
            # ---- threshold, reset, refractoriness ------------------------------------------
            if grad:
                z = neuron.fire(V, theta, checked, spike_fn)
                fired = z.detach() > 0
                spk_t = spk_t + z
                v_pre = V.detach() if track_potential else None
                V = neuron.reset(V, fired)
            else:  # V <= theta holds for every neuron that received nothing
                fired = neuron.crossed(V, theta)
                v_pre = V if track_potential else None
                if not once:
                    spk_t += fired
                    V = neuron.reset(V, fired)
            if refractory_dropout > 0:
                u = rng.uniform(Stream.REFRACTORY_DROPOUT, step_counter(t, step), width)
                refractory = refractory | (fired & (u >= refractory_dropout))
            else:
                refractory = refractory | fired
            keep = fired
            ctx.step = step
            for h in call["keep_spikes"]:
                m = h.keep_spikes(ctx, fired)
                if m is not None:
                    keep = keep & m
            # ---- queue the new spikes -------------------------------------------------------
            new = keep[:, slot_state]
            if slots > 1:
                free = ~pending.view(B, -1, slots)
                first = free.to(torch.uint8).argmax(-1)
                fired_n = new.view(B, -1, slots)[..., 0]
                has_free = free.any(-1)
                ov = ov + (fired_n & ~has_free).sum()
                new = ((fired_n & has_free)[..., None] & (slot_pos == first[..., None])).view(
                    B, n_slots
                )
            elif refractory_dropout > 0:  # one place per neuron: it may still be taken
                ov = ov + (new & pending).sum()
                new = new & ~pending
            pending = pending | new
            if track_value:
                q_value = torch.where(new, z[:, slot_state] if grad else 1.0, q_value)
            if track_potential:
                q_potential = torch.where(new, v_pre[:, slot_state], q_potential)
            if track_fired_at and step:
                q_fired = q_fired.masked_fill(new, step)
            if replay is not None:
                active = replay[step]
                if active is not None:
                    dropped = dropped + (pending & ~active[:, None]).sum(1)
                    pending = pending & active[:, None]
            elif call["after_step"]:
                if step:
                    steps = steps + chosen_valid[-1].any(1)
                ctx.fired, ctx.steps = fired, steps
                ctx.took_step = no_step if step == 0 else ctx.took_step
                ctx.output_spikes = fired[:, out_slice].to(dtype)
                so_far = refractory.to(dtype) if once else spk_t
                ctx.output_counts = out_counts + so_far[:, out_slice]
                ctx.network_spikes = net_spikes + so_far[:, :n_pop].detach().sum(1)
                for h in call["after_step"]:
                    stop = h.after_step(ctx)
                    if stop is not None:
                        active = ~stop if active is None else active & ~stop
                if active is not None:  # a stopped sample drops what it still has queued
                    dropped = dropped + (pending & ~active[:, None]).sum(1)
                    pending = pending & active[:, None]
                log.append(active)

            # ---- next forward step: choose up to F queued spikes per sample ---------------
            if not bool(pending.any()):
                break
            step += 1
            view.pending, view.timestep, view.step = pending, t, step
            view._potential, view._fired_at = q_potential, q_fired
            order = _order_key(scheduler.priority(view), pending, tie_break)
            # the group in ascending slot order, which is the senders' network order: the
            # order in which their currents are summed (docs/semantics.md, section 3)
            sel = order.topk(group, dim=1, sorted=False).indices.sort(dim=1).values
            valid = pending.gather(1, sel)
            pending = pending.scatter(1, sel, False)  # only empty slots fill an unused place
            chosen.append(sel)
            chosen_valid.append(valid)
            # ---- deliver: gather the chosen spikes' footprints, add to their targets -------
            rows = torch.where(valid, sel if slots == 1 else slot_row[sel], null_row).view(-1)
            cur = tab_w.index_select(0, rows).view(B, -1)
            if track_value:
                cur = (cur.view(B, group, -1) * q_value.gather(1, sel)[..., None]).view(B, -1)
            dst = tab_dst.index_select(0, rows).view(B, -1)
            # each target's current: the float32 sum over the group in the senders' order
            # (scatter_add adds in the order of its index), then added to the membrane once
            current = torch.zeros(B, width, dtype=dtype, device=device).scatter_add(1, dst, cur)
            if grad:
                current = current.masked_fill(refractory, 0.0)
                checked = current != 0
                V = neuron.integrate(V, current)
            else:  # refractory neurons sit at 0 and ignore input: restore them afterwards
                V = neuron.reset(neuron.integrate(V, current), refractory)
            if call["after_step"] and replay is None:
                ctx.took_step = valid.any(1)

        if chosen:
            sel_all, valid_all = torch.stack(chosen), torch.stack(chosen_valid)
            forward_steps[t] = valid_all.any(2).sum(0)
            syn_t = syn_t + (slot_fanout[sel_all] * valid_all).sum((0, 2))
        synops[t] = syn_t
        undelivered[t] = dropped
        overflow[t] = ov
        if once:
            V = neuron.reset(V, refractory)  # the reset of the last step's spikes
            spk_t = refractory.to(dtype)
        if recompute and replay is None and call["after_step"]:
            stop_log[t] = log
        return V, spk_t

    for t in range(T):
        x_t = x[t]
        ctx.timestep, ctx.step = t, 0
        for h in call["transform_input"]:
            x_t = h.transform_input(ctx, x_t)
        if recompute:  # keep only this timestep's inputs; rerun it during the backward pass
            V, spk_t = checkpoint(
                timestep, t, V, x_t, use_reentrant=False, preserve_rng_state=False
            )
        else:
            V, spk_t = timestep(t, V, x_t)
        spikes.append(spk_t[:, :n_pop])
        out_counts = out_counts + spk_t[:, out_slice]
        net_spikes = net_spikes + spk_t[:, :n_pop].detach().sum(1)
        if not out.spiking:
            membrane.append(V[:, out_slice])
        for h in call["end_timestep"]:
            h.end_timestep(ctx)

    for h in call["finish"]:
        h.finish(ctx)
    if int(overflow.sum()):
        raise QueueOverflowError(int(overflow.sum()), max_queued_per_neuron)
    return RunResult(
        spikes=torch.stack(spikes),
        forward_steps=forward_steps,
        synops=synops,
        undelivered=undelivered,
        output_counts=out_counts,
        membrane=torch.stack(membrane) if membrane else None,
        network=net,
        records=ctx.records,
    )
