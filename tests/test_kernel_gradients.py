"""Unlayered backprop through the numba kernel against autograd through the reference engine.

The kernel's training path runs the forward pass compiled, records a tape of checks and
deliveries, and computes the gradients by hand (``asyncsnn.kernels.cpu_grad``). Its spikes
and every other output must equal the reference's exactly, and its gradients
must equal what PyTorch's autograd computes through the reference (to float rounding), for
every policy, network kind, dropout and stop rule; a hand-computed network checks both.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

pytest.importorskip("numba")

from test_kernels import NETWORKS, POLICIES, VARIANTS, make  # noqa: E402

import asyncsnn  # noqa: E402
from asyncsnn.kernels import cpu_grad  # noqa: E402
from asyncsnn.training import TrainConfig, forward  # noqa: E402

DT = 1e-3
OUTPUTS = ("spikes", "forward_steps", "synops", "undelivered", "output_counts")


def gradients(net, x, backend, loss_seed=1, **kw):
    """Run with gradients, take a loss on the outputs and spikes, return (result, grads)."""
    net.zero_grad(set_to_none=True)
    r = asyncsnn.run(net, x, dt=DT, backend=backend, seed=5, **kw)
    score = r.output_counts if r.membrane is None else r.membrane.sum(0)
    gen = torch.Generator().manual_seed(loss_seed)
    loss = (score * torch.randn(score.shape, generator=gen)).sum()
    if r.current is not None:  # a current-based readout's current is an output too
        loss = loss + (r.current * torch.randn(r.current.shape, generator=gen)).sum()
    loss = loss + 0.01 * (r.spikes * torch.rand(r.spikes.shape, generator=gen)).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    if x.requires_grad:
        grads["input"] = x.grad.clone()
        x.grad = None
    return r, grads


def assert_same_run_and_close_gradients(ref, fast):
    (ra, ga), (rb, gb) = ref, fast
    for f in OUTPUTS:
        a, b = getattr(ra, f).detach(), getattr(rb, f).detach()
        assert torch.equal(a, b), f"{f} differs in {int((a != b).sum())} places"
    for f in ("membrane", "current"):
        a, b = getattr(ra, f), getattr(rb, f)
        assert (a is None) == (b is None), f
        if a is not None:
            assert torch.equal(a.detach(), b.detach()), f
    assert ga.keys() == gb.keys()
    assert any(bool(g.any()) for g in ga.values()), "no gradient at all"
    for k in ga:
        scale = float(ga[k].abs().max())
        torch.testing.assert_close(gb[k], ga[k], rtol=1e-5, atol=2e-6 * scale, msg=k)


SETTINGS = {
    "plain": {},
    "refractory": {"refractory_dropout": 0.5, "max_queued_per_neuron": 16},
    "study": {  # the study's regularisers and a stop rule
        "refractory_dropout": 0.8,
        "max_queued_per_neuron": 16,
        "hooks": [
            asyncsnn.InputSpikeDropout(0.25),
            asyncsnn.NetworkSpikeDropout(0.1),
            asyncsnn.MaxForwardSteps(5),
        ],
    },
    "silent": {"silent_gradients": True},  # docs/semantics.md, section 8.7
    "silent_study": {
        "silent_gradients": True,
        "refractory_dropout": 0.5,
        "max_queued_per_neuron": 16,
        "hooks": [asyncsnn.MaxForwardSteps(5)],
    },
}


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("policy", ["random", "momentum", "momentum_noisy", "fifo", "layered"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_gradients_equal_autograd_through_the_reference(name, policy, setting):
    net, x = make(name)
    net.train()
    kw = {"scheduler": POLICIES[policy], "group_size": 3, **SETTINGS[setting]}
    ref = gradients(net, x, "torch", **kw)
    fast = gradients(net, x, "numba", **kw)
    assert_same_run_and_close_gradients(ref, fast)


@pytest.mark.parametrize("setting", ["plain", "study", "silent_study"])
@pytest.mark.parametrize("policy", ["momentum_noisy", "fifo"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_gradients_of_the_neuron_variants_equal_autograd(name, policy, setting):
    """Current-based neurons and the reset by subtraction (docs/semantics.md, section 2):
    the kernel's adjoint of the synaptic current and of the subtraction equals autograd
    through the reference."""
    test_gradients_equal_autograd_through_the_reference(name, policy, setting)


@pytest.mark.parametrize("surrogate", [asyncsnn.ArcTan(alpha=3.0), asyncsnn.FastSigmoid(10.0)])
def test_surrogates_and_input_gradients(surrogate):
    net, x = make("fc_bias_membrane")
    x = x.clone().requires_grad_(True)
    kw = {"scheduler": "momentum", "surrogate": surrogate, "hooks": [asyncsnn.StopOnOutputSpike()]}
    assert_same_run_and_close_gradients(
        gradients(net, x, "torch", **kw), gradients(net, x, "numba", **kw)
    )


def test_a_hand_computed_network():
    """input -> h -> out, one timestep. h fires on the input (V = w1 = 0.8 > 0.5), its spike
    reaches out (V = w2 = 0.7 > 0.5), which fires. With the loss = out's spike count:
    dL/dw2 = s'(0.7 - 0.5), dL/dw1 = s'(0.7 - 0.5) w2 s'(0.8 - 0.5) (arctan, alpha 2)."""
    l1, l2 = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        l1.weight.fill_(0.8)
        l2.weight.fill_(0.7)
    net = asyncsnn.Network.sequential([l1, l2], tau_m=1e-3, threshold=0.5)

    def s(x):  # arctan surrogate, alpha = 2
        return 1.0 / (1.0 + (math.pi * x) ** 2)

    r = asyncsnn.run(net, torch.ones(1, 1, 1), dt=DT, backend="numba")
    assert r.output_counts.item() == 1
    r.output_counts.sum().backward()
    assert l2.weight.grad.item() == pytest.approx(s(0.2), rel=1e-6)
    assert l1.weight.grad.item() == pytest.approx(s(0.2) * 0.7 * s(0.3), rel=1e-6)


