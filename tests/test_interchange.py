"""NIR import and export: round trips, conventions, errors, and snnTorch/Norse as oracles.

Cross-library tests take each library's own simulation as the reference: a model exported by
the library (or, where its exporter is broken, the graph it would write, built here with nir's
primitives) must give the same spikes in asyncsnn's layered execution.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import asyncsnn
from asyncsnn.connectivity import SumPool2d
from asyncsnn.interchange import (
    NO_LEAK_TAU_M,
    SNNTORCH_DT,
    NIRConversionError,
    from_nir,
    to_nir,
)

nir = pytest.importorskip("nir", reason="NIR support needs the nir package")

DT = 1e-3
EXECUTIONS = [{"execution": "layered"}] + [
    {"execution": "async", "scheduler": s, "group_size": 4}
    for s in ("random", "momentum", "fifo", "layered")
]


# ---------------------------------------------------------------------------------- factories
def roundtrip(net: asyncsnn.Network, tmp_path, dt: float, discretization: str):
    """asyncsnn -> NIR file -> asyncsnn."""
    path = tmp_path / f"net-{discretization}.nir"
    nir.write(path, to_nir(net, dt, discretization))
    return from_nir(path, dt, discretization)


def scaled(net: asyncsnn.Network, factor: float) -> asyncsnn.Network:
    """Stronger weights, so that every population spikes."""
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(factor)
    return net


def fc_network() -> asyncsnn.Network:
    torch.manual_seed(1)
    net = asyncsnn.Network.sequential(
        [nn.Linear(20, 16), nn.Linear(16, 12, bias=False), nn.Linear(12, 4)],
        tau_m=[5e-3, 2e-3, 1e-2],
        threshold=[0.3, 0.25, 0.4],
    )
    net.connect("hidden2", "hidden1", [nn.Linear(12, 16, bias=False)])  # recurrent
    net.connect("input", "output", [nn.Linear(20, 4, bias=False)])  # skip
    return scaled(net, 1.5)


def conv_network() -> asyncsnn.Network:
    torch.manual_seed(2)
    net = asyncsnn.Network(input_shape=(2, 12, 12))
    net.add_population(
        "conv1", [nn.Conv2d(2, 4, 3, padding=1, bias=False)], tau_m=3e-3, threshold=0.3
    )
    net.add_population(
        "conv2",
        [nn.AvgPool2d(2), nn.Conv2d(4, 6, 3, stride=2)],
        source="conv1",
        tau_m=torch.linspace(1e-3, 5e-3, 6 * 2 * 2),
        threshold=0.25,
    )
    net.add_population(
        "fc",
        [SumPool2d(2), nn.Flatten(), nn.Linear(6, 5)],
        source="conv2",
        tau_m=4e-3,
        threshold=0.3,
    )
    return scaled(net, 2.0)


def events(shape, timesteps=25, batch=6, p=0.3, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(timesteps, batch, *shape, generator=g) < p).float()


def assert_same_network(a: asyncsnn.Network, b: asyncsnn.Network, exact_tau: bool = True):
    assert a.input_shape == b.input_shape
    assert [(p.name, p.shape, p.spiking) for p in a.populations] == [
        (p.name, p.shape, p.spiking) for p in b.populations
    ]
    assert [(p.source, p.target) for p in a.projections] == [
        (p.source, p.target) for p in b.projections
    ]
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if key not in ("tau_m", "threshold"):
            assert torch.equal(sa[key], sb[key]), key
    # a non-spiking readout has no threshold in NIR (it imports as 1)
    spiking = torch.cat([torch.full((p.size,), p.spiking) for p in a.populations])
    assert torch.equal(a.threshold[spiking], b.threshold[spiking])
    if exact_tau:
        assert torch.equal(a.tau_m, b.tau_m)
    else:  # Euler's tau = dt / (1 - beta) is stored in float32
        torch.testing.assert_close(a.tau_m, b.tau_m, rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("discretization", ["exact", "euler"])
@pytest.mark.parametrize(
    ("factory", "shape"), [(fc_network, (20,)), (conv_network, (2, 12, 12))], ids=["fc", "conv"]
)
def test_round_trip_gives_the_same_network_and_spikes(tmp_path, factory, shape, discretization):
    net = factory()
    back = roundtrip(net, tmp_path, DT, discretization)
    assert_same_network(net, back, exact_tau=discretization == "exact")
    x = events(shape)
    with torch.no_grad():
        for options in EXECUTIONS:
            a = asyncsnn.run(net, x, dt=DT, seed=7, **options)
            b = asyncsnn.run(back, x, dt=DT, seed=7, **options)
            assert a.spikes.sum() > 0
            assert torch.equal(a.spikes, b.spikes), options


def test_round_trip_of_a_membrane_readout_and_of_if_neurons(tmp_path):
    torch.manual_seed(3)
    net = asyncsnn.Network.sequential(
        [nn.Linear(10, 8), nn.Linear(8, 6), nn.Linear(6, 3)],
        tau_m=[NO_LEAK_TAU_M, 2e-3, 4e-3],
        threshold=0.5,
        readout="membrane",
    )
    graph = to_nir(net, DT)
    assert isinstance(graph.nodes["hidden1"], nir.IF)
    assert isinstance(graph.nodes["hidden2"], nir.LIF)
    assert isinstance(graph.nodes["output"], nir.LI)
    back = roundtrip(net, tmp_path, DT, "euler")
    assert_same_network(net, back, exact_tau=False)
    assert back.tau_m[0].item() == pytest.approx(NO_LEAK_TAU_M) and back.tau_m[0] == net.tau_m[0]
    x = events((10,))
    with torch.no_grad():
        a = asyncsnn.run(net, x, dt=DT, execution="layered")
        b = asyncsnn.run(back, x, dt=DT, execution="layered")
    assert a.membrane is not None and a.membrane.abs().sum() > 0
    assert torch.equal(a.membrane, b.membrane)


def canonical_graph(dt: float) -> nir.NIRGraph:
    """A graph in asyncsnn's own form (r = tau/dt), with a skip and a recurrent edge."""
    rng = np.random.default_rng(0)
    f32 = np.float32

    def lif(shape, tau, theta):
        tau = np.full(shape, tau, dtype=f32)
        r = (tau.astype(np.float64) / dt).astype(f32)
        zeros = np.zeros(shape, dtype=f32)
        return nir.LIF(
            tau=tau, r=r, v_leak=zeros, v_threshold=np.full(shape, theta, f32), v_reset=zeros.copy()
        )

    nodes = {
        "input": nir.Input(input_type=np.array([1, 8, 8])),
        "conv": nir.Conv2d(
            input_shape=(8, 8),
            weight=rng.normal(size=(3, 1, 3, 3)).astype(f32),
            stride=(1, 1),
            padding=(1, 1),
            dilation=(1, 1),
            groups=1,
            bias=rng.normal(size=3).astype(f32),
        ),
        "lif1": lif((3, 8, 8), 2e-3, 0.5),
        "pool": nir.SumPool2d(
            kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])
        ),
        "flat": nir.Flatten(input_type={"input": np.array([3, 4, 4])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(
            weight=rng.normal(size=(10, 48)).astype(f32), bias=rng.normal(size=10).astype(f32)
        ),
        "lif2": lif((10,), 5e-3, 0.4),
        "rec": nir.Linear(weight=rng.normal(size=(10, 10)).astype(f32)),
        "if3": nir.IF(
            r=np.ones(4, f32), v_threshold=np.full(4, 0.3, f32), v_reset=np.zeros(4, f32)
        ),
        "out_fc": nir.Linear(weight=rng.normal(size=(4, 10)).astype(f32)),
        "skip": nir.Flatten(input_type={"input": np.array([1, 8, 8])}, start_dim=0, end_dim=-1),
        "skip_fc": nir.Linear(weight=rng.normal(size=(4, 64)).astype(f32)),
        "output": nir.Output(output_type=np.array([4])),
    }
    edges = [
        ("input", "conv"),
        ("conv", "lif1"),
        ("lif1", "pool"),
        ("pool", "flat"),
        ("flat", "fc"),
        ("fc", "lif2"),
        ("lif2", "rec"),
        ("rec", "lif2"),
        ("lif2", "out_fc"),
        ("out_fc", "if3"),
        ("input", "skip"),
        ("skip", "skip_fc"),
        ("skip_fc", "if3"),
        ("if3", "output"),
    ]
    return nir.NIRGraph(nodes=nodes, edges=edges)


def node_fields(node) -> dict:
    skip = {"input_type", "output_type", "metadata", "input_shape"}
    return {k: v for k, v in vars(node).items() if k not in skip}


def test_nir_to_asyncsnn_to_nir_preserves_the_graph(tmp_path):
    graph = canonical_graph(DT)
    path = tmp_path / "canonical.nir"
    nir.write(path, graph)
    net = from_nir(path, DT)
    assert [p.name for p in net.populations] == ["lif1", "lif2", "if3"]
    assert [(p.source, p.target, net.is_recurrent(p)) for p in net.projections] == [
        ("input", "lif1", False),
        ("lif1", "lif2", False),
        ("lif2", "if3", False),
        ("lif2", "lif2", True),
        ("input", "if3", False),
    ]
    back = to_nir(net, DT)
    assert set(back.nodes) == set(graph.nodes)
    assert set(back.edges) == set(graph.edges)
    for name, node in graph.nodes.items():
        other = back.nodes[name]
        assert type(other) is type(node), name
        a, b = node_fields(node), node_fields(other)
        assert a.keys() == b.keys(), name
        for key in a:
            assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), (name, key)


