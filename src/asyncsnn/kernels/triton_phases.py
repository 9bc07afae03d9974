"""The phases of an asynchronous timestep in Triton, one sample per program, shared by the
forward kernel (:mod:`asyncsnn.kernels.triton_async`) and its replay in the backward pass
(:mod:`asyncsnn.kernels.triton_grad`). They are the phases of the numba kernel
(:mod:`asyncsnn.kernels.shared`, :mod:`asyncsnn.kernels.cpu`, :mod:`asyncsnn.kernels.queue`)
written for a block of threads instead of one thread:

- the counter-based random numbers of :mod:`asyncsnn.rng`, bit for bit, in ``uint32``
  arithmetic (a product wraps modulo 2**32 as ``rng._mul32`` does);
- :func:`leak_and_input`: the start of a timestep over all neurons, block by block;
- :func:`check`: the threshold checks of a block of neurons, with refractoriness,
  refractory dropout, network spike dropout and the queue place each new spike takes (each
  neuron is checked at most once per step, so the lanes of a block never collide);
- :func:`select_group`: the ``F`` largest keys of the queued spikes (a key is the
  priority above the tie-break, the lower place first, exactly as in the numba kernel),
  sorted by place, and the queue compacted;
- :func:`accumulate` and :func:`apply`: a group's currents summed per target in the senders'
  order, then added to the membranes once and checked.

A program owns its sample's rows of every state array (global memory), so plain loads and
stores suffice; :func:`tl.debug_barrier` orders them where one thread reads what another
wrote. The delivery order of docs/semantics.md section 3.4 is kept by walking the group's
places in ascending order and each place's synaptic entries in *waves*: a wave is a run of the
row's entries with distinct targets, the waves in table order
(:func:`asyncsnn.kernels.triton_async.structure`), so that a target reached twice by one
sender adds its entries in table order, one wave after the other.

Products and sums are separate float32 operations as in PyTorch and numba: the kernels are
compiled with ``enable_fp_fusion=False`` (no fused multiply-add).
"""

from __future__ import annotations

import triton
import triton.language as tl

# the numba kernel's policy codes (asyncsnn.kernels.queue), as Triton constants
RANDOM = tl.constexpr(0)
MOMENTUM_NOISE = tl.constexpr(1)
MOMENTUM = tl.constexpr(2)
FIFO_CODE = tl.constexpr(3)
LAYERED = tl.constexpr(4)

DEAD = tl.constexpr(-(2**63))  # the key of an empty queue place: below every live key
OCCUPIED = tl.constexpr(1)  # the key stored for a ``random`` spike (drawn afresh each step)
BIG = tl.constexpr(2**31 - 1)  # a place after every real one (padding of a sort)
LOW32 = tl.constexpr(0xFFFFFFFF)
UNIT = tl.constexpr(1.0 / (1 << 24))  # a uniform number is its 24 random bits times UNIT


# ------------------------------------------------------------------ counter-based RNG (rng.py)
@triton.jit
def hash32(x):
    """``asyncsnn.rng.hash32`` of ``uint32`` values (scalars or blocks)."""
    x = x ^ (x >> 16)
    x = x * 0x21F0AAAD
    x = x ^ (x >> 15)
    x = x * 0x735A2D97
    return x ^ (x >> 15)


@triton.jit
def counter_key(stream_hash, counter):
    """``SampleRNG._counter_key``; ``stream_hash`` is ``hash32(stream * 0x27D4EB2F mod 2**32)``
    (computed on the host, :func:`asyncsnn.kernels.triton_async.stream_hash`)."""
    return hash32(tl.cast(stream_hash, tl.uint32) ^ tl.cast(counter, tl.uint32))


@triton.jit
def uniform_bits(mixed, key, position):
    """The 24 random bits of ``SampleRNG.uniform`` at ``position`` (an int32 block)."""
    pos = position.to(tl.uint32) * 0x1E3779B9
    return hash32(mixed + key + pos) >> 8


@triton.jit
def uniform(mixed, key, position):
    """The float32 uniform number in ``[0, 1)`` of :func:`uniform_bits`."""
    return uniform_bits(mixed, key, position).to(tl.float32) * UNIT


