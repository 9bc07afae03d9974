"""Hand-computed small networks, one or more per rule of docs/semantics.md."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import asyncsnn
from asyncsnn.metrics import sample_metrics

DT = 1e-3
TAU = 2e-3
BETA = math.exp(-DT / TAU)


def linear(weight, bias=None) -> nn.Linear:
    w = torch.tensor(weight, dtype=torch.float32)
    m = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        m.weight.copy_(w)
        if bias is not None:
            m.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return m


def frames(*rows) -> torch.Tensor:
    """(timesteps, batch=1, inputs) from a list of per-timestep input rows."""
    return torch.tensor(rows, dtype=torch.float32)[:, None, :]


def run(net, x, **kw):
    kw.setdefault("dt", DT)
    with torch.no_grad():
        return asyncsnn.run(net, x, **kw)


def fan_in_fan_out(w_hidden, w_out, theta=0.5, readout="spikes", bias_h=None, bias_o=None):
    return asyncsnn.Network.sequential(
        [linear(w_hidden, bias_h), linear(w_out, bias_o)],
        tau_m=TAU,
        threshold=theta,
        readout=readout,
    )


# ------------------------------------------------------------------------------ leak
def test_leak_once_per_timestep_and_not_between_forward_steps():
    # input -> output (non-spiking): the membrane decays by beta per timestep
    net = asyncsnn.Network.sequential([linear([[0.8]])], tau_m=TAU, readout="membrane")
    r = run(net, frames([1.0], [0.0], [0.0], [0.0]))
    expected = torch.tensor([0.8 * BETA**t for t in range(4)])
    torch.testing.assert_close(r.membrane[:, 0, 0], expected)

    # three hidden spikes delivered one per forward step (F = 1): no leak between the steps
    net = fan_in_fan_out([[1.0], [1.0], [1.0]], [[0.1, 0.2, 0.4]], readout="membrane")
    r = run(net, frames([1.0], [0.0]), scheduler="fifo", group_size=1)
    assert r.forward_steps[:, 0].tolist() == [3, 0]
    torch.testing.assert_close(r.membrane[:, 0, 0], torch.tensor([0.7, 0.7 * BETA]))


# ------------------------------------------------------------------------------ strict threshold
@pytest.mark.parametrize("execution", ["async", "layered"])
def test_threshold_is_strict(execution):
    net = asyncsnn.Network.sequential([linear([[0.25]])], tau_m=1e-9, threshold=0.5)
    # 2 events give exactly 0.5 (no spike), 3 give 0.75 (spike); tau_m tiny: no memory
    r = run(net, frames([2.0], [3.0], [2.0]), execution=execution)
    assert r.spikes[:, 0, 0].tolist() == [0.0, 1.0, 0.0]


# ------------------------------------------------------------ reset and refractoriness
def test_reset_to_zero_and_refractory_for_the_rest_of_the_timestep():
    # hidden h0, h1 fire on the input; h1 -> h0 (recurrent) would push h0 over threshold
    # again, but h0 is refractory and ignores it. At t=1 the input gives h0 only 0.3 < 0.5:
    # had h0 integrated the 1.0 from h1, beta*1.0 + 0.3 > 0.5 and it would fire.
    net = asyncsnn.Network(input_shape=(1,))
    net.add_population("h", [linear([[1.0], [1.0]])], tau_m=TAU, threshold=0.5)
    net.connect("h", "h", [linear([[0.0, 1.0], [0.0, 0.0]])])
    net.add_population("out", [linear([[0.0, 0.0]])], source="h", tau_m=TAU, threshold=0.5)
    x = frames([1.0], [0.3])
    for policy in ["fifo", "momentum", "random", "layered"]:
        r = run(net, x, scheduler=policy, group_size=1)
        assert r.population_spikes("h")[:, 0].tolist() == [[1.0, 1.0], [0.0, 0.0]], policy


def test_refractory_dropout_lets_a_neuron_fire_twice_in_training_only():
    net = asyncsnn.Network(input_shape=(1,))
    net.add_population("h", [linear([[1.0], [1.0]])], tau_m=TAU, threshold=0.5)
    net.connect("h", "h", [linear([[0.0, 1.0], [0.0, 0.0]])])
    net.add_population("out", [linear([[0.0, 0.0]])], source="h", tau_m=TAU, threshold=0.5)
    x = frames([1.0])
    p = 1 - 1e-6  # almost surely not made refractory
    trained = run(net, x, scheduler="fifo", group_size=1, refractory_dropout=p, training=True)
    assert trained.population_spikes("h")[0, 0].tolist() == [2.0, 1.0]
    # h0's second spike was queued and delivered too: h0 twice, h1 once
    assert trained.forward_steps[0, 0].item() == 3
    evaluated = run(net, x, scheduler="fifo", group_size=1, refractory_dropout=p, training=False)
    assert evaluated.population_spikes("h")[0, 0].tolist() == [1.0, 1.0]
    forced = run(
        net,
        x,
        scheduler="fifo",
        group_size=1,
        refractory_dropout=p,
        training=False,
        refractory_dropout_at_eval=True,
    )
    assert forced.population_spikes("h")[0, 0].tolist() == [2.0, 1.0]


def test_a_neuron_fires_again_while_its_spike_waits():
    """h0 and h1 fire on the input; fifo with F = 1 delivers h0 first, which drives h1 over
    threshold again (not refractory) while h1's first spike is still queued: h1's second
    spike needs a second queue place. With one place per neuron that is an error, never a
    silently merged spike."""
    net = asyncsnn.Network(input_shape=(1,))
    net.add_population("h", [linear([[1.0], [1.0]])], tau_m=TAU, threshold=0.5)
    net.connect("h", "h", [linear([[0.0, 0.0], [1.0, 0.0]])])
    net.add_population("out", [linear([[0.0, 0.0]])], source="h", tau_m=TAU, threshold=0.5)
    x = frames([1.0])
    kw = {"scheduler": "fifo", "group_size": 1, "refractory_dropout": 1 - 1e-6, "training": True}
    for backend in ("torch", "auto"):
        r = run(net, x, backend=backend, **kw)
        assert r.population_spikes("h")[0, 0].tolist() == [1.0, 2.0]
        assert r.forward_steps[0, 0].item() == 3  # h0, h1, h1 again
        with pytest.raises(RuntimeError, match="1 spike\\(s\\) found no free queue slot"):
            run(net, x, backend=backend, max_queued_per_neuron=1, **kw)


def test_network_spike_dropout_draws_afresh_every_forward_step():
    """input -> a -> b -> out, one neuron each: a fires on the input (step 0), b on a's spike
    (step 1), out on b's (step 2). Each spike is kept iff its sample's uniform number for
    (stream, timestep << 16 | step, neuron) is >= p: b's decision uses step 1's numbers, not
    step 0's. The seed is one where the two differ."""
    net = asyncsnn.Network.sequential(
        [linear([[1.0]]), linear([[1.0]]), linear([[1.0]])], tau_m=TAU, threshold=0.5
    )
    hook = asyncsnn.NetworkSpikeDropout(0.5)
    a, b = 0, 1  # neuron indices

    def u(seed, step, neuron):
        rng = asyncsnn.rng.SampleRNG(asyncsnn.sample_seeds(seed, 1))
        return float(rng.uniform(hook.stream, step, 4)[0, neuron])

    seed = next(
        s for s in range(1000) if u(s, 0, a) >= 0.5 and u(s, 1, b) >= 0.5 and u(s, 0, b) < 0.5
    )
    for backend in ("torch", "auto"):
        r = run(net, frames([1.0]), hooks=[hook], seed=seed, training=True, backend=backend)
        assert r.spikes[0, 0].tolist() == [1.0, 1.0, 1.0]  # both spikes kept: out fires
    seed = next(s for s in range(1000) if u(s, 0, a) >= 0.5 and u(s, 1, b) < 0.5)
    for backend in ("torch", "auto"):
        r = run(net, frames([1.0]), hooks=[hook], seed=seed, training=True, backend=backend)
        assert r.spikes[0, 0].tolist() == [1.0, 1.0, 0.0]  # b's spike lost


