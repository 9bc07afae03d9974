r"""Unlayered backprop on the GPU: the Triton kernel's forward pass and a hand-written backward.

The method is the numba kernel's (:mod:`asyncsnn.kernels.cpu_grad`, whose docstring derives
the adjoint), arranged for one sample per program:

- the forward pass (:mod:`asyncsnn.kernels.triton_async`) records the *delivery schedule*
  only: per forward step the size of its group, per delivered spike its queue place, and
  every timestep's final membranes (and synaptic currents);
- the backward pass walks the timesteps in reverse. For timestep :math:`t` it *replays* the
  timestep from the membranes at the end of :math:`t - 1`, following the recorded groups
  through the same phases (:mod:`asyncsnn.kernels.triton_phases`, in replay mode): the same
  float operations, so the same membranes, spikes, refractory draws and queue places, and a
  record of every check of a spiking neuron (the neuron, whether it fired and was made
  refractory, the place its spike took, its membrane) for this one timestep. Then the
  adjoint :math:`\lambda = \partial L/\partial V` (and :math:`\mu = \partial L/\partial I`
  in a current-based network) goes backwards through the timestep's steps: each step's
  checks, then the delivery that caused them (the weights' gradient, and the gradient of each
  delivered spike, kept at its queue place until the check that fired it), then the start of
  the timestep (the gradient of the input and bias current, the leak).

Memory does not grow with forward steps: the schedule is a few integers per delivered spike,
the replay's records are one timestep's. The weights' gradient is summed over the samples in
float64 (atomic additions: the order between samples may vary from run to run, far below
float32 resolution); everything else is computed per sample. Scheduling decisions are not
differentiated (docs/semantics.md, section 8), as in the reference. With silent gradients
(section 8.7) each timestep's ghosts are walked after its replay and before its steps, as in
``kernels.cpu_grad._ghost_adjoint``: a ghost's gradient is a delivered spike's
(:func:`_spike_adjoint`) without the weights' share, its value being 0.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from ..options import RunOptions
from ..result import RunResult
from ..rng import Stream
from . import triton_phases as ph
from .cpu_grad import ARCTAN, OUTPUTS, surrogate_code
from .plan import Plan
from .triton_async import TritonRun, stream_hash


@triton.jit
def _derivative(x, parameter, KIND: tl.constexpr):
    """The surrogate's derivative at ``x = V - theta`` (``kernels.cpu_grad._derivative``)."""
    if KIND == 0:  # arctan
        y = 3.1415927410125732 * parameter * x / 2.0
        d = (parameter / 2.0) / (1.0 + y * y)
    else:  # fast sigmoid
        s = parameter * tl.abs(x) + 1.0
        d = 1.0 / (s * s)
    return d