# ------------------------------------------------------------------ reductions
# written on tl.reduce / tl.associative_scan with Triton's own combine functions, which
# Triton's interpreter evaluates with NumPy (tl.sum and friends are jit functions there)
@triton.jit
def vsum(x):
    """The sum of a block (along its only, or its last, axis)."""
    return tl.reduce(x, len(x.shape) - 1, tl.standard._sum_combine)


@triton.jit
def vmax(x):
    """The largest element of a 1-d block."""
    return tl.reduce(x, 0, tl.standard._elementwise_max)


@triton.jit
def vcumsum(x):
    """The inclusive prefix sums of a 1-d block."""
    return tl.associative_scan(x, 0, tl.standard._sum_combine)


# ------------------------------------------------------------------ keys
@triton.jit
def tie_break(place):
    """The low half of a key: the lower place first."""
    return tl.full((), 0xFFFFFFFF, tl.int64) - place.to(tl.int64)


@triton.jit
def place_of(key):
    """The queue place a key belongs to."""
    return (tl.full((), 0xFFFFFFFF, tl.int64) - (key & LOW32)).to(tl.int32)


@triton.jit
def spike_key(policy, pre, step, layer, place, mixed, noise_key, lam):
    """The key of spikes entering queue places ``place`` (``kernels.queue.spike_key``):
    the priority above the tie-break; ``OCCUPIED`` for ``random`` (drawn per step)."""
    potential = pre
    if policy == MOMENTUM_NOISE:
        noise = uniform(mixed, noise_key, place)
        potential = pre + lam * noise
    bits = potential.to(tl.int32, bitcast=True).to(tl.int64)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # kernels.queue._ordered
    pri = ordered
    if policy == FIFO_CODE:
        pri = ordered * 0 - step
    if policy == LAYERED:
        pri = ordered * 0 - layer.to(tl.int64)
    key = (pri << 32) | tie_break(place)
    if policy == RANDOM:
        key = tl.full(key.shape, OCCUPIED, tl.int64)
    return key


@triton.jit
def random_key(mixed, step_key, place):
    """A ``random`` spike's key at one forward step: fresh bits above the tie-break."""
    return (uniform_bits(mixed, step_key, place).to(tl.int64) << 32) | tie_break(place)