def test_training_runs_the_kernel(monkeypatch):
    calls = []
    original = cpu_grad.run_async_cpu_grad

    def counted(*args, **kw):
        calls.append(1)
        return original(*args, **kw)

    monkeypatch.setattr(cpu_grad, "run_async_cpu_grad", counted)
    net, x = make("fc")
    net.train()
    cfg = TrainConfig(
        dataset="digits", timesteps=x.shape[0], dt=DT, refractory_dropout=0.5, input_dropout=0.25
    )
    r = forward(net, x.transpose(0, 1), cfg, training=True, seed=0)
    r.output_counts.sum().backward()
    assert calls == [1]
    assert all(p.grad is not None for p in net.parameters())


def test_the_tape_is_released_after_backward():
    net, x = make("fc")
    r = asyncsnn.run(net, x, dt=DT, backend="numba")
    node = r.spikes.grad_fn
    assert node.chunks and all(len(tape) == 6 for _, _, tape in node.chunks)
    r.output_counts.sum().backward()
    assert node.chunks is None


def test_a_second_backward_pass_is_a_clear_error():
    net, x = make("fc")
    r = asyncsnn.run(net, x, dt=DT, backend="numba")
    loss = r.output_counts.sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="can be differentiated once"):
        loss.backward()


@pytest.mark.parametrize("readout", ["spikes", "membrane"])
def test_a_network_without_queue(readout):
    """One layer: the output neurons have no outgoing projection, nothing is ever queued."""
    gen = torch.Generator().manual_seed(4)
    layer = nn.Linear(6, 3)
    with torch.no_grad():
        layer.weight.normal_(0.2, 0.4, generator=gen)
    net = asyncsnn.Network.sequential([layer], tau_m=2e-3, threshold=0.3, readout=readout)
    x = (torch.rand(5, 4, 6, generator=gen) < 0.5).float()
    ref, fast = gradients(net, x, "torch"), gradients(net, x, "numba")
    assert_same_run_and_close_gradients(ref, fast)


def test_training_config_sets_the_queue_places():
    """A network that needs more than 4 queue places per neuron under refractory dropout
    fails with the default and trains with ``TrainConfig(max_queued_per_neuron=16)``."""
    net, x = make("fc")
    net.train()
    kw = {"dataset": "digits", "timesteps": x.shape[0], "dt": DT, "refractory_dropout": 0.8}
    with pytest.raises(RuntimeError, match="max_queued_per_neuron=4"):
        forward(net, x.transpose(0, 1), TrainConfig(**kw), training=True, seed=0)
    cfg = TrainConfig(**kw, max_queued_per_neuron=16)
    r = forward(net, x.transpose(0, 1), cfg, training=True, seed=0)
    assert r.spikes.max() > 1  # neurons fired more than once in a timestep
    with pytest.raises(ValueError, match="max_queued_per_neuron must be an int >= 1"):
        TrainConfig(max_queued_per_neuron=0)