# ------------------------------------------------------------------------------ last group
def test_an_all_inhibitory_last_group_is_applied():
    # h0 (+0.2) then h1 (-0.5) reach the non-spiking output one per forward step; the last
    # group carries only inhibition and must still be applied: 0.2 - 0.5 = -0.3
    net = fan_in_fan_out([[1.0], [1.0]], [[0.2, -0.5]], readout="membrane")
    r = run(net, frames([1.0]), scheduler="fifo", group_size=1)
    assert r.forward_steps[0, 0].item() == 2
    torch.testing.assert_close(r.membrane[0, 0, 0], torch.tensor(-0.3))
    # and with a spiking output: 0.2 stays below 0.5, then -0.5: the membrane at -0.3 carries
    # into the next timestep, where 0.6 alone would fire but -0.3 * beta + 0.6 does not
    net = asyncsnn.Network(input_shape=(2,))
    net.add_population("h", [linear([[1.0, 0.0], [1.0, 0.0]])], tau_m=TAU, threshold=0.5)
    net.add_population("out", [linear([[0.2, -0.5]])], source="h", tau_m=TAU, threshold=0.5)
    net.connect("input", "out", [linear([[0.0, 0.6]])])
    r = run(net, frames([1.0, 0.0], [0.0, 1.0]), scheduler="fifo", group_size=1)
    assert r.output_counts[0].item() == 0.0
    assert -0.3 * BETA + 0.6 < 0.5
    # without the inhibitory group the output would fire at t=1: 0.2 * beta + 0.6 > 0.5
    assert 0.2 * BETA + 0.6 > 0.5


