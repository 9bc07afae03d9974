"""What the benchmark runs: real event data, the networks, and their snnTorch twins.

Every network is LIF throughout (tau_m 1 ms, threshold 0.3, reset to zero, no biases,
xavier-uniform weights; every layer fires),
initialised from a fixed seed, so that a worker process for asyncsnn and one for snnTorch
build the very same weights. The snnTorch twin wraps the *same* ``nn.Linear`` / ``nn.Conv2d``
modules in ``snntorch.Leaky(beta=exp(-dt/tau_m), threshold=0.3, reset_mechanism="zero")``
neurons and is stepped timestep by timestep, layer by layer, the way snnTorch users write it;
layered execution in asyncsnn gives the same spikes (``tests/test_oracle_snntorch.py``).

Networks:

- ``fc``: 2312-128-128-10 on N-MNIST (30 bins of 10 ms), xavier-uniform weights;
- ``conv``: Conv(2->8,k3,s2) - Conv(8->16,k3,s2,p1) - Conv(16->32,k3,s2,p1) - Linear(512->10)
  on the same 2x34x34 N-MNIST frames;
- ``dvs``: Conv(2->8,k3,s2,p1) - Conv(8->16,k3,s2,p1) - Conv(16->32,k3,s2,p1) -
  Conv(32->32,k3,s2,p1) - Linear(2048->11) on the 128x128 DVS clips, 20 ms bins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

NETWORKS = ("fc", "conv", "dvs")
TAU_M = 1e-3  # seconds
THRESHOLD = 0.3
GROUP_SIZE = 8  # F
NMNIST_DT, NMNIST_TIMESTEPS = 10e-3, 30
DVS_DT, DVS_TIMESTEPS = 20e-3, 72  # the clips last about 1.45 s
DVS_SENSOR = (128, 128, 2)
N_NMNIST_TEST = 100  # test samples in the shared subset


@dataclass
class Workload:
    """A network's layers (grouped as snnTorch stages), its input and its bin length.

    ``stages[i]`` is everything between population ``i - 1`` (or the input) and population
    ``i``; concatenated, they are the module list given to ``Network.sequential``.
    """

    name: str
    stages: list[nn.Sequential]
    input_shape: tuple[int, ...]
    dt: float
    timesteps: int

    @property
    def modules(self) -> list[nn.Module]:
        return [m for stage in self.stages for m in stage]


def _xavier(*modules: nn.Module) -> None:
    for m in modules:
        nn.init.xavier_uniform_(m.weight)


def build(name: str, seed: int = 0) -> Workload:
    """The layers of network ``name`` (one of :data:`NETWORKS`), initialised from ``seed``."""
    torch.manual_seed(seed)
    if name == "fc":
        fcs = [
            nn.Linear(2312, 128, bias=False),
            nn.Linear(128, 128, bias=False),
            nn.Linear(128, 10, bias=False),
        ]
        _xavier(*fcs)
        stages = [nn.Sequential(m) for m in fcs]
        return Workload(name, stages, (2312,), NMNIST_DT, NMNIST_TIMESTEPS)
    if name == "conv":
        convs = [
            nn.Conv2d(2, 8, 3, stride=2, bias=False),  # 34 -> 16
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),  # 16 -> 8
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),  # 8 -> 4
        ]
        fc = nn.Linear(512, 10, bias=False)
        _xavier(*convs, fc)
        stages = [
            nn.Sequential(convs[0]),
            nn.Sequential(convs[1]),
            nn.Sequential(convs[2], nn.Flatten()),
            nn.Sequential(fc),
        ]
        return Workload(name, stages, (2, 34, 34), NMNIST_DT, NMNIST_TIMESTEPS)
    if name == "dvs":
        widths = [2, 8, 16, 32, 32]  # 128 -> 64 -> 32 -> 16 -> 8
        convs = [
            nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        ]
        fc = nn.Linear(32 * 8 * 8, 11, bias=False)
        _xavier(*convs, fc)
        stages = [nn.Sequential(c) for c in convs[:-1]]
        stages += [nn.Sequential(convs[-1], nn.Flatten()), nn.Sequential(fc)]
        return Workload(name, stages, (2, 128, 128), DVS_DT, DVS_TIMESTEPS)
    raise ValueError(f"unknown network {name!r}; choose from {NETWORKS}")


def asyncsnn_network(work: Workload):
    """The asyncsnn ``Network`` around the workload's modules."""
    import asyncsnn

    return asyncsnn.Network.sequential(
        work.modules, input_shape=work.input_shape, tau_m=TAU_M, threshold=THRESHOLD
    )


