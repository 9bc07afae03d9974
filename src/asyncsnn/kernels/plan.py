"""Planning a run of the kernel: the network, the rules and the inputs as the kernel reads
them, prepared once per call on the host, and the pool of threads that runs chunks of
samples. Shared by inference (:mod:`asyncsnn.kernels.cpu`) and training
(:mod:`asyncsnn.kernels.cpu_grad`).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch

from ..dynamics import decay_factor
from ..hooks import (
    MONITORS,
    MaxForwardSteps,
    NetworkSpikeDropout,
    StepContext,
    StopOnOutputSpike,
    monitor_records,
    overrides,
)
from ..network import INPUT, Network
from ..options import SURROGATE_CHECKS, RunOptions
from ..queue import queue_layout
from ..result import RunResult, input_synops
from ..scheduling import FIFO, Layered, Momentum, Random
from .queue import FIFO_CODE, LAYERED, MOMENTUM, MOMENTUM_NOISE, RANDOM


# ------------------------------------------------------------------ the kernel's arguments
class KernelNet(NamedTuple):
    """The network as the kernel reads it (population neurons in global order - n_in)."""

    beta: np.ndarray  # (n,) leak per timestep
    theta: np.ndarray  # (n,) threshold, inf for a non-spiking readout
    alpha: np.ndarray  # (n,) decay of the synaptic current per timestep (0: none)
    subtract: np.ndarray  # (n,) bool: the neuron resets by subtraction
    synaptic: bool  # the network is current-based: the neurons carry a current
    slot_of: np.ndarray  # (n,) queue row of a neuron with outgoing projections, else -1
    slot_layer: np.ndarray  # (rows,) layer of each queue row's neuron
    slot_fanout: np.ndarray  # (rows,) its fan-out
    ent_start: np.ndarray  # (rows + 1,) CSR: first synaptic entry of each row
    ent_dst: np.ndarray  # (entries,) target neuron
    ent_w: np.ndarray  # (entries,) weight x coefficient
    out_lo: int  # the output population's neurons
    out_hi: int


class KernelRules(NamedTuple):
    """The run's policy, stop rules and dropouts."""

    policy: int  # RANDOM, MOMENTUM_NOISE, MOMENTUM, FIFO_CODE or LAYERED
    lam: np.float32  # momentum noise scale
    group: int  # F, at most the number of queue places
    max_steps: int  # MaxForwardSteps, -1 without
    extra_steps: int  # StopOnOutputSpike, -1 without
    slots: int  # queue places per neuron
    p_refractory: np.float32  # refractory dropout
    drop_stream: np.ndarray  # network spike dropouts that act: their streams
    drop_p: np.ndarray  # and probabilities


class KernelInputs(NamedTuple):
    current: np.ndarray  # (T, B, n) input and bias current of each timestep
    seeds: np.ndarray  # (B,) per-sample seeds


class KernelOutputs(NamedTuple):
    """Written in place by the kernel (each sample its own rows)."""

    spikes: np.ndarray  # (T, B, n)
    forward_steps: np.ndarray  # (T, B)
    net_synops: np.ndarray  # (T, B)
    undelivered: np.ndarray  # (T, B)
    updates: np.ndarray  # (T, B) neurons checked (received a non-zero current), all steps
    membrane: np.ndarray  # (T, B, outputs) or empty
    current: np.ndarray  # (T, B, outputs) a current-based readout's current, or empty
    v_end: np.ndarray  # (T, B, n) with a tape, else empty
    syn_end: np.ndarray  # (T, B, n) with a tape in a current-based network, else empty
    fire_step: np.ndarray  # (T, B, n) int32 for the monitors: the forward step of each spike
    # (-1: none; a neuron fires at most once per timestep there), else empty


