"""What a run produced: :class:`RunResult`, the one result type of every engine, and the
count of the input's synaptic events that every engine's SynOps use."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .network import Network


def predict(scores: torch.Tensor) -> torch.Tensor:
    """Argmax over the last dimension, ``-1`` where the maximum is tied (a tie is wrong)."""
    best = scores.max(-1, keepdim=True).values
    tied = (scores == best).sum(-1) > 1
    return torch.where(tied, -1, scores.argmax(-1))


def input_events(x: torch.Tensor) -> torch.Tensor:
    """Events of each input value (docs/semantics.md, sections 3.2 and 9): ``ceil(|x|)``, so
    an event count ``k`` is ``k`` events, an analogue value in (0, 1] one, 0 none. Not
    differentiable (a count)."""
    return x.detach().abs().ceil()


#: input values whose events :func:`input_synops` counts at once: a slab that stays in a
#: CPU's cache, instead of float64 copies of a whole batch (32 N-MNIST samples: 35 MiB)
INPUT_SLAB = 1 << 17


def input_synops(x_flat: torch.Tensor, in_fanout: torch.Tensor) -> torch.Tensor:
    """Synaptic operations of the input: ``(...)`` the events of ``x_flat`` (``..., n_input``)
    per position (:func:`input_events`) times the position's fan-out ``in_fanout``
    (``n_input``), summed, in ``x_flat``'s dtype.

    Summed in float64 (exact for any realistic count), so the result does not depend on how
    the timesteps and samples are batched: every engine gets the same value. On a CPU a large
    input is counted a slab of rows at a time (:data:`INPUT_SLAB` values).
    """
    n = x_flat.shape[-1]
    if x_flat.device.type != "cpu" or x_flat.numel() <= INPUT_SLAB or n == 0:
        events = input_events(x_flat).to(torch.float64)
        return (events @ in_fanout.to(events)).to(x_flat.dtype)
    rows = x_flat.reshape(-1, n)
    step = max(1, INPUT_SLAB // n)
    fanout = in_fanout.to(torch.float64)
    out = torch.empty(rows.shape[0], dtype=x_flat.dtype)
    for i in range(0, rows.shape[0], step):
        events = input_events(rows[i : i + step]).to(torch.float64)
        out[i : i + step] = events @ fanout
    return out.reshape(x_flat.shape[:-1])


class SpikeReadout:
    """What is read off a run's ``spikes`` (timesteps, samples, neurons), ``output_counts``
    and ``membrane``, shared by :class:`RunResult` and a read spike log
    (:class:`asyncsnn.spikelog.SpikeLog`); ``_population(name)`` gives a population's
    ``offset``, ``size`` and ``shape``, ``_n_input`` the input's size."""

    def population_spikes(self, name: str) -> torch.Tensor:
        """(timesteps, samples, *population shape) spikes of one population (a view)."""
        pop = self._population(name)
        start = pop.offset - self._n_input
        s = self.spikes[..., start : start + pop.size]
        return s.reshape(*s.shape[:2], *pop.shape)

    @property
    def spike_count(self) -> torch.Tensor:
        """(samples,) network spikes of each sample."""
        return self.spikes.sum((0, 2))

    @property
    def prediction(self) -> torch.Tensor:
        """(samples,) argmax of the output counts (or of the summed membrane for a
        non-spiking readout); ``-1`` where the maximum is tied."""
        score = self.output_counts if self.membrane is None else self.membrane.sum(0)
        return predict(score.detach())


@dataclass
class RunResult(SpikeReadout):
    """What a run produced. Neurons are the populations' (not the input's), in network order.

    Attributes:
        spikes: (timesteps, batch, neurons) spikes per neuron per timestep (a count: with
            refractory dropout a neuron may fire more than once in a timestep).
        forward_steps: (timesteps, batch) forward steps each sample took (layered: the number
            of layers that send spikes).
        output_counts: (batch, outputs) output spikes summed over the run.
        membrane: (timesteps, batch, outputs) membrane of a non-spiking output at the end of
            each timestep, else ``None``.
        current: (timesteps, batch, outputs) synaptic current of a non-spiking output at the
            end of each timestep where the output is current-based (``tau_syn > 0``), else
            ``None``.
        synops: (timesteps, batch) synaptic operations: delivered spikes times their fan-out,
            input events included: an input value ``x`` is ``ceil(|x|)`` events (an event
            count ``k`` is ``k``) times its position's fan-out (:func:`input_synops`).
        undelivered: (timesteps, batch) spikes dropped from the queue when a stop rule ended a
            sample's timestep.
        event_updates: (timesteps, batch) int64 event-driven neuron updates: the neurons that
            received a non-zero current, counted once per forward step that reached them (the
            input's delivery is one). Asynchronous execution: the threshold checks it makes
            (docs/semantics.md, section 3; a refractory neuron's membrane receives nothing and
            is not counted); layered execution: each population's neurons that received a
            non-zero input in the timestep's pass. ``None`` where the engine does not count
            them (docs/cost.md).
        records: what monitors recorded, by name.
        engine: the engine that ran it, as :func:`asyncsnn.run` chose: ``"layered"``,
            ``"torch"`` (the PyTorch reference engine), ``"numba"`` or ``"triton"`` (the
            compiled kernels).
    """

    spikes: torch.Tensor
    forward_steps: torch.Tensor
    output_counts: torch.Tensor
    membrane: torch.Tensor | None
    synops: torch.Tensor
    undelivered: torch.Tensor
    network: Network = field(repr=False)
    records: dict = field(default_factory=dict)
    current: torch.Tensor | None = None
    engine: str = ""
    event_updates: torch.Tensor | None = None

    def _population(self, name: str):
        return self.network.population(name)

    @property
    def _n_input(self) -> int:
        return self.network.n_input