# ------------------------------------------------------------------------------ data
def nmnist_indices(n: int) -> list[int]:
    """``n`` test samples spread over the subset (it is sorted by digit)."""
    n = min(n, N_NMNIST_TEST)
    return [i * N_NMNIST_TEST // n for i in range(n)]


def nmnist(data: Path, n: int, flat: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps, n, 2, 34, 34) event counts of real N-MNIST test samples, and the labels.

    ``flat``: frames flattened to 2312 inputs.
    """
    from asyncsnn.data import load_dataset

    test = load_dataset(
        "nmnist",
        root=data / "nmnist-subset",
        train=False,
        dt=NMNIST_DT,
        n_timesteps=NMNIST_TIMESTEPS,
    )
    frames, labels = test.stack(nmnist_indices(n))
    x = frames.transpose(0, 1).contiguous()
    if flat:
        x = x.flatten(2)
    return x, torch.as_tensor(labels)


def dvs_clips(data: Path, n: int, timesteps: int = DVS_TIMESTEPS) -> torch.Tensor:
    """(timesteps, n, 2, 128, 128) event counts of the first ``n`` DVS128 clips (20 ms bins)."""
    from asyncsnn.data import bin_events, read_nmnist_bin

    files = sorted((data / "dvs128-clips").glob("*.bin"))[:n]
    if not files:
        raise FileNotFoundError(f"no DVS128 clips (*.bin) in {data / 'dvs128-clips'}")
    clips = [
        bin_events(read_nmnist_bin(f), DVS_SENSOR, dt=DVS_DT, n_timesteps=timesteps) for f in files
    ]
    return torch.stack(clips, 1)


def inputs(work: Workload, data: Path, n: int, timesteps: int | None = None):
    """Input (timesteps, n, *input_shape) and labels (or ``None``) for a workload."""
    if work.name == "dvs":
        return dvs_clips(data, n, timesteps or work.timesteps), None
    x, y = nmnist(data, n, flat=work.name == "fc")
    if timesteps is not None:
        x = x[:timesteps]
    return x, y


# ------------------------------------------------------------------------------ snnTorch
class SnnTorchNet(nn.Module):
    """The snnTorch twin of a workload: its stages, each followed by a ``snntorch.Leaky``."""

    def __init__(self, work: Workload) -> None:
        import snntorch

        super().__init__()
        beta = math.exp(-work.dt / TAU_M)
        self.stages = nn.ModuleList(work.stages)
        self.lifs = nn.ModuleList(
            snntorch.Leaky(beta=beta, threshold=THRESHOLD, reset_mechanism="zero")
            for _ in work.stages
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        """Output spike counts (batch, outputs) and every layer's spikes per timestep."""
        mems = [lif.init_leaky() for lif in self.lifs]
        record: list[list[torch.Tensor]] = [[] for _ in self.lifs]
        counts = None
        for t in range(x.shape[0]):
            s = x[t]
            for i, (stage, lif) in enumerate(zip(self.stages, self.lifs, strict=True)):
                s, mems[i] = lif(stage(s), mems[i])
                record[i].append(s)
            counts = s if counts is None else counts + s
        return counts, record


def layered_synops(net, x: torch.Tensor, record: list[list[torch.Tensor]]) -> float:
    """Synaptic events of a layered run counted as asyncsnn counts them: per timestep, the
    input's events (``asyncsnn.result.input_synops``: a bin of k events is k) and the spikes
    of every population, times their fan-out.

    ``net`` is the asyncsnn ``Network`` of the same modules (its tables give the fan-outs).
    """
    try:
        from asyncsnn.result import input_synops
    except ImportError:  # an older asyncsnn (the A/B mode's other tree): the same count

        def input_synops(x_flat, in_fanout):
            events = x_flat.detach().abs().ceil().to(torch.float64)
            return (events @ in_fanout.to(torch.float64)).to(x_flat.dtype)

    tab = net.tables()
    fanout = tab.fanout.to(x.dtype)
    n_in = tab.n_input
    total = float(input_synops(x.reshape(x.shape[0], x.shape[1], -1), fanout[:n_in]).sum())
    for pop, spikes in zip(net.populations, record, strict=True):
        s = torch.stack([z.detach() for z in spikes]).reshape(x.shape[0], x.shape[1], -1)
        total += float((s @ fanout[pop.slice]).sum())
    return total
