"""Triton GPU kernel for asynchronous execution, identical to the reference engine.

One program per sample: a sample's timesteps and forward steps run inside one program (one
block of threads), with no host synchronisation during the run. Samples are independent
(docs/semantics.md, section 3.7) and take different numbers of forward steps, so a sample
per program never waits for another; the block's threads work on what a forward step
touches: the neurons of a sweep, the synaptic entries of a delivered spike, the queued
spikes of a selection. The kernel is the numba kernel's phases (:mod:`asyncsnn.kernels.cpu`)
for a block of threads, in :mod:`asyncsnn.kernels.triton_phases`; the host side reuses the
numba kernel's plan (:class:`asyncsnn.kernels.plan.Plan`: the input and bias current
computed by PyTorch as the reference computes it, the queue's layout, the rules, the result).

Per sample, in global memory: membranes, synaptic currents, the group's summed currents,
refractory stamps, one key per queue place (``DEAD`` when empty) and the *live list* of the
queued places, in no particular order. A forward step:

1. chooses the ``F`` largest keys of the live list (for ``random``, keys drawn afresh from
   the sample's stream), sorts their places (the senders' order) and compacts the list;
2. sums each target's current over the group, place by place, entry wave by entry wave
   (docs/semantics.md, section 3.4), then adds each sum to its membrane once;
3. checks the neurons that received a non-zero current; their spikes take queue places and
   join the live list with their keys.

``run(..., backend="auto")`` uses it for float32 CUDA tensors where it applies;
``backend="triton"`` insists (and, with ``TRITON_INTERPRET=1`` set before Triton is first
imported, runs it on CPU tensors through Triton's interpreter, which is how the tests without
a GPU run it). With gradients the forward pass records the delivery schedule that
:mod:`asyncsnn.kernels.triton_grad` replays.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from ..errors import QueueOverflowError
from ..network import Network
from ..options import RunOptions
from ..result import RunResult
from ..rng import Stream, hash32
from . import triton_phases as ph
from .plan import Plan, _structure
from .triton_limits import MAX_GROUP  # noqa: F401 (the limit, re-exported)


def _pow2(n: int, lo: int = 1) -> int:
    return max(lo, 1 << max(0, int(n) - 1).bit_length())


def stream_hash(stream: int) -> int:
    """``hash32(stream * 0x27D4EB2F mod 2**32)``: the stream's half of a counter key."""
    return int(hash32((int(stream) * 0x27D4EB2F) & 0xFFFFFFFF))


class Blocks:
    """Block sizes of one launch (powers of two): the neuron sweep, a wave's entries, the
    live list's chunks, the largest live list selected in registers, the sorted group; and
    whether the registers rank by counting instead of sorting. On a GPU they are fixed (one
    compiled kernel per group size serves every network); the interpreter takes smaller
    ones, and ranks (a sorting network is slow there)."""

    def __init__(self, n: int, widest_wave: int, group: int, interpreted: bool):
        if interpreted:
            self.N = min(_pow2(n, 16), 256)
            self.E = min(_pow2(widest_wave, 16), 128)
            self.Q, self.QB = 64, 64
        else:
            self.N, self.E, self.Q, self.QB = 256, 128, 256, 256
        self.GB = _pow2(group)
        self.rank = interpreted