def test_export_writes_the_documented_parameters():
    net = asyncsnn.Network.sequential([nn.Linear(3, 2)], tau_m=4e-3, threshold=0.7)
    for discretization, tau in (("exact", 4e-3), ("euler", DT / (1 - math.exp(-DT / 4e-3)))):
        graph = to_nir(net, DT, discretization)
        lif = graph.nodes["output"]
        np.testing.assert_allclose(lif.tau, tau, rtol=1e-6)
        np.testing.assert_allclose(lif.r, tau / DT, rtol=1e-6)
        assert np.all(lif.v_leak == 0) and np.all(lif.v_reset == 0)
        np.testing.assert_array_equal(lif.v_threshold, np.float32(0.7))
        assert isinstance(graph.nodes["input_to_output"], nir.Affine)
        assert graph.metadata == {
            "generator": "asyncsnn",
            "dt": DT,
            "discretization": discretization,
        }


# ---------------------------------------------------------------------------------- conventions
def lif_graph(tau: float, r: float, theta: float = 0.5, kind: str = "LIF"):
    weight = np.array([[2.0, -1.0], [0.5, 1.0]], dtype=np.float32)
    params = {"r": np.full(2, r)}
    if kind in ("LIF", "LI"):
        params.update(tau=np.full(2, tau), v_leak=np.zeros(2))
    if kind in ("LIF", "IF"):
        params.update(v_threshold=np.full(2, theta))
    neuron = getattr(nir, kind)(**params)
    return nir.NIRGraph.from_list(nir.Input(np.array([2])), nir.Linear(weight), neuron), weight