@triton.jit
def _spike_adjoint(
    row,
    t,
    row_wave_ptr,
    wave_start_ptr,
    dst_ptr,
    w_ptr,
    refr_ptr,
    lam_ptr,
    mu_ptr,
    grad_w_ptr,
    SYNAPTIC: tl.constexpr,
    WEIGHTS: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    """``dL/dz`` of a spike of the sender whose row is ``row``, delivered in timestep ``t``:
    over its entries, the weight times the target's adjoint (its membrane's where it was not
    refractory, plus its current's in a current-based network;
    ``kernels.cpu_grad._target_adjoint``). With ``WEIGHTS`` (a spike of value 1) the
    target's adjoint is also each entry's weight gradient, added to ``grad_w_ptr``."""
    total = tl.full((), 0.0, tl.float32)
    for wv in range(tl.load(row_wave_ptr + row), tl.load(row_wave_ptr + row + 1)):
        e1 = tl.load(wave_start_ptr + wv + 1)
        for c in range(tl.load(wave_start_ptr + wv), e1, BLOCK_E):
            e = c + tl.arange(0, BLOCK_E)
            m = e < e1
            j = tl.load(dst_ptr + e, mask=m, other=0)
            open_ = m & (tl.load(refr_ptr + j, mask=m, other=0) != t)
            gj = tl.load(lam_ptr + j, mask=open_, other=0.0)
            if SYNAPTIC:
                gj = tl.load(mu_ptr + j, mask=m, other=0.0) + gj
            w = tl.load(w_ptr + e, mask=m, other=0.0)
            if WEIGHTS:
                tl.atomic_add(grad_w_ptr + e, gj.to(tl.float64), mask=m & (gj != 0))
            total += ph.vsum(w * gj)
    return total


@triton.jit
def _backward(
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
    v_end_ptr,
    syn_end_ptr,
    steps_ptr,
    step_base_ptr,
    tape_ptr,
    tape_steps_ptr,
    tape_start_ptr,
    grad_spikes_ptr,
    grad_membrane_ptr,
    grad_rcurrent_ptr,
    grad_current_ptr,
    grad_w_ptr,
    v_ptr,
    syn_ptr,
    acc_ptr,
    refr_ptr,
    key_ptr,
    spk_ptr,
    lam_ptr,
    mu_ptr,
    dz_place_ptr,
    chk_code_ptr,
    chk_place_ptr,
    chk_v_ptr,
    chk_rows_ptr,
    ghosts_ptr,
    n_ghost,
    dz_ghost_ptr,
    T,
    B,
    n,
    places,
    slots,
    lam_noise,
    p_refr,
    out_lo,
    out_hi,
    tape_cap,
    chk_cap,
    rows_cap,
    h_refr,
    parameter,
    SYNAPTIC: tl.constexpr,
    MEMBRANE: tl.constexpr,
    CURRENT: tl.constexpr,
    KIND: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    """Gradients of sample ``program_id(0)``: writes its rows of ``grad_current_ptr`` and
    adds its share of the per-entry weights' gradient to ``grad_w_ptr`` (float64). The
    scratch arrays arrive zeroed (``refr_ptr`` at -1, ``key_ptr`` at ``DEAD``)."""
    b = tl.program_id(0)
    b64 = b.to(tl.int64)
    n_out = out_hi - out_lo
    v_ptr += b64 * n
    syn_ptr += b64 * n
    acc_ptr += b64 * n
    refr_ptr += b64 * n
    spk_ptr += b64 * n
    lam_ptr += b64 * n
    mu_ptr += b64 * n
    key_ptr += b64 * places
    dz_place_ptr += b64 * places
    tape_ptr += b64 * tape_cap
    tape_steps_ptr += b64 * tape_cap
    chk_code_ptr += b64 * chk_cap
    chk_place_ptr += b64 * chk_cap
    chk_v_ptr += b64 * chk_cap
    chk_rows_ptr += b64 * rows_cap
    dz_ghost_ptr += b64 * n
    seed = tl.cast(tl.load(seeds_ptr + b), tl.uint32)
    mixed = ph.hash32(seed ^ 0x5BD1E995)
    zero = tl.full((), 0, tl.int32)
    for tt in range(0, T):
        t = T - 1 - tt
        tb = b64 + t * B
        # ---- the readout's gradients at the end of timestep t ---------------------------
        if MEMBRANE:
            for c in range(0, n_out, BLOCK_N):
                i = c + tl.arange(0, BLOCK_N)
                m = i < n_out
                g = tl.load(grad_membrane_ptr + tb * n_out + i, mask=m, other=0.0)
                lam = tl.load(lam_ptr + out_lo + i, mask=m, other=0.0)
                tl.store(lam_ptr + out_lo + i, lam + g, mask=m)
                if CURRENT:
                    g = tl.load(grad_rcurrent_ptr + tb * n_out + i, mask=m, other=0.0)
                    mu = tl.load(mu_ptr + out_lo + i, mask=m, other=0.0)
                    tl.store(mu_ptr + out_lo + i, mu + g, mask=m)
        # ---- replay timestep t from the end of t - 1 -------------------------------------
        later = (tl.zeros((BLOCK_N,), tl.int32) + t) > 0  # not the first timestep
        for c in range(0, n, BLOCK_N):
            i = c + tl.arange(0, BLOCK_N)
            m = i < n
            prev = tl.load(v_end_ptr + tb * n - B * n + i, mask=m & later, other=0.0)
            tl.store(v_ptr + i, prev, mask=m)
            if SYNAPTIC:
                prev = tl.load(syn_end_ptr + tb * n - B * n + i, mask=m & later, other=0.0)
                tl.store(syn_ptr + i, prev, mask=m)
        for c in range(0, places, BLOCK_N):
            i = c + tl.arange(0, BLOCK_N)
            tl.store(key_ptr + i, tl.full((BLOCK_N,), ph.DEAD, tl.int64), mask=i < places)
        tl.debug_barrier()
        counter = tl.cast(t << 16, tl.uint32)
        n_live, n_chk, of, lost = ph.leak_and_input(
            n, t, zero, zero, mixed, ph.counter_key(h_refr, counter), counter, counter,
            cur_ptr + tb * n, beta_ptr, alpha_ptr, v_ptr, syn_ptr, drop_hash_ptr, drop_p_ptr,
            n_drop, theta_ptr, sub_ptr, slot_of_ptr, slot_layer_ptr, refr_ptr, spk_ptr,
            spk_ptr, key_ptr, key_ptr, chk_code_ptr, chk_place_ptr, chk_v_ptr, 0, lam_noise,
            slots, p_refr, out_lo, out_hi, SYNAPTIC, True, False, BLOCK_N,
        )  # fmt: skip
        tl.store(chk_rows_ptr, n_chk)
        n_steps = tl.load(steps_ptr + tb).to(tl.int32)
        s0 = tl.load(step_base_ptr + tb)
        d = tl.load(tape_start_ptr + tb)
        for s in range(1, n_steps + 1):
            g = tl.load(tape_steps_ptr + s0 + s - 1)
            for k in range(0, g):  # the group's places are free again
                tl.store(key_ptr + tl.load(tape_ptr + d + k), tl.full((), ph.DEAD, tl.int64))
            tl.debug_barrier()
            counter = tl.cast((t << 16) + s, tl.uint32)
            ph.accumulate(
                tape_ptr + d, g, t, slots, fanout_ptr, row_wave_ptr, wave_start_ptr, dst_ptr,
                w_ptr, refr_ptr, acc_ptr, SYNAPTIC, BLOCK_E,
            )  # fmt: skip
            n_live, n_chk, of, lost = ph.apply(
                tape_ptr + d, g, t, s, zero, n_chk, mixed, ph.counter_key(h_refr, counter),
                counter, counter, row_wave_ptr, wave_start_ptr, dst_ptr, acc_ptr, v_ptr,
                syn_ptr, drop_hash_ptr, drop_p_ptr, n_drop, theta_ptr, sub_ptr, slot_of_ptr,
                slot_layer_ptr, refr_ptr, spk_ptr, spk_ptr, key_ptr, key_ptr, chk_code_ptr,
                chk_place_ptr, chk_v_ptr, 0, lam_noise, slots, p_refr, out_lo, out_hi,
                SYNAPTIC, True, False, BLOCK_E,
            )  # fmt: skip
            tl.store(chk_rows_ptr + s, n_chk)
            d += g
        tl.debug_barrier()
        # ---- silent gradients: the ghosts after the last step, populations in reverse ----
        for kk in range(0, n_ghost):
            k = n_ghost - 1 - kk
            lo = tl.load(ghosts_ptr + 2 * k)
            hi = tl.load(ghosts_ptr + 2 * k + 1)
            for src in range(lo, hi):  # each sum taken before the population's adjoints change
                total = tl.full((), 0.0, tl.float32)
                row = tl.load(slot_of_ptr + src)
                if (tl.load(refr_ptr + src) != t) & (row >= 0):
                    total = _spike_adjoint(
                        row, t, row_wave_ptr, wave_start_ptr, dst_ptr, w_ptr, refr_ptr,
                        lam_ptr, mu_ptr, grad_w_ptr, SYNAPTIC, False, BLOCK_E,
                    )  # fmt: skip
                tl.store(dz_ghost_ptr + src, total)
            tl.debug_barrier()
            for c in range(lo, hi, BLOCK_N):
                i = c + tl.arange(0, BLOCK_N)
                m = i < hi
                dz = tl.load(dz_ghost_ptr + i, mask=m, other=0.0)
                m = m & (dz != 0.0)
                v = tl.load(v_end_ptr + tb * n + i, mask=m, other=0.0)
                theta = tl.load(theta_ptr + i, mask=m, other=0.0)
                lam = tl.load(lam_ptr + i, mask=m, other=0.0)
                tl.store(lam_ptr + i, lam + _derivative(v - theta, parameter, KIND) * dz, mask=m)
            tl.debug_barrier()
        # ---- backwards through the steps: checks, then the delivery that caused them -----
        for ss in range(0, n_steps + 1):
            s = n_steps - ss
            c_end = tl.load(chk_rows_ptr + s)
            c_start = zero
            if s > 0:
                c_start = tl.load(chk_rows_ptr + s - 1)
            for c in range(c_start, c_end, BLOCK_N):
                i = c + tl.arange(0, BLOCK_N)
                m = i < c_end
                code = tl.load(chk_code_ptr + i, mask=m, other=0)
                j = code >> 2
                fired = m & ((code & 1) != 0)
                made = m & ((code & 2) != 0)
                pre = tl.load(chk_v_ptr + i, mask=m, other=0.0)
                q = tl.load(chk_place_ptr + i, mask=m, other=-1)
                dz = tl.load(grad_spikes_ptr + tb * n + j, mask=m, other=0.0)
                theta = tl.load(theta_ptr + j, mask=m, other=0.0)
                sg = _derivative(pre - theta, parameter, KIND)
                delivered = fired & (q >= 0)
                dz = dz + tl.load(dz_place_ptr + q, mask=delivered, other=0.0)
                tl.store(dz_place_ptr + q, tl.full((BLOCK_N,), 0.0, tl.float32), mask=delivered)
                sub = tl.load(sub_ptr + j, mask=m, other=0) != 0
                lam = tl.load(lam_ptr + j, mask=m, other=0.0)
                lam = tl.where(fired & ~sub, sg * dz, lam + sg * dz)
                tl.store(lam_ptr + j, lam, mask=m)
                tl.store(refr_ptr + j, tl.full((BLOCK_N,), -1, tl.int32), mask=made)
            tl.debug_barrier()
            if s > 0:
                g = tl.load(tape_steps_ptr + s0 + s - 1)
                d -= g
                for k in range(0, g):
                    q = tl.load(tape_ptr + d + k)
                    total = _spike_adjoint(
                        q // slots, t, row_wave_ptr, wave_start_ptr, dst_ptr, w_ptr, refr_ptr,
                        lam_ptr, mu_ptr, grad_w_ptr, SYNAPTIC, True, BLOCK_E,
                    )  # fmt: skip
                    tl.store(dz_place_ptr + q, total)
                tl.debug_barrier()
        # ---- the start of timestep t: the input current's gradient, the leak -------------
        for c in range(0, n, BLOCK_N):
            i = c + tl.arange(0, BLOCK_N)
            m = i < n
            lam = tl.load(lam_ptr + i, mask=m, other=0.0)
            beta = tl.load(beta_ptr + i, mask=m, other=0.0)
            if SYNAPTIC:
                g = tl.load(mu_ptr + i, mask=m, other=0.0) + lam
                tl.store(grad_current_ptr + tb * n + i, g, mask=m)
                alpha = tl.load(alpha_ptr + i, mask=m, other=0.0)
                tl.store(mu_ptr + i, g * alpha, mask=m)
            else:
                tl.store(grad_current_ptr + tb * n + i, lam, mask=m)
            tl.store(lam_ptr + i, lam * beta, mask=m)
        tl.debug_barrier()


class TritonTrainFunction(torch.autograd.Function):
    """``(current, entry weights) -> OUTPUTS`` through the Triton kernel, with the backward
    pass above; ``run`` is a :class:`~asyncsnn.kernels.triton_async.TritonRun`."""

    @staticmethod
    def forward(ctx, current, ent_w, run, surrogate):
        current = current.detach().contiguous()
        ent_w = ent_w.detach().contiguous()
        out = run.simulate(current, ent_w, record=True)
        ctx.run, ctx.surrogate, ctx.saved = run, surrogate, (current, ent_w, out)
        p = run.plan
        spikes = out["spikes"].to(p.dtype)
        counts = [out[k] for k in OUTPUTS[3:]]
        ctx.mark_non_differentiable(*counts)
        return (spikes, out["membrane"], out["current"], *counts)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spikes, grad_membrane, grad_readout_current, *_):
        if ctx.run is None:
            raise RuntimeError(
                "the graph of a compiled asynchronous run can be differentiated once: its "
                "schedule is released by the first backward pass (retain_graph=True does not "
                "keep it). Run again, or use backend='torch'"
            )
        run, (kind, parameter) = ctx.run, ctx.surrogate
        current, ent_w, out = ctx.saved
        ctx.run = ctx.saved = None  # what the graph holds goes as soon as possible
        p, st, bl = run.plan, run.st, run.blocks
        dev, T, B, n = run.device, p.T, p.B, run.n
        places = max(run.places, 1)
        f32, i32, i64 = torch.float32, torch.int32, torch.int64
        steps = out["forward_steps"]
        # per sample its forward steps in order: where each timestep's begin
        step_base = (steps.cumsum(0) - steps).to(i32).contiguous()
        chk_cap = max(int(out["checks"].max()), 1)
        rows_cap = int(steps.max()) + 1
        tape_cap = out["tape"].shape[1]

        def grad_of(g, shape):
            if g is None:
                return torch.zeros(shape, dtype=f32, device=dev)
            return g.to(f32).contiguous()

        n_out = p.out_hi - p.out_lo
        gs = grad_of(grad_spikes, (T, B, n))
        gm = grad_of(grad_membrane, (T, B, n_out)) if p.readout else torch.zeros(1, device=dev)
        gi = (
            grad_of(grad_readout_current, (T, B, n_out))
            if p.readout_current
            else torch.zeros(1, device=dev)
        )
        grad_current = torch.zeros(T, B, n, dtype=f32, device=dev)
        grad_w = torch.zeros(max(ent_w.numel(), 1), dtype=torch.float64, device=dev)

        def zeros(*shape, dtype=f32):
            return torch.zeros(*shape, dtype=dtype, device=dev)

        r = p.rules
        # silent gradients: the populations that send ghosts, as (first neuron, end) pairs
        n_ghost = len(p.ghosts)
        ghosts = torch.as_tensor(p.ghosts.reshape(-1), dtype=i32).to(dev)
        if not n_ghost:
            ghosts = zeros(2, dtype=i32)  # never read
        _backward[(B,)](
            current, run.seeds, run.beta, run.theta, run.alpha, run.sub, st["slot_of"],
            st["slot_layer"], st["slot_fanout"], st["row_wave"], st["wave_start"],
            st["ent_dst"], ent_w, run.drop_hash, run.drop_p, len(r.drop_stream),
            out["v_end"], out["syn_end"] if p.synaptic else out["v_end"], steps, step_base,
            out["tape"], out["tape_steps"], out["tape_start"], gs, gm, gi, grad_current, grad_w,
            zeros(B, n), zeros(B, n), zeros(B, n), torch.full((B, n), -1, dtype=i32, device=dev),
            torch.full((B, places), -(2**63), dtype=i64, device=dev), zeros(B, n),
            zeros(B, n), zeros(B, n), zeros(B, places), zeros(B, chk_cap, dtype=i32),
            zeros(B, chk_cap, dtype=i32), zeros(B, chk_cap), zeros(B, rows_cap, dtype=i32),
            ghosts, n_ghost, zeros(B, n) if n_ghost else zeros(1),
            T, B, n, places, p.slots, float(r.lam), float(r.p_refractory), p.out_lo, p.out_hi,
            tape_cap, chk_cap, rows_cap, stream_hash(int(Stream.REFRACTORY_DROPOUT)),
            float(parameter),
            SYNAPTIC=bool(p.synaptic), MEMBRANE=bool(p.readout), CURRENT=bool(p.readout_current),
            KIND=0 if kind == ARCTAN else 1, BLOCK_N=bl.N, BLOCK_E=bl.E,
            num_warps=4, enable_fp_fusion=False,
        )  # fmt: skip
        return grad_current.to(p.dtype), grad_w[: ent_w.numel()].to(p.dtype), None, None


def run_async_triton_grad(net, x: torch.Tensor, options: RunOptions) -> RunResult:
    """Asynchronous execution with gradients (unlayered backprop) through the Triton kernel:
    the run's result, whose ``spikes`` (and ``membrane``) carry gradients to the weights, the
    biases and, where it requires them, the input. The caller has checked that it applies."""
    plan = Plan(net, x, options)
    run = TritonRun(plan)
    current = plan.input_current()
    ent_w = run.entry_weights()
    surrogate = surrogate_code(options.spike_fn)
    outs = TritonTrainFunction.apply(current, ent_w, run, surrogate)
    out = dict(zip(OUTPUTS, outs, strict=True))
    result = plan.result(out, out["spikes"], out["membrane"], out["current"])
    plan.x = None  # not kept alive by the graph
    return result