# ------------------------------------------------------------------ the network's tables
def structure(net: Network, device: torch.device) -> dict:
    """The numba kernel's delivery tables (:func:`asyncsnn.kernels.plan._structure`) with
    each queue row's entries regrouped into waves, as device tensors (cached on the
    network's tables per device).

    Entry ``e`` of a row is in wave ``k`` when ``k`` earlier entries of the row reach the
    same target; the row's entries are reordered by (wave, table order), so that the
    entries of one wave have distinct targets and a target's entries from one sender are
    still added in table order, wave after wave. ``perm`` maps the new order to the table's.
    """
    tab = net.tables()
    key = ("triton", str(device))
    cached = tab.derived.get(key)
    if cached is not None:
        return cached
    st = _structure(net)
    ent_start = st["ent_start"]
    dst = st["ent_dst"]
    rows = len(ent_start) - 1
    row_of = np.repeat(np.arange(rows), np.diff(ent_start))
    index = np.arange(len(dst))
    # rank of each entry among the row's entries to the same target (its wave)
    by_target = np.lexsort((index, dst, row_of))
    same = np.zeros(len(dst), bool)
    if len(dst):
        same[1:] = (row_of[by_target][1:] == row_of[by_target][:-1]) & (
            dst[by_target][1:] == dst[by_target][:-1]
        )
    run_start = np.maximum.accumulate(np.where(~same, np.arange(len(dst)), 0))
    wave = np.empty(len(dst), np.int64)
    wave[by_target] = np.arange(len(dst)) - run_start
    perm = np.lexsort((index, wave, row_of))
    waves_per_row = np.zeros(rows, np.int64)
    if len(dst):
        np.maximum.at(waves_per_row, row_of, wave + 1)
    row_wave = np.zeros(rows + 1, np.int64)
    row_wave[1:] = np.cumsum(waves_per_row)
    # the first entry of every (row, wave), in the new order
    wave_sizes = np.zeros(int(row_wave[-1]), np.int64)
    if len(dst):
        np.add.at(wave_sizes, row_wave[row_of] + wave, 1)
    wave_start = np.zeros(len(wave_sizes) + 1, np.int64)
    wave_start[1:] = np.cumsum(wave_sizes)

    def dev(a, dtype=torch.int32):
        return torch.as_tensor(np.ascontiguousarray(a)).to(device=device, dtype=dtype)

    out = {
        "rows": rows,
        "slot_of": dev(st["slot_of"]),
        "slot_layer": dev(st["slot_layer"]),
        "slot_fanout": dev(st["slot_fanout"]),
        "row_wave": dev(row_wave),
        "wave_start": dev(wave_start),
        "ent_dst": dev(dst[perm]),
        "perm": torch.as_tensor(perm).to(device),
        "widest_wave": int(wave_sizes.max(initial=1)),
        "ent_widx_t": st["ent_widx_t"].to(device),
        "ent_coef_t": st["ent_coef_t"].to(device),
    }
    tab.derived[key] = out
    return out