@pytest.mark.parametrize(("discretization", "beta"), [("exact", math.exp(-0.1)), ("euler", 0.9)])
@pytest.mark.parametrize("r", [1.0, 10.0, 3.0])
def test_lif_leak_and_input_gain(discretization, beta, r):
    # tau = 10 dt: the leak depends on the discretization, the gain r dt / tau does not
    graph, weight = lif_graph(tau=1e-2, r=r)
    net = from_nir(graph, dt=DT, discretization=discretization)
    torch.testing.assert_close(
        torch.exp(-DT / net.tau_m), torch.full((2,), beta), rtol=1e-6, atol=0
    )
    w = net.projections[0].chain[0].weight
    assert torch.equal(w, torch.as_tensor(weight * np.float32(r * 0.1)))
    assert torch.equal(net.threshold, torch.full((2,), 0.5))
    if r == 10.0:  # r = tau/dt: the weights are untouched
        assert torch.equal(w, torch.as_tensor(weight))


def test_li_readout_membrane_by_hand():
    graph, _ = lif_graph(tau=1e-2, r=1.0, kind="LI")  # gain 0.1, Euler leak 0.9
    net = from_nir(graph, dt=DT, discretization="euler")
    assert not net.output.spiking
    x = torch.zeros(3, 1, 2)
    x[0, 0, 0] = 1.0  # one input spike at t = 0 through weights (2, 0.5)
    with torch.no_grad():
        v = asyncsnn.run(net, x, dt=DT, execution="layered").membrane[:, 0]
    expected = torch.tensor([[0.2, 0.05], [0.18, 0.045], [0.162, 0.0405]])
    torch.testing.assert_close(v, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["IF", "I"])
def test_if_and_i_have_no_leak_and_gain_r(kind):
    graph, weight = lif_graph(tau=0.0, r=2.0, theta=0.5, kind=kind)
    net = from_nir(graph, dt=DT, discretization="euler")
    assert torch.equal(net.tau_m, torch.full((2,), NO_LEAK_TAU_M))
    assert torch.equal(torch.exp(-DT / net.tau_m), torch.ones(2))
    assert net.output.spiking == (kind == "IF")
    assert torch.equal(net.projections[0].chain[0].weight, torch.as_tensor(weight * 2))


def test_euler_leak_of_zero_and_negative_leak():
    graph, _ = lif_graph(tau=DT, r=1.0)  # beta = 1 - dt/tau = 0
    net = from_nir(graph, dt=DT, discretization="euler")
    assert torch.equal(torch.exp(-DT / net.tau_m), torch.zeros(2))
    graph, _ = lif_graph(tau=DT / 2, r=1.0)
    with pytest.raises(NIRConversionError, match="negative") as err:
        from_nir(graph, dt=DT, discretization="euler")
    assert err.value.node == "lif"
    assert from_nir(graph, dt=DT, discretization="exact").tau_m[0].item() == pytest.approx(DT / 2)


def test_scale_nodes_fold_into_the_weights():
    rng = np.random.default_rng(4)
    s_in = rng.uniform(0.5, 2.0, size=(2, 1, 1)) * np.ones((2, 6, 6))
    s_out = np.repeat(rng.uniform(0.5, 2.0, size=3), 9)  # per channel, flattened (3, 3, 3)
    weight = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)
    bias = rng.normal(size=3).astype(np.float32)
    graph = nir.NIRGraph.from_list(
        nir.Input(np.array([2, 6, 6])),
        nir.Scale(s_in),
        nir.Conv2d(
            input_shape=(6, 6), weight=weight, stride=1, padding=1, dilation=1, groups=1, bias=bias
        ),
        nir.SumPool2d(
            kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])
        ),
        nir.Flatten(input_type={"input": np.array([3, 3, 3])}, start_dim=0, end_dim=-1),
        nir.Scale(s_out),
        nir.IF(r=np.ones(27), v_threshold=np.ones(27)),
    )
    net = from_nir(graph, dt=DT)
    x = torch.rand(5, 2, 6, 6)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.as_tensor(weight))
        conv.bias.copy_(torch.as_tensor(bias))
        xs = x * torch.as_tensor(s_in, dtype=torch.float32)
        expected = SumPool2d(2)(conv(xs)).flatten(1) * torch.as_tensor(s_out, dtype=torch.float32)
        got = net.projections[0].apply(x, bias=True)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_gain_without_weights_goes_into_the_threshold():
    lif = nir.LIF(
        tau=np.full(4, 1e-2), r=np.ones(4), v_leak=np.zeros(4), v_threshold=np.full(4, 0.5)
    )
    pool = nir.SumPool2d(
        kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])
    )
    flat = nir.Flatten(input_type={"input": np.array([1, 2, 2])}, start_dim=0, end_dim=-1)
    graph = nir.NIRGraph.from_list(nir.Input(np.array([1, 4, 4])), pool, flat, lif)
    net = from_nir(graph, dt=DT, discretization="euler")
    torch.testing.assert_close(net.threshold, torch.full((4,), 5.0))  # 0.5 / (r dt / tau)
    li = nir.LI(tau=np.full(4, 1e-2), r=np.ones(4), v_leak=np.zeros(4))
    graph = nir.NIRGraph.from_list(nir.Input(np.array([1, 4, 4])), pool, flat, li)
    with pytest.raises(NIRConversionError, match="cannot be folded") as err:
        from_nir(graph, dt=DT, discretization="euler")
    assert err.value.node == "li"


