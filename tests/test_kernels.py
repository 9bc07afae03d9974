"""The numba CPU kernel of asynchronous inference against the PyTorch reference engine.

The kernel must give the reference's result bit for bit (``torch.equal``): spikes, forward
steps, synaptic operations, undelivered spikes, event-driven neuron updates, output counts
and the membrane of a non-spiking readout, for every policy, group size and kind of
network; it falls back to the reference, silently, wherever it does not apply, and
``backend="numba"`` says why it cannot.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("numba")

import asyncsnn  # noqa: E402
from asyncsnn import kernels  # noqa: E402
from asyncsnn.kernels import cpu, shared  # noqa: E402
from asyncsnn.kernels import queue as kqueue  # noqa: E402
from asyncsnn.rng import SampleRNG, hash32, sample_seeds  # noqa: E402

DT = 1e-3
FIELDS = (
    "spikes",
    "forward_steps",
    "synops",
    "undelivered",
    "output_counts",
    "membrane",
    "current",
)
POLICIES = {
    "random": "random",
    "momentum": "momentum",
    "momentum_noisy": asyncsnn.Momentum(lambda_ms=0.05),
    "momentum0": asyncsnn.Momentum(lambda_ms=0.0),
    "fifo": "fifo",
    "layered": "layered",
}


def run(net, x, **kw) -> asyncsnn.RunResult:
    kw.setdefault("dt", DT)
    with torch.no_grad():
        return asyncsnn.run(net, x, **kw)


def assert_identical(a: asyncsnn.RunResult, b: asyncsnn.RunResult) -> None:
    for f in FIELDS:
        va, vb = getattr(a, f), getattr(b, f)
        if va is None or vb is None:
            assert va is None and vb is None, f
            continue
        assert va.dtype == vb.dtype and va.shape == vb.shape, f
        assert torch.equal(va, vb), f"{f} differs in {int((va != vb).sum())} places"
    assert_same_updates(a, b)
    assert_same_records(a.records, b.records)


def assert_same_updates(a: asyncsnn.RunResult, b: asyncsnn.RunResult) -> None:
    """The event-driven neuron updates (``RunResult.event_updates``), value for value; the
    Triton kernel has none where the readout does not spike (its counter skips it)."""
    if b.engine == "triton" and not b.network.output.spiking:
        assert b.event_updates is None
        return
    va, vb = a.event_updates, b.event_updates
    assert va is not None and vb is not None
    assert va.dtype == vb.dtype == torch.long and va.shape == vb.shape == a.forward_steps.shape
    assert torch.equal(va, vb), f"event_updates differ in {int((va != vb).sum())} places"


def assert_same_records(a: dict, b: dict) -> None:
    """The monitors' records, tensor by tensor: the same dtypes, shapes and values."""
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys(), name
        for k, va in a[name].items():
            vb = b[name][k]
            assert va.dtype == vb.dtype and va.shape == vb.shape, (name, k, va.shape, vb.shape)
            assert torch.equal(va, vb), f"{name}[{k!r}] differs"


# ------------------------------------------------------------------------ networks
def _init(gen: torch.Generator, module: nn.Module, mean: float, std: float) -> nn.Module:
    with torch.no_grad():
        module.weight.normal_(mean, std, generator=gen)
        if module.bias is not None:
            module.bias.normal_(0.05, 0.2, generator=gen)
    return module


def _lin(gen, a, b, bias=False, mean=0.12, std=0.45):
    return _init(gen, nn.Linear(a, b, bias=bias), mean, std)


def _spikes_in(gen, shape, density=0.3, counts=False) -> torch.Tensor:
    x = (torch.rand(shape, generator=gen) < density).float()
    if counts:
        x = x * torch.randint(1, 3, shape, generator=gen).float()
    return x


def fc(gen, bias=False, readout="spikes", **neurons):
    layers = [_lin(gen, 24, 40, bias), _lin(gen, 40, 30, bias), _lin(gen, 30, 6, bias)]
    net = asyncsnn.Network.sequential(layers, tau_m=2e-3, threshold=0.5, readout=readout, **neurons)
    return net, _spikes_in(gen, (14, 3, 24), counts=True)


