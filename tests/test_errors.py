"""Bad input gets a clear error that names the problem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import asyncsnn


@pytest.fixture
def net():
    return asyncsnn.Network.sequential(
        [nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False)], tau_m=1e-3, threshold=0.3
    )


@pytest.fixture
def x():
    return (torch.rand(5, 2, 4) < 0.3).float()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.zeros(5, 2, 3), r"shape \(timesteps, batch, 4\)"),
        (torch.zeros(2, 4), r"shape \(timesteps, batch, 4\)"),
        (torch.zeros(0, 2, 4), "no timesteps"),
        (torch.zeros(5, 0, 4), "no samples"),
        (torch.full((5, 2, 4), float("nan")), "NaN or infinite"),
        (torch.tensor([[[0.0, float("inf"), 0.0, 0.0]]]), "NaN or infinite"),
    ],
)
@pytest.mark.parametrize("execution", ["async", "layered"])
def test_bad_input_tensor(net, bad, message, execution):
    with pytest.raises(ValueError, match=message):
        asyncsnn.run(net, bad, dt=1e-3, execution=execution)


def test_input_dtype_must_match_the_network(net):
    with pytest.raises(TypeError, match="x is torch.float64 but the network's parameters are"):
        asyncsnn.run(net, torch.zeros(5, 2, 4, dtype=torch.float64), dt=1e-3)
    r = asyncsnn.run(net.double(), torch.zeros(5, 2, 4, dtype=torch.float64), dt=1e-3)
    assert r.spikes.dtype == torch.float64


def test_non_tensor_and_integer_input(net):
    with pytest.raises(TypeError, match="torch.Tensor"):
        asyncsnn.run(net, [[0.0] * 4], dt=1e-3)
    with pytest.raises(TypeError, match="floating-point"):
        asyncsnn.run(net, torch.zeros(5, 2, 4, dtype=torch.long), dt=1e-3)


@pytest.mark.parametrize("dt", [0, -1e-3, float("nan"), float("inf"), "1ms", True])
def test_bad_dt(net, x, dt):
    with pytest.raises(ValueError, match="dt must be a positive number of seconds"):
        asyncsnn.run(net, x, dt=dt)


@pytest.mark.parametrize("f", [0, -1, 1.5, True])
def test_bad_group_size(net, x, f):
    with pytest.raises(ValueError, match=r"group_size \(F\)"):
        asyncsnn.run(net, x, dt=1e-3, group_size=f)


def test_unknown_policy_and_execution(net, x):
    with pytest.raises(ValueError, match="unknown scheduler 'priority'.*fifo"):
        asyncsnn.run(net, x, dt=1e-3, scheduler="priority")
    with pytest.raises(TypeError, match="scheduler must be"):
        asyncsnn.run(net, x, dt=1e-3, scheduler=3)
    with pytest.raises(ValueError, match="execution must be one of"):
        asyncsnn.run(net, x, dt=1e-3, execution="sync")
    with pytest.raises(TypeError, match="subclass of asyncsnn.Scheduler"):
        asyncsnn.register_scheduler("x", object)


@pytest.mark.parametrize("value", [0.0, -1e-3, float("nan"), float("inf")])
@pytest.mark.parametrize("what", ["tau_m", "threshold"])
def test_non_positive_neuron_parameters(value, what):
    with pytest.raises(ValueError, match=f"{what} of population 'hidden1' must be finite and > 0"):
        asyncsnn.Network.sequential([nn.Linear(4, 3), nn.Linear(3, 2)], **{what: value})


def test_per_neuron_parameters_must_match_the_population():
    with pytest.raises(ValueError, match="threshold of population 'hidden1' has 2 values for 3"):
        asyncsnn.Network.sequential(
            [nn.Linear(4, 3), nn.Linear(3, 2)], threshold=[torch.ones(2), 1.0]
        )
    with pytest.raises(ValueError, match="tau_m has 3 values for 2 populations"):
        asyncsnn.Network.sequential([nn.Linear(4, 3), nn.Linear(3, 2)], tau_m=[1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    ("modules", "message"),
    [
        ([nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)], "unsupported module ReLU"),
        ([nn.Conv2d(2, 4, 3), nn.MaxPool2d(2)], "unsupported module MaxPool2d"),
        ([nn.Conv1d(2, 4, 3)], "unsupported module Conv1d"),
        ([nn.Flatten()], "at least one nn.Linear or nn.Conv2d"),
    ],
)
def test_unsupported_modules(modules, message):
    with pytest.raises(TypeError if "unsupported" in message else ValueError, match=message):
        asyncsnn.Network.sequential(modules, input_shape=(2, 8, 8))


def test_shape_mismatches_in_the_structure():
    with pytest.raises(ValueError, match="insert nn.Flatten"):
        asyncsnn.Network.sequential([nn.Conv2d(2, 4, 3), nn.Linear(36, 2)], input_shape=(2, 5, 5))
    with pytest.raises(ValueError, match="input_shape is required"):
        asyncsnn.Network.sequential([nn.Conv2d(2, 4, 3)])
    with pytest.raises(ValueError, match="expects 3 input channels, got 2"):
        asyncsnn.Network.sequential([nn.Conv2d(3, 4, 3)], input_shape=(2, 5, 5))
    net = asyncsnn.Network.sequential([nn.Linear(4, 3), nn.Linear(3, 2)])
    with pytest.raises(ValueError, match="produces 3 values but 'output' has 2 neurons"):
        net.connect("hidden1", "output", [nn.Linear(3, 3)])
    with pytest.raises(KeyError, match="no population named 'nope'"):
        net.connect("nope", "output", [nn.Linear(3, 2)])
    with pytest.raises(ValueError, match="more than one weighted module"):
        net.connect("input", "output", [nn.Linear(4, 3), nn.Linear(3, 2)])
    with pytest.raises(ValueError, match="already exists"):
        net.add_population("output", [nn.Linear(4, 2)])
    with pytest.raises(ValueError, match="ceil_mode=True is not supported"):
        asyncsnn.Network.sequential(
            [nn.Conv2d(2, 2, 1), nn.AvgPool2d(2, ceil_mode=True)], input_shape=(2, 5, 5)
        )


def test_an_empty_network_or_a_dead_end():
    with pytest.raises(ValueError, match="no population"):
        asyncsnn.run(asyncsnn.Network((4,)), torch.zeros(2, 1, 4), dt=1e-3)
    net = asyncsnn.Network.sequential([nn.Linear(4, 3), nn.Linear(3, 2)], readout="membrane")
    net.connect("output", "hidden1", [nn.Linear(2, 3)])
    with pytest.raises(ValueError, match="non-spiking population 'output' cannot have outgoing"):
        asyncsnn.run(net, torch.zeros(2, 1, 4), dt=1e-3)


def test_bad_options(net, x):
    with pytest.raises(ValueError, match="refractory_dropout must be in"):
        asyncsnn.run(net, x, dt=1e-3, refractory_dropout=1.0)
    with pytest.raises(TypeError, match="asyncsnn.Hook"):
        asyncsnn.run(net, x, dt=1e-3, hooks=[lambda ctx: None])
    with pytest.raises(ValueError, match="need execution='async'"):
        asyncsnn.run(net, x, dt=1e-3, execution="layered", hooks=[asyncsnn.MaxForwardSteps(3)])
    with pytest.raises(ValueError, match="max_steps must be an int >= 0"):
        asyncsnn.MaxForwardSteps(-1)
    with pytest.raises(ValueError, match="input spike dropout p must be in"):
        asyncsnn.InputSpikeDropout(1.5)
    with pytest.raises(ValueError, match="lambda_ms must be >= 0"):
        asyncsnn.Momentum(lambda_ms=-1.0)
    with pytest.raises(ValueError, match="one seed per sample"):
        asyncsnn.run(net, x, dt=1e-3, seed=torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="integer tensor"):
        asyncsnn.run(net, x, dt=1e-3, seed=torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match="network must be an asyncsnn.Network"):
        asyncsnn.run(nn.Linear(4, 2), x, dt=1e-3)
    with pytest.raises(ValueError, match="unknown surrogate"):
        asyncsnn.run(net, x, dt=1e-3, surrogate="sigmoid")
    with pytest.raises(ValueError, match="alpha must be > 0"):
        asyncsnn.ArcTan(alpha=0.0)


def test_settings_by_name_or_as_one_object(net, x):
    with pytest.raises(TypeError, match=r"unknown run setting\(s\) \['F', 'polcy'\]"):
        asyncsnn.run(net, x, dt=1e-3, F=4, polcy="fifo")
    with pytest.raises(TypeError, match="a run needs dt"):
        asyncsnn.run(net, x, scheduler="fifo")
    with pytest.raises(TypeError, match="settings must be a RunSettings"):
        asyncsnn.run(net, x, {"dt": 1e-3})
    by_name = asyncsnn.run(net, x, dt=1e-3, scheduler="momentum", group_size=2, seed=3)
    settings = asyncsnn.RunSettings(dt=1e-3, scheduler="momentum", group_size=5, seed=3)
    overridden = asyncsnn.run(net, x, settings, group_size=2)
    assert torch.equal(by_name.spikes, overridden.spikes)
    assert settings.group_size == 5  # the object given is left as it was


def test_a_user_policy_must_declare_what_it_reads():
    class Sneaky(asyncsnn.Scheduler):
        def priority(self, q):
            return q.potential

    layers = [nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False)]
    for layer in layers:
        nn.init.constant_(layer.weight, 1.0)  # every hidden neuron fires: the queue fills
    net = asyncsnn.Network.sequential(layers, tau_m=1e-3, threshold=0.3)
    with pytest.raises(AttributeError, match="needs_potential = True"):
        asyncsnn.run(net, torch.ones(2, 1, 4), dt=1e-3, scheduler=Sneaky())


@pytest.mark.parametrize("bad", [float("nan"), float("-inf"), float("inf")])
def test_a_user_policy_must_give_finite_priorities(bad):
    class Broken(asyncsnn.Scheduler):
        name = "broken"

        def priority(self, q):
            return torch.full(q.pending.shape, bad)

    layers = [nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False)]
    for layer in layers:
        nn.init.constant_(layer.weight, 1.0)
    net = asyncsnn.Network.sequential(layers, tau_m=1e-3, threshold=0.3)
    with pytest.raises(ValueError, match="'broken' gave a queued spike a priority that is not"):
        asyncsnn.run(net, torch.ones(2, 1, 4), dt=1e-3, scheduler=Broken())