def test_nested_graph_is_inlined():
    """snnTorch writes a recurrent LIF as a nested graph (Input -> LIF <-> Linear -> Output)."""
    rng = np.random.default_rng(5)
    w_in = rng.normal(size=(6, 5)).astype(np.float32)
    w_rec = rng.normal(size=(6, 6)).astype(np.float32)
    w_out = rng.normal(size=(3, 6)).astype(np.float32)

    def lif(n, tau, theta):
        return nir.LIF(
            tau=np.full(n, tau),
            r=np.full(n, tau / DT),
            v_leak=np.zeros(n),
            v_threshold=np.full(n, theta),
        )

    sub = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([6])),
            "lif": lif(6, 2e-3, 0.5),
            "w_rec": nir.Linear(w_rec),
            "output": nir.Output(np.array([6])),
        },
        edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
    )
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([5])),
            "fc": nir.Linear(w_in),
            "rnn": sub,
            "fc2": nir.Linear(w_out),
            "out": lif(3, 4e-3, 0.3),
            "output": nir.Output(np.array([3])),
        },
        edges=[("input", "fc"), ("fc", "rnn"), ("rnn", "fc2"), ("fc2", "out"), ("out", "output")],
        type_check=False,
    )
    net = from_nir(graph, dt=DT)
    assert [p.name for p in net.populations] == ["rnn.lif", "out"]
    flat = asyncsnn.Network((5,))
    flat.add_population("h", [nn.Linear(5, 6, bias=False)], tau_m=2e-3, threshold=0.5)
    flat.connect("h", "h", [nn.Linear(6, 6, bias=False)])
    flat.add_population("o", [nn.Linear(6, 3, bias=False)], source="h", tau_m=4e-3, threshold=0.3)
    with torch.no_grad():
        for proj, w in zip(flat.projections, (w_in, w_rec, w_out), strict=True):
            proj.chain[0].weight.copy_(torch.as_tensor(w))
    x = events((5,))
    with torch.no_grad():
        a = asyncsnn.run(net, x, dt=DT, execution="layered").spikes
        b = asyncsnn.run(flat, x, dt=DT, execution="layered").spikes
    assert a.sum() > 0 and torch.equal(a, b)


def test_a_linear_node_with_two_successors_is_copied_into_both_projections():
    weight = np.arange(12, dtype=np.float32).reshape(3, 4)
    lif = {
        "tau": np.full(3, 1e-2),
        "r": np.full(3, 10.0),
        "v_leak": np.zeros(3),
        "v_threshold": np.ones(3),
    }
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(np.array([4])),
            "fc": nir.Affine(weight, np.ones(3)),
            "a": nir.LIF(**lif),
            "b": nir.LIF(**lif),
            "output": nir.Output(np.array([3])),
        },
        edges=[("input", "fc"), ("fc", "a"), ("fc", "b"), ("b", "output")],
        type_check=False,  # nir's type inference would give the leaf "a" an Output of its own
    )
    net = from_nir(graph, dt=DT)
    assert [(p.source, p.target) for p in net.projections] == [("input", "a"), ("input", "b")]
    first, second = (p.chain[0] for p in net.projections)
    assert first is not second
    for m in (first, second):
        assert torch.equal(m.weight, torch.as_tensor(weight))
        assert torch.equal(m.bias, torch.ones(3))