def wide(gen):  # 600 queue slots: a heap over many queued spikes
    layers = [_lin(gen, 16, 600, mean=0.1, std=0.3), _lin(gen, 600, 8, mean=0.0, std=0.15)]
    net = asyncsnn.Network.sequential(layers, tau_m=2e-3, threshold=0.5, readout="membrane")
    return net, _spikes_in(gen, (8, 2, 16))


def conv(gen, bias=False, readout="spikes", **neurons):
    modules = [
        _init(gen, nn.Conv2d(2, 6, 3, padding=1, bias=bias), 0.15, 0.4),
        _init(gen, nn.Conv2d(6, 4, 3, padding=1, bias=bias), 0.05, 0.3),
        asyncsnn.SumPool2d(2),  # duplicate (source, target) entries through conv + pool
        nn.Flatten(),
        _init(gen, nn.Linear(64, 5, bias=bias), 0.05, 0.3),
    ]
    net = asyncsnn.Network.sequential(
        modules, input_shape=(2, 8, 8), tau_m=2e-3, threshold=0.5, readout=readout, **neurons
    )
    return net, _spikes_in(gen, (10, 2, 2, 8, 8), density=0.25)


def conv_pooled_input(gen):
    modules = [
        nn.AvgPool2d(2),
        _init(gen, nn.Conv2d(2, 4, 3, padding=1), 0.3, 0.4),
        nn.Flatten(),
        _init(gen, nn.Linear(64, 4), 0.05, 0.3),
    ]
    net = asyncsnn.Network.sequential(
        modules, input_shape=(2, 8, 8), tau_m=2e-3, threshold=0.3, readout="membrane"
    )
    return net, _spikes_in(gen, (10, 2, 2, 8, 8), density=0.3, counts=True)


def skip(gen, **neurons):
    net = asyncsnn.Network(input_shape=(20,))
    net.add_population("h1", [_lin(gen, 20, 30, True)], tau_m=2e-3, threshold=0.5, **neurons)
    net.add_population("h2", [_lin(gen, 30, 25)], source="h1", tau_m=3e-3, threshold=0.4, **neurons)
    net.add_population(
        "output", [_lin(gen, 25, 5)], source="h2", tau_m=2e-3, threshold=0.5, **neurons
    )
    net.connect("h1", "output", [_lin(gen, 30, 5)])
    net.connect("input", "h2", [_lin(gen, 20, 25)])
    return net, _spikes_in(gen, (12, 3, 20))


def recurrent(gen, **neurons):
    net = asyncsnn.Network(input_shape=(20,))
    net.add_population("h1", [_lin(gen, 20, 32)], tau_m=2e-3, threshold=0.5, **neurons)
    net.add_population(
        "output", [_lin(gen, 32, 6)], source="h1", tau_m=2e-3, threshold=0.5, **neurons
    )
    net.connect("h1", "h1", [_lin(gen, 32, 32, mean=0.0, std=0.3)])
    net.connect("output", "h1", [_lin(gen, 6, 32, mean=-0.1, std=0.3)])  # output queued
    return net, _spikes_in(gen, (12, 3, 20))


NETWORKS = {
    "fc": fc,
    "fc_bias_membrane": lambda g: fc(g, bias=True, readout="membrane"),
    "wide": wide,
    "conv": conv,
    "conv_bias_membrane": lambda g: conv(g, bias=True, readout="membrane"),
    "conv_pooled_input": conv_pooled_input,
    "skip": skip,
    "recurrent": recurrent,
}

# the neuron variants (docs/semantics.md, section 2): a synaptic current, per neuron where
# it varies (0: none), and the reset by subtraction
CUBA = {"tau_syn": 3e-3}
SUBTRACT = {"reset": "subtract"}
VARIANTS = {
    "fc_cuba": lambda g: fc(g, **CUBA),
    "fc_subtract": lambda g: fc(g, **SUBTRACT),
    "fc_bias_membrane_cuba_subtract": lambda g: fc(
        g, bias=True, readout="membrane", **CUBA, **SUBTRACT
    ),
    "conv_cuba_subtract": lambda g: conv(g, **CUBA, **SUBTRACT),
    "conv_bias_membrane_cuba": lambda g: conv(g, bias=True, readout="membrane", **CUBA),
    "skip_cuba_per_neuron": lambda g: skip_mixed(g),
    "recurrent_cuba_subtract": lambda g: recurrent(g, **CUBA, **SUBTRACT),
}


