"""Layered execution: the classic time-stepped reference (what snnTorch does).

For each timestep, population by population in network order:
``V <- beta V + sum_proj W s + b``, spike iff ``V > theta``, reset (to zero, or by
subtracting ``theta``). A current-based population first updates its current,
``I <- alpha I + sum_proj W s + b``, and integrates it: ``V <- beta V + I``. A projection
from an earlier population carries this timestep's spikes; a recurrent one (from the
population itself or a later one) carries the previous timestep's.
"""

from __future__ import annotations

import torch

from .dynamics import decay_factor
from .hooks import StepContext, overrides
from .network import INPUT, Network
from .options import RunOptions
from .result import RunResult, input_synops


def run_layered(net: Network, x: torch.Tensor, options: RunOptions) -> RunResult:
    """Layered execution of ``net`` on ``x`` (timesteps, batch, *input) under ``options``."""
    dt, rng, hooks = options.dt, options.rng, options.hooks
    spike_fn, training = options.spike_fn, options.training
    neuron = net.neuron_model()
    T, B = x.shape[0], x.shape[1]
    device, dtype = x.device, x.dtype
    pops = net.populations
    tab = net.tables()
    n_in = tab.n_input
    beta = [
        decay_factor(dt, net.tau_m[p.offset - n_in : p.offset - n_in + p.size].to(dtype))
        for p in pops
    ]
    theta = [net.threshold[p.offset - n_in : p.offset - n_in + p.size].to(dtype) for p in pops]
    # current-based populations: their current's decay; the others carry no current
    tau_syn = [net.tau_syn[p.offset - n_in : p.offset - n_in + p.size] for p in pops]
    alpha = [decay_factor(dt, ts.to(dtype)) if bool((ts > 0).any()) else None for ts in tau_syn]
    subtract = [
        torch.ones(p.size, dtype=torch.bool, device=device) if p.reset == "subtract" else None
        for p in pops
    ]
    bias_all = net.bias_vector().to(dtype)
    bias = [bias_all[p.slice] for p in pops]
    has_bias = [bool((b != 0).any()) for b in bias]
    incoming = [net.incoming(p.name) for p in pops]
    index = {p.name: i for i, p in enumerate(pops)}
    fanout = tab.fanout.to(dtype)
    in_fanout = fanout[:n_in]
    pop_fanout = [fanout[p.slice] for p in pops]

    ctx = StepContext(net, B, rng, training)
    call = {
        m: [h for h in hooks if overrides(h, m)]
        for m in ("start", "transform_input", "after_step", "end_timestep", "finish")
    }
    for h in call["start"]:
        h.start(ctx)

    V = [torch.zeros(B, p.size, dtype=dtype, device=device) for p in pops]
    I = [
        None if a is None else torch.zeros(B, p.size, dtype=dtype, device=device)
        for p, a in zip(pops, alpha, strict=True)
    ]
    prev = [torch.zeros(B, p.size, dtype=dtype, device=device) for p in pops]
    out_counts = torch.zeros(B, pops[-1].size, dtype=dtype, device=device)
    net_spikes = torch.zeros(B, dtype=dtype, device=device)
    spikes, membrane, currents, synops, updates = [], [], [], [], []
    took = torch.ones(B, dtype=torch.bool, device=device)
    n_layers = sum(1 for p in pops if any(q.source == p.name for q in net.projections))
    for t in range(T):
        x_t = x[t]
        ctx.timestep, ctx.step = t, 0
        for h in call["transform_input"]:
            x_t = h.transform_input(ctx, x_t)
        now: list[torch.Tensor | None] = [None] * len(pops)
        syn = input_synops(x_t.reshape(B, -1), in_fanout)
        upd = torch.zeros(B, dtype=torch.long, device=device)
        for i, p in enumerate(pops):
            current = None
            for proj in incoming[i]:
                if proj.source == INPUT:
                    s = x_t
                else:
                    j = index[proj.source]
                    s = prev[j] if j >= i else now[j]
                    s = s.view(B, *pops[j].shape)
                c = proj.apply(s)
                current = c if current is None else current + c
            if has_bias[i]:
                current = current + bias[i]
            if alpha[i] is not None:
                I[i] = neuron.integrate(neuron.decay_current(I[i], alpha[i]), current)
                current = I[i]
            if current is not None:  # the neurons of this pass that received input
                upd = upd + (current.detach() != 0).sum(1)
            v = neuron.integrate(neuron.leak(V[i], beta[i]), current)
            if p.spiking:
                z = neuron.fire(v, theta[i], None, spike_fn)
                v = neuron.reset(v, z.detach() > 0, theta[i], subtract[i])
                syn = syn + z.detach() @ pop_fanout[i]
            else:
                z = torch.zeros_like(v)
            V[i], now[i] = v, z
        prev = now
        z_all = torch.cat(now, 1)
        spikes.append(z_all)
        synops.append(syn)
        updates.append(upd)
        out_counts = out_counts + now[-1]
        net_spikes = net_spikes + z_all.detach().sum(1)
        if not pops[-1].spiking:
            membrane.append(V[-1])
            if I[-1] is not None:
                currents.append(I[-1])
        if call["after_step"]:
            ctx.step, ctx.took_step, ctx.steps_per_row = n_layers, took, n_layers
            ctx.steps = torch.full((B,), n_layers, dtype=torch.long, device=device)
            ctx.output_spikes, ctx.output_counts = now[-1], out_counts
            ctx.network_spikes = net_spikes
            ctx.fired = z_all.detach() > 0
            ctx.membrane = torch.cat(V, 1).detach()
            for h in call["after_step"]:
                h.after_step(ctx)
        for h in call["end_timestep"]:
            h.end_timestep(ctx)
    for h in call["finish"]:
        h.finish(ctx)
    return RunResult(
        spikes=torch.stack(spikes),
        forward_steps=torch.full((T, B), n_layers, dtype=torch.long, device=device),
        synops=torch.stack(synops),
        undelivered=torch.zeros(T, B, dtype=torch.long, device=device),
        output_counts=out_counts,
        membrane=torch.stack(membrane) if membrane else None,
        current=torch.stack(currents) if currents else None,
        network=net,
        records=ctx.records,
        event_updates=torch.stack(updates),
    )