def silent_net(readout):
    """input -> h -> out with weights 0.3 and 0.7, threshold 0.5: h does not fire."""
    l1, l2 = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        l1.weight.fill_(0.3)
        l2.weight.fill_(0.7)
    net = asyncsnn.Network.sequential([l1, l2], tau_m=1e-3, threshold=0.5, readout=readout)
    return net, l1, l2


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_silent_gradients_by_hand(backend):
    check_silent_gradients_by_hand(backend)


def check_silent_gradients_by_hand(backend):
    """One timestep, a membrane readout. h's membrane is 0.3 < 0.5: it does not fire, and
    without silent gradients nothing reaches w1. With them, h's ghost (value 0, gradient
    s'(0.3 - 0.5)) reaches the readout through w2, so with L = the readout's membrane
    dL/dw1 = w2 s'(-0.2) x 1 and dL/dw2 = 0 (the ghost's value)."""

    def s(x):  # arctan surrogate, alpha = 2
        return 1.0 / (1.0 + (math.pi * x) ** 2)

    for silent in (False, True):
        net, l1, l2 = silent_net("membrane")
        r = asyncsnn.run(net, torch.ones(1, 1, 1), dt=DT, backend=backend, silent_gradients=silent)
        assert r.membrane.item() == 0.0 and r.spikes.sum().item() == 0
        r.membrane.sum().backward()
        expected = 0.7 * s(-0.2) if silent else 0.0
        assert l1.weight.grad.item() == pytest.approx(expected, rel=1e-6, abs=0.0)
        assert l2.weight.grad is None or l2.weight.grad.item() == 0.0


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_silent_gradients_chain_through_the_layers_and_skip_refractory_targets(backend):
    check_silent_gradients_chain(backend)


def check_silent_gradients_chain(backend):
    """input -> a -> b -> readout, one timestep, a and b silent: a's ghost reaches b's
    membrane before b's ghost is taken, so dL/dw1 = w3 s'(b) w2 s'(a) (b's membrane 0: the
    ghost adds nothing). A refractory b (it fired) receives no ghost: its spike and reset end
    the path, and dL/dw1 only goes through the real spike (none here: a is silent)."""

    def s(x):
        return 1.0 / (1.0 + (math.pi * x) ** 2)

    lin = [nn.Linear(1, 1, bias=False) for _ in range(3)]
    with torch.no_grad():
        for m, w in zip(lin, (0.3, 0.6, 0.9), strict=True):
            m.weight.fill_(w)
    net = asyncsnn.Network.sequential(lin, tau_m=1e-3, threshold=0.5, readout="membrane")
    r = asyncsnn.run(net, torch.ones(1, 1, 1), dt=DT, backend=backend, silent_gradients=True)
    r.membrane.sum().backward()
    assert lin[0].weight.grad.item() == pytest.approx(0.9 * s(-0.5) * 0.6 * s(-0.2), rel=1e-6)
    # b gets a bias that makes it fire at the input: refractory, so a's ghost stops there
    for m in lin:
        m.weight.grad = None
    lin[1] = nn.Linear(1, 1)
    with torch.no_grad():
        lin[1].weight.fill_(0.6)
        lin[1].bias.fill_(0.8)
    net = asyncsnn.Network.sequential(lin, tau_m=1e-3, threshold=0.5, readout="membrane")
    r = asyncsnn.run(net, torch.ones(1, 1, 1), dt=DT, backend=backend, silent_gradients=True)
    assert r.spikes[0, 0].tolist() == [0.0, 1.0, 0.0]
    r.membrane.sum().backward()
    assert lin[0].weight.grad is None or lin[0].weight.grad.item() == 0.0
    assert lin[1].bias.grad.item() == pytest.approx(0.9 * s(0.3), rel=1e-6)


@pytest.mark.parametrize("name", ["fc", "conv_bias_membrane", "recurrent"])
def test_silent_gradients_change_no_value(name):
    """The ghosts' value is 0: every output of a run is the same with and without them, and
    the gradients differ (some neurons are silent)."""
    runs = []
    for silent in (False, True):
        net, x = make(name)
        runs.append(gradients(net, x, "numba", silent_gradients=silent, scheduler="momentum"))
    (ra, ga), (rb, gb) = runs
    for f in OUTPUTS:
        assert torch.equal(getattr(ra, f).detach(), getattr(rb, f).detach()), f
    assert any(not torch.allclose(ga[k], gb[k]) for k in ga)
