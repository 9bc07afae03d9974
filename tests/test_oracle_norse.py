"""Layered execution against Norse, spike for spike.

Norse's neurons (``norse/torch/functional/lif_box.py``, ``lif.py``) are forward-Euler steps of
``dv/dt = tau_mem_inv (v_leak - v + i)``; with ``v_leak = 0`` and ``a = dt * tau_mem_inv``:

- ``LIFBoxCell`` (no synaptic current): ``v <- v + a ((v_leak - v) + x) = (1 - a) v + a x``.
- ``LIFCell`` (current-based): the input first jumps into the current, ``i <- i + x``; then
  ``v <- v + a ((v_leak - v) + i)`` with that jumped current, and only then the current decays,
  ``i <- i - dt tau_syn_inv i``. The current that reaches ``v`` at a timestep includes that
  timestep's input: there is no one-timestep delay from input to membrane, in any layer (the
  recurrent ``LIFRecurrentCell``, ``lif_step``, jumps first too, with the previous timestep's
  spikes ``z``).
- Spike ``z = heaviside(v - v_th)``, ``heaviside(x) = x > 0``: strict, like SPEC (every
  surrogate that ``method`` selects, SuperSpike by default, has this heaviside forward).
  Reset ``(1 - z) v + z v_reset``: SPEC's reset to zero with ``v_reset = 0``.
  ``LIFBoxParameters`` has a ``reset_method``, and Norse's ``reset_subtract``,
  ``(1 - z) v + z (v - v_th)``, is SPEC's reset by subtraction; ``LIFParameters`` has none:
  ``LIFCell`` (and ``LIFRecurrentCell``) only reset to ``v_reset``, so the current-based
  neuron with reset by subtraction has no Norse oracle here.

So SPEC's layered equations, ``I <- alpha I + W s + b``, ``V <- beta V + I``, are Norse's with
``beta = 1 - a`` (``tau_m = -dt / log(1 - a)``), ``alpha = 1 - dt tau_syn_inv``
(``tau_syn = -dt / log(1 - dt tau_syn_inv)``) and the factor ``a`` moved into the weights and
biases (``W' = a W``, ``b' = a b``: asyncsnn's current is ``a`` times Norse's). The order of the
updates is the same, so this holds for networks of any depth. The factors ``a`` are powers of
two here, so that scaling the weights is exact.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

norse = pytest.importorskip("norse.torch", reason="the Norse oracle needs norse")
from norse.torch.functional.reset import reset_subtract  # noqa: E402
from oracles import DT, SEEDS, assert_same_spikes, init_weights, layered  # noqa: E402

import asyncsnn  # noqa: E402


def _factor(tau_inv) -> float | torch.Tensor:
    """Norse's Euler factor ``dt * tau_inv``, computed as Norse computes it."""
    f = DT * torch.as_tensor(tau_inv, dtype=torch.float32)
    return float(f) if f.dim() == 0 else f


def _tau(tau_inv) -> float | torch.Tensor:
    """The time constant whose decay ``exp(-dt/tau)`` is Norse's ``1 - dt * tau_inv``."""
    f = _factor(tau_inv)
    if isinstance(f, torch.Tensor):
        return -DT / torch.log1p(-f.double())
    return -DT / math.log1p(-f)


def _scaled(module: nn.Module, factor) -> nn.Module:
    """A copy of ``module`` whose output units (rows, channels) are scaled by ``factor``."""
    out = copy.deepcopy(module)
    f = torch.as_tensor(factor, dtype=out.weight.dtype)
    with torch.no_grad():
        out.weight.mul_(f.reshape(-1, *[1] * (out.weight.dim() - 1)))
        if out.bias is not None:
            out.bias.mul_(f)
    return out


def _lif_box(tau_mem_inv, v_th, reset: str = "zero"):
    return norse.LIFBoxCell(
        norse.LIFBoxParameters(
            tau_mem_inv=torch.as_tensor(tau_mem_inv),
            v_th=torch.as_tensor(v_th),
            v_reset=torch.as_tensor(0.0),
            **({"reset_method": reset_subtract} if reset == "subtract" else {}),
        ),
        dt=DT,
    )