def _structure(net: Network) -> dict:
    """The queue's layout (:mod:`asyncsnn.queue`, prioritized input) as CSR delivery tables,
    with the weights re-indexed for the kernel (cached on the network's tables).

    A row's synaptic entries keep the order of ``Network.tables()``, which is the reference's
    table-column order.
    """
    tab = net.tables()
    cached = tab.derived.get("numba-cpu")
    if cached is not None:
        return cached
    n_in = tab.n_input
    n_pop = tab.n_neurons - n_in
    layout = queue_layout(net, queued_input=False)
    neuron = layout.neuron.cpu().numpy()
    first, ent_start = layout.csr()  # the input's entries come before the rows'
    ent_start = ent_start.cpu().numpy()
    slot_of = np.full(n_pop, -1, np.int64)
    slot_of[neuron - n_in] = np.arange(len(neuron))
    spiking = np.zeros(n_pop, bool)
    for pop in net.populations:
        spiking[pop.offset - n_in : pop.offset - n_in + pop.size] = pop.spiking
    # the entries' weights index Network.weight_vector() (all weights, then 1 and 0); the
    # kernel's entries only need the weights of projections from populations: re-index them
    # into the concatenation of those, then 1 and 0 (the same values, less to copy)
    widx = tab.entries_widx.cpu().numpy()[first:]
    remap = np.full(widx.max(initial=0) + 1, -1, np.int64)
    weighted, off_all, off_sub = [], 0, 0
    for p in net.projections:
        w = p.weighted
        if w is None:
            continue
        numel = w.weight.numel()
        if p.source != INPUT:
            hi = min(off_all + numel, len(remap))
            remap[off_all:hi] = off_sub + np.arange(hi - off_all)
            weighted.append(p)
            off_sub += numel
        off_all += numel
    if off_all < len(remap):  # the fixed weight 1 (chains without a weighted module)
        remap[off_all] = off_sub
    ent_widx = remap[widx]
    if (ent_widx < 0).any():
        raise AssertionError("an entry from a population points at an input weight")
    out = {
        "slot_of": slot_of,
        "slot_layer": layout.layer.cpu().numpy(),
        "slot_fanout": layout.fanout.cpu().numpy().astype(np.int64),
        "ent_start": ent_start,
        "ent_dst": (tab.entries_dst.cpu().numpy()[first:] - n_in).astype(np.int64),
        "ent_widx": ent_widx,
        "ent_widx_t": torch.from_numpy(ent_widx),
        "ent_coef_t": tab.entries_coef.cpu()[first:].contiguous(),
        "weighted": weighted,
        "spiking": torch.from_numpy(spiking),
    }
    tab.derived["numba-cpu"] = out
    return out


def _policy(scheduler) -> tuple[int, float]:
    if type(scheduler) is Random:
        return RANDOM, 0.0
    if type(scheduler) is Momentum:
        lam = float(scheduler.lambda_ms)
        return (MOMENTUM, 0.0) if lam == 0 else (MOMENTUM_NOISE, lam)
    if type(scheduler) is FIFO:
        return FIFO_CODE, 0.0
    if type(scheduler) is Layered:
        return LAYERED, 0.0
    raise ValueError(f"the kernel has no policy {scheduler!r}")


def _stop_rules(hooks) -> tuple[int, int]:
    max_steps, extra = -1, -1
    for h in hooks:
        if type(h) is MaxForwardSteps:
            max_steps = h.max_steps if max_steps < 0 else min(max_steps, h.max_steps)
        elif type(h) is StopOnOutputSpike:
            extra = h.extra_steps if extra < 0 else min(extra, h.extra_steps)
    return max_steps, extra


def input_current(net: Network, x: torch.Tensor) -> torch.Tensor:
    """(timesteps, batch, population neurons) current of each timestep's input delivery:
    the input projections applied to the timestep's input, plus the biases, computed as the
    reference computes it (one timestep at a time: a batched product may round otherwise)."""
    T, B = x.shape[0], x.shape[1]
    n_in = net.n_input
    n_pop = net.n_neurons - n_in
    dtype = x.dtype
    out = torch.zeros(T, B, n_pop, dtype=dtype, device=x.device)
    projs = [p for p in net.projections if p.source == INPUT]
    by_pop = []
    for pop in net.populations:
        mine = [p for p in projs if p.target == pop.name]
        if mine:
            by_pop.append((slice(pop.offset - n_in, pop.offset - n_in + pop.size), mine))
    for sl, mine in by_pop:
        per_t = []
        for t in range(T):
            x_t = x[t]
            cur = mine[0].apply(x_t)
            for p in mine[1:]:
                cur = cur + p.apply(x_t)
            per_t.append(cur)
        out[:, :, sl] = torch.stack(per_t)
    bias = net.bias_vector()[n_in:].to(dtype)
    if bool((bias != 0).any()):
        out += bias
    return out


def transformed_input(net: Network, x: torch.Tensor, rng, hooks, training: bool):
    """The input after the hooks that transform it (input spike dropout), as the reference
    applies them, one timestep at a time."""
    active = [h for h in hooks if overrides(h, "transform_input")]
    if not active:
        return x
    ctx = StepContext(net, x.shape[1], rng, training)
    frames = []
    for t in range(x.shape[0]):
        ctx.timestep = t
        x_t = x[t]
        for h in active:
            x_t = h.transform_input(ctx, x_t)
        frames.append(x_t)
    return torch.stack(frames)