def skip_mixed(gen):
    """The variants mixed: per-neuron synaptic currents (some neurons without), one
    population resetting to zero among ones that subtract."""
    tau_syn = torch.where(torch.arange(30) % 3 == 0, 0.0, 1e-3 + torch.rand(30, generator=gen))
    net = asyncsnn.Network(input_shape=(20,))
    net.add_population(
        "h1", [_lin(gen, 20, 30, True)], tau_m=2e-3, threshold=0.5, tau_syn=tau_syn * 4e-3
    )
    net.add_population(
        "h2", [_lin(gen, 30, 25)], source="h1", tau_m=3e-3, threshold=0.4, reset="subtract"
    )
    net.add_population(
        "output", [_lin(gen, 25, 5)], source="h2", threshold=0.5, tau_syn=2e-3, reset="subtract"
    )
    net.connect("h1", "output", [_lin(gen, 30, 5)])
    net.connect("input", "h2", [_lin(gen, 20, 25)])
    return net, _spikes_in(gen, (12, 3, 20))


ALL_NETWORKS = {**NETWORKS, **VARIANTS}


def make(name: str, seed: int = 0):
    return ALL_NETWORKS[name](torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------ exact equality
@pytest.mark.parametrize("group_size", [1, 3, 8])
@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("name", list(NETWORKS))
def test_kernel_equals_the_reference(name, policy, group_size):
    net, x = make(name)
    kw = {"scheduler": POLICIES[policy], "group_size": group_size, "seed": 3}
    ref = run(net, x, backend="torch", **kw)
    fast = run(net, x, backend="numba", **kw)
    assert_identical(ref, fast)
    assert ref.spikes.sum() > 0 and ref.forward_steps.sum() > 0  # something to compare


@pytest.mark.parametrize("group_size", [1, 8])
@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("name", list(VARIANTS))
def test_kernel_equals_the_reference_on_the_neuron_variants(name, policy, group_size):
    """Current-based neurons and the reset by subtraction (docs/semantics.md, section 2.3)."""
    test_kernel_equals_the_reference(name, policy, group_size)


def test_the_cases_deliver_groups_of_several_spikes():
    """The networks above put several spikes into one group, so the order in which a group's
    currents are summed matters to the comparisons."""
    for name in NETWORKS:
        net, x = make(name)
        r = run(net, x, backend="numba", scheduler="fifo", group_size=8)
        queued = r.spikes[..., net.tables().has_outgoing[net.n_input :]].sum(2)
        assert (queued > r.forward_steps).any(), name


@pytest.mark.parametrize("seed", range(12))
def test_kernel_equals_the_reference_on_random_networks(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    g = torch.randint(0, 2**31, (1,), generator=gen).item()
    sizes = torch.randint(3, 30, (4,), generator=gen).tolist()
    n_in = sizes[0]
    net = asyncsnn.Network(input_shape=(n_in,))
    net.add_population("h1", [_lin(gen, n_in, sizes[1], g % 2 == 0)], threshold=0.4)
    net.add_population("h2", [_lin(gen, sizes[1], sizes[2])], source="h1", threshold=0.4)
    net.add_population("output", [_lin(gen, sizes[2], sizes[3])], source="h2", spiking=g % 3 != 0)
    if g % 4 == 0:
        net.connect("h2", "h1", [_lin(gen, sizes[2], sizes[1], mean=-0.05)])
    if g % 5 < 2:
        net.connect("input", "h2", [_lin(gen, n_in, sizes[2])])
    x = _spikes_in(gen, (int(5 + g % 7), int(1 + g % 4), n_in), density=0.4, counts=g % 2 == 1)
    for policy in POLICIES.values():
        kw = {"scheduler": policy, "group_size": int(1 + g % 9), "seed": g}
        assert_identical(run(net, x, backend="torch", **kw), run(net, x, backend="numba", **kw))


def test_real_nmnist_samples(shared_data):
    from asyncsnn.data import load_dataset

    test = load_dataset(
        "nmnist", root=shared_data / "nmnist-subset", train=False, dt=10e-3, n_timesteps=30
    )
    frames, _ = test.stack(range(2))
    x = frames.transpose(0, 1).flatten(2)
    gen = torch.Generator().manual_seed(0)
    layers = [nn.Linear(2312, 128, bias=False), nn.Linear(128, 128, bias=False)]
    layers.append(nn.Linear(128, 10, bias=False))
    for layer in layers:
        with torch.no_grad():
            layer.weight.uniform_(-0.06, 0.06, generator=gen)
            layer.weight[:, : layer.weight.shape[1] // 2] += 0.02
    net = asyncsnn.Network.sequential(layers, tau_m=1e-3, threshold=0.3)
    for policy in ("random", "momentum", "fifo"):
        kw = {"dt": 10e-3, "scheduler": policy, "group_size": 8}
        ref = run(net, x, backend="torch", **kw)
        assert ref.spikes.sum() > 100
        assert_identical(ref, run(net, x, backend="numba", **kw))


# ------------------------------------------------------------------------ stop rules, hooks
@pytest.mark.parametrize(
    "hooks",
    [
        [asyncsnn.MaxForwardSteps(0)],
        [asyncsnn.MaxForwardSteps(2)],
        [asyncsnn.StopOnOutputSpike()],
        [asyncsnn.StopOnOutputSpike(extra_steps=1)],
        [asyncsnn.MaxForwardSteps(3), asyncsnn.StopOnOutputSpike(extra_steps=2)],
    ],
    ids=["max0", "max2", "stop_out", "stop_out_plus1", "both"],
)
@pytest.mark.parametrize("policy", ["random", "momentum0", "fifo"])
def test_stop_rules(hooks, policy):
    net, x = make("skip")
    kw = {"scheduler": POLICIES[policy], "group_size": 2, "hooks": hooks}
    ref = run(net, x, backend="torch", **kw)
    assert ref.undelivered.sum() > 0  # the rule acted
    assert_identical(ref, run(net, x, backend="numba", **kw))


MONITORS = [asyncsnn.OutputTrace(), asyncsnn.SpikeEvents()]


@pytest.mark.parametrize(
    "stops",
    [[], [asyncsnn.StopOnOutputSpike(extra_steps=1)], [asyncsnn.MaxForwardSteps(2)]],
    ids=["none", "stop_out_plus1", "max2"],
)
@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize(
    "name", ["fc", "conv", "skip", "recurrent", "fc_bias_membrane_cuba_subtract"]
)
def test_monitors_record_what_the_reference_records(name, policy, stops):
    """``OutputTrace`` and ``SpikeEvents`` on the kernel: the reference's records to the last
    bit (rows, dtypes, order), read off each spike's forward step."""
    net, x = make(name)
    kw = {"scheduler": POLICIES[policy], "group_size": 3, "seed": 5, "hooks": stops + MONITORS}
    ref = run(net, x, backend="torch", **kw)
    fast = run(net, x, backend="numba", **kw)
    assert set(fast.records) == {"output_trace", "spike_events"}
    assert_identical(ref, fast)
    trace = fast.records["output_trace"]
    assert trace["counts"].shape[0] > x.shape[0]  # rows for forward steps, not only timesteps
    assert len(fast.records["spike_events"]["neuron"]) == int(fast.spikes.sum())


def test_monitors_on_random_networks_and_the_real_kernel_is_used(kernel_calls):
    for seed in range(6):
        gen = torch.Generator().manual_seed(300 + seed)
        net = asyncsnn.Network(input_shape=(17,))
        net.add_population("h1", [_lin(gen, 17, 23)], threshold=0.3)
        net.add_population("output", [_lin(gen, 23, 7)], source="h1", threshold=0.3)
        x = _spikes_in(gen, (9, 4, 17), density=0.5)
        for policy in ("random", "momentum", "fifo"):
            kw = {"scheduler": policy, "group_size": 1 + seed, "seed": seed, "hooks": MONITORS}
            assert_identical(run(net, x, backend="torch", **kw), run(net, x, **kw))
    assert kernel_calls  # backend="auto" took the kernel with the monitors


def test_monitors_with_gradients():
    """Unlayered backprop through the kernel serves the monitors too."""
    net, x = make("skip")
    kw = {"scheduler": "momentum", "group_size": 2, "seed": 1, "hooks": MONITORS}
    ref = asyncsnn.run(net, x, dt=DT, backend="torch", **kw)
    fast = asyncsnn.run(net, x, dt=DT, backend="numba", **kw)
    assert fast.output_counts.requires_grad and fast.engine == "numba"
    assert_same_records(ref.records, fast.records)
    fast.output_counts.sum().backward()  # the records do not get in the way


def test_dropouts_that_do_nothing_are_accepted():
    net, x = make("fc")
    quiet = [asyncsnn.InputSpikeDropout(0.5), asyncsnn.NetworkSpikeDropout(0.5)]
    kw = {"hooks": quiet, "training": False, "refractory_dropout": 0.3, "scheduler": "fifo"}
    assert_identical(run(net, x, backend="torch", **kw), run(net, x, backend="numba", **kw))
    kw = {"hooks": [asyncsnn.NetworkSpikeDropout(0.0)], "training": True}
    assert_identical(run(net, x, backend="torch", **kw), run(net, x, backend="numba", **kw))


DROPOUTS = {
    "refractory": {"refractory_dropout": 0.5, "max_queued_per_neuron": 16},
    "refractory_at_eval": {
        "refractory_dropout": 0.8,
        "refractory_dropout_at_eval": True,
        "training": False,
        "max_queued_per_neuron": 16,
    },
    "input": {"hooks": [asyncsnn.InputSpikeDropout(0.3)]},
    "network": {"hooks": [asyncsnn.NetworkSpikeDropout(0.3)]},
    "all": {
        "refractory_dropout": 0.5,
        "max_queued_per_neuron": 16,
        "hooks": [
            asyncsnn.InputSpikeDropout(0.25),
            asyncsnn.NetworkSpikeDropout(0.2),
            asyncsnn.NetworkSpikeDropout(0.1, stream=40),
            asyncsnn.MaxForwardSteps(6),
        ],
    },
}


@pytest.mark.parametrize("policy", ["random", "momentum_noisy", "fifo", "layered"])
@pytest.mark.parametrize("case", list(DROPOUTS))
@pytest.mark.parametrize("name", ["fc", "recurrent", "conv"])
def test_dropouts_that_act(name, case, policy):
    """Refractory dropout (a neuron may hold several queue places), input and network spike
    dropout act in the kernel as in the reference, on the same random streams."""
    net, x = make(name)
    kw = {"training": True, "scheduler": POLICIES[policy], "group_size": 3, **DROPOUTS[case]}
    ref = run(net, x, backend="torch", **kw)
    plain = run(net, x, backend="torch", scheduler=POLICIES[policy], group_size=3)
    assert not torch.equal(ref.spikes, plain.spikes)  # the dropout acted
    assert_identical(ref, run(net, x, backend="numba", **kw))


def test_a_full_queue_is_an_error_as_in_the_reference():
    net, x = make("recurrent")
    kw = {"refractory_dropout": 0.9, "max_queued_per_neuron": 1, "training": True, "group_size": 1}
    for backend in ("torch", "numba"):
        with pytest.raises(RuntimeError, match="max_queued_per_neuron=1"):
            run(net, x * 3, backend=backend, **kw)


# ------------------------------------------------------------------------ random streams
def test_the_kernel_reproduces_the_counter_based_rng():
    for x in [0, 1, 12345, 2**31 - 1, 2**31, 2**32 - 1]:
        assert shared.hash32(x) == hash32(x)
    for seed in [0, 7, torch.tensor([5, 2**32 - 1, 0, 123456789])]:
        seeds = sample_seeds(seed, 4)
        rng = SampleRNG(seeds)
        for stream, counter, size in [(7, 1, 50), (7, (3 << 16) + 2, 300), (8, 11, 77), (0, 0, 1)]:
            expected = rng.uniform(stream, counter, size)
            got = torch.from_numpy(shared.uniform(seeds.numpy(), stream, counter, size))
            assert torch.equal(got, expected)


@pytest.mark.parametrize("lambda_ms", [1e-6, 0.05, 1 / 3, 0.7])
def test_momentum_priorities_are_computed_as_pytorch_computes_them(lambda_ms):
    gen = torch.Generator().manual_seed(2)
    potential = torch.rand(20000, generator=gen) * 3 + 0.1
    bits = torch.randint(0, 1 << 24, (20000,), generator=gen)
    noise = bits.to(torch.float32) * (1.0 / (1 << 24))  # SampleRNG.uniform
    expected = asyncsnn.Momentum(lambda_ms).priority(
        asyncsnn.QueueView(
            torch.zeros(1, 20000, dtype=torch.bool),
            None,
            None,
            _potential=potential,
            _rng=_Fixed(noise),
        )
    )
    got = shared.momentum_priorities(potential.numpy(), np.float32(lambda_ms), bits.numpy())
    assert torch.equal(torch.from_numpy(got), expected)


class _Fixed:
    """An rng whose uniform numbers are given."""

    def __init__(self, values):
        self.values = values

    def uniform(self, stream, counter, size, block=8):
        return self.values


@pytest.mark.parametrize("policy", ["random", "momentum_noisy", "fifo"])
def test_a_sample_alone_equals_its_slice_of_a_batch(policy):
    net, x = make("recurrent")
    x = torch.cat([x, x.flip(1), x[:, :1]], 1)  # 7 samples, two identical inputs
    seeds = sample_seeds(11, x.shape[1])
    kw = {"scheduler": POLICIES[policy], "group_size": 3, "backend": "numba"}
    batch = run(net, x, seed=seeds, **kw)
    for b in range(x.shape[1]):
        alone = run(net, x[:, b : b + 1], seed=seeds[b : b + 1], **kw)
        for f in ("spikes", "forward_steps", "synops"):
            assert torch.equal(getattr(alone, f), getattr(batch, f)[:, b : b + 1]), (b, f)


def test_threads_do_not_change_the_result():
    net, x = make("fc")
    x = x.repeat(1, 5, 1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run(net, x, backend="numba", scheduler="random")
        torch.set_num_threads(3)
        three = run(net, x, backend="numba", scheduler="random")
    finally:
        torch.set_num_threads(threads)
    assert_identical(one, three)


# ------------------------------------------------------------------------ group selection
def test_the_selection_takes_the_largest_keys():
    """A group is the F largest keys, each a priority above the slot's tie-break (the lower
    slot wins a tie), whatever their order in the queue."""
    gen = np.random.default_rng(0)
    heap = np.empty(64, np.int64)
    for trial in range(400):
        n = int(gen.integers(1, 40))
        m = int(gen.integers(1, n + 1))
        values = gen.integers(0, [4, 60, 2**24][trial % 3], n)
        slots = gen.permutation(200)[:n]
        keys = (values << 32) | (0xFFFFFFFF - slots)
        chosen = np.empty(m, np.int64)
        assert kqueue.select_largest(keys, n, m, heap, chosen) == m
        order = sorted(range(n), key=lambda i: (-values[i], slots[i]))
        assert sorted(chosen.tolist()) == sorted(int(slots[i]) for i in order[:m])


@pytest.mark.parametrize("group_size", [1, 2, 5, 8])
@pytest.mark.parametrize("wide", [False, True])
def test_exactly_tied_float_priorities(wide, group_size):
    """Neurons driven by their bias alone fire with equal potentials: with a noise far below
    their float resolution, momentum's float priorities tie, and the group goes to the lower
    neuron index in both engines."""
    gen = torch.Generator().manual_seed(4)
    width = 600 if wide else 60
    hidden = _lin(gen, 10, width, bias=True)
    with torch.no_grad():
        hidden.weight.zero_()
        hidden.bias.copy_(torch.tensor([0.7, 0.9])[torch.randint(0, 2, (width,), generator=gen)])
    net = asyncsnn.Network.sequential(
        [hidden, _lin(gen, width, 7, mean=0.0, std=0.3)], threshold=0.5, readout="membrane"
    )
    x = _spikes_in(gen, (6, 2, 10))
    kw = {"scheduler": asyncsnn.Momentum(lambda_ms=1e-9), "group_size": group_size}
    ref = run(net, x, backend="torch", **kw)
    assert ref.spikes.sum() > width
    assert_identical(ref, run(net, x, backend="numba", **kw))


# ------------------------------------------------------------------------ dispatch, fallback
@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the runs of the kernel."""
    calls = []
    original = cpu.run_async_cpu

    def counted(*args, **kw):
        calls.append(1)
        return original(*args, **kw)

    monkeypatch.setattr(cpu, "run_async_cpu", counted)
    return calls


def test_auto_runs_the_kernel_where_it_applies(kernel_calls):
    net, x = make("fc")
    ref = run(net, x, backend="torch", scheduler="momentum")
    assert not kernel_calls
    auto = run(net, x, scheduler="momentum")
    assert kernel_calls == [1]
    assert_identical(ref, auto)
    run(net, x, execution="layered")
    assert kernel_calls == [1]


class Youngest(asyncsnn.Scheduler):
    name = "youngest"
    needs_fired_at = True

    def priority(self, q):
        return q.fired_at.float()


class SubclassedFIFO(asyncsnn.FIFO):
    pass


def straight_through(v: torch.Tensor) -> torch.Tensor:
    """A user's surrogate: Heaviside forward, identity backward."""
    return (v > 0).to(v.dtype) + v - v.detach()


FALLBACKS = {
    "float64": ({"dtype": torch.float64}, "float64"),
    "queued input": ({"prioritized_input": False, "scheduler": "fifo"}, "queued"),
    "user policy": ({"scheduler": Youngest()}, "Youngest"),
    "subclassed policy": ({"scheduler": SubclassedFIFO()}, "SubclassedFIFO"),
    "monitor with refractory dropout": (
        {"hooks": [asyncsnn.OutputTrace()], "refractory_dropout": 0.5, "training": True},
        "OutputTrace",
    ),
    "user surrogate": ({"grad": True, "surrogate": straight_through}, "surrogate"),
}


def _fallback_run(kw: dict, backend: str):
    kw = dict(kw)
    net, x = make("fc")
    dtype = kw.pop("dtype", None)
    if dtype is not None:
        net, x = net.to(dtype), x.to(dtype)
    if kw.pop("grad", False):
        r = asyncsnn.run(net, x, dt=DT, backend=backend, **kw)
        assert r.output_counts.requires_grad
        return r
    return run(net, x, backend=backend, **kw)


@pytest.mark.parametrize("case", list(FALLBACKS))
def test_fallback_is_silent_and_gives_the_reference(case, kernel_calls):
    kw, _ = FALLBACKS[case]
    auto = _fallback_run(kw, "auto")
    ref = _fallback_run(kw, "torch")
    assert not kernel_calls
    for f in ("spikes", "forward_steps", "synops", "undelivered", "output_counts"):
        assert torch.equal(getattr(auto, f).detach(), getattr(ref, f).detach()), f
    assert auto.records.keys() == ref.records.keys()


@pytest.mark.parametrize("case", list(FALLBACKS))
def test_numba_backend_says_why_it_cannot_run(case):
    kw, reason = FALLBACKS[case]
    with pytest.raises(ValueError, match=f"backend='numba' cannot run this call: .*{reason}"):
        _fallback_run(kw, "numba")


def test_without_numba_auto_falls_back(monkeypatch, kernel_calls):
    monkeypatch.setattr(kernels, "numba_available", lambda: False)
    net, x = make("fc")
    assert_identical(run(net, x), run(net, x, backend="torch"))
    assert not kernel_calls
    with pytest.raises(ValueError, match="numba is not installed"):
        run(net, x, backend="numba")


def test_an_unusable_numba_is_a_fallback_too(monkeypatch, kernel_calls):
    monkeypatch.delattr(kernels, "cpu")
    monkeypatch.setitem(sys.modules, "asyncsnn.kernels.cpu", None)  # the import fails
    net, x = make("fc")
    assert_identical(run(net, x), run(net, x, backend="torch"))
    with pytest.raises(ValueError, match="numba cannot be imported"):
        run(net, x, backend="numba")
    assert not kernel_calls


def test_bad_backend_arguments():
    net, x = make("fc")
    with pytest.raises(ValueError, match="backend must be one of"):
        run(net, x, backend="cuda")
    with pytest.raises(ValueError, match="asynchronous execution only"):
        run(net, x, execution="layered", backend="numba")


def test_the_kernels_input_synops_is_the_rule_every_engine_uses():
    """``Plan.input_synops`` counts a float32 CPU input in one numba pass: the value of
    ``asyncsnn.result.input_synops`` exactly, for counts, analogue values of either sign and
    zeros."""
    from asyncsnn.result import input_synops

    gen = torch.Generator().manual_seed(4)
    x = torch.randn(7, 5, 300, generator=gen) * 3
    x[torch.rand(x.shape, generator=gen) < 0.9] = 0.0
    x[0, 0] = 0.0  # an empty row
    fanout = torch.randint(0, 500, (300,), generator=gen)
    out = np.empty(35, np.float64)
    shared.input_synops_rows(x.reshape(35, 300).numpy(), fanout.double().numpy(), out)
    want = input_synops(x, fanout)
    assert torch.equal(torch.from_numpy(out).float().view(7, 5), want)
    assert want[0, 0] == 0 and want.sum() > 0
