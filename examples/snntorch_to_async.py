"""From snnTorch to asynchronous execution through NIR.

Trains a small spiking network in snnTorch on scikit-learn's digits (8x8 images, rate-coded as
spikes), exports it with snnTorch's own NIR exporter, imports the file into asyncsnn and
evaluates it layered (which reproduces snnTorch's spikes exactly) and asynchronously under each
scheduling policy. Runs in well under a minute on a 2-core CPU; downloads nothing.

Two snnTorch conventions matter:

* snnTorch writes NIR with a fixed internal time step of 1e-4 s and Euler's leak
  ``beta = 1 - dt/tau``: import with ``dt=SNNTORCH_DT, discretization="euler"`` and run with
  the same ``dt``;
* snnTorch 1.0's exporter needs per-neuron ``beta`` and ``threshold`` tensors (scalars fail
  nir's type inference), and ``reset_mechanism="zero"`` (it writes ``v_reset = 0`` whatever
  the reset).
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import nir  # noqa: E402
import snntorch as snn  # noqa: E402
import snntorch.utils  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from snntorch.export_nir import export_to_nir  # noqa: E402
from torch import nn  # noqa: E402

import asyncsnn  # noqa: E402
from asyncsnn.interchange import SNNTORCH_DT, from_nir  # noqa: E402

TIMESTEPS = 20
HIDDEN = 64


def encode(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rate code: (timesteps, batch, 64) spikes with probability pixel / 16."""
    p = (images / 16.0).expand(TIMESTEPS, *images.shape)
    return torch.bernoulli(p, generator=generator)


def snntorch_model() -> nn.Sequential:
    def leaky(n: int, **kw) -> snn.Leaky:
        return snn.Leaky(
            beta=torch.full((n,), 0.9),
            threshold=torch.ones(n),
            reset_mechanism="zero",
            init_hidden=True,
            **kw,
        )

    return nn.Sequential(
        nn.Linear(64, HIDDEN), leaky(HIDDEN), nn.Linear(HIDDEN, 10), leaky(10, output=True)
    )


def run_snntorch(model: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Output spike counts (batch, 10) and all spikes (timesteps, batch, neurons)."""
    snntorch.utils.reset(model)
    counts, spikes = 0, []
    for t in range(x.shape[0]):
        hidden = model[1](model[0](x[t]))
        out, _ = model[3](model[2](hidden))
        counts = counts + out
        spikes.append(torch.cat([hidden, out], 1))
    return counts, torch.stack(spikes)


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Argmax of the scores; a tie counts as wrong."""
    best = scores.max(1, keepdim=True).values
    unique = (scores == best).sum(1) == 1
    return float(((scores.argmax(1) == labels) & unique).float().mean())


def main() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32)
    labels = torch.tensor(digits.target)
    order = torch.randperm(len(labels), generator=gen)
    train, test = order[:1400], order[1400:]

    model = snntorch_model()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    start = time.perf_counter()
    for epoch in range(6):
        for batch in train[torch.randperm(len(train), generator=gen)].split(64):
            counts, _ = run_snntorch(model, encode(images[batch], gen))
            loss = nn.functional.cross_entropy(counts, labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}")
    print(f"trained in snnTorch in {time.perf_counter() - start:.1f} s")

    x = encode(images[test], gen)
    y = labels[test]
    with torch.no_grad():
        counts, reference = run_snntorch(model, x)
        graph = export_to_nir(model, torch.zeros(1, 64), ignore_dims=[0])
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "digits.nir")
        nir.write(path, graph)
        net = from_nir(path, dt=SNNTORCH_DT, discretization="euler")
    print(f"imported from NIR: {net.extra_repr()}")

    rows = [("snnTorch", accuracy(counts, y), float(reference.sum((0, 2)).mean()), "-")]
    with torch.no_grad():
        layered = asyncsnn.run(net, x, dt=SNNTORCH_DT, execution="layered")
        same = torch.equal(layered.spikes, reference)
        runs = [("asyncsnn layered", layered)]
        for policy in ("random", "momentum", "fifo", "layered"):
            r = asyncsnn.run(
                net, x, dt=SNNTORCH_DT, execution="async", scheduler=policy, group_size=8, seed=0
            )
            runs.append((f"asyncsnn async {policy}, F=8", r))
    for name, r in runs:
        steps = f"{r.forward_steps.float().mean():.2f}"
        rows.append((name, accuracy(r.output_counts, y), float(r.spike_count.mean()), steps))
    print(f"\n{'execution':<32}{'accuracy':>10}{'spikes/sample':>15}{'steps/timestep':>16}")
    for name, acc, spikes, steps in rows:
        print(f"{name:<32}{acc:>10.3f}{spikes:>15.1f}{steps:>16}")
    print(f"\nlayered execution reproduces snnTorch's spikes exactly: {same}")


if __name__ == "__main__":
    main()