# ------------------------------------------------------------------ the kernel
@triton.jit
def _forward(
    cur_ptr,
    seeds_ptr,
    beta_ptr,
    theta_ptr,
    alpha_ptr,
    sub_ptr,
    slot_of_ptr,
    slot_layer_ptr,
    fanout_ptr,
    row_wave_ptr,
    wave_start_ptr,
    dst_ptr,
    w_ptr,
    drop_hash_ptr,
    drop_p_ptr,
    n_drop,
    v_ptr,
    syn_ptr,
    acc_ptr,
    refr_ptr,
    key_ptr,
    live_ptr,
    kv_ptr,
    chosen_ptr,
    spikes_ptr,
    fire_step_ptr,
    steps_ptr,
    synops_ptr,
    undelivered_ptr,
    checks_ptr,
    membrane_ptr,
    current_ptr,
    v_end_ptr,
    syn_end_ptr,
    overflow_ptr,
    tape_ptr,
    tape_steps_ptr,
    tape_start_ptr,
    T,
    B,
    n,
    places,
    slots,
    group,
    policy,
    lam,
    max_steps,
    extra_steps,
    p_refr,
    out_lo,
    out_hi,
    tape_cap,
    h_random,
    h_noise,
    h_refr,
    SYNAPTIC: tl.constexpr,
    MEMBRANE: tl.constexpr,
    CURRENT: tl.constexpr,
    RECORD: tl.constexpr,
    STEPS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    QB: tl.constexpr,
    GB: tl.constexpr,
    RANK: tl.constexpr,
):
    """Sample ``program_id(0)`` from start to end; see the module docstring. The state
    arrays arrive zeroed (``refr_ptr`` at -1, ``key_ptr`` at ``DEAD``); each sample owns
    its rows."""
    b = tl.program_id(0)
    b64 = b.to(tl.int64)
    n_out = out_hi - out_lo
    v_ptr += b64 * n
    syn_ptr += b64 * n
    acc_ptr += b64 * n
    refr_ptr += b64 * n
    key_ptr += b64 * places
    live_ptr += b64 * places
    kv_ptr += b64 * places
    chosen_ptr += b64 * GB
    tape_ptr += b64 * tape_cap
    tape_steps_ptr += b64 * tape_cap
    seed = tl.cast(tl.load(seeds_ptr + b), tl.uint32)
    mixed = ph.hash32(seed ^ 0x5BD1E995)
    zero = tl.full((), 0, tl.int32)
    overflow = zero
    n_tape = zero
    n_steps_total = zero
    for t in range(0, T):
        tb = b64 + t * B
        spk_ptr = spikes_ptr + tb * n
        stp_ptr = fire_step_ptr + tb * n
        counter = tl.cast(t << 16, tl.uint32)
        noise_key = ph.counter_key(h_noise, t)
        if RECORD:
            tl.store(tape_start_ptr + tb, n_tape)
        n_live, n_chk, out_fired, lost = ph.leak_and_input(
            n, t, zero, zero, mixed, ph.counter_key(h_refr, counter), noise_key, counter,
            cur_ptr + tb * n, beta_ptr, alpha_ptr, v_ptr, syn_ptr, drop_hash_ptr, drop_p_ptr,
            n_drop, theta_ptr, sub_ptr, slot_of_ptr, slot_layer_ptr, refr_ptr, spk_ptr,
            stp_ptr, key_ptr, live_ptr, kv_ptr, kv_ptr, kv_ptr, policy, lam, slots, p_refr,
            out_lo, out_hi, SYNAPTIC, False, STEPS, BLOCK_N,
        )  # fmt: skip
        overflow += lost
        step = zero
        steps = zero
        synops = zero
        undelivered = zero
        stop, first_out = ph.stop_now(step, out_fired, zero - 1, max_steps, extra_steps)
        if stop:
            undelivered += n_live
            ph.clear(n_live, key_ptr, live_ptr, BLOCK_Q)
            n_live = zero
        while n_live > 0:
            step += 1
            counter = tl.cast((t << 16) + step, tl.uint32)
            n_sel, n_live = ph.select_group(
                n_live, group, ph.counter_key(h_random, counter), mixed, policy, key_ptr,
                live_ptr, kv_ptr, chosen_ptr, BLOCK_Q, QB, GB, RANK,
            )  # fmt: skip
            steps += 1
            if RECORD:
                g = tl.arange(0, GB)
                at = n_tape + g
                chosen = tl.load(chosen_ptr + g, mask=g < n_sel, other=0)
                tl.store(tape_ptr + at, chosen, mask=(g < n_sel) & (at < tape_cap))
                tl.store(tape_steps_ptr + n_steps_total, n_sel, mask=n_steps_total < tape_cap)
                n_tape += n_sel
                n_steps_total += 1
            synops += ph.accumulate(
                chosen_ptr, n_sel, t, slots, fanout_ptr, row_wave_ptr, wave_start_ptr, dst_ptr,
                w_ptr, refr_ptr, acc_ptr, SYNAPTIC, BLOCK_E,
            )  # fmt: skip
            n_live, n_chk, out_fired, lost = ph.apply(
                chosen_ptr, n_sel, t, step, n_live, n_chk, mixed, ph.counter_key(h_refr, counter),
                noise_key, counter, row_wave_ptr, wave_start_ptr, dst_ptr, acc_ptr, v_ptr,
                syn_ptr, drop_hash_ptr, drop_p_ptr, n_drop, theta_ptr, sub_ptr, slot_of_ptr,
                slot_layer_ptr, refr_ptr, spk_ptr, stp_ptr, key_ptr, live_ptr, kv_ptr, kv_ptr,
                kv_ptr, policy, lam, slots, p_refr, out_lo, out_hi, SYNAPTIC, False, STEPS,
                BLOCK_E,
            )  # fmt: skip
            overflow += lost
            stop, first_out = ph.stop_now(step, out_fired, first_out, max_steps, extra_steps)
            if stop:
                undelivered += n_live
                ph.clear(n_live, key_ptr, live_ptr, BLOCK_Q)
                n_live = zero
        tl.store(steps_ptr + tb, tl.cast(steps, tl.int64))
        tl.store(synops_ptr + tb, tl.cast(synops, tl.int64))
        tl.store(undelivered_ptr + tb, tl.cast(undelivered, tl.int64))
        tl.store(checks_ptr + tb, n_chk)
        if MEMBRANE:
            for c in range(0, n_out, BLOCK_N):
                i = c + tl.arange(0, BLOCK_N)
                m = i < n_out
                tl.store(membrane_ptr + tb * n_out + i, tl.load(v_ptr + out_lo + i, mask=m), mask=m)
                if CURRENT:
                    cur = tl.load(syn_ptr + out_lo + i, mask=m)
                    tl.store(current_ptr + tb * n_out + i, cur, mask=m)
        if RECORD:
            for c in range(0, n, BLOCK_N):
                i = c + tl.arange(0, BLOCK_N)
                m = i < n
                tl.store(v_end_ptr + tb * n + i, tl.load(v_ptr + i, mask=m), mask=m)
                if SYNAPTIC:
                    tl.store(syn_end_ptr + tb * n + i, tl.load(syn_ptr + i, mask=m), mask=m)
        tl.debug_barrier()
    if RECORD:
        tl.store(tape_start_ptr + b64 + T * B, n_tape)
    tl.store(overflow_ptr + b, overflow)