class Plan:
    """Everything one run of the kernel needs, prepared from the network and the call; shared
    by inference (:func:`asyncsnn.kernels.cpu.run_async_cpu`) and training
    (:mod:`asyncsnn.kernels.cpu_grad`)."""

    def __init__(self, net: Network, x: torch.Tensor, options: RunOptions):
        o = options
        self.net = net
        self.x = transformed_input(net, x, o.rng, o.hooks, o.training)
        self.T, self.B = x.shape[0], x.shape[1]
        tab = net.tables()
        self.n_in = tab.n_input
        self.n_pop = tab.n_neurons - self.n_in
        self.dtype = x.dtype
        self.st = st = _structure(net)
        self.slots = o.slots
        self.max_queued_per_neuron = o.max_queued_per_neuron
        policy, lam = _policy(o.scheduler)
        max_steps, extra = _stop_rules(o.hooks)
        drops = [h for h in o.hooks if type(h) is NetworkSpikeDropout and o.training and h.p > 0]
        self.rules = KernelRules(
            policy=policy,
            lam=np.float32(lam),
            group=min(o.group_size, len(st["slot_layer"]) * self.slots),
            max_steps=max_steps,
            extra_steps=extra,
            slots=self.slots,
            p_refractory=np.float32(o.refractory_dropout),
            drop_stream=np.array([h.stream for h in drops], np.int64),
            drop_p=np.array([h.p for h in drops], np.float32),
        )
        self.beta = decay_factor(o.dt, net.tau_m.to(self.dtype)).detach().contiguous()
        spiking = st["spiking"].to(net.threshold.device)
        theta = net.threshold.to(self.dtype).masked_fill(~spiking, float("inf"))
        self.theta = theta.detach().contiguous()
        self.synaptic = net.current_based
        self.alpha = decay_factor(o.dt, net.tau_syn.to(self.dtype)).detach().contiguous()
        sub = net.subtract_mask()
        self.subtract = np.zeros(self.n_pop, bool) if sub is None else sub.cpu().numpy()
        out = net.output
        self.out_lo = out.offset - self.n_in
        self.out_hi = self.out_lo + out.size
        self.readout = not out.spiking
        # a current-based readout's current is an output too (as the reference's)
        self.readout_current = self.readout and bool(
            (net.tau_syn[self.out_lo : self.out_hi] > 0).any()
        )
        # silent gradients (backward pass only): the spiking populations, in network order,
        # as (first neuron, end): the end-of-timestep checks go population by population
        ghosts = []
        if o.silent_gradients:
            for pop in net.populations:
                if pop.spiking:
                    ghosts.append((pop.offset - self.n_in, pop.offset - self.n_in + pop.size))
        self.ghosts = np.array(ghosts, np.int64).reshape(-1, 2)
        # which of a neuron's checks pass their surrogate gradient (docs/semantics.md, 8.8)
        self.check_mode = SURROGATE_CHECKS.index(o.surrogate_checks)
        self.seeds = o.rng.seeds.to(device="cpu", dtype=torch.int64).contiguous()
        # the monitors the kernel serves: their records are read off each spike's forward step
        self.monitors = [h for h in o.hooks if type(h) in MONITORS]

    def entry_weights(self) -> torch.Tensor:
        """Per synaptic entry of the populations' projections: weight x coefficient (carries
        gradients to the weights where they require them)."""
        st = self.st
        w_sub = torch.cat(
            [p.weighted.weight.flatten().to(self.dtype) for p in st["weighted"]]
            + [torch.tensor([1.0, 0.0], dtype=self.dtype)]
        )
        return w_sub[st["ent_widx_t"]] * st["ent_coef_t"].to(self.dtype)

    def input_current(self) -> torch.Tensor:
        return input_current(self.net, self.x)

    def kernel_net(self, ent_w: np.ndarray) -> KernelNet:
        """The network as the kernel reads it, with the per-entry weights ``ent_w``."""
        st = self.st
        return KernelNet(
            beta=self.beta.numpy(),
            theta=self.theta.numpy(),
            alpha=self.alpha.numpy(),
            subtract=self.subtract,
            synaptic=self.synaptic,
            slot_of=st["slot_of"],
            slot_layer=st["slot_layer"],
            slot_fanout=st["slot_fanout"],
            ent_start=st["ent_start"],
            ent_dst=st["ent_dst"],
            ent_w=ent_w,
            out_lo=self.out_lo,
            out_hi=self.out_hi,
        )

    def kernel_inputs(self, current: torch.Tensor) -> KernelInputs:
        """The input and bias ``current`` and the seeds as the kernel reads them."""
        return KernelInputs(current=current.detach().contiguous().numpy(), seeds=self.seeds.numpy())

    def new_outputs(self, record: bool) -> dict[str, torch.Tensor]:
        """Zeroed outputs (the fields of :class:`KernelOutputs`) for the kernel to fill;
        ``v_end`` (and ``syn_end``, the currents) holds every timestep's final membranes
        where the tape is ``record``-ed."""
        T, B, dtype = self.T, self.B, self.dtype
        n_out = self.out_hi - self.out_lo
        none = (0, 0, 0)
        return {
            "spikes": torch.zeros(T, B, self.n_pop, dtype=dtype),
            "forward_steps": torch.zeros(T, B, dtype=torch.long),
            "net_synops": torch.zeros(T, B, dtype=torch.long),
            "undelivered": torch.zeros(T, B, dtype=torch.long),
            "updates": torch.zeros(T, B, dtype=torch.long),
            "membrane": torch.zeros((T, B, n_out) if self.readout else none, dtype=dtype),
            "current": torch.zeros((T, B, n_out) if self.readout_current else none, dtype=dtype),
            "v_end": torch.zeros((T, B, self.n_pop) if record else none, dtype=dtype),
            "syn_end": torch.zeros(
                (T, B, self.n_pop) if record and self.synaptic else none, dtype=dtype
            ),
            "fire_step": torch.full(
                (T, B, self.n_pop) if self.monitors else none, -1, dtype=torch.int32
            ),
        }

    def input_synops(self, fanout: torch.Tensor) -> torch.Tensor:
        """(timesteps, batch) synaptic operations of the input, by the rule every engine uses
        (:func:`asyncsnn.result.input_synops`); a float32 CPU input is counted in one pass by
        :func:`asyncsnn.kernels.shared.input_synops_rows` (the same values)."""
        x = self.x.detach().reshape(self.T, self.B, -1)
        if x.device.type != "cpu" or x.dtype != torch.float32:
            return input_synops(x, fanout)
        from .shared import input_synops_rows

        rows = x.reshape(self.T * self.B, -1).contiguous().numpy()
        out = np.empty(rows.shape[0], np.float64)
        input_synops_rows(rows, fanout.to(torch.float64).contiguous().numpy(), out)
        return torch.from_numpy(out).to(self.dtype).view(self.T, self.B)

    def result(
        self,
        out: dict,
        spikes: torch.Tensor,
        membrane: torch.Tensor | None,
        current: torch.Tensor | None = None,
    ) -> RunResult:
        """The run's result around ``spikes``, ``membrane`` and a current-based readout's
        ``current`` (which may carry gradients); its ``event_updates`` are ``out["updates"]``
        where the engine counted them."""
        # the input's synaptic operations, by the rule every engine uses; the kernel counts
        # the network's
        fanout = self.net.tables().fanout[: self.n_in]
        in_synops = self.input_synops(fanout)
        updates = out.get("updates", torch.zeros(0))  # empty: the engine did not count them
        result = RunResult(
            spikes=spikes,
            forward_steps=out["forward_steps"],
            synops=in_synops + out["net_synops"].to(self.dtype),
            undelivered=out["undelivered"],
            output_counts=spikes[:, :, self.out_lo : self.out_hi].sum(0),
            membrane=membrane if self.readout else None,
            network=self.net,
            current=current if self.readout_current else None,
            event_updates=updates if updates.shape == out["forward_steps"].shape else None,
        )
        if self.monitors:
            result.records.update(monitor_records(self.monitors, result, out["fire_step"]))
        return result


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def _threads() -> int:
    """Worker threads: PyTorch's intra-op setting (``torch.set_num_threads``)."""
    return max(1, torch.get_num_threads())