def test_reading_with_another_dt_than_written_warns():
    graph = to_nir(asyncsnn.Network.sequential([nn.Linear(3, 2)]), DT)
    with pytest.warns(UserWarning, match="dt="):
        from_nir(graph, dt=2 * DT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_nir(graph, dt=DT)


# ---------------------------------------------------------------------------------- errors
@dataclass(eq=False)
class Dropout(nir.NIRNode):
    """A node type that NIR does not define (as a library's private extension would be)."""

    p: float

    def __post_init__(self):
        self.input_type = {"input": None}
        self.output_type = {"output": None}


def error_graph(case: str) -> tuple[nir.NIRGraph, str]:
    n = 3
    w = nir.Linear(np.ones((n, 4), dtype=np.float32))
    lif = {
        "tau": np.full(n, 1e-2),
        "r": np.ones(n),
        "v_leak": np.zeros(n),
        "v_threshold": np.ones(n),
    }
    inp = nir.Input(np.array([4]))
    if case == "CubaLIF v_leak":
        node = nir.CubaLIF(
            tau_syn=np.full(n, 5e-3),
            tau_mem=lif["tau"],
            r=lif["r"],
            v_leak=np.full(n, -0.3),
            v_threshold=lif["v_threshold"],
        )
        return nir.NIRGraph.from_list(inp, w, node), "cubalif"
    if case == "v_leak":
        return nir.NIRGraph.from_list(inp, w, nir.LIF(**{**lif, "v_leak": np.full(n, 0.1)})), "lif"
    if case == "v_reset":
        node = nir.LIF(**lif, v_reset=np.full(n, -0.2))
        return nir.NIRGraph.from_list(inp, w, node), "lif"
    if case == "Delay":
        return nir.NIRGraph.from_list(inp, w, nir.Delay(delay=np.ones(n)), nir.LIF(**lif)), "delay"
    if case == "unknown node":
        graph = nir.NIRGraph(
            nodes={"input": inp, "w": w, "drop": Dropout(p=0.5), "lif": nir.LIF(**lif)},
            edges=[("input", "w"), ("w", "drop"), ("drop", "lif")],
            type_check=False,
        )
        return graph, "drop"
    if case == "Conv1d":
        conv = nir.Conv1d(
            input_shape=4,
            weight=np.ones((1, 1, 2)),
            stride=1,
            padding=0,
            dilation=1,
            groups=1,
            bias=np.zeros(1),
        )
        lif1 = nir.LIF(**{k: v[:1].repeat(3) for k, v in lif.items()})
        graph = nir.NIRGraph(
            nodes={"input": nir.Input(np.array([1, 4])), "conv1d": conv, "lif": lif1},
            edges=[("input", "conv1d"), ("conv1d", "lif")],
            type_check=False,
        )
        return graph, "conv1d"
    if case == "two weighted nodes":
        w2 = nir.Linear(np.ones((n, n), dtype=np.float32))
        return nir.NIRGraph.from_list(inp, w, w2, nir.LIF(**lif)), "linear_1"
    if case == "merge before a linear node":
        graph = nir.NIRGraph(
            nodes={
                "input": inp,
                "a": w,
                "l1": nir.LIF(**lif),
                "l2": nir.LIF(**lif),
                "shared": nir.Linear(np.ones((n, n), dtype=np.float32)),
                "b": nir.Linear(np.ones((n, 4), dtype=np.float32)),
                "l3": nir.LIF(**lif),
            },
            edges=[
                ("input", "a"),
                ("a", "l1"),
                ("input", "b"),
                ("b", "l2"),
                ("l1", "shared"),
                ("l2", "shared"),
                ("shared", "l3"),
            ],
            type_check=False,
        )
        return graph, "shared"
    if case == "LI not last":
        li = nir.LI(tau=lif["tau"], r=lif["r"], v_leak=lif["v_leak"])
        w2 = nir.Linear(np.ones((n, n), dtype=np.float32))
        return nir.NIRGraph.from_list(inp, w, li, w2, nir.LIF(**lif)), "li"
    if case == "threshold <= 0":
        return nir.NIRGraph.from_list(inp, w, nir.LIF(**{**lif, "v_threshold": np.zeros(n)})), "lif"
    if case == "linear nodes into Output":
        graph = nir.NIRGraph(
            nodes={
                "input": inp,
                "a": w,
                "lif": nir.LIF(**lif),
                "w_out": nir.Linear(np.ones((2, n), dtype=np.float32)),
                "output": nir.Output(np.array([2])),
            },
            edges=[("input", "a"), ("a", "lif"), ("lif", "w_out"), ("w_out", "output")],
        )
        return graph, "w_out"
    if case in ("readout not last", "several readouts", "not reachable"):
        w2 = nir.Linear(np.ones((n, n), dtype=np.float32))
        nodes = {
            "input": inp,
            "w": w,
            "l1": nir.LIF(**lif),
            "w2": w2,
            "l2": nir.LIF(**lif),
            "output": nir.Output(np.array([n])),
        }
        edges = [("input", "w"), ("w", "l1"), ("w2", "l2"), ("l1", "output")]
        if case == "readout not last":
            edges.append(("l1", "w2"))
        elif case == "several readouts":
            edges += [("l1", "w2"), ("l2", "output")]
        else:  # l2 only feeds itself
            edges += [("l2", "w2")]
        return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), (
            "l2" if case == "not reachable" else "l1" if case == "readout not last" else "output"
        )
    raise AssertionError(case)


ERROR_CASES = [
    ("CubaLIF v_leak", "v_leak = -0.3 is not 0"),
    ("v_leak", "v_leak = 0.1"),
    ("v_reset", "v_reset = -0.2"),
    ("Delay", "synaptic delay"),
    ("unknown node", "cannot run a Dropout node"),
    ("Conv1d", "1-D convolution"),
    ("two weighted nodes", "one weighted module"),
    ("merge before a linear node", "merge into this linear node"),
    ("LI not last", "non-spiking readout"),
    ("threshold <= 0", "v_threshold must be finite and > 0"),
    ("linear nodes into Output", "reads out a population"),
    ("readout not last", "must come last"),
    ("several readouts", "one readout population"),
    ("not reachable", "not reachable from the Input"),
]


