"""Stop rules, interventions and monitors: composable per-sample hooks.

A hook overrides any of the methods of :class:`Hook`; the engine calls only what a hook
overrides, so unused hooks cost nothing. Every decision is per sample: a stop rule returns a
``(batch,)`` mask, and a stopped sample ends its timestep while the others go on (its
undelivered spikes are dropped and counted in ``RunResult.undelivered``). A hook keeps its
per-run state in ``ctx.state(self)``, never on itself (docs/semantics.md, section 6).

>>> hooks = [MaxForwardSteps(10), StopOnOutputSpike(extra_steps=2), OutputTrace()]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .rng import Stream, step_counter


@dataclass
class StepContext:
    """What hooks may read. Updated by the engine after the input delivery (``step == 0``)
    and after every forward step.

    Attributes:
        timestep, step: position in the run (``step`` counts this timestep's forward steps).
        training: whether training-only interventions act.
        fired: (batch, population neurons + sinks) bool, neurons that fired in the last step:
            column ``j`` is the neuron of global index ``n_input + j`` (the columns past the
            populations are the engine's padding and never fire).
        took_step: (batch,) bool, the sample delivered a group in the last step.
        steps_per_row: forward steps one ``after_step`` call stands for (layered execution
            calls it once per timestep, for all its layers).
        steps: (batch,) forward steps of each sample in this timestep so far.
        output_spikes: (batch, outputs) output spikes of the last step.
        output_counts: (batch, outputs) output spikes since the start of the run.
        network_spikes: (batch,) network spikes since the start of the run.
        membrane: (batch, population neurons) membranes after the last step (read only).
        pending: (batch, queue places) bool, the spikes waiting in the queue (asynchronous
            execution; ``None`` in layered execution), place ``q`` of neuron
            ``place_neuron[q]`` (a global index, the input's first).
        chosen: (batch, F) the queue places the last forward step delivered, and
            ``chosen_valid`` which of them held a spike (``None`` at ``step == 0`` and in
            layered execution).
        records: what monitors recorded, by name (the run's ``RunResult.records``).
        hook_state: per-run state of the hooks, by hook (see :meth:`state`): a hook keeps
            nothing on itself, so one hook object serves any number of runs.
    """

    network: object
    batch: int
    rng: object
    training: bool
    timestep: int = 0
    step: int = 0
    fired: torch.Tensor | None = None
    took_step: torch.Tensor | None = None
    steps_per_row: int = 1
    steps: torch.Tensor | None = None
    output_spikes: torch.Tensor | None = None
    output_counts: torch.Tensor | None = None
    network_spikes: torch.Tensor | None = None
    membrane: torch.Tensor | None = None
    pending: torch.Tensor | None = None
    place_neuron: torch.Tensor | None = None
    chosen: torch.Tensor | None = None
    chosen_valid: torch.Tensor | None = None
    records: dict = field(default_factory=dict)
    hook_state: dict = field(default_factory=dict)

    def state(self, hook: Hook) -> dict:
        """The per-run state of ``hook`` (a dict, empty at the start of the run)."""
        return self.hook_state.setdefault(id(hook), {})


class Hook:
    """Base class: override what you need."""

    #: ``False`` for hooks that act on forward steps and so cannot run with layered execution
    layered_ok: bool = True

    def start(self, ctx: StepContext) -> None:
        """Called once before the first timestep."""

    def transform_input(self, ctx: StepContext, x: torch.Tensor) -> torch.Tensor:
        """Return the input frame ``x`` (batch, *input_shape) of timestep ``ctx.timestep``."""
        return x

    def keep_spikes(self, ctx: StepContext, fired: torch.Tensor) -> torch.Tensor | None:
        """Mask (batch, neurons + 1) of the new network spikes that enter the queue."""
        return None

    def after_step(self, ctx: StepContext) -> torch.Tensor | None:
        """After the input delivery and each forward step; return a (batch,) stop mask."""
        return None

    def end_timestep(self, ctx: StepContext) -> None:
        """After the last forward step of a timestep."""

    def finish(self, ctx: StepContext) -> None:
        """After the run; store results in ``ctx.records``."""


def overrides(hook: Hook, method: str) -> bool:
    return getattr(type(hook), method) is not getattr(Hook, method)


# ---------------------------------------------------------------------------- stop rules
@dataclass
class MaxForwardSteps(Hook):
    """End a sample's timestep after ``max_steps`` forward steps (``>= 0``)."""

    max_steps: int
    layered_ok = False

    def __post_init__(self) -> None:
        if not isinstance(self.max_steps, int) or self.max_steps < 0:
            raise ValueError(f"max_steps must be an int >= 0, got {self.max_steps!r}")

    def after_step(self, ctx: StepContext) -> torch.Tensor:
        return ctx.steps >= self.max_steps


@dataclass
class StopOnOutputSpike(Hook):
    """End a sample's timestep ``extra_steps`` forward steps after its first output spike of
    the timestep (an output spike during the input delivery counts as at step 0)."""

    extra_steps: int = 0
    layered_ok = False

    def __post_init__(self) -> None:
        if not isinstance(self.extra_steps, int) or self.extra_steps < 0:
            raise ValueError(f"extra_steps must be an int >= 0, got {self.extra_steps!r}")

    def after_step(self, ctx: StepContext) -> torch.Tensor:
        state = ctx.state(self)
        if ctx.step == 0:  # the forward step of this timestep's first output spike
            state["first"] = torch.full((ctx.batch,), -1, dtype=torch.long, device=ctx.steps.device)
        first = state["first"]
        spiked = ctx.output_spikes.sum(1) > 0
        first = state["first"] = torch.where(spiked & (first < 0), ctx.steps, first)
        return (first >= 0) & (ctx.steps >= first + self.extra_steps)


# ---------------------------------------------------------------------------- interventions
@dataclass
class InputSpikeDropout(Hook):
    """Training only: drop each input event with probability ``p`` (each sample its own
    random stream)."""

    p: float
    stream: int = Stream.INPUT_DROPOUT

    def __post_init__(self) -> None:
        if not 0 <= self.p < 1:
            raise ValueError(f"input spike dropout p must be in [0, 1), got {self.p}")

    def transform_input(self, ctx: StepContext, x: torch.Tensor) -> torch.Tensor:
        if not ctx.training or self.p == 0:
            return x
        n = x[0].numel()
        u = ctx.rng.uniform(self.stream, ctx.timestep, n).view_as(x)
        return x * (u >= self.p).to(x.dtype)


@dataclass
class NetworkSpikeDropout(Hook):
    """Training only: a network spike is lost before delivery with probability ``p`` (the
    neuron still fires and resets). Asynchronous execution only."""

    p: float
    stream: int = Stream.NETWORK_DROPOUT
    layered_ok = False

    def __post_init__(self) -> None:
        if not 0 <= self.p < 1:
            raise ValueError(f"network spike dropout p must be in [0, 1), got {self.p}")

    def keep_spikes(self, ctx: StepContext, fired: torch.Tensor) -> torch.Tensor | None:
        if not ctx.training or self.p == 0:
            return None
        counter = step_counter(ctx.timestep, ctx.step)
        return ctx.rng.uniform(self.stream, counter, fired.shape[1]) >= self.p


# ---------------------------------------------------------------------------- monitors
class OutputTrace(Hook):
    """Record the running output counts after the input delivery and every forward step.

    ``records["output_trace"]`` holds, one row per step (all detached):

    - ``counts`` (rows, batch, outputs): output spikes since the start of the run;
    - ``forward_steps`` (rows, batch): forward steps the sample has taken since the start;
    - ``network_spikes`` (rows, batch): network spikes since the start;
    - ``took_step`` (rows, batch) bool: the sample delivered a group in this row (False for
      the input-delivery rows);
    - ``timestep`` (rows,).

    Asynchronous execution has a row after each input delivery and each forward step; layered
    execution one row per timestep (standing for all its layers).
    """

    def start(self, ctx: StepContext) -> None:
        state = ctx.state(self)
        state.update(counts=[], took=[], timestep=[], spikes=[], steps=[])
        state["total"] = torch.zeros(ctx.batch, dtype=torch.long)

    def after_step(self, ctx: StepContext) -> None:
        state = ctx.state(self)
        took = ctx.took_step.detach()
        state["total"] = state["total"].to(took.device) + took.long() * ctx.steps_per_row
        state["counts"].append(ctx.output_counts.detach().clone())
        state["took"].append(took.clone())
        state["timestep"].append(ctx.timestep)
        state["spikes"].append(ctx.network_spikes.detach().clone())
        state["steps"].append(state["total"])

    def finish(self, ctx: StepContext) -> None:
        state = ctx.state(self)
        ctx.records["output_trace"] = {
            "counts": torch.stack(state["counts"]),
            "forward_steps": torch.stack(state["steps"]),
            "network_spikes": torch.stack(state["spikes"]),
            "took_step": torch.stack(state["took"]),
            "timestep": torch.tensor(state["timestep"]),
        }


class SpikeEvents(Hook):
    """Record every network spike with the forward step of its timestep at which it fired.

    ``records["spike_events"]`` holds four (spikes,) int64 tensors (on the CPU), one entry
    per spike, in the order the spikes fired:

    - ``sample``: the sample in the batch;
    - ``timestep``: the timestep;
    - ``neuron``: the neuron's column in ``RunResult.spikes`` (global index minus
      ``network.n_input``);
    - ``forward_step``: the sample's forward steps in this timestep when the neuron fired:
      0 for a spike of the input delivery, ``k`` for a spike caused by the sample's ``k``-th
      forward step (a sample's steps that delivered nothing are not counted, as in
      ``RunResult.forward_steps``).

    A neuron that fires twice in a timestep (refractory dropout) has two entries, so the
    entries of ``(sample, timestep, neuron)`` count ``RunResult.spikes`` exactly.

    Layered execution calls ``after_step`` once per timestep for all its layers: there a spike
    of the population at ``layer`` ``L`` (network order, the input being layer 0) is recorded
    at forward step ``L - 1``, the layer pass that computed it. In a feed-forward network
    without biases this is the step at which asynchronous execution under the ``layered``
    policy, with ``F`` at least the widest layer, fires it.

    The compiled kernels give the same records (:func:`monitor_records`) where a neuron fires
    at most once per timestep; with refractory dropout a run with it uses the reference
    engine. :func:`asyncsnn.save_spikes` writes its records (docs/spike-log.md).
    """

    def start(self, ctx: StepContext) -> None:
        net = ctx.network
        state = ctx.state(self)
        state["n_pop"] = net.n_neurons - net.n_input
        state["layer_step"] = torch.cat(
            [torch.full((p.size,), p.layer - 1, dtype=torch.long) for p in net.populations]
        )
        state["rows"] = []

    def after_step(self, ctx: StepContext) -> None:
        state = ctx.state(self)
        fired = ctx.fired[:, : state["n_pop"]].detach().cpu()
        sample, neuron = fired.nonzero(as_tuple=True)
        if not len(sample):
            return
        if ctx.pending is None:  # layered execution: one call stands for all its layers
            step = state["layer_step"][neuron]
        else:
            step = ctx.steps.detach().cpu()[sample]
        timestep = torch.full_like(sample, ctx.timestep)
        state["rows"].append(torch.stack([sample, timestep, neuron, step]))

    def finish(self, ctx: StepContext) -> None:
        rows = ctx.state(self)["rows"]
        table = torch.cat(rows, 1) if rows else torch.zeros(4, 0, dtype=torch.long)
        ctx.records["spike_events"] = dict(
            zip(("sample", "timestep", "neuron", "forward_step"), table, strict=True)
        )


# ---------------------------------------------------------------------------- monitors' records
#: the monitors whose records can also be read off each spike's forward step, so that a
#: compiled engine, which does not call hooks, still serves them (``monitor_records``)
MONITORS = (OutputTrace, SpikeEvents)


def monitor_records(monitors, result, fire_step: torch.Tensor) -> dict:
    """The records that ``monitors`` (instances of :data:`MONITORS`) would have written in the
    run ``result``, read off ``fire_step`` (timesteps, batch, population neurons), the forward
    step at which each neuron fired in each timestep (-1: it did not). Valid where a neuron
    fires at most once per timestep (no refractory dropout); this is how the compiled kernels
    give the reference engine's records, equal to the last bit (``tests/test_kernels.py``).

    The rows are the reference's: per timestep ``t`` one row for the input delivery and one
    per forward step of the batch, ``max`` over samples of ``result.forward_steps[t]``; a
    sample takes its steps first to last, so its row ``k`` of timestep ``t`` took a step iff
    ``1 <= k <= forward_steps[t, sample]``.
    """
    steps = result.forward_steps.detach().long().cpu()  # (T, B)
    T, B = steps.shape
    fire_step = fire_step.cpu()
    per_t = (steps.max(1).values if B else torch.zeros(T, dtype=torch.long)) + 1
    offset = torch.cumsum(per_t, 0) - per_t  # first row of each timestep
    t, b, i = (fire_step >= 0).nonzero(as_tuple=True)
    k = fire_step[t, b, i].long()
    out = {}
    for m in monitors:
        if type(m) is OutputTrace:
            out["output_trace"] = _output_trace(result, steps, per_t, offset, (t, b, i, k))
        elif type(m) is SpikeEvents:
            key = t * int(per_t.max()) + k  # (timestep, step); nonzero's order breaks ties
            order = torch.sort(key, stable=True).indices
            columns = zip(
                ("sample", "timestep", "neuron", "forward_step"), (b, t, i, k), strict=True
            )
            out["spike_events"] = {name: v[order] for name, v in columns}
        else:
            raise TypeError(f"{type(m).__name__} is not a monitor with records of spike steps")
    return out


def _output_trace(result, steps, per_t, offset, spikes) -> dict:
    """``OutputTrace``'s record from the spikes ``(timestep, sample, neuron, step)``."""
    t, b, i, k = spikes
    T, B = steps.shape
    R = int(per_t.sum())
    dtype = result.spikes.dtype
    net = result.network
    lo = net.output.offset - net.n_input
    n_out = net.output.size
    timestep = torch.repeat_interleave(torch.arange(T), per_t)  # (R,)
    step = torch.arange(R) - offset[timestep]  # the row's forward step in its timestep
    row = offset[t] + k
    one = torch.ones(len(row), dtype=dtype)
    spikes_inc = torch.zeros(R, B, dtype=dtype).index_put_((row, b), one, accumulate=True)
    is_out = (i >= lo) & (i < lo + n_out)
    counts_inc = torch.zeros(R, B, n_out, dtype=dtype).index_put_(
        (row[is_out], b[is_out], i[is_out] - lo), one[is_out], accumulate=True
    )
    taken = steps[timestep]  # (R, B) the sample's steps in the row's timestep
    before = (torch.cumsum(steps, 0) - steps)[timestep]
    device = result.spikes.device
    return {
        "counts": counts_inc.cumsum(0).to(device),
        "forward_steps": (before + torch.minimum(step[:, None], taken)).to(device),
        "network_spikes": spikes_inc.cumsum(0).to(device),
        "took_step": ((step[:, None] >= 1) & (step[:, None] <= taken)).to(device),
        "timestep": timestep,
    }
