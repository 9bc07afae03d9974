"""Errors that more than one engine raises (the engines share them, never import each other)."""

from __future__ import annotations


class QueueOverflowError(RuntimeError):
    """Spikes found every queue place of their neuron taken: with refractory dropout a neuron
    fired more often than ``max_queued_per_neuron`` before its spikes were delivered. The run
    stops instead of losing a spike."""

    def __init__(self, count: int, max_queued_per_neuron: int) -> None:
        super().__init__(
            f"{count} spike(s) found no free queue slot: with refractory dropout a neuron had "
            f"more than max_queued_per_neuron={max_queued_per_neuron} spikes waiting; run "
            "again with a larger max_queued_per_neuron"
        )
        self.count = count
        self.max_queued_per_neuron = max_queued_per_neuron