def run_chunks(kernel, batch: int, args: tuple, per_thread: int = 4) -> list:
    """``kernel(b0, b1, *args)`` on all samples, in chunks over a pool of threads (the kernels
    release the GIL; a chunk's samples write disjoint parts of the outputs). Returns
    ``[(b0, b1, result), ...]`` in sample order."""
    threads = min(_threads(), batch)
    size = batch if threads == 1 else max(1, batch // (per_thread * threads))
    bounds = [(b0, min(b0 + size, batch)) for b0 in range(0, batch, size)]
    results = map_chunks(lambda b0, b1: kernel(b0, b1, *args), bounds)
    return [(b0, b1, r) for (b0, b1), r in zip(bounds, results, strict=True)]


def map_chunks(fn, bounds: list) -> list:
    """``[fn(b0, b1) for b0, b1 in bounds]``, on the pool of threads where there are several
    chunks and threads."""
    global _POOL, _POOL_SIZE
    threads = min(_threads(), len(bounds))
    if threads <= 1:
        return [fn(b0, b1) for b0, b1 in bounds]
    with _POOL_LOCK:
        if _POOL is None or threads > _POOL_SIZE:
            _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="asyncsnn")
            _POOL_SIZE = threads
        pool = _POOL
    futures = [pool.submit(fn, b0, b1) for b0, b1 in bounds]
    return [f.result() for f in futures]
