"""The queue's layout, built once from the network and read by every asynchronous engine.

A run's queue has one row per neuron that can send a spike somewhere: the population neurons
with outgoing projections, in global order, and, where the input is queued
(``prioritized_input=False``), the input positions with outgoing projections before them.
Each row holds ``slots`` queue places (one, or ``max_queued_per_neuron`` under refractory
dropout); place ``row * slots + s`` is the tie-break of docs/semantics.md section 3.4 (the
lower place first). A row's synaptic entries are a contiguous run of the network's entries
(``Network.tables()``, sorted by source): the reference engine reads them as a padded
(rows, widest row) view, the compiled kernel as CSR.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .network import Network


@dataclass(frozen=True)
class QueueLayout:
    """The rows of the queue and where their synaptic entries lie (all on the network's
    device; ``rows = len(neuron)``)."""

    neuron: torch.Tensor  # (rows,) global index of each row's neuron, ascending
    layer: torch.Tensor  # (rows,) its population's layer (0 for an input position)
    fanout: torch.Tensor  # (rows,) its distinct targets
    start: torch.Tensor  # (rows,) its first entry in ``Network.tables()``
    count: torch.Tensor  # (rows,) its number of entries
    n_entries: int  # entries in ``Network.tables()``

    @property
    def rows(self) -> int:
        return len(self.neuron)

    def padded_entries(self) -> torch.Tensor:
        """(rows, widest row, at least 1) entry index of each row's entries, padded with the
        number of entries (one past the last)."""
        width = max(int(self.count.max()) if self.rows else 1, 1)
        cols = torch.arange(width, device=self.neuron.device)
        return torch.where(
            cols[None, :] < self.count[:, None], self.start[:, None] + cols[None, :], self.n_entries
        )

    def csr(self) -> tuple[int, torch.Tensor]:
        """The rows' entries as CSR: the first entry of the first row, and (rows + 1,) row
        offsets relative to it. The rows' entries are contiguous (the input's, where it is not
        queued, come before them) and run to the last entry."""
        first = int(self.start[0]) if self.rows else self.n_entries
        offsets = torch.zeros(self.rows + 1, dtype=torch.long, device=self.neuron.device)
        offsets[1:] = torch.cumsum(self.count, 0)
        contiguous = torch.equal(self.start - first, offsets[:-1]) if self.rows else True
        if not contiguous or first + int(offsets[-1]) != self.n_entries:
            raise AssertionError("the synaptic entries are not sorted by source")
        return first, offsets


def queue_layout(net: Network, queued_input: bool) -> QueueLayout:
    """The queue's layout for ``net`` (cached on the network's tables)."""
    tab = net.tables()
    key = ("queue-layout", queued_input)
    cached = tab.derived.get(key)
    if cached is not None:
        return cached
    neuron = torch.nonzero(tab.has_outgoing).flatten()
    if not queued_input:
        neuron = neuron[neuron >= tab.n_input]
    counts = torch.bincount(tab.entries_src, minlength=tab.n_neurons)
    starts = torch.cumsum(counts, 0) - counts
    layer = torch.zeros(tab.n_neurons, dtype=torch.long, device=neuron.device)
    for pop in net.populations:
        layer[pop.slice] = pop.layer
    layout = QueueLayout(
        neuron=neuron,
        layer=layer[neuron],
        fanout=tab.fanout[neuron],
        start=starts[neuron],
        count=counts[neuron],
        n_entries=len(tab.entries_src),
    )
    tab.derived[key] = layout
    return layout