@pytest.mark.parametrize(("case", "reason"), ERROR_CASES, ids=[c for c, _ in ERROR_CASES])
def test_unsupported_graphs_raise_a_typed_error_naming_the_node(tmp_path, case, reason):
    graph, node = error_graph(case)
    with pytest.raises(NIRConversionError, match=reason) as err:
        from_nir(graph, dt=DT)
    assert isinstance(err.value, ValueError)
    assert err.value.node == node
    assert repr(node) in str(err.value)


def test_export_errors_and_argument_checks():
    net = asyncsnn.Network((1, 6, 6))
    net.add_population("pooled", [nn.AvgPool2d(2, divisor_override=3)])
    with pytest.raises(NIRConversionError, match="divisor_override") as err:
        to_nir(net, DT)
    assert err.value.node == "input -> pooled"
    fc = asyncsnn.Network.sequential([nn.Linear(3, 2)])
    for bad in (0.0, -1e-3, float("nan"), "1e-3"):
        with pytest.raises(ValueError, match="dt must be"):
            to_nir(fc, bad)
    with pytest.raises(ValueError, match="discretization"):
        to_nir(fc, DT, "rk4")
    with pytest.raises(TypeError, match="nir.NIRGraph or the path"):
        from_nir(fc, DT)


# ---------------------------------------------------------------------------------- snnTorch
def snntorch_nir(module: str):
    """snnTorch's NIR module (it needs nirtorch besides snnTorch)."""
    return pytest.importorskip(
        f"snntorch.{module}", reason="cross-library tests need snnTorch and nirtorch"
    )


def snntorch_models():
    """snnTorch models as its exporter needs them: per-neuron beta and threshold tensors."""
    snn = pytest.importorskip("snntorch", reason="cross-library tests need snnTorch")

    def leaky(shape, beta, theta, **kw):
        return snn.Leaky(
            beta=torch.full(shape, beta),
            threshold=torch.full(shape, theta),
            init_hidden=True,
            reset_mechanism="zero",
            **kw,
        )

    torch.manual_seed(6)
    fc = nn.Sequential(
        nn.Linear(20, 16),
        leaky((16,), 0.9, 0.5),
        nn.Linear(16, 10),
        leaky((10,), 0.8, 0.3, output=True),
    )
    conv = nn.Sequential(
        nn.Conv2d(2, 4, 3),
        leaky((4, 6, 6), 0.85, 0.4),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(36, 5),
        leaky((5,), 0.7, 0.3, output=True),
    )
    return {"fc": (scaled(fc, 2.0), (20,)), "conv": (scaled(conv, 2.0), (2, 8, 8))}


def run_snntorch(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """snnTorch's own simulation; (T, B, neurons) spikes of every Leaky, in order."""
    import snntorch as snn
    import snntorch.utils

    spikes = []
    hooks = [
        m.register_forward_hook(
            lambda m, i, o: spikes.append((o[0] if isinstance(o, tuple) else o).flatten(1))
        )
        for m in model.modules()
        if isinstance(m, snn.Leaky)
    ]
    snntorch.utils.reset(model)
    out = []
    with torch.no_grad():
        for t in range(x.shape[0]):
            spikes.clear()
            model(x[t])
            out.append(torch.cat(spikes, 1))
    for h in hooks:
        h.remove()
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["fc", "conv"])
def test_snntorch_export_runs_with_the_same_spikes(kind):
    export_to_nir = snntorch_nir("export_nir").export_to_nir
    model, shape = snntorch_models()[kind]
    graph = export_to_nir(model, torch.zeros(1, *shape), ignore_dims=[0])
    # snnTorch writes (and reads) NIR with its internal dt = 1e-4 s and Euler's leak
    net = from_nir(graph, dt=SNNTORCH_DT, discretization="euler")
    x = events(shape, timesteps=30, batch=8)
    reference = run_snntorch(model, x)
    with torch.no_grad():
        spikes = asyncsnn.run(net, x, dt=SNNTORCH_DT, execution="layered").spikes
    assert reference.sum() > 0
    assert torch.equal(spikes, reference)


@pytest.mark.xfail(
    strict=False,
    reason="snnTorch 1.0.0's export_to_nir writes scalar beta/threshold as 0-d LIF parameters, "
    "which fail nir 1.0.8's type inference ('type mismatch: ... -> 1.input: []')",
)
def test_snntorch_exporter_with_scalar_parameters():
    snn = pytest.importorskip("snntorch", reason="cross-library tests need snnTorch")
    export_to_nir = snntorch_nir("export_nir").export_to_nir
    torch.manual_seed(7)
    model = nn.Sequential(
        nn.Linear(20, 16),
        snn.Leaky(beta=0.9, init_hidden=True, reset_mechanism="zero"),
        nn.Linear(16, 10),
        snn.Leaky(beta=0.8, init_hidden=True, reset_mechanism="zero", output=True),
    )
    scaled(model, 2.0)
    graph = export_to_nir(model, torch.zeros(1, 20), ignore_dims=[0])
    net = from_nir(graph, dt=SNNTORCH_DT, discretization="euler")
    x = events((20,), timesteps=30, batch=8)
    with torch.no_grad():
        spikes = asyncsnn.run(net, x, dt=SNNTORCH_DT, execution="layered").spikes
    assert torch.equal(spikes, run_snntorch(model, x))


