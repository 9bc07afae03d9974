"""The Triton kernel of asynchronous execution against the PyTorch reference engine.

Without a GPU the kernel runs under Triton's interpreter (``TRITON_INTERPRET=1``, set here
before Triton is first imported; device tensors are then CPU tensors) on tiny networks: its
spikes, forward steps, synaptic operations, undelivered spikes, output counts and membranes
must equal the reference's (``torch.equal``) for every built-in policy and F in {1, 3, 8},
and its gradients must equal autograd through the reference. With a CUDA device (and the
interpreter off) the GPU section compares the compiled kernel on the networks of
``tests/test_kernels.py``; ``benchmarks/gpu_check.sh`` runs it with the benchmark.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

if "triton" not in sys.modules and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton is imported

pytest.importorskip("triton", reason="Triton is not installed (pip install asyncsnn[gpu])")
pytest.importorskip("numba")

from test_kernel_gradients import (  # noqa: E402
    assert_same_run_and_close_gradients,
    gradients,
)
from test_kernels import (  # noqa: E402
    NETWORKS,
    POLICIES,
    VARIANTS,
    _init,
    _lin,
    _spikes_in,
    assert_identical,
    make,
    run,
)
from torch import nn  # noqa: E402

import asyncsnn  # noqa: E402
from asyncsnn import kernels  # noqa: E402
from asyncsnn.kernels import triton_async, triton_grad, triton_phases  # noqa: E402
from asyncsnn.rng import SampleRNG, Stream, sample_seeds  # noqa: E402

INTERPRETED = triton_async.interpreted()
interpreter = pytest.mark.skipif(
    not INTERPRETED,
    reason="Triton's interpreter is off (a CUDA device is present, or Triton was imported "
    "before TRITON_INTERPRET=1 was set): run with TRITON_INTERPRET=1",
)
gpu = pytest.mark.skipif(
    INTERPRETED or not torch.cuda.is_available(),
    reason="needs a CUDA device with the Triton interpreter off",
)


# ------------------------------------------------------------------------ tiny networks
def tiny_fc(gen, bias=False, readout="spikes", **neurons):
    layers = [_lin(gen, 8, 8, bias), _lin(gen, 8, 6, bias), _lin(gen, 6, 3, bias)]
    net = asyncsnn.Network.sequential(layers, tau_m=2e-3, threshold=0.5, readout=readout, **neurons)
    return net, _spikes_in(gen, (3, 1, 8), density=0.35, counts=True)


def tiny_conv(gen, readout="spikes", **neurons):
    modules = [
        _init(gen, nn.Conv2d(1, 2, 3, padding=1, bias=False), 0.2, 0.4),
        _init(gen, nn.Conv2d(2, 1, 3, padding=1, bias=False), 0.05, 0.3),
        asyncsnn.SumPool2d(2),  # one sender reaches one target through several entries
        nn.Flatten(),
        _init(gen, nn.Linear(4, 3, bias=False), 0.1, 0.4),
    ]
    net = asyncsnn.Network.sequential(
        modules, input_shape=(1, 4, 4), tau_m=2e-3, threshold=0.5, readout=readout, **neurons
    )
    return net, _spikes_in(gen, (2, 1, 1, 4, 4), density=0.4)


def tiny_wide(gen):
    """About 90 neurons fire at the input: more queued spikes than the interpreter's
    register block (64), so the group is chosen in rounds over the live list."""
    layers = [_lin(gen, 8, 96, mean=0.35, std=0.3), _lin(gen, 96, 4, mean=0.0, std=0.1)]
    net = asyncsnn.Network.sequential(layers, tau_m=2e-3, threshold=0.5, readout="membrane")
    return net, _spikes_in(gen, (2, 1, 8), density=0.6)


def tiny_recurrent(gen):
    net = asyncsnn.Network(input_shape=(6,))
    net.add_population("h1", [_lin(gen, 6, 8, True)], tau_m=2e-3, threshold=0.5)
    net.add_population("output", [_lin(gen, 8, 3)], source="h1", tau_m=2e-3, threshold=0.5)
    net.connect("h1", "h1", [_lin(gen, 8, 8, mean=0.0, std=0.3)])
    net.connect("output", "h1", [_lin(gen, 3, 8, mean=-0.1, std=0.3)])
    net.connect("input", "output", [_lin(gen, 6, 3)])
    return net, _spikes_in(gen, (3, 2, 6))


TINY = {
    "fc": tiny_fc,
    "conv": tiny_conv,
    "fc_bias_membrane_cuba_subtract": lambda g: tiny_fc(
        g, bias=True, readout="membrane", tau_syn=3e-3, reset="subtract"
    ),
    "conv_cuba": lambda g: tiny_conv(g, tau_syn=3e-3),
    "recurrent": tiny_recurrent,
    "wide": tiny_wide,
}


def tiny(name: str, seed: int = 0):
    return TINY[name](torch.Generator().manual_seed(seed))


def both(net, x, **kw):
    """The reference's and the Triton kernel's runs of one call."""
    return run(net, x, backend="torch", **kw), run(net, x, backend="triton", **kw)


# ------------------------------------------------------------------------ the interpreter
@interpreter
@pytest.mark.parametrize("group_size", [1, 3, 8])
@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("name", ["fc", "conv"])
def test_triton_equals_the_reference(name, policy, group_size):
    net, x = tiny(name)
    ref, fast = both(net, x, scheduler=POLICIES[policy], group_size=group_size, seed=3)
    assert_identical(ref, fast)
    assert ref.spikes.sum() > 0 and ref.forward_steps.sum() > 0  # something to compare
    if group_size == 8:  # several spikes per group: the order of a group's sum matters
        queued = ref.spikes[..., net.tables().has_outgoing[net.n_input :]].sum(2)
        assert (queued > ref.forward_steps).any()


@interpreter
@pytest.mark.parametrize("policy", ["momentum_noisy", "fifo", "random"])
@pytest.mark.parametrize("name", ["fc_bias_membrane_cuba_subtract", "conv_cuba", "recurrent"])
def test_triton_equals_the_reference_on_variants_and_recurrence(name, policy):
    net, x = tiny(name)
    ref, fast = both(net, x, scheduler=POLICIES[policy], group_size=3, seed=1)
    assert_identical(ref, fast)
    assert ref.spikes.sum() > 0


@interpreter
@pytest.mark.parametrize("policy", ["momentum", "random"])
def test_a_long_queue_is_chosen_in_rounds(policy):
    net, x = tiny("wide")
    ref, fast = both(net, x, scheduler=POLICIES[policy], group_size=3)
    assert ref.spikes[0, 0].sum() > 64  # more queued than the register block
    assert_identical(ref, fast)


@interpreter
def test_the_sorting_network_path(monkeypatch):
    """The compiled kernel sorts with ``tl.sort`` where the interpreter ranks by counting:
    the sorting paths (the queue's cut, and the order of a group's block above 32), forced
    here, choose the same groups."""

    class Sorting(triton_async.Blocks):
        def __init__(self, *args):
            super().__init__(*args)
            self.rank, self.QB, self.GB = False, 16, 64  # a group above 32: tl.sort too

    monkeypatch.setattr(triton_async, "Blocks", Sorting)
    net, x = tiny("fc")
    x = x[:2, :1]
    ref, fast = both(net, x, scheduler="momentum", group_size=2)
    assert ref.forward_steps.sum() > 2
    assert_identical(ref, fast)


@interpreter
@pytest.mark.parametrize(
    "case",
    [
        {"refractory_dropout": 0.5, "max_queued_per_neuron": 8, "training": True},
        {
            "training": True,
            "hooks": [asyncsnn.InputSpikeDropout(0.3), asyncsnn.NetworkSpikeDropout(0.3)],
        },
        {"hooks": [asyncsnn.MaxForwardSteps(2)]},
        {"hooks": [asyncsnn.StopOnOutputSpike(extra_steps=1)]},
    ],
    ids=["refractory", "spike_dropouts", "max_steps", "stop_on_output"],
)
def test_dropouts_and_stop_rules(case):
    net, x = tiny("recurrent")
    kw = {"scheduler": "random", "group_size": 2, **case}
    ref, fast = both(net, x, **kw)
    plain = run(net, x, backend="torch", scheduler="random", group_size=2)
    assert not torch.equal(ref.spikes, plain.spikes) or ref.undelivered.sum() > 0  # it acted
    assert_identical(ref, fast)


@interpreter
@pytest.mark.parametrize("stop", [False, True], ids=["plain", "stop_on_output"])
@pytest.mark.parametrize("name", ["fc", "recurrent", "fc_bias_membrane_cuba_subtract"])
def test_monitors_record_what_the_reference_records(name, stop):
    """``OutputTrace`` and ``SpikeEvents`` on the Triton kernel: the reference's records, read
    off each spike's forward step (``asyncsnn.hooks.monitor_records``)."""
    net, x = tiny(name)
    hooks = [asyncsnn.OutputTrace(), asyncsnn.SpikeEvents()]
    if stop:
        hooks.append(asyncsnn.StopOnOutputSpike(extra_steps=1))
    ref, fast = both(net, x, scheduler="random", group_size=2, seed=4, hooks=hooks)
    assert set(fast.records) == {"output_trace", "spike_events"}
    assert_identical(ref, fast)
    assert len(fast.records["spike_events"]["neuron"]) == int(fast.spikes.sum()) > 0


