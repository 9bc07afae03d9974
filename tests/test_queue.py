"""The queue's layout (asyncsnn.queue) on a hand-made network."""

from __future__ import annotations

import torch
from torch import nn

import asyncsnn
from asyncsnn.queue import queue_layout


def _net():
    # global neurons: input 0..2, h 3..4, out 5..6; input -> h dense (6 entries), h -> out
    # dense (4 entries), sorted by source; out sends nowhere
    return asyncsnn.Network.sequential([nn.Linear(3, 2), nn.Linear(2, 2)], threshold=0.3)


def test_the_layout_of_a_small_network_by_hand():
    net = _net()
    lay = queue_layout(net, queued_input=False)
    assert lay.neuron.tolist() == [3, 4]
    assert lay.layer.tolist() == [1, 1]
    assert lay.fanout.tolist() == [2, 2]
    assert lay.start.tolist() == [6, 8]
    assert lay.count.tolist() == [2, 2]
    assert lay.n_entries == 10
    first, offsets = lay.csr()
    assert (first, offsets.tolist()) == (6, [0, 2, 4])
    assert lay.padded_entries().tolist() == [[6, 7], [8, 9]]
    queued = queue_layout(net, queued_input=True)
    assert queued.neuron.tolist() == [0, 1, 2, 3, 4]
    assert queued.layer.tolist() == [0, 0, 0, 1, 1]
    assert queued.start.tolist() == [0, 2, 4, 6, 8]


def test_rows_are_the_neurons_that_send_somewhere_in_global_order():
    net = _net()
    tab = net.tables()
    has = torch.nonzero(tab.has_outgoing).flatten()
    lay = queue_layout(net, queued_input=False)
    assert lay.neuron.tolist() == [n for n in has.tolist() if n >= 3]
    assert lay.neuron.tolist() == sorted(lay.neuron.tolist())
    assert lay.layer.tolist() == [1] * lay.rows  # the hidden population
    assert lay.n_entries == len(tab.entries_src)
    queued = queue_layout(net, queued_input=True)
    assert queued.neuron.tolist() == has.tolist()
    assert queued.layer.tolist()[: queued.rows - lay.rows] == [0] * (queued.rows - lay.rows)
    for layout in (lay, queued):
        for r in range(layout.rows):  # each row's entries are exactly its neuron's
            entries = torch.arange(layout.start[r], layout.start[r] + layout.count[r])
            assert (tab.entries_src[entries] == layout.neuron[r]).all()
            assert int(tab.entries_src.eq(layout.neuron[r]).sum()) == layout.count[r]
            assert layout.fanout[r] == len(set(tab.entries_dst[entries].tolist()))


def test_the_padded_view_and_the_csr_list_the_same_entries():
    conv = asyncsnn.Network.sequential(  # input positions of unequal fan-out
        [nn.Conv2d(1, 2, 3, stride=2), nn.Flatten(), nn.Linear(8, 2)], input_shape=(1, 5, 5)
    )
    for net, queued_input in [(_net(), False), (_net(), True), (conv, False), (conv, True)]:
        lay = queue_layout(net, queued_input)
        padded = lay.padded_entries()
        first, offsets = lay.csr()
        if queued_input and net is conv:
            assert len(set(lay.count.tolist())) > 1
        assert padded.shape == (lay.rows, int(lay.count.max()))
        for r in range(lay.rows):
            row = padded[r][padded[r] < lay.n_entries].tolist()
            assert row == list(range(first + offsets[r], first + offsets[r + 1]))
            assert (padded[r][len(row) :] == lay.n_entries).all()
        assert first + int(offsets[-1]) == lay.n_entries  # the rows' entries come last


def test_the_layout_is_built_once_per_structure():
    net = _net()
    assert queue_layout(net, False) is queue_layout(net, False)
    assert queue_layout(net, True) is not queue_layout(net, False)


def test_the_kernels_group_sort_is_numpys_sort():
    """The compiled kernel sorts a chosen group of places by insertion up to
    INSERTION_MAX and by numpy's sort beyond: either way ascending, as np.sort does."""
    import numpy as np
    import pytest

    pytest.importorskip("numba")
    from numba import njit

    from asyncsnn.kernels.queue import INSERTION_MAX, sort_group

    @njit
    def sort_prefix(a, n):
        sort_group(a, n)

    gen = np.random.default_rng(0)
    for n in range(2 * INSERTION_MAX + 3):
        for _ in range(5):
            places = gen.permutation(1000)[: n + 3].astype(np.int64)
            got = places.copy()
            sort_prefix(got, n)
            assert got[:n].tolist() == sorted(places[:n].tolist())
            assert got[n:].tolist() == places[n:].tolist()  # the rest untouched
