"""The same runs on a GPU as on the CPU (skipped where no CUDA device is present)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import asyncsnn

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

POLICIES = ["random", "momentum", asyncsnn.Momentum(lambda_ms=0.0), "fifo", "layered"]


def _nets():
    torch.manual_seed(0)
    fc = asyncsnn.Network.sequential(
        [nn.Linear(60, 40), nn.Linear(40, 30), nn.Linear(30, 10)], tau_m=5e-3, threshold=0.4
    )
    conv = asyncsnn.Network.sequential(
        [
            nn.Conv2d(2, 6, 3, stride=2),
            asyncsnn.SumPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.Flatten(),
            nn.Linear(8 * 4 * 4, 10),
        ],
        input_shape=(2, 18, 18),
        tau_m=5e-3,
        threshold=0.4,
    )
    return [(fc, (60,)), (conv, (2, 18, 18))]


@pytest.mark.parametrize("policy", POLICIES, ids=str)
def test_cuda_matches_cpu(policy):
    for net, shape in _nets():
        net = net.double()
        x = (torch.rand(12, 6, *shape) < 0.2).double()
        options = {
            "dt": 1e-3,
            "scheduler": policy,
            "group_size": 4,
            "seed": 3,
            "hooks": [asyncsnn.MaxForwardSteps(6)],
        }
        with torch.no_grad():
            cpu = asyncsnn.run(net, x, **options)
            net_gpu = net.to("cuda")
            gpu = asyncsnn.run(net_gpu, x.cuda(), **options)
            net.to("cpu")
        assert torch.equal(cpu.spikes, gpu.spikes.cpu())
        assert torch.equal(cpu.forward_steps, gpu.forward_steps.cpu())
        torch.testing.assert_close(cpu.synops, gpu.synops.cpu())


@pytest.mark.parametrize("execution", ["async", "layered"])
def test_cuda_gradients_match_cpu(execution):
    net, shape = _nets()[0]
    net = net.double()
    x = (torch.rand(8, 4, *shape) < 0.3).double()
    grads = []
    for device in ("cpu", "cuda"):
        net.to(device)
        net.zero_grad()
        r = asyncsnn.run(net, x.to(device), dt=1e-3, execution=execution, scheduler="fifo")
        r.output_counts.sum().backward()
        grads.append([p.grad.detach().cpu() for p in net.parameters()])
    net.to("cpu")
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_cuda_recompute_gives_the_same_gradients():
    """Unlayered backprop on the GPU with a timestep recomputed in the backward pass."""
    fc, shape = _nets()[0]
    net = fc.cuda()
    x = (torch.rand(12, 6, *shape, device="cuda") < 0.2).float()
    grads = []
    for recompute in (False, True):
        net.zero_grad(set_to_none=True)
        r = asyncsnn.run(net, x, dt=1e-3, scheduler="momentum", seed=1, recompute=recompute)
        (r.output_counts * torch.arange(10.0, device="cuda")).sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("training", ["layered", "unlayered"])
def test_training_on_cuda_gives_the_weights_of_the_cpu(tmp_path, training):
    """``TrainConfig(device="cuda")``: one epoch on the GPU ends at the CPU's weights (float
    rounding apart; the GPU runs the PyTorch engine, the CPU the compiled kernel), and the
    checkpoint loads on the CPU."""
    from asyncsnn.training import TrainConfig, Trainer, load_run

    common = dict(
        limit_train=80, limit_test=20, epochs=1, hidden=(16,), timesteps=6, batch_size=16,
        training=training, refractory_dropout=0.0,
    )  # fmt: skip
    nets = []
    for device in ("cpu", "cuda"):
        cfg = TrainConfig(device=device, **common)
        Trainer(cfg, tmp_path / device, quiet=True).fit()
        net, _, _ = load_run(tmp_path / device, "last")
        assert next(net.parameters()).device.type == "cpu"
        nets.append(net)
    for (name, a), (_, b) in zip(
        nets[0].state_dict().items(), nets[1].state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