# ------------------------------------------------------------------ the checks
@triton.jit
def check(
    idx,
    mask,
    pre,
    t,
    step,
    n_live,
    n_chk,
    mixed,
    refr_key,
    noise_key,
    counter,
    drop_hash_ptr,
    drop_p_ptr,
    n_drop,
    theta_ptr,
    sub_ptr,
    slot_of_ptr,
    slot_layer_ptr,
    refr_ptr,
    spk_ptr,
    step_ptr,
    key_ptr,
    live_ptr,
    chk_code_ptr,
    chk_place_ptr,
    chk_v_ptr,
    policy,
    lam,
    slots,
    p_refr,
    out_lo,
    out_hi,
    REPLAY: tl.constexpr,
    STEPS: tl.constexpr,
):
    """The threshold checks of neurons ``idx`` (where ``mask``) with membranes ``pre``, in
    step ``step`` of timestep ``t`` (``kernels.cpu.check_and_enqueue``): a neuron above its
    threshold fires (``spk_ptr``; with ``STEPS`` its forward step into ``step_ptr``), is
    reset and, unless refractory dropout spares it, made refractory; its spike takes the
    first free queue place of its neuron unless network spike dropout drops it. The forward
    pass appends the queued spikes to the live list (``live_ptr``, ``n_live`` long) with
    their keys; the replay (``REPLAY``) only marks the
    places taken and records each check of a spiking neuron (neuron << 2 | made refractory
    << 1 | fired, the place, the membrane) after the ``n_chk`` before it.

    Returns the membranes after the checks, the new ``n_live`` and ``n_chk``, whether an
    output neuron fired and how many spikes found no free place."""
    theta = tl.load(theta_ptr + idx, mask=mask, other=float("inf"))
    fired = mask & (pre > theta)
    after = pre
    made = fired
    place = idx * 0 - 1
    out_fired = tl.full((), 0, tl.int32)
    overflow = tl.full((), 0, tl.int32)
    if vmax(fired.to(tl.int32)) > 0:  # (a uniform branch: most blocks of a step fire nothing)
        if p_refr > 0:
            made = fired & (uniform(mixed, refr_key, idx) >= p_refr)
        tl.store(refr_ptr + idx, idx * 0 + t, mask=made)
        sub = tl.load(sub_ptr + idx, mask=fired, other=0) != 0
        after = tl.where(fired, tl.where(sub, pre - theta, 0.0), pre)
        count = tl.load(spk_ptr + idx, mask=fired, other=0.0)
        tl.store(spk_ptr + idx, count + 1.0, mask=fired)
        if STEPS:  # each spike's forward step, for the monitors (kernels.cpu's steps_tb)
            tl.store(step_ptr + idx, idx * 0 + step, mask=fired)
        out_fired = vmax((fired & (idx >= out_lo) & (idx < out_hi)).to(tl.int32))
        # the queue place of each new spike
        row = tl.load(slot_of_ptr + idx, mask=fired, other=-1)
        keep = fired & (row >= 0)
        for d in range(0, n_drop):
            drop_key = counter_key(tl.load(drop_hash_ptr + d), counter)
            keep = keep & (uniform(mixed, drop_key, idx) >= tl.load(drop_p_ptr + d))
        for s in range(0, slots):
            cand = row * slots + s
            looking = keep & (place < 0)
            k = tl.load(key_ptr + cand, mask=looking, other=0)
            place = tl.where(looking & (k == DEAD), cand, place)
        lost = keep & (place < 0)
        overflow = vsum(lost.to(tl.int32))
        queued = place >= 0
        if REPLAY:
            tl.store(key_ptr + place, tl.full(idx.shape, OCCUPIED, tl.int64), mask=queued)
        else:
            layer = tl.load(slot_layer_ptr + row, mask=queued, other=0)
            key = spike_key(policy, pre, step, layer, place, mixed, noise_key, lam)
            tl.store(key_ptr + place, key, mask=queued)
            where = n_live + vcumsum(queued.to(tl.int32)) - 1
            tl.store(live_ptr + where, place, mask=queued)
            n_live = n_live + vsum(queued.to(tl.int32))
    spiking = mask & (theta != float("inf"))
    if REPLAY:
        where = n_chk + vcumsum(spiking.to(tl.int32)) - 1
        code = idx * 4 + made.to(tl.int32) * 2 + fired.to(tl.int32)
        tl.store(chk_code_ptr + where, code, mask=spiking)
        tl.store(chk_place_ptr + where, place, mask=spiking)
        tl.store(chk_v_ptr + where, pre, mask=spiking)
    n_chk = n_chk + vsum(spiking.to(tl.int32))
    return after, n_live, n_chk, out_fired, overflow