def asyncsnn_for_snntorch() -> dict:
    torch.manual_seed(8)
    fc = asyncsnn.Network.sequential(
        [nn.Linear(20, 16), nn.Linear(16, 10)], tau_m=[1e-3, 5e-4], threshold=[0.5, 0.3]
    )
    conv = asyncsnn.Network((2, 8, 8))
    conv.add_population("conv", [nn.Conv2d(2, 4, 3)], tau_m=8e-4, threshold=0.3)
    conv.add_population("pooled", [nn.AvgPool2d(2)], source="conv", tau_m=4e-4, threshold=0.2)
    conv.add_population(
        "fc",
        [nn.Flatten(), nn.Linear(36, 5, bias=False)],
        source="pooled",
        tau_m=6e-4,
        threshold=0.3,
    )
    return {"fc": (scaled(fc, 2.0), (20,)), "conv": (scaled(conv, 2.0), (2, 8, 8))}


@pytest.mark.parametrize("kind", ["fc", "conv"])
def test_asyncsnn_export_runs_in_snntorch_with_the_same_spikes(tmp_path, capsys, kind):
    import_from_nir = snntorch_nir("import_nir").import_from_nir
    net, shape = asyncsnn_for_snntorch()[kind]
    path = tmp_path / "for-snntorch.nir"
    nir.write(path, to_nir(net, SNNTORCH_DT, "euler"))
    model = import_from_nir(nir.read(path))
    # snnTorch 1.0.0's importer turns NIR's Flatten(start_dim=0), whose dimensions exclude the
    # batch, into nn.Flatten(0, -1), which flattens the batch too: put torch's flatten back
    for name, m in list(model.named_children()):
        if isinstance(m, nn.Flatten) and m.start_dim == 0:
            setattr(model, name, nn.Flatten())
    x = events(shape, timesteps=30, batch=8)
    reference = run_snntorch(model, x)
    with torch.no_grad():
        spikes = asyncsnn.run(net, x, dt=SNNTORCH_DT, execution="layered").spikes
    assert reference.sum() > 0
    assert torch.equal(spikes, reference)


@pytest.mark.xfail(
    strict=False,
    reason="snnTorch 1.0.0's import_from_nir runs a recurrent LIF as a nested graph whose "
    "spikes differ from V <- beta V + W x_t + W_rec s_(t-1) + b",
)
def test_recurrent_asyncsnn_export_runs_in_snntorch(capsys):
    snn = pytest.importorskip("snntorch", reason="cross-library tests need snnTorch")
    import_from_nir = snntorch_nir("import_nir").import_from_nir
    torch.manual_seed(9)
    net = asyncsnn.Network((12,))
    net.add_population("h", [nn.Linear(12, 10)], tau_m=1e-3, threshold=0.4)
    net.connect("h", "h", [nn.Linear(10, 10)])
    net.add_population("o", [nn.Linear(10, 4, bias=False)], source="h", tau_m=5e-4, threshold=0.3)
    scaled(net, 2.0)
    model = import_from_nir(to_nir(net, SNNTORCH_DT, "euler"))
    spikes: list[torch.Tensor] = []
    for m in model.modules():
        if isinstance(m, snn.Leaky):
            m.register_forward_hook(lambda m, i, o: spikes.append(o.flatten(1)))
    x = events((12,), timesteps=30, batch=8)
    out, state = [], None
    with torch.no_grad():
        for t in range(x.shape[0]):
            spikes.clear()
            _, state = model(x[t], state)
            out.append(torch.cat(spikes, 1))
        expected = asyncsnn.run(net, x, dt=SNNTORCH_DT, execution="layered").spikes
    assert torch.equal(torch.stack(out), expected)


# ---------------------------------------------------------------------------------- Norse
NORSE_DT = 1e-3  # Norse's default time step


def norse_layers(kind: str) -> tuple[list[nn.Module], tuple[int, ...]]:
    pytest.importorskip("norse.torch", reason="cross-library tests need Norse")
    from norse.torch.functional.iaf import IAFParameters
    from norse.torch.functional.leaky_integrator_box import LIBoxParameters
    from norse.torch.functional.lif_box import LIFBoxParameters
    from norse.torch.module.iaf import IAFCell
    from norse.torch.module.leaky_integrator_box import LIBoxCell
    from norse.torch.module.lif_box import LIFBoxCell

    def lif(inv, theta):
        p = LIFBoxParameters(tau_mem_inv=torch.tensor(inv), v_th=torch.tensor(theta))
        return LIFBoxCell(p, dt=NORSE_DT)

    torch.manual_seed(10)
    if kind == "fc":
        layers = [
            nn.Linear(20, 16),
            lif(100.0, 0.3),
            nn.Linear(16, 10),
            IAFCell(IAFParameters(v_th=torch.tensor(0.5)), dt=NORSE_DT),
        ]
        shape = (20,)
    elif kind == "conv":
        layers = [
            nn.Conv2d(2, 4, 3),
            lif(100.0, 0.3),
            nn.Conv2d(4, 3, 3, stride=2),
            lif(150.0, 0.2),
        ]
        shape = (2, 8, 8)
    else:  # a leaky non-spiking readout
        li = LIBoxCell(LIBoxParameters(tau_mem_inv=torch.tensor(50.0)), dt=NORSE_DT)
        layers = [nn.Linear(20, 16), lif(100.0, 0.3), nn.Linear(16, 4), li]
        shape = (20,)
    return [scaled(m, 3.0) for m in layers], shape