# ------------------------------------------------------------------------------ bias


# ------------------------------------------------------------------------------ delivery order
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("scheduler", ["momentum", "fifo", "random", "layered"])
def test_a_groups_current_is_summed_in_the_senders_order(scheduler, backend, grad):
    """Three hidden neurons fire at the input delivery and form one group (F = 3); their
    weights into the output are 1, 1e8 and -1e8. In the senders' order the float32 sum is
    (1 + 1e8) - 1e8 = 0 (1e8 + 1 rounds to 1e8), so the output receives no current and is
    not even checked; any other order would give it 1. Momentum chooses the senders in the
    reverse order (their potentials are 1, 2 and 3): the sum keeps the senders' order."""
    if backend == "numba":
        pytest.importorskip("numba")
    assert torch.tensor(1e8, dtype=torch.float32) + 1 - 1e8 == 0
    for readout in ("membrane", "spikes"):
        net = fan_in_fan_out([[1.0], [2.0], [3.0]], [[1.0, 1e8, -1e8]], readout=readout)
        net.requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            r = asyncsnn.run(
                net, frames([1.0]), dt=DT, scheduler=scheduler, group_size=3, backend=backend
            )
        assert r.spikes[0, 0, :3].tolist() == [1.0, 1.0, 1.0]
        assert r.forward_steps.tolist() == [[1]]
        if readout == "membrane":
            assert r.membrane[0, 0, 0].item() == 0.0
        else:
            assert r.output_counts.tolist() == [[0.0]]


@pytest.mark.parametrize("group_size", [1, 8])
def test_bias_is_one_current_per_timestep_whatever_f(group_size):
    # three hidden spikes per timestep reach a non-spiking output with bias 0.05: the bias is
    # added once per timestep, not once per forward step
    net = fan_in_fan_out(
        [[1.0], [1.0], [1.0]], [[0.1, 0.2, 0.4]], readout="membrane", bias_o=[0.05]
    )
    r = run(net, frames([1.0], [1.0]), scheduler="fifo", group_size=group_size)
    assert r.forward_steps[:, 0].tolist() == ([3, 3] if group_size == 1 else [1, 1])
    v0 = 0.7 + 0.05
    torch.testing.assert_close(r.membrane[:, 0, 0], torch.tensor([v0, v0 * BETA + v0]))


