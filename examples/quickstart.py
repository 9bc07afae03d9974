"""A first look at asyncsnn: one network, run layered and asynchronously.

Runs in a few seconds on a CPU and prints, for each execution, the spikes, the synaptic
operations and the forward steps per timestep that the network used.
"""

from __future__ import annotations

import torch
from torch import nn

import asyncsnn


def main() -> None:
    torch.manual_seed(0)
    layers = [
        nn.Linear(200, 64, bias=False),
        nn.Linear(64, 64, bias=False),
        nn.Linear(64, 10, bias=False),
    ]
    for layer in layers:
        nn.init.xavier_uniform_(layer.weight)
    net = asyncsnn.Network.sequential(layers, tau_m=20e-3, threshold=0.3)
    x = (torch.rand(30, 16, 200) < 0.05).float()  # 30 timesteps, 16 samples, 5% activity

    print(f"network: {net.extra_repr()}")
    print(f"{'execution':<28}{'spikes/sample':>15}{'SynOps/sample':>15}{'steps/timestep':>16}")
    runs = [("layered", {"execution": "layered"})] + [
        (f"async {p}, F=8", {"execution": "async", "scheduler": p, "group_size": 8})
        for p in ("random", "momentum", "fifo", "layered")
    ]
    # with F >= the widest layer, the layered policy is layered execution, spike for spike
    runs.append(("async layered, F=64", {"scheduler": "layered", "group_size": 64}))
    with torch.no_grad():
        reference = None
        for name, options in runs:
            r = asyncsnn.run(net, x, dt=1e-3, seed=0, **options)
            if reference is None:
                reference = r
            print(
                f"{name:<28}{r.spike_count.mean():>15.1f}{r.synops.sum(0).mean():>15.0f}"
                f"{r.forward_steps.float().mean():>16.2f}"
            )
        same = torch.equal(r.spikes, reference.spikes)
    print(f"async with the layered policy reproduces layered execution: {same}")


if __name__ == "__main__":
    main()