def _lif(tau_mem_inv, tau_syn_inv, v_th):
    return norse.LIFCell(
        norse.LIFParameters(
            tau_syn_inv=torch.as_tensor(tau_syn_inv),
            tau_mem_inv=torch.as_tensor(tau_mem_inv),
            v_th=torch.as_tensor(v_th),
            v_reset=torch.as_tensor(0.0),
        ),
        dt=DT,
    )


def _norse_layered(stages, cells, x: torch.Tensor, voltages=None) -> list[torch.Tensor]:
    """Step a Norse network; return each layer's spikes, (T, B, *layer shape)."""
    states = [None] * len(cells)
    out: list[list[torch.Tensor]] = [[] for _ in cells]
    with torch.no_grad():
        for t in range(x.shape[0]):
            s = x[t]
            for i, (stage, cell) in enumerate(zip(stages, cells, strict=True)):
                s, states[i] = cell(stage(s), states[i])
                out[i].append(s)
                if voltages is not None:
                    voltages[i].append(states[i].v.expand_as(s))
    return [torch.stack(o) for o in out]


# Norse's parameters per layer: 1/tau_mem (a = dt/tau_mem = 1/4, 1/2, 1/8), 1/tau_syn, v_th
TAU_MEM_INV = [250.0, 500.0, 125.0]
TAU_SYN_INV = [500.0, 250.0, 750.0]
V_TH = [0.4, 0.6, 0.5]


def test_parameter_mapping():
    # the Euler factors are exact, and asyncsnn's decays are Norse's to float precision
    assert [_factor(t) for t in TAU_MEM_INV] == [0.25, 0.5, 0.125]
    for tau_inv in TAU_MEM_INV + TAU_SYN_INV:
        decay = asyncsnn.dynamics.decay_factor(DT, torch.tensor([_tau(tau_inv)]))
        assert float(decay) == pytest.approx(1 - _factor(tau_inv), rel=1e-6)