@interpreter
def test_a_sample_alone_equals_its_slice_of_a_batch():
    net, x = tiny("fc")
    x = torch.cat([x, x.flip(1)], 1)
    seeds = sample_seeds(11, x.shape[1])
    kw = {"scheduler": "random", "group_size": 3, "backend": "triton"}
    batch = run(net, x, seed=seeds, **kw)
    for b in range(x.shape[1]):
        alone = run(net, x[:, b : b + 1], seed=seeds[b : b + 1], **kw)
        assert torch.equal(alone.spikes, batch.spikes[:, b : b + 1]), b


@interpreter
def test_a_full_queue_is_an_error_as_in_the_reference():
    net, x = tiny("recurrent")
    kw = {"refractory_dropout": 0.9, "max_queued_per_neuron": 1, "training": True, "group_size": 1}
    for backend in ("torch", "triton"):
        with pytest.raises(RuntimeError, match="max_queued_per_neuron=1"):
            run(net, x[:1] * 3, backend=backend, **kw)


@interpreter
def test_the_kernel_reproduces_the_counter_based_rng():
    import triton
    import triton.language as tl

    @triton.jit
    def draw(out_ptr, seeds_ptr, stream_hash, counter, size, BLOCK: tl.constexpr):
        b = tl.program_id(0)
        mixed = triton_phases.hash32(tl.cast(tl.load(seeds_ptr + b), tl.uint32) ^ 0x5BD1E995)
        key = triton_phases.counter_key(stream_hash, counter)
        i = tl.arange(0, BLOCK)
        u = triton_phases.uniform(mixed, key, i)
        tl.store(out_ptr + b * size + i, u, mask=i < size)

    for seed in [0, 7, torch.tensor([5, 2**32 - 1, 0, 123456789])]:
        seeds = sample_seeds(seed, 4)
        for stream, counter, size in [(7, 1, 50), (7, (3 << 16) + 2, 300), (13, 11, 77)]:
            got = torch.zeros(4, size)
            h = triton_async.stream_hash(stream)
            draw[(4,)](got, seeds, h, counter, size, BLOCK=512)
            assert torch.equal(got, SampleRNG(seeds).uniform(stream, counter, size))


