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

from .dynamics import decay_factor, fire, integrate, leak, reset_to_zero
from .hooks import StepContext, overrides
from .network import INPUT, Network
from .scheduling import QueueView, Scheduler

_INT64_MIN = torch.iinfo(torch.int64).min
_REFRACTORY_STREAM = 13


def _queue_tables(net: Network, queued_input: bool, slots: int):
    """Padded per-slot delivery tables (cached on the network's tables)."""
    tab = net.tables()
    cache = tab.__dict__.setdefault("_queue_cache", {})
    key = (queued_input, slots)
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
    dst = torch.cat([tab.entries_dst, torch.tensor([g], device=device)])[idx]
    layer = torch.zeros(g + 1, dtype=torch.long, device=device)
    for pop in net.populations:
        layer[pop.slice] = pop.layer
    slot_row = torch.arange(len(neuron), device=device).repeat_interleave(slots)
    slot_neuron = neuron[slot_row]
    out = {
        "entry_index": idx,  # (Q, K) into the entries (pad -> padding entry)
        "dst": dst,  # (Q, K) global target, sink for padding
        "slot_row": slot_row,
        "slot_neuron": slot_neuron,
        "slot_layer": layer[slot_neuron],
        "slot_fanout": tab.fanout[slot_neuron],
        "slot_id": torch.arange(len(slot_row), device=device),
    }
    cache[key] = out
    return out


def _order_key(priority: torch.Tensor, live: torch.Tensor, slot_id: torch.Tensor) -> torch.Tensor:
    """int64 keys ordering by priority (descending) then lower slot (neuron) index."""
    bits = priority.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    key = (ordered << 32) | (0xFFFFFFFF - slot_id)
    return key.masked_fill(~live, _INT64_MIN)