# ------------------------------------------------------------------ the host side
def interpreted() -> bool:
    """Whether Triton runs its interpreter (``TRITON_INTERPRET=1``): CPU tensors then."""
    from triton import knobs

    return bool(knobs.runtime.interpret)


class TritonRun:
    """One call of the kernel prepared from a :class:`~asyncsnn.kernels.plan.Plan`: the
    device tensors of the network and the rules, and the launch."""

    def __init__(self, plan: Plan):
        self.plan = p = plan
        net = p.net
        self.device = device = p.x.device
        self.st = st = structure(net, device)
        self.places = st["rows"] * p.slots
        r = p.rules
        self.group = int(r.group)
        self.n = p.n_pop
        self.beta = p.beta.to(device).contiguous()
        self.theta = p.theta.to(device).contiguous()
        self.alpha = p.alpha.to(device).contiguous()
        self.sub = torch.as_tensor(p.subtract).to(device=device, dtype=torch.int8)
        self.drop_hash = torch.tensor(
            [stream_hash(s) for s in r.drop_stream], dtype=torch.int64, device=device
        )
        self.drop_p = torch.as_tensor(r.drop_p, dtype=torch.float32).to(device)
        self.seeds = p.seeds.to(device)
        interp = interpreted()
        self.blocks = Blocks(self.n, st["widest_wave"], max(self.group, 1), interp)

    def entry_weights(self) -> torch.Tensor:
        """Per synaptic entry of the populations' projections, in wave order: weight x
        coefficient (carries gradients to the weights where they require them)."""
        p, st = self.plan, self.st
        w_sub = torch.cat(
            [q.weighted.weight.flatten().to(p.dtype) for q in p.st["weighted"]]
            + [torch.tensor([1.0, 0.0], dtype=p.dtype, device=self.device)]
        )
        w = w_sub[st["ent_widx_t"]] * st["ent_coef_t"].to(p.dtype)
        return w[st["perm"]]

    def launch(self, current: torch.Tensor, ent_w: torch.Tensor, record: bool, tape_cap=0):
        """Run every sample; the outputs (``Plan.new_outputs``' fields, and with ``record``
        the delivery schedule: ``tape``, ``tape_steps``, ``tape_start``, ``checks``)."""
        p, st, bl, dev = self.plan, self.st, self.blocks, self.device
        T, B, n = p.T, p.B, self.n
        places = max(self.places, 1)
        n_out = p.out_hi - p.out_lo
        r = p.rules
        f32, i64, i32 = torch.float32, torch.int64, torch.int32
        zeros = lambda *s, dtype=f32: torch.zeros(*s, dtype=dtype, device=dev)  # noqa: E731
        out = {
            "spikes": zeros(T, B, n),
            "forward_steps": zeros(T, B, dtype=i64),
            "net_synops": zeros(T, B, dtype=i64),
            "undelivered": zeros(T, B, dtype=i64),
            "checks": zeros(T, B, dtype=i32),
            "membrane": zeros(T, B, n_out) if p.readout else zeros(0, 0, 0),
            "current": zeros(T, B, n_out) if p.readout_current else zeros(0, 0, 0),
            "v_end": zeros(T, B, n) if record else zeros(0, 0, 0),
            "syn_end": zeros(T, B, n) if record and p.synaptic else zeros(0, 0, 0),
            "overflow": zeros(B, dtype=i32),
            "tape": zeros(B, max(tape_cap, 1), dtype=i32),
            "tape_steps": zeros(B, max(tape_cap, 1), dtype=i32),
            "tape_start": zeros(T + 1, B, dtype=i32),
            # each spike's forward step, for the monitors (a placeholder without them)
            "fire_step": torch.full((T, B, n) if p.monitors else (1,), -1, dtype=i32, device=dev),
        }
        h = lambda s: stream_hash(int(s))  # noqa: E731
        _forward[(B,)](
            current.contiguous(), self.seeds, self.beta, self.theta, self.alpha, self.sub,
            st["slot_of"], st["slot_layer"], st["slot_fanout"], st["row_wave"],
            st["wave_start"], st["ent_dst"], ent_w.detach().contiguous(), self.drop_hash,
            self.drop_p, len(r.drop_stream),
            zeros(B, n), zeros(B, n), zeros(B, n), torch.full((B, n), -1, dtype=i32, device=dev),
            torch.full((B, places), -(2**63), dtype=i64, device=dev),
            zeros(B, places, dtype=i32), zeros(B, places, dtype=i64), zeros(B, bl.GB, dtype=i32),
            out["spikes"], out["fire_step"], out["forward_steps"], out["net_synops"],
            out["undelivered"],
            out["checks"], out["membrane"], out["current"], out["v_end"], out["syn_end"],
            out["overflow"], out["tape"], out["tape_steps"], out["tape_start"],
            T, B, n, places, p.slots, self.group, int(r.policy), float(r.lam),
            int(r.max_steps), int(r.extra_steps), float(r.p_refractory), p.out_lo, p.out_hi,
            max(tape_cap, 1), h(Stream.RANDOM_POLICY), h(Stream.MOMENTUM_NOISE),
            h(Stream.REFRACTORY_DROPOUT),
            SYNAPTIC=bool(p.synaptic), MEMBRANE=bool(p.readout), CURRENT=bool(p.readout_current),
            RECORD=record, STEPS=bool(p.monitors), BLOCK_N=bl.N, BLOCK_E=bl.E, BLOCK_Q=bl.Q,
            QB=bl.QB, GB=bl.GB, RANK=bl.rank,
            num_warps=4, enable_fp_fusion=False,
        )  # fmt: skip
        overflow = int(out["overflow"].sum())
        if overflow:
            raise QueueOverflowError(overflow, p.max_queued_per_neuron)
        # the event-driven neuron updates (RunResult.event_updates): the kernel counts the
        # checks of spiking neurons only, so they are the neurons that received a non-zero
        # current where every neuron spikes; a non-spiking readout's updates are not
        # counted, and the result has none (an empty placeholder here)
        out["updates"] = out["checks"].to(i64) if not p.readout else zeros(0, dtype=i64)
        return out

    def simulate(self, current: torch.Tensor, ent_w: torch.Tensor, record: bool) -> dict:
        """:meth:`launch`; with ``record``, launched again with a longer tape where the
        first one's was too short for a sample's deliveries (the run is deterministic)."""
        if not record:
            return self.launch(current, ent_w, False)
        p = self.plan
        cap = max(1024, p.T * min(self.places, 4 * max(self.group, 1)))
        out = self.launch(current, ent_w, True, cap)
        need = int(out["tape_start"][-1].max())
        if need > cap:
            out = self.launch(current, ent_w, True, need)
        return out


def run_async_triton(net: Network, x: torch.Tensor, options: RunOptions) -> RunResult:
    """Asynchronous inference of ``net`` on ``x`` through the Triton kernel: the reference
    engine's result. The caller has checked that the kernel applies (``asyncsnn.kernels``)."""
    with torch.no_grad():
        plan = Plan(net, x, options)
        run = TritonRun(plan)
        out = run.simulate(plan.input_current(), run.entry_weights(), record=False)
        spikes = out["spikes"].to(plan.dtype)
        return plan.result(out, spikes, out["membrane"], out["current"])