# ------------------------------------------------------------------------ LIFBoxCell
@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("seed", SEEDS)
def test_lif_box_fully_connected_matches_norse(seed, bias, reset):
    gen = torch.Generator().manual_seed(seed)
    sizes = [6, 10, 8, 4]
    layers = [
        init_weights(nn.Linear(a, b, bias=bias), gen, 0.3, 1.2)
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    x = (torch.rand(30, 4, sizes[0], generator=gen) < 0.4).float()
    x[5:8, 1] *= 2.0  # event counts, not only binary spikes

    cells = [_lif_box(t, th, reset) for t, th in zip(TAU_MEM_INV, V_TH, strict=True)]
    ref = _norse_layered(layers, cells, x)
    net = asyncsnn.Network.sequential(
        [_scaled(m, _factor(t)) for m, t in zip(layers, TAU_MEM_INV, strict=True)],
        tau_m=[_tau(t) for t in TAU_MEM_INV],
        threshold=V_TH,
        reset=reset,
    )
    r = layered(net, x)
    assert_same_spikes(r, ref)
    assert torch.equal(r.output_counts, ref[-1].sum(0))


@pytest.mark.parametrize("reset", ["zero", "subtract"])
@pytest.mark.parametrize("seed", SEEDS)
def test_lif_box_convolutional_matches_norse(seed, reset):
    gen = torch.Generator().manual_seed(seed)
    conv1 = init_weights(nn.Conv2d(2, 4, 3, padding=1), gen, 0.2, 0.8)  # 2x10x10 -> 4x10x10
    conv2 = init_weights(nn.Conv2d(4, 6, 3, stride=2), gen, 0.1, 0.6)  # 4x5x5 -> 6x2x2
    fc = init_weights(nn.Linear(24, 5), gen, 0.2, 1.2)
    pool, flatten = asyncsnn.SumPool2d(2), nn.Flatten()
    x = (torch.rand(20, 3, 2, 10, 10, generator=gen) < 0.3).float()

    stages = [nn.Sequential(conv1, pool), nn.Sequential(conv2, flatten), fc]
    cells = [_lif_box(t, th, reset) for t, th in zip(TAU_MEM_INV, V_TH, strict=True)]
    ref = _norse_layered(stages, cells, x)
    a = [_factor(t) for t in TAU_MEM_INV]
    net = asyncsnn.Network.sequential(
        [_scaled(conv1, a[0]), pool, _scaled(conv2, a[1]), flatten, _scaled(fc, a[2])],
        input_shape=(2, 10, 10),
        tau_m=[_tau(t) for t in TAU_MEM_INV],
        threshold=V_TH,
        reset=reset,
    )
    assert_same_spikes(layered(net, x), ref)


# ------------------------------------------------------------------------ LIFCell
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("seed", SEEDS)
def test_lif_fully_connected_matches_norse(seed, bias):
    gen = torch.Generator().manual_seed(seed)
    sizes = [6, 10, 8, 4]
    layers = [
        init_weights(nn.Linear(a, b, bias=bias), gen, 0.1, 0.8)
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    x = (torch.rand(30, 4, sizes[0], generator=gen) < 0.4).float()
    x[5:8, 1] *= 2.0

    cells = [_lif(tm, ts, th) for tm, ts, th in zip(TAU_MEM_INV, TAU_SYN_INV, V_TH, strict=True)]
    ref = _norse_layered(layers, cells, x)
    net = asyncsnn.Network.sequential(
        [_scaled(m, _factor(t)) for m, t in zip(layers, TAU_MEM_INV, strict=True)],
        tau_m=[_tau(t) for t in TAU_MEM_INV],
        tau_syn=[_tau(t) for t in TAU_SYN_INV],
        threshold=V_TH,
    )
    r = layered(net, x)
    assert_same_spikes(r, ref)
    assert torch.equal(r.output_counts, ref[-1].sum(0))


@pytest.mark.parametrize("seed", SEEDS)
def test_lif_convolutional_matches_norse(seed):
    gen = torch.Generator().manual_seed(seed)
    conv1 = init_weights(nn.Conv2d(2, 4, 3, padding=1), gen, 0.05, 0.5)
    conv2 = init_weights(nn.Conv2d(4, 6, 3, stride=2), gen, 0.0, 0.4)
    fc = init_weights(nn.Linear(24, 5), gen, 0.1, 0.8)
    pool, flatten = asyncsnn.SumPool2d(2), nn.Flatten()
    x = (torch.rand(20, 3, 2, 10, 10, generator=gen) < 0.3).float()

    stages = [nn.Sequential(conv1, pool), nn.Sequential(conv2, flatten), fc]
    cells = [_lif(tm, ts, th) for tm, ts, th in zip(TAU_MEM_INV, TAU_SYN_INV, V_TH, strict=True)]
    ref = _norse_layered(stages, cells, x)
    a = [_factor(t) for t in TAU_MEM_INV]
    net = asyncsnn.Network.sequential(
        [_scaled(conv1, a[0]), pool, _scaled(conv2, a[1]), flatten, _scaled(fc, a[2])],
        input_shape=(2, 10, 10),
        tau_m=[_tau(t) for t in TAU_MEM_INV],
        tau_syn=[_tau(t) for t in TAU_SYN_INV],
        threshold=V_TH,
    )
    assert_same_spikes(layered(net, x), ref)


@pytest.mark.parametrize("seed", SEEDS)
def test_per_neuron_parameters_match_norse(seed):
    # per-neuron 1/tau_mem (a in {1/8, 1/4, 1/2}: each row of weights scaled by its own a),
    # 1/tau_syn and v_th
    gen = torch.Generator().manual_seed(seed)
    sizes = [5, 9, 7, 3]
    layers = [
        init_weights(nn.Linear(a, b), gen, 0.1, 0.8)
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    choices = torch.tensor([125.0, 250.0, 500.0])
    tau_mem_inv = [choices[torch.randint(3, (n,), generator=gen)] for n in sizes[1:]]
    tau_syn_inv = [torch.empty(n).uniform_(100.0, 900.0, generator=gen) for n in sizes[1:]]
    v_th = [torch.empty(n).uniform_(0.2, 0.8, generator=gen) for n in sizes[1:]]
    x = (torch.rand(30, 4, sizes[0], generator=gen) < 0.5).float()

    cells = [_lif(tm, ts, th) for tm, ts, th in zip(tau_mem_inv, tau_syn_inv, v_th, strict=True)]
    ref = _norse_layered(layers, cells, x)
    net = asyncsnn.Network.sequential(
        [_scaled(m, _factor(t)) for m, t in zip(layers, tau_mem_inv, strict=True)],
        tau_m=[_tau(t) for t in tau_mem_inv],
        tau_syn=[_tau(t) for t in tau_syn_inv],
        threshold=v_th,
    )
    assert_same_spikes(layered(net, x), ref)


@pytest.mark.parametrize("seed", SEEDS)
def test_recurrent_population_matches_norse_lif_recurrent_cell(seed):
    # LIFRecurrentCell (lif_step): i <- i + W_in x + W_rec z_prev, with its spikes of the
    # previous timestep, then the same Euler step: a current-based population with a
    # recurrent projection (autapses kept, no biases: Norse's cell has none)
    gen = torch.Generator().manual_seed(seed)
    n_in, n = 5, 8
    tau_mem_inv, tau_syn_inv, v_th = 250.0, 500.0, 0.5
    w_in = torch.empty(n, n_in).normal_(0.1, 0.8, generator=gen)
    w_rec = torch.empty(n, n).normal_(0.0, 0.6, generator=gen)
    cell = norse.LIFRecurrentCell(
        n_in,
        n,
        norse.LIFParameters(
            tau_syn_inv=torch.as_tensor(tau_syn_inv),
            tau_mem_inv=torch.as_tensor(tau_mem_inv),
            v_th=torch.as_tensor(v_th),
            v_reset=torch.as_tensor(0.0),
        ),
        autapses=True,
        dt=DT,
        input_weights=w_in.clone(),
        recurrent_weights=w_rec.clone(),
    )
    x = (torch.rand(40, 3, n_in, generator=gen) < 0.4).float()
    state, ref = None, []
    with torch.no_grad():
        for t in range(x.shape[0]):
            z, state = cell(x[t], state)
            ref.append(z)
    ref = torch.stack(ref)

    a = _factor(tau_mem_inv)
    fc, recurrent = nn.Linear(n_in, n, bias=False), nn.Linear(n, n, bias=False)
    with torch.no_grad():
        fc.weight.copy_(a * w_in)
        recurrent.weight.copy_(a * w_rec)
    net = asyncsnn.Network(input_shape=(n_in,))
    net.add_population(
        "hidden1", [fc], tau_m=_tau(tau_mem_inv), threshold=v_th, tau_syn=_tau(tau_syn_inv)
    )
    net.connect("hidden1", "hidden1", [recurrent])
    r = layered(net, x)
    assert_same_spikes(r, [ref])
    # the recurrence matters here: without it the spikes differ
    with torch.no_grad():
        recurrent.weight.zero_()
    assert not torch.equal(layered(net, x).spikes, r.spikes)


# ------------------------------------------------------------------------ conventions, by hand
def _one_neuron(weight: float, **population):
    fc = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        fc.weight.fill_(weight)
    net = asyncsnn.Network(input_shape=(1,))
    net.add_population("hidden1", [fc], **population)
    return net, fc


@pytest.mark.parametrize("method", ["heaviside", "super"])
def test_norse_threshold_is_strict(method):
    # a = 1/2, input 1: v0 = 0.5 = v_th does not fire (strict), v1 = 0.75 does, in both
    cell = norse.LIFBoxCell(
        norse.LIFBoxParameters(
            tau_mem_inv=torch.as_tensor(500.0),
            v_th=torch.as_tensor(0.5),
            v_reset=torch.as_tensor(0.0),
            method=method,
        ),
        dt=DT,
    )
    state, fired, voltages = None, [], []
    with torch.no_grad():
        for _ in range(3):
            z, state = cell(torch.ones(1, 1), state)
            fired.append(float(z))
            voltages.append(float(state.v))
    assert fired == [0.0, 1.0, 0.0] and voltages == [0.5, 0.0, 0.5]
    net, _ = _one_neuron(0.5, tau_m=_tau(500.0), threshold=0.5)
    assert layered(net, torch.ones(3, 1, 1)).spikes[:, 0, 0].tolist() == fired


def test_norse_lif_integrates_the_input_of_its_own_timestep():
    # one neuron, a = 1/4, dt/tau_syn = 1/2, one input event at t = 0 and a threshold it never
    # reaches. Norse: i = 1 jumps in, v0 = 0 + (1 - 0)/4 = 0.25 (not 0: no delay), i -> 0.5;
    # v1 = 0.25 + (0.5 - 0.25)/4 = 0.3125, i -> 0.25; v2 = 0.296875; v3 = 0.25390625.
    # asyncsnn, weight 1/4: I0 = 0.25, V0 = 0.25; I1 = 0.125, V1 = 0.75 * 0.25 + 0.125 ...
    expected = [0.25, 0.3125, 0.296875, 0.25390625]
    x = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(4, 1, 1)
    cell = _lif(250.0, 500.0, 10.0)
    voltages = [[]]
    _norse_layered([nn.Identity()], [cell], x, voltages)
    assert [float(v) for v in voltages[0]] == expected
    net, _ = _one_neuron(0.25, tau_m=_tau(250.0), tau_syn=_tau(500.0), spiking=False)
    membrane = layered(net, x).membrane[:, 0, 0]
    torch.testing.assert_close(membrane, torch.tensor(expected))


def test_norse_lif_has_no_delay_in_deeper_networks():
    # three layers of one neuron behind unit weights, a = 1/4, dt/tau_syn = 1/2, v_th = 0.2;
    # one input event at t = 0. Layer 1: i = 1, v0 = 0.25 fires; then i = 0.5, v1 = 0.125;
    # i = 0.25, v2 = 0.15625: silent. Its spike at t = 0 reaches layer 2 at t = 0, which
    # does the same, and so does layer 3: every layer fires at t = 0 only, in Norse as in
    # asyncsnn (a one-timestep delay per layer would make layer k fire at t = k - 1).
    x = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    layers = [nn.Linear(1, 1, bias=False) for _ in range(3)]
    for layer in layers:
        with torch.no_grad():
            layer.weight.fill_(1.0)
    cells = [_lif(250.0, 500.0, 0.2) for _ in layers]
    ref = _norse_layered(layers, cells, x)
    assert [r[:, 0, 0].tolist() for r in ref] == [[1.0, 0.0, 0.0]] * 3
    net = asyncsnn.Network.sequential(
        [_scaled(m, 0.25) for m in layers], tau_m=_tau(250.0), tau_syn=_tau(500.0), threshold=0.2
    )
    r = layered(net, x)
    assert [r.population_spikes(p.name)[:, 0, 0].tolist() for p in net.populations] == [
        [1.0, 0.0, 0.0]
    ] * 3


def test_norse_resets():
    # LIFBoxParameters carries a reset_method (reset_value to v_reset, or reset_subtract);
    # LIFParameters has none: LIFCell resets to v_reset only
    assert "reset_method" in norse.LIFBoxParameters._fields
    assert "reset_method" not in norse.LIFParameters._fields
    # a = 1/2, v_th = 1, input 7 at t = 0 only: v0 = 3.5 fires. Reset to 0: silent after.
    # Subtract: keeps 2.5, v1 = 1.25 fires and keeps 0.25, v2 = 0.125.
    x = torch.tensor([7.0, 0.0, 0.0]).view(3, 1, 1)
    for reset, fired, expected in [
        ("zero", [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
        ("subtract", [1.0, 1.0, 0.0], [2.5, 0.25, 0.125]),
    ]:
        voltages = [[]]
        ref = _norse_layered([nn.Identity()], [_lif_box(500.0, 1.0, reset)], x, voltages)
        assert ref[0][:, 0, 0].tolist() == fired
        assert [float(v) for v in voltages[0]] == expected
        net, _ = _one_neuron(0.5, tau_m=_tau(500.0), threshold=1.0, reset=reset)
        assert layered(net, x).spikes[:, 0, 0].tolist() == fired