def test_the_policy_codes_are_the_numba_kernels():
    from asyncsnn.kernels import queue

    for name in ("RANDOM", "MOMENTUM_NOISE", "MOMENTUM", "FIFO_CODE", "LAYERED"):
        assert getattr(triton_phases, name).value == getattr(queue, name), name
    assert int(Stream.RANDOM_POLICY) == 7  # the stream hashes are the rng's


def test_waves_keep_table_order_and_distinct_targets():
    """A queue row's entries regrouped into waves: the same entries, each wave's targets
    distinct, and a target's entries from one sender still in table order."""
    net, _ = make("conv")  # conv + sum pooling: several entries per (sender, target)
    st = triton_async.structure(net, torch.device("cpu"))
    numba_st = kernels.plan._structure(net)
    perm = st["perm"].numpy()
    starts = numba_st["ent_start"]
    dst = st["ent_dst"].numpy()
    row_wave, wave_start = st["row_wave"].numpy(), st["wave_start"].numpy()
    assert sorted(perm.tolist()) == list(range(len(perm)))
    assert (dst == numba_st["ent_dst"][perm]).all()
    several = 0
    for row in range(len(starts) - 1):
        lo, hi = wave_start[row_wave[row]], wave_start[row_wave[row + 1]]
        assert lo == starts[row] and hi == starts[row + 1]  # the row's entries, regrouped
        for w in range(row_wave[row], row_wave[row + 1]):
            targets = dst[wave_start[w] : wave_start[w + 1]]
            assert len(set(targets.tolist())) == len(targets)
        order = perm[lo:hi]
        for j in set(dst[lo:hi].tolist()):
            mine = order[dst[lo:hi] == j]
            assert (mine[1:] > mine[:-1]).all()  # table order across waves
        several += row_wave[row + 1] - row_wave[row] > 1
    assert several > 0