# ------------------------------------------------------------------ the phases
@triton.jit
def leak_and_input(
    n,
    t,
    n_live,
    n_chk,
    mixed,
    refr_key,
    noise_key,
    counter,
    cur_ptr,
    beta_ptr,
    alpha_ptr,
    v_ptr,
    syn_ptr,
    drop_hash_ptr,
    drop_p_ptr,
    n_drop,
    theta_ptr,
    sub_ptr,
    slot_of_ptr,
    slot_layer_ptr,
    refr_ptr,
    spk_ptr,
    step_ptr,
    key_ptr,
    live_ptr,
    chk_code_ptr,
    chk_place_ptr,
    chk_v_ptr,
    policy,
    lam,
    slots,
    p_refr,
    out_lo,
    out_hi,
    SYNAPTIC: tl.constexpr,
    REPLAY: tl.constexpr,
    STEPS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Step 0 of timestep ``t`` (``kernels.shared.leak_and_input``, then the checks): every
    membrane leaks and receives the input and bias current ``cur_ptr`` (a current-based
    neuron: the current first joins its decayed synaptic current, and the membrane receives
    all of it); the neurons whose current is non-zero are checked."""
    out_fired = tl.full((), 0, tl.int32)
    overflow = tl.full((), 0, tl.int32)
    for c in range(0, n, BLOCK_N):
        idx = c + tl.arange(0, BLOCK_N)
        m = idx < n
        cur = tl.load(cur_ptr + idx, mask=m, other=0.0)
        v = tl.load(v_ptr + idx, mask=m, other=0.0)
        beta = tl.load(beta_ptr + idx, mask=m, other=0.0)
        if SYNAPTIC:
            alpha = tl.load(alpha_ptr + idx, mask=m, other=0.0)
            cur = tl.load(syn_ptr + idx, mask=m, other=0.0) * alpha + cur
            tl.store(syn_ptr + idx, cur, mask=m)
        pre = v * beta + cur
        after, n_live, n_chk, of, lost = check(
            idx, m & (cur != 0), pre, t, 0, n_live, n_chk, mixed, refr_key, noise_key,
            counter, drop_hash_ptr, drop_p_ptr, n_drop, theta_ptr, sub_ptr, slot_of_ptr,
            slot_layer_ptr, refr_ptr, spk_ptr, step_ptr, key_ptr, live_ptr, chk_code_ptr,
            chk_place_ptr, chk_v_ptr, policy, lam, slots, p_refr, out_lo, out_hi, REPLAY, STEPS,
        )  # fmt: skip
        tl.store(v_ptr + idx, after, mask=m)
        out_fired = out_fired | of
        overflow += lost
        tl.debug_barrier()
    return n_live, n_chk, out_fired, overflow


@triton.jit
def accumulate(
    group_ptr,
    n_group,
    t,
    slots,
    fanout_ptr,
    row_wave_ptr,
    wave_start_ptr,
    dst_ptr,
    w_ptr,
    refr_ptr,
    acc_ptr,
    SYNAPTIC: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    """The group's currents into ``acc_ptr``, per target in the senders' order
    (``kernels.shared.deliver_row``): its places ``group_ptr[:n_group]`` in ascending order,
    each place's entries wave by wave. A refractory neuron's membrane ignores input (in a
    current-based network its current still receives it). Returns the synaptic operations."""
    synops = tl.full((), 0, tl.int32)
    for k in range(0, n_group):
        row = tl.load(group_ptr + k) // slots
        synops += tl.load(fanout_ptr + row)
        for wv in range(tl.load(row_wave_ptr + row), tl.load(row_wave_ptr + row + 1)):
            e1 = tl.load(wave_start_ptr + wv + 1)
            for c in range(tl.load(wave_start_ptr + wv), e1, BLOCK_E):
                e = c + tl.arange(0, BLOCK_E)
                m = e < e1
                j = tl.load(dst_ptr + e, mask=m, other=0)
                w = tl.load(w_ptr + e, mask=m, other=0.0)
                if not SYNAPTIC:
                    m = m & (tl.load(refr_ptr + j, mask=m, other=0) != t)
                a = tl.load(acc_ptr + j, mask=m, other=0.0)
                tl.store(acc_ptr + j, a + w, mask=m)
            tl.debug_barrier()
    return synops


@triton.jit
def apply(
    group_ptr,
    n_group,
    t,
    step,
    n_live,
    n_chk,
    mixed,
    refr_key,
    noise_key,
    counter,
    row_wave_ptr,
    wave_start_ptr,
    dst_ptr,
    acc_ptr,
    v_ptr,
    syn_ptr,
    drop_hash_ptr,
    drop_p_ptr,
    n_drop,
    theta_ptr,
    sub_ptr,
    slot_of_ptr,
    slot_layer_ptr,
    refr_ptr,
    spk_ptr,
    step_ptr,
    key_ptr,
    live_ptr,
    chk_code_ptr,
    chk_place_ptr,
    chk_v_ptr,
    policy,
    lam,
    slots,
    p_refr,
    out_lo,
    out_hi,
    SYNAPTIC: tl.constexpr,
    REPLAY: tl.constexpr,
    STEPS: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    """Each target's summed current added to it once and cleared
    (``kernels.shared.apply_summed``), then its check: the group's entries are walked again,
    and a target met a second time finds its current cleared. Only non-zero currents count;
    in a current-based network the current joins every target's synaptic current and reaches
    the membranes of those not refractory."""
    out_fired = tl.full((), 0, tl.int32)
    overflow = tl.full((), 0, tl.int32)
    for k in range(0, n_group):
        row = tl.load(group_ptr + k) // slots
        for wv in range(tl.load(row_wave_ptr + row), tl.load(row_wave_ptr + row + 1)):
            e1 = tl.load(wave_start_ptr + wv + 1)
            for c in range(tl.load(wave_start_ptr + wv), e1, BLOCK_E):
                e = c + tl.arange(0, BLOCK_E)
                m = e < e1
                j = tl.load(dst_ptr + e, mask=m, other=0)
                cur = tl.load(acc_ptr + j, mask=m, other=0.0)
                nz = m & (cur != 0)
                tl.store(acc_ptr + j, tl.full(cur.shape, 0.0, tl.float32), mask=nz)
                if SYNAPTIC:
                    s = tl.load(syn_ptr + j, mask=nz, other=0.0)
                    tl.store(syn_ptr + j, s + cur, mask=nz)
                live = nz & (tl.load(refr_ptr + j, mask=nz, other=0) != t)
                if vmax(live.to(tl.int32)) > 0:
                    pre = tl.load(v_ptr + j, mask=live, other=0.0) + cur
                    after, n_live, n_chk, of, lost = check(
                        j, live, pre, t, step, n_live, n_chk, mixed, refr_key, noise_key,
                        counter, drop_hash_ptr, drop_p_ptr, n_drop, theta_ptr, sub_ptr,
                        slot_of_ptr, slot_layer_ptr, refr_ptr, spk_ptr, step_ptr, key_ptr, live_ptr,
                        chk_code_ptr, chk_place_ptr, chk_v_ptr, policy, lam, slots, p_refr,
                        out_lo, out_hi, REPLAY, STEPS,
                    )  # fmt: skip
                    tl.store(v_ptr + j, after, mask=live)
                    out_fired = out_fired | of
                    overflow += lost
            tl.debug_barrier()
    return n_live, n_chk, out_fired, overflow


@triton.jit
def select_group(
    n_live,
    group,
    step_key,
    mixed,
    policy,
    key_ptr,
    live_ptr,
    kv_ptr,
    chosen_ptr,
    BLOCK_Q: tl.constexpr,
    QB: tl.constexpr,
    GB: tl.constexpr,
    RANK: tl.constexpr,
):
    """The group of one forward step (``kernels.queue.choose``): the ``group`` largest keys
    of the ``n_live`` queued spikes (fresh ones for ``random``), their places into
    ``chosen_ptr`` in ascending order and out of the queue (their keys ``DEAD``, the live
    list compacted). Up to ``QB`` queued spikes the keys are ranked in registers and cut at
    the ``group``-th; beyond, ``group`` rounds each take the largest remaining key. Returns
    the group's size and the new ``n_live``.

    ``RANK``: rank by counting (``QB`` x ``QB`` comparisons, for Triton's interpreter, where
    a sorting network is slow) instead of ``tl.sort``; the same result. A group of up to 32
    is always sorted by counting."""
    n_sel = tl.minimum(n_live, group)
    if n_live <= group:  # all of them
        for c in range(0, n_live, BLOCK_Q):
            i = c + tl.arange(0, BLOCK_Q)
            m = i < n_live
            tl.store(chosen_ptr + i, tl.load(live_ptr + i, mask=m, other=0), mask=m)
    elif n_live <= QB:
        i = tl.arange(0, QB)
        m = i < n_live
        q = tl.load(live_ptr + i, mask=m, other=0)
        if policy == RANDOM:
            k = random_key(mixed, step_key, q)
        else:
            k = tl.load(key_ptr + q, mask=m, other=DEAD)
        k = tl.where(m, k, DEAD)
        if RANK:  # keys are distinct: a key's rank is the number of larger ones
            rank = vsum((k[None, :] > k[:, None]).to(tl.int32))
            take = m & (rank < group)
        else:
            ranked = tl.sort(k, descending=True)
            cut = vmax(tl.where(i == group - 1, ranked, DEAD))
            take = m & (k >= cut)
        tl.store(chosen_ptr + vcumsum(take.to(tl.int32)) - 1, q, mask=take)
    else:
        for c in range(0, n_live, BLOCK_Q):
            i = c + tl.arange(0, BLOCK_Q)
            m = i < n_live
            q = tl.load(live_ptr + i, mask=m, other=0)
            if policy == RANDOM:
                k = random_key(mixed, step_key, q)
            else:
                k = tl.load(key_ptr + q, mask=m, other=DEAD)
            tl.store(kv_ptr + i, k, mask=m)
        tl.debug_barrier()
        for f in range(0, group):
            best = tl.full((), DEAD, tl.int64)
            best_i = tl.full((), 0, tl.int32)
            for c in range(0, n_live, BLOCK_Q):
                i = c + tl.arange(0, BLOCK_Q)
                k = tl.load(kv_ptr + i, mask=i < n_live, other=DEAD)
                top = vmax(k)
                at = vmax(tl.where(k == top, i, -1))
                better = top > best
                best_i = tl.where(better, at, best_i)
                best = tl.where(better, top, best)
            tl.debug_barrier()
            tl.store(chosen_ptr + f, place_of(best))
            tl.store(kv_ptr + best_i, tl.full((), DEAD, tl.int64))
            tl.debug_barrier()
    tl.debug_barrier()
    g = tl.arange(0, GB)
    gm = g < n_sel
    places = tl.load(chosen_ptr + g, mask=gm, other=BIG)
    tl.debug_barrier()
    if RANK or GB <= 32:  # a small group: ranked by counting in any case
        rank = vsum((places[None, :] < places[:, None]).to(tl.int32))
        tl.store(chosen_ptr + rank, places, mask=gm)
    else:
        tl.store(chosen_ptr + g, tl.sort(places), mask=gm)
    tl.store(key_ptr + places, tl.full((GB,), DEAD, tl.int64), mask=gm)
    tl.debug_barrier()
    kept = tl.full((), 0, tl.int32)
    for c in range(0, n_live, BLOCK_Q):
        i = c + tl.arange(0, BLOCK_Q)
        m = i < n_live
        q = tl.load(live_ptr + i, mask=m, other=0)
        stays = m & (tl.load(key_ptr + q, mask=m, other=DEAD) != DEAD)
        where = kept + vcumsum(stays.to(tl.int32)) - 1
        tl.debug_barrier()
        tl.store(live_ptr + where, q, mask=stays)
        kept += vsum(stays.to(tl.int32))
        tl.debug_barrier()
    return n_sel, kept


@triton.jit
def clear(n_live, key_ptr, live_ptr, BLOCK_Q: tl.constexpr):
    """Empty the queue (a stop rule): every queued place free."""
    for c in range(0, n_live, BLOCK_Q):
        i = c + tl.arange(0, BLOCK_Q)
        m = i < n_live
        q = tl.load(live_ptr + i, mask=m, other=0)
        tl.store(key_ptr + q, tl.full((BLOCK_Q,), DEAD, tl.int64), mask=m)
    tl.debug_barrier()


@triton.jit
def stop_now(step, out_fired, first_out, max_steps, extra_steps):
    """``kernels.cpu.stop_now``: whether the stop rules end the timestep after the checks
    of ``step``, and the step in which an output neuron first fired (-1 while none has)."""
    stop = (max_steps >= 0) & (step >= max_steps)
    first_out = tl.where((extra_steps >= 0) & (out_fired > 0) & (first_out < 0), step, first_out)
    stop = stop | ((extra_steps >= 0) & (first_out >= 0) & (step >= first_out + extra_steps))
    return stop, first_out


def direct_calls(namespace: dict) -> None:
    """Under Triton's interpreter, let the kernels call the helpers of ``namespace`` (a
    module's globals) as plain functions: the interpreter re-patches ``triton.language`` at
    every call of a jit function, which the launch of the kernel has done already, and that
    dominates the interpreter's time. Compiled kernels are unaffected."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # another Triton: leave the helpers as they are
        return
    for name, value in list(namespace.items()):
        if isinstance(value, InterpretedFunction) and not name.startswith("_"):
            namespace[name] = value.rewrite()


if not isinstance(hash32, triton.JITFunction):  # Triton's interpreter
    direct_calls(globals())