def run_async(
    net: Network,
    x: torch.Tensor,
    *,
    dt: float,
    scheduler: Scheduler,
    group_size: int,
    rng,
    hooks: list,
    prioritized_input: bool,
    refractory_dropout: float,
    spike_fn,
    training: bool,
    max_queued_per_neuron: int,
):
    T, B = x.shape[0], x.shape[1]
    tab = net.tables()
    g = tab.n_neurons
    width = g + 1  # the last neuron is a sink for padding entries
    n_in = tab.n_input
    device, dtype = x.device, x.dtype
    slots = max_queued_per_neuron if refractory_dropout > 0 else 1
    qt = _queue_tables(net, not prioritized_input, slots)
    slot_row, slot_neuron, slot_id = qt["slot_row"], qt["slot_neuron"], qt["slot_id"]
    n_slots = len(slot_row)
    group = min(group_size, n_slots) if n_slots else 0

    # per-neuron constants in global order (input and sink padded)
    ones_in = torch.ones(n_in, dtype=dtype, device=device)
    one = torch.ones(1, dtype=dtype, device=device)
    beta = decay_factor(dt, torch.cat([ones_in, net.tau_m.to(dtype), one]))
    theta = torch.cat([ones_in, net.threshold.to(dtype), one])
    spiking = torch.zeros(width, dtype=torch.bool, device=device)
    for pop in net.populations:
        if pop.spiking:
            spiking[pop.slice] = True
    bias = torch.cat([net.bias_vector().to(dtype), torch.zeros(1, dtype=dtype, device=device)])
    has_bias = bool((bias != 0).any())
    w_all = net.weight_vector().to(dtype)
    pad_entry = torch.tensor([w_all.numel() - 1], device=device)  # the trailing 0 weight
    widx = torch.cat([tab.entries_widx, pad_entry])[qt["entry_index"]]
    coef = torch.cat([tab.entries_coef.to(dtype), torch.zeros(1, dtype=dtype, device=device)])
    tab_w = w_all[widx] * coef[qt["entry_index"]]  # (Q, K), differentiable
    tab_dst = qt["dst"]
    base = (torch.arange(B, device=device) * width)[:, None, None]
    input_projs = [p for p in net.projections if p.source == INPUT]
    in_fanout = tab.fanout[:n_in].to(dtype)
    out = net.output
    out_slice = out.slice

    ctx = StepContext(net, B, rng, training)
    call = {m: [h for h in hooks if overrides(h, m)] for m in
            ("start", "transform_input", "keep_spikes", "after_step", "end_timestep", "finish")}
    for h in call["start"]:
        h.start(ctx)

    V = torch.zeros(B, width, dtype=dtype, device=device)
    out_counts = torch.zeros(B, out.size, dtype=dtype, device=device)
    net_spikes = torch.zeros(B, dtype=dtype, device=device)
    spikes, membrane = [], []
    forward_steps = torch.zeros(T, B, dtype=torch.long, device=device)
    synops = torch.zeros(T, B, dtype=dtype, device=device)
    undelivered = torch.zeros(T, B, dtype=torch.long, device=device)
    overflow = torch.zeros((), dtype=torch.long, device=device)
    view = QueueView(None, None, None, qt["slot_layer"], slot_neuron, 0, 0, rng, 7)
    zero_w = torch.zeros(B * width, dtype=dtype, device=device)
    slot_pos = torch.arange(slots, device=device)

    for t in range(T):
        V = leak(V, beta)
        refractory = torch.zeros(B, width, dtype=torch.bool, device=device)
        spk_t = torch.zeros(B, width, dtype=dtype, device=device)
        pending = torch.zeros(B, n_slots, dtype=torch.bool, device=device)
        q_value = torch.zeros(B, n_slots, dtype=dtype, device=device)
        q_potential = torch.zeros(B, n_slots, dtype=dtype, device=device)
        q_fired = torch.zeros(B, n_slots, dtype=torch.long, device=device)
        steps = torch.zeros(B, dtype=torch.long, device=device)
        active = torch.ones(B, dtype=torch.bool, device=device)
        x_t = x[t]
        ctx.timestep, ctx.step = t, 0
        for h in call["transform_input"]:
            x_t = h.transform_input(ctx, x_t)
        x_flat = x_t.reshape(B, -1)

        # ---- input delivery (not a forward step) ------------------------------------------
        parts = [torch.zeros(B, n_in, dtype=dtype, device=device)]
        for pop in net.populations:
            cur = None
            for p in input_projs if prioritized_input else ():
                if p.target == pop.name:
                    c = p.apply(x_t)
                    cur = c if cur is None else cur + c
            parts.append(cur if cur is not None else torch.zeros(B, pop.size, dtype=dtype,
                                                                 device=device))
        parts.append(torch.zeros(B, 1, dtype=dtype, device=device))
        current = torch.cat(parts, 1)
        if has_bias:
            current = current + bias
        if prioritized_input:
            synops[t] += (x_flat != 0).to(dtype) @ in_fanout
        else:  # input events queue like any other spike (layer 0, the oldest)
            ev = x_flat != 0
            in_slots = slot_neuron < n_in
            ev_slots = torch.zeros(B, n_slots, dtype=torch.bool, device=device)
            ev_slots[:, in_slots] = ev[:, slot_neuron[in_slots]] & (
                (slot_id[in_slots] % slots) == 0
            )
            pending = ev_slots
            q_value = torch.where(ev_slots, x_flat.gather(1, slot_neuron.clamp(max=n_in - 1)
                                                          .expand(B, -1)), q_value)
        checked = (current != 0) & spiking
        V = integrate(V, current)
        step = 0

        while True:
            z = fire(V, theta, checked, spike_fn)
            fired = z.detach() > 0
            v_pre = V.detach()
            V = reset_to_zero(V, fired)
            spk_t = spk_t + z
            if refractory_dropout > 0:
                u = rng.uniform(_REFRACTORY_STREAM, (t << 16) + step, width)
                refractory = refractory | (fired & (u >= refractory_dropout))
            else:
                refractory = refractory | fired
            keep = fired
            for h in call["keep_spikes"]:
                m = h.keep_spikes(ctx, fired)
                if m is not None:
                    keep = keep & m
            # ---- queue the new spikes -------------------------------------------------------
            new = keep[:, slot_neuron]
            if slots > 1:
                occ = pending.view(B, -1, slots)
                free = ~occ
                first = free.to(torch.uint8).argmax(-1)
                fired_n = new.view(B, -1, slots)[..., 0]
                has_free = free.any(-1)
                overflow = overflow + (fired_n & ~has_free).sum()
                new = ((fired_n & has_free)[..., None] & (slot_pos == first[..., None])).view(
                    B, n_slots
                )
            pending = pending | new
            q_value = torch.where(new, z[:, slot_neuron], q_value)
            q_potential = torch.where(new, v_pre[:, slot_neuron], q_potential)
            if step:
                q_fired = q_fired.masked_fill(new, step)
            o = z[:, out_slice]
            out_counts = out_counts + o
            net_spikes = net_spikes + z.detach()[:, n_in:g].sum(1)
            if call["after_step"]:
                ctx.step, ctx.fired, ctx.steps = step, fired, steps
                ctx.output_spikes, ctx.output_counts, ctx.network_spikes = o, out_counts, net_spikes
                if step == 0:
                    ctx.took_step = torch.zeros(B, dtype=torch.bool, device=device)
                for h in call["after_step"]:
                    stop = h.after_step(ctx)
                    if stop is not None:
                        active = active & ~stop

            # ---- next forward step --------------------------------------------------------
            live = pending & active[:, None]
            if group == 0 or not bool(live.any()):
                break
            step += 1
            view.pending, view.potential, view.fired_at = live, q_potential, q_fired
            view.timestep, view.step = t, step
            order = _order_key(scheduler.priority(view), live, slot_id)
            sel = order.topk(group, dim=1, sorted=False).indices
            valid = live.gather(1, sel)
            took = valid.any(1)
            delivered = torch.zeros_like(pending).scatter_(1, sel, valid)
            pending = pending & ~delivered
            rows = slot_row[sel]
            value = q_value.gather(1, sel) * valid
            cur = tab_w[rows] * value[..., None]
            flat = (tab_dst[rows] + base).view(-1)
            current = zero_w.index_add(0, flat, cur.reshape(-1)).view(B, width)
            current = current.masked_fill(refractory, 0.0)
            checked = (current != 0) & spiking
            V = V + current
            steps = steps + took
            synops[t] += (qt["slot_fanout"][sel] * valid).sum(1).to(dtype)
            if call["after_step"]:
                ctx.took_step = took

        forward_steps[t] = steps
        undelivered[t] = pending.sum(1)
        spikes.append(spk_t[:, n_in:g])
        if not out.spiking:
            membrane.append(V[:, out_slice])
        for h in call["end_timestep"]:
            h.end_timestep(ctx)

    for h in call["finish"]:
        h.finish(ctx)
    if int(overflow):
        raise RuntimeError(
            f"{int(overflow)} spike(s) found no free queue slot: with refractory dropout a neuron "
            f"had more than max_queued_per_neuron={max_queued_per_neuron} spikes waiting; run "
            "again with a larger max_queued_per_neuron"
        )
    return {
        "spikes": torch.stack(spikes) if spikes else torch.zeros(0, B, g - n_in),
        "forward_steps": forward_steps,
        "synops": synops,
        "undelivered": undelivered,
        "output_counts": out_counts,
        "membrane": torch.stack(membrane) if membrane else None,
        "records": ctx.records,
    }