# ------------------------------------------------------------------------ gradients
@interpreter
@pytest.mark.parametrize(
    ("name", "policy", "setting"),
    [
        ("fc", "fifo", {}),
        ("fc", "random", {}),
        ("fc", "momentum_noisy", {"refractory_dropout": 0.5, "max_queued_per_neuron": 8}),
        ("conv", "momentum", {}),
        ("fc_bias_membrane_cuba_subtract", "momentum_noisy", {}),
        ("conv_cuba", "fifo", {}),
        (
            "recurrent",
            "random",
            {
                "refractory_dropout": 0.5,
                "max_queued_per_neuron": 8,
                "hooks": [
                    asyncsnn.InputSpikeDropout(0.25),
                    asyncsnn.NetworkSpikeDropout(0.1),
                    asyncsnn.MaxForwardSteps(3),
                ],
            },
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else _setting_id(v),
)
def test_gradients_equal_autograd_through_the_reference(name, policy, setting):
    net, x = tiny(name)
    net.train()
    kw = {"scheduler": POLICIES[policy], "group_size": 3, **setting}
    ref = gradients(net, x, "torch", **kw)
    assert_same_run_and_close_gradients(ref, gradients(net, x, "triton", **kw))


def _setting_id(setting: dict) -> str:
    return "plain" if not setting else "dropouts"


@interpreter
@pytest.mark.parametrize(
    ("setting", "reason"),
    [
        ({"silent_gradients": True}, "silent_gradients"),
        ({"surrogate_checks": "last"}, "surrogate_checks='last'"),
    ],
)
def test_the_credit_options_run_on_the_reference(setting, reason):
    """Silent gradients and the accounting of repeated checks (docs/semantics.md, 8.7 and
    8.8) are not in the Triton kernel's backward pass: ``backend="triton"`` says so,
    ``auto`` runs the reference (on CUDA tensors; here the numba kernel, on CPU ones)."""
    net, x = tiny("fc")
    with pytest.raises(ValueError, match=reason):
        asyncsnn.run(net, x, dt=1e-3, backend="triton", **setting)
    with torch.no_grad():  # inference: the options do not apply, the kernel runs
        asyncsnn.run(net, x, dt=1e-3, backend="triton", **setting)


@interpreter
@pytest.mark.parametrize("surrogate", [asyncsnn.ArcTan(alpha=3.0), asyncsnn.FastSigmoid(10.0)])
def test_surrogates_and_input_gradients(surrogate):
    net, x = tiny("fc_bias_membrane_cuba_subtract")
    x = x.clone().requires_grad_(True)
    kw = {"scheduler": "momentum", "surrogate": surrogate, "hooks": [asyncsnn.StopOnOutputSpike()]}
    assert_same_run_and_close_gradients(
        gradients(net, x, "torch", **kw), gradients(net, x, "triton", **kw)
    )


@interpreter
def test_a_second_backward_pass_is_a_clear_error():
    net, x = tiny("fc")
    r = asyncsnn.run(net, x, dt=1e-3, backend="triton")
    loss = r.output_counts.sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="can be differentiated once"):
        loss.backward()


# ------------------------------------------------------------------------ dispatch
@interpreter
def test_backend_triton_runs_the_kernel_and_auto_on_the_cpu_does_not(monkeypatch):
    calls = []
    original = triton_async.run_async_triton

    def counted(*args, **kw):
        calls.append(1)
        return original(*args, **kw)

    monkeypatch.setattr(triton_async, "run_async_triton", counted)
    net, x = tiny("fc")
    run(net, x, scheduler="fifo")  # CPU tensors: the numba kernel
    assert not calls
    assert_identical(run(net, x, backend="triton"), run(net, x, backend="numba"))
    assert calls == [1]


@interpreter
def test_gradients_take_the_triton_backward_pass():
    net, x = tiny("fc")
    settings = asyncsnn.RunSettings(dt=1e-3, backend="triton")
    options = asyncsnn.options.resolve(net, x, settings)  # the weights require gradients
    assert kernels.engine_for(net, x, options) is triton_grad.run_async_triton_grad
    with torch.no_grad():
        options = asyncsnn.options.resolve(net, x, settings)
    assert kernels.engine_for(net, x, options) is triton_async.run_async_triton


def _triton_call(kw: dict):
    kw = dict(kw)
    net, x = tiny("fc")
    dtype = kw.pop("dtype", None)
    if dtype is not None:
        net, x = net.to(dtype), x.to(dtype)
    grad = kw.pop("grad", False)
    with torch.set_grad_enabled(grad):
        return asyncsnn.run(net, x, dt=1e-3, backend="triton", **kw)


REFUSED = {
    "float64": ({"dtype": torch.float64}, "float64"),
    "queued input": ({"prioritized_input": False, "scheduler": "fifo"}, "queued"),
    "monitor with refractory dropout": (
        {"hooks": [asyncsnn.OutputTrace()], "refractory_dropout": 0.5, "training": True},
        "OutputTrace",
    ),
    "group above the limit": ({"group_size": 5}, "above the kernel's 4"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_backend_triton_says_why_it_cannot_run(case, monkeypatch):
    from asyncsnn.kernels import triton_limits

    if case == "group above the limit":
        monkeypatch.setattr(triton_limits, "MAX_GROUP", 4)
    kw, reason = REFUSED[case]
    if not INTERPRETED:  # CPU tensors without the interpreter: the device is the reason
        kw, reason = {}, "CUDA tensors"
    with pytest.raises(ValueError, match=f"backend='triton' cannot run this call: .*{reason}"):
        _triton_call(kw)


def test_without_triton_backend_triton_says_so(monkeypatch):
    monkeypatch.setattr(kernels, "triton_available", lambda: False)
    net, x = tiny("fc")
    if INTERPRETED:
        with pytest.raises(ValueError, match="Triton is not installed"):
            run(net, x, backend="triton")
    assert_identical(run(net, x), run(net, x, backend="torch"))  # auto on the CPU: numba


def test_layered_execution_is_refused():
    net, x = tiny("fc")
    with pytest.raises(ValueError, match="asynchronous execution only"):
        run(net, x, execution="layered", backend="triton")


# ------------------------------------------------------------------------ the GPU
def _cuda(name: str):
    net, x = make(name)
    return net.cuda(), x.cuda()


def _on_cpu(r: asyncsnn.RunResult) -> dict:
    fields = ("spikes", "forward_steps", "synops", "undelivered", "output_counts", "membrane")
    return {f: None if getattr(r, f) is None else getattr(r, f).detach().cpu() for f in fields}


def _same_as_the_numba_kernel(name, **kw):
    """The compiled kernel on the GPU against the numba kernel on the CPU, both reading the
    same input and bias current (computed on the CPU: cuBLAS may round a product
    differently from the CPU's, and the reference's scatter_add adds in any order on a GPU)."""
    from asyncsnn.kernels import cpu
    from asyncsnn.kernels.plan import Plan

    net, x = make(name)
    options = asyncsnn.options.resolve(net, x, asyncsnn.RunSettings(dt=1e-3, **kw))
    with torch.no_grad():
        plan = Plan(net, x, options)
        current = plan.input_current()
        want, _, _ = cpu.simulate(plan, current, plan.entry_weights().numpy(), record=False)
        net_gpu, x_gpu = net.cuda(), x.cuda()
        options = asyncsnn.options.resolve(net_gpu, x_gpu, asyncsnn.RunSettings(dt=1e-3, **kw))
        gplan = Plan(net_gpu, x_gpu, options)
        gpu_run = triton_async.TritonRun(gplan)
        got = gpu_run.simulate(current.cuda(), gpu_run.entry_weights(), record=False)
    for f in ("spikes", "forward_steps", "net_synops", "undelivered", "membrane", "current"):
        a, b = want[f], got[f].cpu().to(want[f].dtype)
        assert torch.equal(a, b), f"{name}: {f} differs in {int((a != b).sum())} places"
    assert want["spikes"].sum() > 0


@gpu
@pytest.mark.parametrize("group_size", [1, 3, 8])
@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("name", list(NETWORKS))
def test_gpu_kernel_equals_the_numba_kernel(name, policy, group_size):
    _same_as_the_numba_kernel(name, scheduler=POLICIES[policy], group_size=group_size, seed=3)


@gpu
@pytest.mark.parametrize("policy", ["momentum_noisy", "fifo", "random"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_gpu_kernel_equals_the_numba_kernel_on_the_variants(name, policy):
    _same_as_the_numba_kernel(name, scheduler=POLICIES[policy], group_size=8, seed=1)


@gpu
@pytest.mark.parametrize("name", ["fc", "recurrent", "conv"])
def test_gpu_dropouts_and_stop_rules(name):
    hooks = [
        asyncsnn.InputSpikeDropout(0.25),
        asyncsnn.NetworkSpikeDropout(0.2),
        asyncsnn.MaxForwardSteps(6),
    ]
    kw = {"refractory_dropout": 0.5, "max_queued_per_neuron": 16, "training": True}
    _same_as_the_numba_kernel(name, scheduler="random", group_size=3, hooks=hooks, **kw)


@gpu
def test_gpu_auto_runs_the_triton_kernel_with_the_reference_as_fallback(monkeypatch):
    calls = []
    original = triton_async.run_async_triton
    monkeypatch.setattr(
        triton_async, "run_async_triton", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    net, x = _cuda("fc")
    with torch.no_grad():
        fast = asyncsnn.run(net, x, dt=1e-3, scheduler="fifo", group_size=1)
        assert calls == [1]
        ref = asyncsnn.run(net, x, dt=1e-3, scheduler="fifo", group_size=1, backend="torch")
        asyncsnn.run(net, x, dt=1e-3, hooks=[asyncsnn.OutputTrace()])  # the reference
    assert calls == [1]
    for f, v in _on_cpu(ref).items():  # F = 1: no sum over a group, any order is exact
        if v is not None and f != "synops":
            assert torch.equal(v, _on_cpu(fast)[f]), f


def _dyadic(net):
    """Weights and biases rounded to multiples of 2**-6: every sum of the input current is
    then exact, so cuBLAS and the CPU compute the same current whatever their order."""
    with torch.no_grad():
        for p in net.parameters():
            p.copy_((p * 64).round() / 64)
    return net


def _gpu_gradients(net, x, **kw):
    net.zero_grad(set_to_none=True)
    r = asyncsnn.run(net, x, dt=1e-3, seed=5, **kw)
    score = r.output_counts if r.membrane is None else r.membrane.sum(0)
    gen = torch.Generator().manual_seed(1)
    loss = (score * torch.randn(score.shape, generator=gen).to(x.device)).sum()
    loss = loss + 0.01 * (r.spikes * torch.rand(r.spikes.shape, generator=gen).to(x.device)).sum()
    loss.backward()
    return r, {k: p.grad.detach().cpu() for k, p in net.named_parameters()}


@gpu
@pytest.mark.parametrize(
    ("policy", "silent"),
    [("momentum_noisy", False), ("fifo", False), ("random", False)],
)
@pytest.mark.parametrize("name", ["fc", "conv_bias_membrane", "recurrent", "fc_cuba"])
def test_gpu_gradients_equal_the_numba_kernels(name, policy, silent):
    """The GPU's unlayered backprop against the CPU kernel's (itself equal to autograd
    through the reference): the same spikes, close gradients."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    results = []
    for device in ("cpu", "cuda"):
        net, x = make(name)
        net = _dyadic(net).train().to(device)
        kw = {"scheduler": POLICIES[policy], "group_size": 3, "refractory_dropout": 0.3}
        kw["silent_gradients"] = silent
        results.append(_gpu_gradients(net, x.to(device), **kw))
    (ra, ga), (rb, gb) = results
    assert torch.equal(ra.spikes.detach(), rb.spikes.detach().cpu())
    assert any(bool(g.any()) for g in ga.values())
    for k in ga:
        scale = float(ga[k].abs().max())
        torch.testing.assert_close(gb[k], ga[k], rtol=1e-4, atol=1e-5 * scale, msg=k)


# ------------------------------------------------------------------------ the GPU benchmark
def test_the_gpu_benchmark_plan():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.suite import GPU_BATCHES, plan_gpu

    rows = plan_gpu(False, ["fc", "conv", "dvs"])
    assert {r.device for r in rows} == {"cuda"}
    assert {r.network for r in rows} == {"fc", "conv"}
    for network in ("fc", "conv"):
        for mode in ("inference", "train"):
            mine = [r for r in rows if r.network == network and r.mode == mode]
            assert {r.batch for r in mine} == set(GPU_BATCHES) == {32, 256, 1024}
            for batch in GPU_BATCHES:
                engines = {(r.engine, r.backend) for r in mine if r.batch == batch}
                assert {("asyncsnn-async", "triton"), ("snntorch", None)} <= engines
    triton_inference = [r for r in rows if r.backend == "triton" and r.mode == "inference"]
    assert {r.policy for r in triton_inference} == {"random", "momentum", "fifo"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_the_gpu_benchmark_says_it_needs_a_gpu():
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "benchmarks", "--device", "cuda", "--networks", "fc"]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--device cuda needs a CUDA GPU" in proc.stderr
    assert proc.stdout == ""


def test_the_kernels_compile_for_a_gpu(tmp_path):
    """The interpreter does not check the compiled language (types of loop-carried values,
    pointer arguments): one forward and one backward kernel compiled for sm_90, no GPU."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # compile, do not take a cached kernel
    cmd = [sys.executable, "benchmarks/triton_compile.py", "--first"]
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "forward  compiled" in proc.stdout and "backward compiled" in proc.stdout
    assert "all compiled for sm_90" in proc.stdout