def test_bias_alone_can_fire_a_neuron_at_the_start_of_the_timestep():
    # a hidden neuron with bias 0.6 > theta fires at the input delivery of every timestep
    net = fan_in_fan_out([[0.0]], [[1.0]], bias_h=[0.6])
    r = run(net, frames([0.0], [0.0], [0.0]))
    assert r.population_spikes("hidden1")[:, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert r.output_counts[0].item() == 3.0
    assert torch.equal(r.spikes, run(net, frames([0.0], [0.0], [0.0]), execution="layered").spikes)


# ------------------------------------------------------------------------------ groups and output
def test_forward_steps_are_groups_of_f_queued_spikes():
    # five hidden spikes: ceil(5 / F) forward steps
    net = fan_in_fan_out([[1.0]] * 5, [[0.0] * 5])
    for f, steps in [(1, 5), (2, 3), (4, 2), (5, 1), (8, 1)]:
        r = run(net, frames([1.0]), scheduler="random", group_size=f)
        assert r.forward_steps[0, 0].item() == steps, f


def test_output_spikes_are_recorded_at_once_and_take_no_group_place():
    # the output also receives the input directly (skip projection) and fires on it; its
    # spikes never queue: the two hidden spikes take the only two forward steps at F = 1
    net = fan_in_fan_out([[1.0], [1.0]], [[1.0, 0.0], [0.0, 1.0]])
    net.connect("input", "output", [linear([[1.0], [1.0]])])
    r = run(net, frames([1.0]), scheduler="fifo", group_size=1)
    assert r.forward_steps[0, 0].item() == 2
    assert r.output_counts[0].tolist() == [1.0, 1.0]  # refractory after the input delivery
    assert r.synops[0, 0].item() == 4 + 2 * 2  # input fans out to 4 neurons, hidden to 2 each


# ------------------------------------------------------------------------------ policies
def _three_race():
    # h0, h1, h2 fire on the input with pre-spike potentials 1.0, 3.0, 2.0; each drives its
    # own output neuron, which fires as soon as its hidden neuron's spike is delivered
    return fan_in_fan_out([[1.0], [3.0], [2.0]], [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])


@pytest.mark.parametrize(
    ("scheduler", "order"),
    [
        (asyncsnn.Momentum(lambda_ms=0.0), [1, 2, 0]),
        ("momentum", [1, 2, 0]),
        ("fifo", [0, 1, 2]),
        ("layered", [0, 1, 2]),
    ],
)
def test_policy_order_on_a_hand_made_race(scheduler, order):
    net = _three_race()
    r = run(net, frames([1.0]), scheduler=scheduler, group_size=1, hooks=[asyncsnn.OutputTrace()])
    counts = r.records["output_trace"]["counts"][:, 0]  # (steps + 1, outputs)
    first = [int(torch.nonzero(counts[:, k])[0]) for k in range(3)]
    assert sorted(range(3), key=lambda k: first[k]) == order


def test_fifo_delivers_the_oldest_spikes_first():
    # input fires a (step 0) and b (step 0); a's delivery fires c (step 1). F = 1: fifo
    # delivers a, b, then c; a "youngest first" policy would deliver c before b.
    net = asyncsnn.Network(input_shape=(1,))
    net.add_population("h", [linear([[1.0], [1.0], [0.0]])], tau_m=TAU, threshold=0.5)
    net.connect("h", "h", [linear([[0, 0, 0], [0, 0, 0], [1.0, 0, 0]])])
    net.add_population(
        "out", [linear([[0, 1.0, 0], [0, 0, 1.0]])], source="h", tau_m=TAU, threshold=0.5
    )
    r = run(net, frames([1.0]), scheduler="fifo", group_size=1, hooks=[asyncsnn.OutputTrace()])
    counts = r.records["output_trace"]["counts"][:, 0]
    assert counts.tolist() == [[0, 0], [0, 0], [1, 0], [1, 1]]

    class Youngest(asyncsnn.Scheduler):
        name = "youngest"
        needs_fired_at = True

        def priority(self, q):
            return q.fired_at.float()

    r = run(net, frames([1.0]), scheduler=Youngest(), group_size=1, hooks=[asyncsnn.OutputTrace()])
    counts = r.records["output_trace"]["counts"][:, 0]
    assert counts.tolist() == [[0, 0], [0, 0], [0, 1], [1, 1]]


def test_a_registered_policy_is_available_by_name():
    class HighestIndex(asyncsnn.Scheduler):
        name = "highest-index"

        def priority(self, q):
            return q.neuron.float().expand(q.pending.shape)

    asyncsnn.register_scheduler("highest-index", HighestIndex)
    assert "highest-index" in asyncsnn.available_schedulers()
    r = run(
        _three_race(),
        frames([1.0]),
        scheduler="highest-index",
        group_size=1,
        hooks=[asyncsnn.OutputTrace()],
    )
    counts = r.records["output_trace"]["counts"][:, 0]
    first = [int(torch.nonzero(counts[:, k])[0]) for k in range(3)]
    assert first == [3, 2, 1]


# ------------------------------------------------------------------------------ stop rules
def test_max_forward_steps_drops_the_rest_of_the_queue():
    net = fan_in_fan_out([[1.0]] * 5, [[1.0] * 5])
    r = run(
        net,
        frames([1.0], [1.0]),
        scheduler="fifo",
        group_size=2,
        hooks=[asyncsnn.MaxForwardSteps(1)],
    )
    assert r.forward_steps[:, 0].tolist() == [1, 1]
    assert r.undelivered[:, 0].tolist() == [3, 3]
    assert r.synops[:, 0].tolist() == [5 + 2, 5 + 2]


def test_stop_on_output_spike_with_extra_steps():
    # five hidden spikes of 0.3 each at F = 1; the output (theta 0.5) fires on the second
    net = fan_in_fan_out([[1.0]] * 5, [[0.3] * 5])
    for extra, steps in [(0, 2), (1, 3), (2, 4), (5, 5)]:
        r = run(
            net,
            frames([1.0]),
            scheduler="fifo",
            group_size=1,
            hooks=[asyncsnn.StopOnOutputSpike(extra)],
        )
        assert r.forward_steps[0, 0].item() == steps, extra
        assert r.undelivered[0, 0].item() == 5 - steps


def test_stop_rules_are_per_sample():
    net = fan_in_fan_out([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3, [[0.3] * 3 + [0.0] * 3])
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # sample 0 drives the first three, 1 the rest
    r = run(net, x, scheduler="fifo", group_size=1, hooks=[asyncsnn.StopOnOutputSpike()])
    assert r.forward_steps[0].tolist() == [2, 3]


# ------------------------------------------------------------------------------ queued input
def test_queued_input_is_layer_zero_and_takes_forward_steps():
    net = fan_in_fan_out([[1.0, 1.0], [1.0, -1.0]], [[1.0, 1.0]])
    x = frames([1.0, 1.0])
    r = run(net, x, scheduler="layered", group_size=1, prioritized_input=False)
    # layer 0 first, one event per step: in0 fires h0 and h1, in1 reaches them while they
    # are refractory; then h0 and h1 are delivered: 4 forward steps
    assert r.forward_steps[0, 0].item() == 2 + 2
    assert r.synops[0, 0].item() == 2 * 2 + 2 * 1
    with pytest.raises(ValueError, match="prioritized_input"):
        run(net, x, scheduler="momentum", prioritized_input=False)


# ------------------------------------------------------------------------------ synaptic operations
def test_synops_count_the_events_of_an_input_bin():
    # a bin of 2 events at input 0 is one delivery of 2 x its weights but 2 events to each of
    # its 3 targets; 0.5 at input 1 is one event to each of its 3; h0 (2 x 0.3) and h2
    # (0.5 x 1.2) fire, h1 (2 x 0.1 + 0.5 x 0.2) does not; each spike reaches the output
    net = fan_in_fan_out([[0.3, 0.0], [0.1, 0.2], [0.0, 1.2]], [[1.0, 1.0, 1.0]])
    x = frames([2.0, 0.5], [1.0, 0.0])
    expected = [2 * 3 + 1 * 3 + 2 * 1, 1 * 3]
    runs = {
        "layered": run(net, x, execution="layered"),
        "torch": run(net, x, scheduler="fifo", backend="torch"),
        "numba": run(net, x, scheduler="fifo", backend="numba"),
        "queued": run(net, x, scheduler="fifo", prioritized_input=False),
    }
    for name, r in runs.items():
        assert r.population_spikes("hidden1")[:, 0].tolist() == [[1, 0, 1], [0, 0, 0]], name
        assert r.output_counts[0].tolist() == [1.0], name
        assert r.synops[:, 0].tolist() == expected, name
    assert sample_metrics(runs["numba"], torch.tensor([0]))["synops"].item() == 14


# ------------------------------------------------------------------------------ neuron updates
def _update_runs(net, x, **kw) -> dict:
    runs = {
        "layered": run(net, x, execution="layered"),
        "torch": run(net, x, scheduler="fifo", backend="torch", **kw),
    }
    if "prioritized_input" not in kw:
        pytest.importorskip("numba")
        runs["numba"] = run(net, x, scheduler="fifo", backend="numba", **kw)
    return runs


def test_event_updates_count_each_forward_step_that_reaches_a_neuron():
    """input -> 2 hidden (weights 1, threshold 0.5) -> 1 output (weights 1, threshold 1.5).
    t=0 and t=2: both hidden neurons receive the input and fire. Layered: one pass, the two
    hidden neurons and the output: 3. Asynchronous, F=1: the input's delivery reaches the 2
    hidden neurons, then each hidden spike is its own forward step and reaches the output
    (1 + 1, firing at 2 > 1.5): 4. F=2: both spikes in one step, the output once: 3. t=1: no
    input, no current, no update."""
    net = fan_in_fan_out([[1.0], [1.0]], [[1.0, 1.0]], theta=[0.5, 1.5])
    x = frames([1.0], [0.0], [1.0])
    for name, r in _update_runs(net, x, group_size=1).items():
        expected = [3, 0, 3] if name == "layered" else [4, 0, 4]
        assert r.event_updates[:, 0].tolist() == expected, name
        assert r.event_updates.dtype == torch.long, name
        assert r.output_counts[0].tolist() == [2.0], name  # the same spikes
    for name, r in _update_runs(net, x, group_size=2).items():
        assert r.event_updates[:, 0].tolist() == [3, 0, 3], name


def test_a_refractory_neuron_and_a_stopped_sample_are_not_updated():
    """The output's threshold is 0.5: F=1, the first hidden spike makes it fire, and the
    second reaches a refractory neuron, which receives nothing: 2 + 1 + 0 = 3, as layered.
    With MaxForwardSteps(1) the second spike is never delivered: 2 + 1 (one undelivered)."""
    net = fan_in_fan_out([[1.0], [1.0]], [[1.0, 1.0]], theta=0.5)
    x = frames([1.0])
    for name, r in _update_runs(net, x, group_size=1).items():
        assert r.event_updates[:, 0].tolist() == [3], name
    runs = _update_runs(net, x, group_size=1, hooks=[asyncsnn.MaxForwardSteps(1)])
    for name, r in runs.items():
        assert r.event_updates[:, 0].tolist() == [3], name
        assert r.undelivered[:, 0].tolist() == [0 if name == "layered" else 1], name
    # theta 1.5 again: the output is not refractory, the second spike updates it: 4 with F=1
    net = fan_in_fan_out([[1.0], [1.0]], [[1.0, 1.0]], theta=[0.5, 1.5])
    runs = _update_runs(net, x, group_size=1, hooks=[asyncsnn.MaxForwardSteps(1)])
    assert {k: r.event_updates[0, 0].item() for k, r in runs.items()} == {
        "layered": 3,
        "torch": 3,
        "numba": 3,
    }


def test_event_updates_of_biases_and_queued_input():
    """A bias is a current at every input delivery: the output's bias 0.1 updates it each
    timestep, input or not (layered: 1 at t=1, where the hidden neurons receive nothing).
    Queued input: the input's delivery has no current (no hidden bias), the input event is a
    forward step that reaches both hidden neurons, then each hidden spike one step (F=1):
    0 + 2 + 1 + 1 = 4."""
    net = fan_in_fan_out([[1.0], [1.0]], [[1.0, 1.0]], theta=[0.5, 1.5], bias_o=[0.1])
    x = frames([1.0], [0.0])
    for name, r in _update_runs(net, x, group_size=1).items():
        expected = [3, 1] if name == "layered" else [5, 1]  # async t=0: 2 + output 1 + 1 + 1
        assert r.event_updates[:, 0].tolist() == expected, name
    net = fan_in_fan_out([[1.0], [1.0]], [[1.0, 1.0]], theta=[0.5, 1.5])
    r = _update_runs(net, frames([1.0]), group_size=1, prioritized_input=False)["torch"]
    assert r.forward_steps[:, 0].tolist() == [3]
    assert r.event_updates[:, 0].tolist() == [4]


# ------------------------------------------------------------------------------ surrogates
def test_surrogate_derivatives_match_their_formulas():
    x = torch.tensor([0.0, 0.1, -0.3, 2.0], requires_grad=True)
    asyncsnn.ArcTan(alpha=2.0)(x).sum().backward()
    # (alpha / 2) / (1 + (pi * alpha * x / 2) ** 2) with alpha = 2: 1 / (1 + (pi x) ** 2)
    expected = [1 / (1 + (math.pi * v) ** 2) for v in (0.0, 0.1, -0.3, 2.0)]
    torch.testing.assert_close(x.grad, torch.tensor(expected))
    x.grad = None
    spikes = asyncsnn.FastSigmoid(slope=25.0)(x)
    assert spikes.tolist() == [0.0, 1.0, 0.0, 1.0]  # strict: x = 0 does not spike
    spikes.sum().backward()
    torch.testing.assert_close(x.grad, 1 / (25 * x.detach().abs() + 1) ** 2)


# ------------------------------------------------------------------------ neuron variants
# docs/semantics.md, section 2: the reset by subtraction and the current-based LIF. Every
# rule is checked in layered execution and on both asynchronous backends.
TAU_V = 5e-3  # tau_m and tau_syn of these tests: beta = alpha = exp(-0.2) = 0.8187
DECAY = math.exp(-DT / TAU_V)
ENGINES = [
    {"execution": "layered"},
    {"execution": "async", "backend": "torch"},
    {"execution": "async", "backend": "numba"},
]
ENGINE_IDS = ["layered", "torch", "numba"]


def _engine(kw: dict) -> dict:
    if kw.get("backend") == "numba":
        pytest.importorskip("numba")
    return dict(kw)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_subtraction_leaves_the_residue(engine):
    """t=0: 0.9 > 0.5 fires; subtraction leaves 0.4 (a reset to zero leaves 0). t=1: 0.3
    more gives beta 0.4 + 0.3 = 0.627 > 0.5: a spike only where the residue was kept."""
    x = frames([0.9], [0.3], [0.0])
    for reset, expected in [("subtract", [1.0, 1.0, 0.0]), ("zero", [1.0, 0.0, 0.0])]:
        net = asyncsnn.Network.sequential(
            [linear([[1.0]])], tau_m=TAU_V, threshold=0.5, reset=reset
        )
        r = run(net, x, **_engine(engine))
        assert r.spikes[:, 0, 0].tolist() == expected, reset


@pytest.mark.parametrize("engine", ENGINES[1:], ids=ENGINE_IDS[1:])
def test_a_residue_above_threshold_waits_for_a_current_asynchronously(engine):
    """1.3 fires once (the neuron is refractory for the rest of the timestep although its
    residue 0.8 is above the threshold). At t=1 the residue has leaked to 0.655 > 0.5:
    layered execution checks every neuron and fires; asynchronously only a neuron that
    receives current is checked, so it fires at t=2, when 0.1 reaches it."""
    net = asyncsnn.Network.sequential(
        [linear([[1.0]])], tau_m=TAU_V, threshold=0.5, reset="subtract"
    )
    x = frames([1.3], [0.0], [0.1])
    layered = run(net, x, execution="layered")
    assert layered.spikes[:, 0, 0].tolist() == [1.0, 1.0, 0.0]
    r = run(net, x, **_engine(engine))
    assert r.spikes[:, 0, 0].tolist() == [1.0, 0.0, 1.0]


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_the_synaptic_current_decays_and_reaches_the_membrane(engine):
    """A current-based readout: one input of 0.4 at t=0. I = 0.4, 0.4 a, 0.4 a^2;
    V = 0.4, 0.4 b + 0.4 a, (0.4 b + 0.4 a) b + 0.4 a^2 (the current is never reset)."""
    net = asyncsnn.Network.sequential(
        [linear([[0.4]])], tau_m=TAU_V, tau_syn=2e-3, readout="membrane"
    )
    a, b = BETA, DECAY  # tau_syn = 2 ms, tau_m = 5 ms
    r = run(net, frames([1.0], [0.0], [0.0]), **_engine(engine))
    torch.testing.assert_close(r.current[:, 0, 0], torch.tensor([0.4, 0.4 * a, 0.4 * a * a]))
    v1 = 0.4 * b + 0.4 * a
    torch.testing.assert_close(r.membrane[:, 0, 0], torch.tensor([0.4, v1, v1 * b + 0.4 * a * a]))
    plain = asyncsnn.Network.sequential([linear([[0.4]])], tau_m=TAU_V, readout="membrane")
    assert run(plain, frames([1.0]), **_engine(engine)).current is None


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_the_carried_current_is_checked_at_the_start_of_the_timestep(engine):
    """0.4 at t=0 stays below 0.5; at t=1, with no input at all, the carried current
    a 0.4 and the leaked membrane b 0.4 give 0.655 > 0.5: the neuron fires on the current
    it carries (it is checked with the input delivery, as a bias is). Without a synaptic
    current it never fires."""
    x = frames([1.0], [0.0])
    for tau_syn, expected in [(TAU_V, [0.0, 1.0]), (None, [0.0, 0.0])]:
        net = asyncsnn.Network.sequential(
            [linear([[0.4]])], tau_m=TAU_V, threshold=0.5, tau_syn=tau_syn
        )
        r = run(net, x, **_engine(engine))
        assert r.spikes[:, 0, 0].tolist() == expected, tau_syn
        if engine["execution"] == "async":
            assert r.forward_steps[:, 0].tolist() == [0, 0]  # not a forward step


def _carried_and_inhibited() -> asyncsnn.Network:
    """input[0] -> out (0.4, current-based); input[1] -> h (1.0) -> out (-1.0)."""
    net = asyncsnn.Network(input_shape=(2,))
    net.add_population("h", [linear([[0.0, 1.0]])], tau_m=TAU_V, threshold=0.5)
    net.add_population("out", [linear([[0.4, 0.0]])], tau_m=TAU_V, threshold=0.5, tau_syn=TAU_V)
    net.connect("h", "out", [linear([[-1.0]])])
    return net


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_the_carried_current_fires_before_the_inhibition_arrives(engine):
    """t=1: h fires on the input and inhibits out by -1.0. In layered execution out sums
    everything first: b 0.4 + a 0.4 - 1.0 < 0.5, no spike. Asynchronously the carried
    current reaches out with the input, 0.655 > 0.5 fires it, and h's inhibition arrives at
    a refractory neuron (asynchrony, as with a bias)."""
    net = _carried_and_inhibited()
    r = run(net, frames([1.0, 0.0], [0.0, 1.0]), scheduler="layered", **_engine(engine))
    assert r.population_spikes("h")[:, 0].tolist() == [[0.0], [1.0]]
    expected = [[0.0], [0.0]] if engine["execution"] == "layered" else [[0.0], [1.0]]
    assert r.population_spikes("out")[:, 0].tolist() == expected


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_a_refractory_neurons_current_still_accumulates(engine):
    """h0 and h1 fire on the input; F = 1, fifo: h0's 0.6 fires out (refractory, V = 0),
    then h1's 0.3 reaches a refractory out: its membrane ignores it, its current does not
    (I = 0.9). t=1, no input: a 0.9 = 0.737 > 0.5 fires out at once; had the current
    ignored h1's spike, a 0.6 = 0.491 would not. Layered execution sums 0.9 at t=0 too."""
    net = asyncsnn.Network(input_shape=(1,))
    net.add_population("h", [linear([[1.0], [1.0]])], tau_m=TAU_V, threshold=0.5)
    net.add_population(
        "out", [linear([[0.6, 0.3]])], source="h", tau_m=TAU_V, threshold=0.5, tau_syn=TAU_V
    )
    r = run(net, frames([1.0], [0.0]), scheduler="fifo", group_size=1, **_engine(engine))
    assert r.population_spikes("out")[:, 0, 0].tolist() == [1.0, 1.0]
    if engine["execution"] == "async":
        assert r.forward_steps[:, 0].tolist() == [2, 0]  # h0 and h1 one at a time


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_gradients_through_the_subtraction_by_hand(engine):
    """One neuron, input w = 0.9 at t=0 and t=1, theta 0.5: it fires at t=0, and at t=1
    with V1 = b (w - theta) + w (subtraction) or V1 = w (reset to zero). The loss is the
    spike at t=1: dL/dw = s'(V1 - theta) (b + 1) through the kept residue, s'(V1 - theta)
    after a reset to zero (which passes no gradient; the spike at t=0 passes none either,
    as the reset's trigger is detached). s' is the arctan surrogate, alpha = 2."""

    def s(x):
        return 1.0 / (1.0 + (math.pi * x) ** 2)

    w, b = 0.9, DECAY
    cases = {"subtract": (b * (w - 0.5) + w, b + 1.0), "zero": (w, 1.0)}
    for reset, (v1, factor) in cases.items():
        lin = linear([[w]])
        net = asyncsnn.Network.sequential([lin], tau_m=TAU_V, threshold=0.5, reset=reset)
        r = asyncsnn.run(net, frames([1.0], [1.0]), dt=DT, **_engine(engine))
        assert r.spikes[:, 0, 0].tolist() == [1.0, 1.0]
        r.spikes[1].sum().backward()
        assert lin.weight.grad.item() == pytest.approx(s(v1 - 0.5) * factor, rel=1e-5), reset
