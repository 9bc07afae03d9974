"""Asynchronous execution, the reference engine: the forward-step loop.

One timestep (docs/semantics.md, section 3), each phase a method of :class:`_Engine`:

1. :meth:`~_Engine.start_timestep`: leak ``V <- beta V`` (and a current-based neuron's
   ``I <- alpha I``); clear refractory flags;
2. :meth:`~_Engine.deliver_input`: the input (all at once when ``prioritized_input``, else
   queued) and the biases (joined, for a current-based neuron, by its carried current);
3. forward steps while a sample has queued spikes: :meth:`~_Engine.check_thresholds` (fire,
   reset, refractoriness), :meth:`~_Engine.enqueue` (new spikes join the queue; neurons
   without outgoing projections are recorded and never queued), :meth:`~_Engine.stop_rules`,
   :meth:`~_Engine.choose_group` (up to ``F`` queued spikes per sample, by the policy) and
   :meth:`~_Engine.deliver_group` (their currents, summed in the senders' order, added to
   their targets once);
4. with silent gradients, :meth:`~_Engine.end_checks`: the checks of value 0 that the
   backward pass adds at the end of the timestep (section 8.7); during the forward steps
   :meth:`~_Engine.deliver_group` also carries the would-be spikes (value 0) of the previous
   step's checks that did not fire. Both change no value: :class:`_GhostDelivery` is the
   identity forwards and sums over the senders' fan-out backwards only.

Everything is vectorised over the batch; each sample has its own queue, stop decisions and
random stream, so a sample's result does not depend on the rest of its batch. A forward step
gathers ``F x fan-out`` weights; the remaining bookkeeping is elementwise over the neurons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.checkpoint import checkpoint

from .dynamics import decay_factor
from .errors import QueueOverflowError
from .hooks import StepContext, overrides
from .network import INPUT, Network
from .options import RunOptions
from .queue import queue_layout
from .result import RunResult, input_events, input_synops
from .rng import Stream, step_counter
from .scheduling import BUILTIN_POLICIES, QueueView

_SINKS = 64


def _queue_tables(net: Network, queued_input: bool, slots: int):
    """The queue's layout as padded per-place delivery tables (cached on the network's
    tables)."""
    tab = net.tables()
    cache = tab.derived
    key = ("queue", queued_input, slots)
    if key in cache:
        return cache[key]
    g = tab.n_neurons
    layout = queue_layout(net, queued_input)
    idx = layout.padded_entries()
    k = idx.shape[1]
    cols = torch.arange(k, device=idx.device)
    # padding entries point at distinct sink neurons g, g+1, ... (a run of additions into one
    # address would serialise the scatter); the last row is all padding, for unused places
    n_sink = min(k, _SINKS)
    sink = g + cols % n_sink
    dst = torch.where(
        idx < layout.n_entries, torch.cat([tab.entries_dst, tab.entries_dst[:1]])[idx], sink
    )
    dst = torch.cat([dst, sink[None, :]])
    slot_row = torch.arange(layout.rows, device=idx.device).repeat_interleave(slots)
    out = {
        "entry_index": idx,  # (Q, K) into the entries (pad -> padding entry)
        "dst": dst,  # (Q + 1, K) global target, a sink for padding
        "n_sink": n_sink,
        "slot_row": slot_row,
        "slot_neuron": layout.neuron[slot_row],
        "slot_layer": layout.layer[slot_row],
        "slot_fanout": layout.fanout[slot_row],
        "slot_id": torch.arange(len(slot_row), device=idx.device),
    }
    cache[key] = out
    return out


class _Gate(torch.autograd.Function):
    """The identity forwards; backwards the gradient times ``credit.gate(key)``: which checks
    pass their surrogate gradient (docs/semantics.md, sections 8.7 and 8.8) is known only at
    the end of the timestep, so the factor is read when the backward pass reaches it."""

    @staticmethod
    def forward(ctx, z, credit, key):
        ctx.credit, ctx.key = credit, key
        return z.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.credit.gate(ctx.key), None, None


class _GhostDelivery(torch.autograd.Function):
    """Would-be spikes ``ghost`` (value 0, with gradient) delivered through the queue rows
    ``rows`` to their targets' membranes (the targets not ``refractory``) and, in a
    current-based network, to every target's current: the identity forwards (the values add
    nothing), ``dL/dghost_i = sum_m w_im (dL/dV_m [m not refractory] + dL/dI_m)``
    backwards; the weights get nothing (the spikes' value is 0)."""

    @staticmethod
    def forward(ctx, V, I, ghost, refractory, engine, rows):
        ctx.refractory, ctx.engine, ctx.rows = refractory, engine, rows
        ctx.current = I is not None
        return V.clone(), None if I is None else I.clone()

    @staticmethod
    def backward(ctx, dV, dI):
        e = ctx.engine
        d = torch.zeros_like(dV) if dV is None else dV.masked_fill(ctx.refractory, 0.0)
        if dI is not None:
            d = d + dI
        d = d.clone()
        d[:, e.n_pop :] = 0.0  # the sinks of the padding entries
        rows = ctx.rows
        per_row = (d[:, e.ghost_dst[rows]] * e.ghost_w[rows]).sum(-1)
        ghost = torch.zeros_like(d)
        ghost[:, e.row_col[rows]] = per_row
        return dV, dI if ctx.current else None, ghost, None, None, None


class _Credit:
    """One timestep's record of the checks (which neurons were checked, fired, could send a
    would-be spike, were refractory after each forward step) and the gates of
    :class:`_Gate`, computed from it once, when the backward pass first asks."""

    def __init__(self, engine: _Engine) -> None:
        self.e = engine
        self.checked, self.fired, self.senders, self.refractory = [], [], [], []
        self.took = []  # per forward step: (batch, 1) the samples that took it
        self._gates = None

    def record(self, checked, fired, refractory) -> torch.Tensor:
        """The checks of one step; returns the neurons that send a would-be spike."""
        senders = checked & ~fired & self.e.sender
        self.checked.append(checked)
        self.fired.append(fired)
        self.senders.append(senders)
        self.refractory.append(refractory)
        return senders

    def reach(self, senders: torch.Tensor) -> torch.Tensor:
        """The neurons that a would-be spike of ``senders`` (batch, width) reaches."""
        e = self.e
        flags = senders[:, e.row_col].to(e.dtype)  # (batch, rows)
        B, (R, K) = len(flags), e.ghost_dst.shape
        hit = torch.zeros_like(senders, dtype=e.dtype).scatter_add(
            1,
            e.ghost_dst.reshape(1, -1).expand(B, -1),
            flags[:, :, None].expand(B, R, K).reshape(B, -1),
        )
        return hit > 0

    def gate(self, key):
        if self._gates is None:
            self._gates = self._resolve()
        return self._gates[key]

    def _resolve(self) -> dict:
        e = self.e
        mode = e.o.surrogate_checks
        checked, fired = torch.stack(self.checked), torch.stack(self.fired)
        steps = len(self.checked)
        ever = checked.any(0)
        fired_ever = fired.any(0)
        k = torch.arange(steps, device=e.device)[:, None, None]
        last = torch.where(checked, k, -1).amax(0)
        end = torch.zeros_like(ever)
        gates = {}
        if e.o.silent_gradients:
            # would-be spikes reach their targets with the next forward step; a neuron they
            # reach after its last check, or one never checked, is checked at the end
            dirty = torch.zeros_like(ever)
            held = self.senders[0]  # senders whose would-be spikes wait for the next step
            for j in range(1, steps):
                took = self.took[j - 1]
                arrive = self.reach(held & took) & ~self.refractory[j - 1]
                dirty = (dirty | arrive) & ~checked[j]
                held = (held & ~took) | self.senders[j]
            refractory = self.refractory[-1]
            for p, (cols, _rows) in enumerate(e.end_pops):
                cand = e.spiking[cols] & ~refractory[:, cols] & (~ever[:, cols] | dirty[:, cols])
                end[:, cols] = cand
                out = torch.zeros_like(ever)
                out[:, cols] = (cand | held[:, cols]) & e.sender[cols]
                dirty = dirty | (self.reach(out) & ~refractory)
                gates[("end", p)] = (cand & ~fired_ever[:, cols] if mode == "firing" else cand).to(
                    e.dtype
                )
        for j in range(steps):
            is_last = (last == j) & ~end
            if mode == "last":
                g = checked[j] & is_last
            elif mode == "firing":
                g = fired[j] | (checked[j] & ~fired_ever & is_last)
            else:
                g = checked[j]
            gates[j] = g.to(e.dtype)
        return gates


@dataclass
class _Timestep:
    """The state of one timestep of the whole batch (each row a sample)."""

    t: int
    V: torch.Tensor  # (batch, width) membranes: populations (global index - n_in), sinks
    I: torch.Tensor | None  # (batch, width) synaptic currents (current-based networks)
    refractory: torch.Tensor  # (batch, width) bool
    spikes: torch.Tensor | None  # (batch, width) spike counts (None: the refractory flags)
    pending: torch.Tensor  # (batch, slots) bool: a spike waits in the slot
    value: torch.Tensor | None  # (batch, slots) the queued spike's value (input counts, z)
    potential: torch.Tensor | None  # (batch, slots) membrane before the spike (momentum)
    fired_at: torch.Tensor | None  # (batch, slots) forward step of the spike (fifo)
    checked: torch.Tensor | None = None  # (batch, width) neurons that received current
    step: int = 0
    steps: torch.Tensor | None = None  # (batch,) forward steps taken, for the hooks
    took_step: torch.Tensor | None = None  # (batch,) the last step delivered a group
    synops: torch.Tensor | None = None  # (batch,)
    updates: torch.Tensor | None = None  # (batch,) neurons that received current, per step
    place_synops: torch.Tensor | None = None  # (batch, slots) queued input: a delivery's cost
    dropped: torch.Tensor | None = None  # (batch,) spikes a stop rule dropped
    overflow: torch.Tensor | None = None  # spikes that found no free queue place
    chosen: list = field(default_factory=list)  # per step: the chosen slots (batch, F)
    chosen_valid: list = field(default_factory=list)  # per step: which of them were queued
    stops: list = field(default_factory=list)  # per step: the samples still active, or None
    credit: _Credit | None = None  # the record of the checks for the backward pass's gates
    ghost: torch.Tensor | None = None  # the would-be spikes of the last checks (value 0)
    senders: torch.Tensor | None = None  # (batch, width) the neurons that sent them


class _Engine:
    """One run of the reference engine: the constants of the network and the options
    (``__init__``), the phases of a timestep (its methods) and the run itself (``run``)."""

    def __init__(self, net: Network, x: torch.Tensor, options: RunOptions) -> None:
        self.net, self.x, self.o = net, x, options
        self.neuron = net.neuron_model()
        self.B = x.shape[1]
        tab = net.tables()
        n_in = self.n_in = tab.n_input
        n_pop = self.n_pop = tab.n_neurons - n_in
        device, dtype = self.device, self.dtype = x.device, x.dtype
        self.grad = options.spike_fn is not None
        slots = self.slots = options.slots
        qt = _queue_tables(net, not options.prioritized_input, slots)
        width = self.width = n_pop + qt["n_sink"]
        self.slot_row, self.slot_neuron, self.slot_id = (
            qt["slot_row"],
            qt["slot_neuron"],
            qt["slot_id"],
        )
        slot_state = torch.where(self.slot_neuron >= n_in, self.slot_neuron - n_in, n_pop)
        first = int(slot_state[0]) if len(slot_state) else 0
        if (
            slots == 1
            and len(slot_state)
            and torch.equal(slot_state, torch.arange(first, first + len(slot_state), device=device))
        ):  # the usual case: the queued neurons are one contiguous range, no gather needed
            slot_state = slice(first, first + len(slot_state))
        self.slot_state = slot_state  # the state column of each slot's neuron (input -> sink)
        self.slot_fanout = qt["slot_fanout"].to(dtype)
        # a user's policy may return anything: its priorities are checked (the built-in ones
        # are finite by construction)
        self.check_priorities = type(options.scheduler) not in BUILTIN_POLICIES
        self.n_slots = len(self.slot_row)
        self.group = min(options.group_size, self.n_slots)
        self.track_value = self.grad or not options.prioritized_input
        # per-neuron constants; non-spiking neurons and the sinks never cross their threshold
        spiking = torch.zeros(width, dtype=torch.bool, device=device)
        for pop in net.populations:
            if pop.spiking:
                spiking[pop.offset - n_in : pop.offset - n_in + pop.size] = True
        one = torch.ones(width - n_pop, dtype=dtype, device=device)
        self.beta = decay_factor(options.dt, torch.cat([net.tau_m.to(dtype), one]))
        theta = torch.cat([net.threshold.to(dtype), one])
        self.theta = theta.masked_fill(~spiking, float("inf"))
        # the variants (docs/semantics.md, section 2): a synaptic current (the sinks carry
        # none) and the reset by subtraction
        self.alpha = None
        if net.current_based:
            self.alpha = decay_factor(options.dt, torch.cat([net.tau_syn.to(dtype), 0 * one]))
        sub = net.subtract_mask()
        self.subtract = None if sub is None else torch.cat([sub, (0 * one).bool()])
        # the checks of the neurons that received current and the resets at once; without
        # gradients and with resets to zero, a shortcut gives the same spikes (below)
        self.exact = self.grad or self.subtract is not None
        self.bias = torch.cat([net.bias_vector()[n_in:].to(dtype), 0 * one])
        self.has_bias = bool((self.bias != 0).any())
        w_all = net.weight_vector().to(dtype)
        pad_entry = torch.tensor([w_all.numel() - 1], device=device)  # the trailing 0 weight
        widx = torch.cat([tab.entries_widx, pad_entry])[qt["entry_index"]]
        coef = torch.cat([tab.entries_coef.to(dtype), one[:1] * 0])[qt["entry_index"]]
        # one extra all-padding row: an unused place in a group points there
        self.tab_w = torch.cat([w_all[widx] * coef, torch.zeros_like(coef[:1])])  # differentiable
        self.tab_dst = qt["dst"] - n_in
        self.null_row = self.tab_dst.shape[0] - 1
        self.in_fanout = tab.fanout[:n_in].to(dtype)
        # without refractory dropout a neuron fires at most once per timestep: its refractory
        # flag is its spike record, and its reset can wait for the masking after a delivery
        self.once = options.refractory_dropout == 0 and not self.exact
        self.input_projs = (
            [p for p in net.projections if p.source == INPUT] if options.prioritized_input else []
        )
        out = net.output
        self.out_slice = slice(out.offset - n_in, out.offset - n_in + out.size)
        self.record_current = not out.spiking and bool((net.tau_syn[self.out_slice] > 0).any())
        # credit for the checks (docs/semantics.md, sections 8.7 and 8.8): gates on the
        # checks' surrogate gradients, would-be spikes of the checks that did not fire
        self.silent = options.silent_gradients and self.grad
        self.gated = self.grad and options.surrogate_checks != "every"
        if self.silent or self.gated:
            self.spiking = spiking
            layout = queue_layout(net, not options.prioritized_input)
            row_neuron = layout.neuron - n_in
            ghost_rows = torch.nonzero(row_neuron >= 0).flatten()
            self.ghost_rows = ghost_rows
            self.row_col = torch.full((self.tab_dst.shape[0],), n_pop, device=device)
            self.row_col[ghost_rows] = row_neuron[ghost_rows]
            self.row_col = self.row_col[ghost_rows]  # per ghost row: its state column
            self.ghost_dst = self.tab_dst[ghost_rows]  # (ghost rows, K) their targets
            self.ghost_w = self.tab_w.detach()[ghost_rows]  # and weights
            sender = torch.zeros(width, dtype=torch.bool, device=device)
            sender[self.row_col] = True
            self.sender = sender & spiking
            # the spiking populations in network order: their columns and ghost rows (the
            # end-of-timestep checks, population by population)
            self.end_pops = []
            for pop in net.populations:
                if pop.spiking:
                    lo, hi = pop.offset - n_in, pop.offset - n_in + pop.size
                    mine = (self.row_col >= lo) & (self.row_col < hi)
                    self.end_pops.append((slice(lo, hi), torch.nonzero(mine).flatten()))
            self.all_rows = torch.arange(len(ghost_rows), device=device)
        self.ctx = StepContext(net, self.B, options.rng, options.training)
        self.hooks = {
            m: [h for h in options.hooks if overrides(h, m)]
            for m in (
                "start",
                "transform_input",
                "keep_spikes",
                "after_step",
                "end_timestep",
                "finish",
            )
        }
        self.view = QueueView(None, qt["slot_layer"], self.slot_neuron, _rng=options.rng)
        self.slot_pos = torch.arange(slots, device=device)
        self.no_step = torch.zeros(self.B, dtype=torch.bool, device=device)
        self.batch_index = torch.arange(self.B, device=device)[None, :, None]
        self.input_synops = None  # input events x fan-out, all timesteps at once if possible
        if options.prioritized_input and not self.hooks["transform_input"]:
            self.input_synops = input_synops(x.reshape(x.shape[0], self.B, -1), self.in_fanout)
        # the running totals the hooks read, and the stop decisions of each timestep's first
        # pass, which a recomputation replays
        self.out_counts = torch.zeros(self.B, out.size, dtype=dtype, device=device)
        self.net_spikes = torch.zeros(self.B, dtype=dtype, device=device)
        self.stop_log: dict[int, list] = {}

    def zeros(self, *shape, dtype=None) -> torch.Tensor:
        return torch.zeros(*shape, dtype=dtype or self.dtype, device=self.device)

    # ------------------------------------------------------------------ the phases
    def start_timestep(self, t: int, V: torch.Tensor, I: torch.Tensor | None) -> _Timestep:
        """Leak (and decay the currents), clear the refractory flags, empty the queue."""
        B, W, Q = self.B, self.width, self.n_slots
        sched = self.o.scheduler
        return _Timestep(
            t=t,
            V=self.neuron.leak(V, self.beta),
            I=None if I is None else self.neuron.decay_current(I, self.alpha),
            refractory=self.zeros(B, W, dtype=torch.bool),
            spikes=None if self.once else self.zeros(B, W),
            pending=self.zeros(B, Q, dtype=torch.bool),
            value=self.zeros(B, Q) if self.track_value else None,
            potential=self.zeros(B, Q) if sched.needs_potential else None,
            fired_at=self.zeros(B, Q, dtype=torch.long) if sched.needs_fired_at else None,
            steps=self.zeros(B, dtype=torch.long),
            synops=self.zeros(B),
            updates=self.zeros(B, dtype=torch.long),
            dropped=self.zeros(B, dtype=torch.long),
            overflow=self.zeros((), dtype=torch.long),
            credit=_Credit(self) if self.silent or self.gated else None,
        )

    def deliver_input(self, s: _Timestep, x_t: torch.Tensor) -> None:
        """The input and the biases: one current, added at once (not a forward step); with
        queued input, the input events join the queue instead (layer 0, the oldest). A
        current-based neuron's input joins its current, and the membrane receives the whole
        current, the carried part with the input."""
        B = self.B
        parts = []
        for pop in self.net.populations:
            cur = None
            for p in self.input_projs:
                if p.target == pop.name:
                    c = p.apply(x_t)
                    cur = c if cur is None else cur + c
            parts.append(cur if cur is not None else self.zeros(B, pop.size))
        parts.append(self.zeros(B, self.width - self.n_pop))
        current = torch.cat(parts, 1)
        if self.has_bias:
            current = current + self.bias
        x_flat = x_t.reshape(B, -1)
        if self.o.prioritized_input:
            if self.input_synops is None:
                s.synops = s.synops + input_synops(x_flat, self.in_fanout)
            else:
                s.synops = s.synops + self.input_synops[s.t]
        else:
            in_slots = (self.slot_neuron < self.n_in) & (self.slot_id % self.slots == 0)
            ev = x_flat[:, self.slot_neuron.clamp(max=self.n_in - 1)]
            s.pending = (ev != 0) & in_slots
            s.value = torch.where(s.pending, ev, s.value)
            # a queued input place delivers its value's events, a network spike one
            s.place_synops = self.slot_fanout * torch.where(in_slots, input_events(ev), 1.0)
        if s.I is not None:
            s.I = self.neuron.integrate(s.I, current)
            current = s.I
        s.V = self.neuron.integrate(s.V, current)
        s.checked = current != 0
        s.updates = s.updates + s.checked[:, : self.n_pop].sum(1)

    def check_thresholds(self, s: _Timestep):
        """Spikes of the neurons that received current, their reset and refractoriness.
        Returns ``(fired, z, v_pre)``: the mask, the spikes (with surrogate gradients) and
        the membranes before the reset."""
        neuron, o = self.neuron, self.o
        track_potential = o.scheduler.needs_potential
        z = None
        if self.exact:
            z = neuron.fire(s.V, self.theta, s.checked, o.spike_fn)
            fired = z.detach() > 0
            if s.credit is not None:
                if self.gated:
                    z = _Gate.apply(z, s.credit, len(s.credit.checked))
                refractory = s.refractory | fired  # as below, for the record
                if o.refractory_dropout > 0:
                    refractory = None  # filled in below
                senders = s.credit.record(s.checked, fired, refractory)
                if self.silent:  # the would-be spikes of the checks that did not fire
                    ghost = (z - z.detach()).masked_fill(~senders, 0.0)
                    if s.ghost is not None:  # held by samples that took no step
                        ghost, senders = ghost + s.ghost, senders | s.senders
                    s.ghost, s.senders = ghost, senders
            s.spikes = s.spikes + z
            v_pre = s.V.detach() if track_potential else None
            s.V = neuron.reset(s.V, fired, self.theta, self.subtract)
        else:  # V <= theta holds for every neuron that received nothing
            fired = neuron.crossed(s.V, self.theta)
            v_pre = s.V if track_potential else None
            if not self.once:
                s.spikes += fired
                s.V = neuron.reset(s.V, fired)
        if o.refractory_dropout > 0:
            u = o.rng.uniform(Stream.REFRACTORY_DROPOUT, step_counter(s.t, s.step), self.width)
            s.refractory = s.refractory | (fired & (u >= o.refractory_dropout))
            if s.credit is not None:
                s.credit.refractory[-1] = s.refractory
        else:
            s.refractory = s.refractory | fired
        return fired, z, v_pre

    def enqueue(self, s: _Timestep, fired, z, v_pre) -> None:
        """The new spikes that the hooks keep take a free queue place of their neuron."""
        keep = fired
        self.ctx.step = s.step
        for h in self.hooks["keep_spikes"]:
            m = h.keep_spikes(self.ctx, fired)
            if m is not None:
                keep = keep & m
        B, slots = self.B, self.slots
        new = keep[:, self.slot_state]
        if slots > 1:
            free = ~s.pending.view(B, -1, slots)
            first = free.to(torch.uint8).argmax(-1)
            fired_n = new.view(B, -1, slots)[..., 0]
            has_free = free.any(-1)
            s.overflow = s.overflow + (fired_n & ~has_free).sum()
            place = self.slot_pos == first[..., None]
            new = ((fired_n & has_free)[..., None] & place).view(B, self.n_slots)
        elif self.o.refractory_dropout > 0:  # one place per neuron: it may still be taken
            s.overflow = s.overflow + (new & s.pending).sum()
            new = new & ~s.pending
        s.pending = s.pending | new
        if self.track_value:
            s.value = torch.where(new, z[:, self.slot_state] if self.grad else 1.0, s.value)
        if s.potential is not None:
            s.potential = torch.where(new, v_pre[:, self.slot_state], s.potential)
        if s.fired_at is not None and s.step:
            s.fired_at = s.fired_at.masked_fill(new, s.step)

    def stop_rules(self, s: _Timestep, fired, replay: list | None) -> None:
        """The hooks' stop decisions (or, in a recomputation, the first pass's): a stopped
        sample drops what it still has queued."""
        if replay is not None:
            active = replay[s.step]
        elif self.hooks["after_step"]:
            active = self._after_step(s, fired)
            s.stops.append(active)
        else:
            return
        if active is not None:
            s.dropped = s.dropped + (s.pending & ~active[:, None]).sum(1)
            s.pending = s.pending & active[:, None]

    def _after_step(self, s: _Timestep, fired):
        ctx = self.ctx
        if s.step:
            s.steps = s.steps + s.chosen_valid[-1].any(1)
        ctx.fired, ctx.steps = fired, s.steps
        ctx.took_step = self.no_step if s.step == 0 else s.took_step
        ctx.output_spikes = fired[:, self.out_slice].to(self.dtype)
        so_far = s.refractory.to(self.dtype) if self.once else s.spikes
        ctx.output_counts = self.out_counts + so_far[:, self.out_slice]
        ctx.network_spikes = self.net_spikes + so_far[:, : self.n_pop].detach().sum(1)
        V = s.V.masked_fill(s.refractory, 0.0) if self.once else s.V  # resets it deferred
        ctx.membrane = V[:, : self.n_pop].detach()
        ctx.pending, ctx.place_neuron = s.pending, self.slot_neuron
        ctx.chosen = s.chosen[-1] if s.step else None
        ctx.chosen_valid = s.chosen_valid[-1] if s.step else None
        active = None
        for h in self.hooks["after_step"]:
            stop = h.after_step(ctx)
            if stop is not None:
                active = ~stop if active is None else active & ~stop
        return active

    def choose_group(self, s: _Timestep):
        """Up to ``F`` queued spikes per sample, the policy's highest priorities (ties to the
        lower slot), in ascending slot order: the senders' order in which their currents are
        summed (docs/semantics.md, section 3.4). Returns the slots and which were queued."""
        view = self.view
        view.pending, view.timestep, view.step = s.pending, s.t, s.step
        view._potential, view._fired_at = s.potential, s.fired_at
        priority = self.o.scheduler.priority(view)
        if self.check_priorities and not bool(torch.isfinite(priority[s.pending]).all()):
            raise ValueError(
                f"the policy {self.o.scheduler.name!r} gave a queued spike a priority that is "
                "not finite (NaN or infinite); priorities must be finite numbers"
            )
        # the highest priorities, equal ones in ascending slot order (a stable sort), the
        # empty places after every queued spike
        order = priority.masked_fill(~s.pending, -torch.inf)
        ranked = order.sort(dim=1, descending=True, stable=True).indices
        sel = ranked[:, : self.group].sort(dim=1).values
        valid = s.pending.gather(1, sel)
        s.pending = s.pending.scatter(1, sel, False)  # only empty slots fill an unused place
        s.chosen.append(sel)
        s.chosen_valid.append(valid)
        return sel, valid

    def deliver_group(self, s: _Timestep, sel, valid) -> None:
        """Each target's current is the float32 sum of the group's weights into it in the
        senders' order (``scatter_add`` adds in the order of its index), added to the
        membrane once; refractory neurons receive nothing. A current-based target's current
        receives it too, refractory or not."""
        B = self.B
        rows = torch.where(valid, sel if self.slots == 1 else self.slot_row[sel], self.null_row)
        rows = rows.view(-1)
        cur = self.tab_w.index_select(0, rows).view(B, -1)
        if self.track_value:
            value = s.value.gather(1, sel)[..., None]
            cur = (cur.view(B, self.group, -1) * value).view(B, -1)
        dst = self.tab_dst.index_select(0, rows).view(B, -1)
        current = self.zeros(B, self.width).scatter_add(1, dst, cur)
        if s.I is not None:
            s.I = self.neuron.integrate(s.I, current)
        if self.exact:
            current = current.masked_fill(s.refractory, 0.0)
            s.checked = current != 0
            s.updates = s.updates + s.checked[:, : self.n_pop].sum(1)
            s.V = self.neuron.integrate(s.V, current)
            if s.ghost is not None:  # the last checks' would-be spikes, where a step is taken
                took = valid.any(1)[:, None]
                s.credit.took.append(took)
                if bool((s.senders & took).any()):
                    ghost = s.ghost.masked_fill(~took, 0.0)
                    s.V, s.I = _GhostDelivery.apply(
                        s.V, s.I, ghost, s.refractory, self, self.all_rows
                    )
                # a sample whose queue is empty takes no more steps: it keeps them for the end
                s.ghost, s.senders = s.ghost.masked_fill(took, 0.0), s.senders & ~took
        else:  # refractory neurons sit at 0 and ignore input: restore them afterwards
            n = self.n_pop
            s.updates = s.updates + ((current[:, :n] != 0) & ~s.refractory[:, :n]).sum(1)
            s.V = self.neuron.reset(self.neuron.integrate(s.V, current), s.refractory)
        if self.hooks["after_step"]:  # what the stop rules read
            s.took_step = valid.any(1)

    def end_checks(self, s: _Timestep) -> None:
        """Silent gradients (docs/semantics.md, section 8.7): after the last forward step, the
        spiking populations in network order; each neuron that is not refractory gets a
        check of value 0 with the surrogate gradient of its membrane now, which joins its
        spike count; its backward pass gates it to the neurons that were not checked since
        the last current or would-be spike reached them (:class:`_Credit`). The checks that
        count, and the population's checks of the last forward step that did not fire, send
        their would-be spikes to their targets, before the next population's turn."""
        B = self.B
        for p, (cols, rows) in enumerate(self.end_pops):
            z = self.neuron.fire(s.V[:, cols], self.theta[cols], None, self.o.spike_fn)
            z = (z - z.detach()).masked_fill(s.refractory[:, cols], 0.0)
            z = _Gate.apply(z, s.credit, ("end", p))
            s.spikes = s.spikes.slice_scatter(s.spikes[:, cols] + z, 1, cols.start, cols.stop)
            if not len(rows):
                continue
            ghost = self.zeros(B, self.width).slice_scatter(z, 1, cols.start, cols.stop)
            if s.ghost is not None:
                ghost = ghost + s.ghost  # the last step's, its population's rows only
            s.V, s.I = _GhostDelivery.apply(s.V, s.I, ghost, s.refractory, self, rows)

    # ------------------------------------------------------------------ timestep and run
    def timestep(self, t: int, V: torch.Tensor, I: torch.Tensor | None, x_t: torch.Tensor):
        """One timestep from membrane ``V`` and current ``I`` (``None``: not current-based):
        the new membranes and currents, the timestep's spikes and its counts (forward steps,
        synaptic operations, dropped spikes, overflow, event-driven neuron updates)."""
        self.ctx.timestep, self.ctx.step = t, 0
        replay = self.stop_log.get(t)
        s = self.start_timestep(t, V, I)
        self.deliver_input(s, x_t)
        while True:
            fired, z, v_pre = self.check_thresholds(s)
            self.enqueue(s, fired, z, v_pre)
            self.stop_rules(s, fired, replay)
            if not bool(s.pending.any()):
                break
            s.step += 1
            self.deliver_group(s, *self.choose_group(s))
        if self.silent:
            self.end_checks(s)
        if self.o.recompute and replay is None and self.hooks["after_step"]:
            self.stop_log[t] = s.stops
        return self.end_timestep(s)

    def end_timestep(self, s: _Timestep):
        steps = self.zeros(self.B, dtype=torch.long)
        if s.chosen:
            sel_all, valid_all = torch.stack(s.chosen), torch.stack(s.chosen_valid)
            steps = valid_all.any(2).sum(0)
            if s.place_synops is None:
                cost = self.slot_fanout[sel_all]
            else:
                cost = s.place_synops[self.batch_index, sel_all]
            s.synops = s.synops + (cost * valid_all).sum((0, 2))
        if self.once:
            s.V = self.neuron.reset(s.V, s.refractory)  # the reset of the last step's spikes
            s.spikes = s.refractory.to(self.dtype)
        return s.V, s.I, s.spikes, (steps, s.synops, s.dropped, s.overflow, s.updates)

    def run(self) -> RunResult:
        x, ctx, T = self.x, self.ctx, self.x.shape[0]
        for h in self.hooks["start"]:
            h.start(ctx)
        V = self.zeros(self.B, self.width)
        I = None if self.alpha is None else self.zeros(self.B, self.width)
        spikes, membrane, currents, counts = [], [], [], []
        for t in range(T):
            x_t = x[t]
            ctx.timestep, ctx.step = t, 0
            for h in self.hooks["transform_input"]:
                x_t = h.transform_input(ctx, x_t)
            if self.o.recompute:  # keep this timestep's inputs; rerun it in the backward pass
                V, I, spk_t, c = checkpoint(
                    self.timestep, t, V, I, x_t, use_reentrant=False, preserve_rng_state=False
                )
            else:
                V, I, spk_t, c = self.timestep(t, V, I, x_t)
            counts.append(c)
            spikes.append(spk_t[:, : self.n_pop])
            self.out_counts = self.out_counts + spk_t[:, self.out_slice]
            self.net_spikes = self.net_spikes + spk_t[:, : self.n_pop].detach().sum(1)
            if not self.net.output.spiking:
                membrane.append(V[:, self.out_slice])
            if self.record_current:
                currents.append(I[:, self.out_slice])
            for h in self.hooks["end_timestep"]:
                h.end_timestep(ctx)
        for h in self.hooks["finish"]:
            h.finish(ctx)
        steps, synops, dropped, overflow, updates = (
            torch.stack(c) for c in zip(*counts, strict=True)
        )
        if int(overflow.sum()):
            raise QueueOverflowError(int(overflow.sum()), self.o.max_queued_per_neuron)
        return RunResult(
            spikes=torch.stack(spikes),
            forward_steps=steps,
            synops=synops,
            undelivered=dropped,
            output_counts=self.out_counts,
            membrane=torch.stack(membrane) if membrane else None,
            network=self.net,
            records=ctx.records,
            current=torch.stack(currents) if currents else None,
            event_updates=updates,
        )


def run_async(net: Network, x: torch.Tensor, options: RunOptions) -> RunResult:
    """Asynchronous execution of ``net`` on ``x`` (timesteps, batch, *input) under
    ``options``: the reference engine (docs/semantics.md, section 3)."""
    return _Engine(net, x, options).run()