def norse_graph(layers: list[nn.Module], shape: tuple[int, ...]) -> nir.NIRGraph:
    """The graph ``norse.torch.to_nir`` writes (nodes "0", "1", ..., an Input with the sample's
    batch dimension, Affine with zero bias, r = 1), except that LIF's tau is 1/tau_mem_inv:
    Norse 1.1.0 writes dt/tau_mem_inv, dt times too small (norse issue 411)."""
    from norse.torch.module.iaf import IAFCell
    from norse.torch.module.leaky_integrator_box import LIBoxCell

    nodes: dict = {"input": nir.Input(np.array([1, *shape]))}
    edges, prev = [], "input"
    for i, m in enumerate(layers):
        if isinstance(m, nn.Linear):
            bias = m.bias.detach() if m.bias is not None else torch.zeros(m.out_features)
            node = nir.Affine(m.weight.detach(), bias)
        elif isinstance(m, nn.Conv2d):
            node = nir.Conv2d(
                input_shape=None,
                weight=m.weight.detach(),
                bias=m.bias.detach(),
                stride=m.stride,
                padding=m.padding,
                dilation=m.dilation,
                groups=m.groups,
            )
        elif isinstance(m, IAFCell):
            node = nir.IF(r=torch.ones_like(m.p.v_th), v_threshold=m.p.v_th.detach())
        elif isinstance(m, LIBoxCell):
            node = nir.LI(
                tau=1 / m.p.tau_mem_inv.detach(),
                v_leak=m.p.v_leak.detach(),
                r=torch.ones_like(m.p.v_leak),
            )
        else:
            node = nir.LIF(
                tau=1 / m.p.tau_mem_inv.detach(),
                v_threshold=m.p.v_th.detach(),
                v_leak=m.p.v_leak.detach(),
                r=torch.ones_like(m.p.v_leak),
            )
        nodes[str(i)] = node
        edges.append((prev, str(i)))
        prev = str(i)
    nodes["output"] = nir.Output(np.array([1]))
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def run_norse(layers: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Norse's own simulation: (T, B, neurons) output of every neuron cell, in order."""
    from torch.nn.modules.conv import _ConvNd

    state: list = [None] * len(layers)
    out = []
    with torch.no_grad():
        for t in range(x.shape[0]):
            h, record = x[t], []
            for i, m in enumerate(layers):
                if isinstance(m, (nn.Linear, _ConvNd)):
                    h = m(h)
                else:
                    h, state[i] = m(h, state[i])
                    record.append(h.flatten(1))
            out.append(torch.cat(record, 1))
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["fc", "conv"])
def test_norse_graph_runs_with_the_same_spikes(kind):
    norse_torch = pytest.importorskip("norse.torch", reason="cross-library tests need Norse")
    layers, shape = norse_layers(kind)
    graph = norse_graph(layers, shape)
    net = from_nir(graph, dt=NORSE_DT, discretization="euler")
    assert net.input_shape == shape  # the batch dimension of the Input node is dropped
    x = events(shape, timesteps=30, batch=8)
    reference = run_norse(layers, x)
    with torch.no_grad():
        spikes = asyncsnn.run(net, x, dt=NORSE_DT, execution="layered").spikes
    assert reference.sum() > 0
    assert torch.equal(spikes, reference)
    # Norse's own importer reads the same graph into the same dynamics
    model, state, out = norse_torch.from_nir(graph, dt=NORSE_DT), None, []
    with torch.no_grad():
        for t in range(x.shape[0]):
            z, state = model(x[t], state)
            out.append(z.flatten(1))
    assert torch.equal(torch.stack(out), reference[..., -net.output.size :])


def test_norse_leaky_readout_has_the_same_membrane():
    layers, shape = norse_layers("li")
    net = from_nir(norse_graph(layers, shape), dt=NORSE_DT, discretization="euler")
    assert not net.output.spiking
    x = events(shape, timesteps=30, batch=8)
    reference = run_norse(layers, x)
    with torch.no_grad():
        r = asyncsnn.run(net, x, dt=NORSE_DT, execution="layered")
    assert torch.equal(r.spikes[..., :16], reference[..., :16])
    assert reference[..., :16].sum() > 0
    torch.testing.assert_close(r.membrane, reference[..., 16:], rtol=1e-5, atol=1e-5)


@pytest.mark.xfail(
    strict=False,
    reason="Norse 1.1.0's to_nir writes LIF tau = dt / tau_mem_inv instead of 1 / tau_mem_inv "
    "(norse issue 411): the graph's tau is dt times too small",
)
def test_norse_exporter_runs_with_the_same_spikes():
    norse_torch = pytest.importorskip("norse.torch", reason="cross-library tests need Norse")
    layers, shape = norse_layers("fc")
    layers = layers[:2]  # Linear -> LIF
    graph = norse_torch.to_nir(
        norse_torch.SequentialState(*layers), torch.zeros(1, *shape), dt=NORSE_DT
    )
    net = from_nir(graph, dt=NORSE_DT, discretization="euler")
    x = events(shape, timesteps=30, batch=8)
    with torch.no_grad():
        spikes = asyncsnn.run(net, x, dt=NORSE_DT, execution="layered").spikes
    assert torch.equal(spikes, run_norse(layers, x))
