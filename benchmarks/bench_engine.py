"""Asynchronous inference speed of the plain PyTorch engine on real N-MNIST events.

Network 2312-128-128-10 (LIF, tau_m 1 ms, threshold 0.3, xavier-uniform weights, no biases),
the first 30 timesteps of 10 ms of real N-MNIST test samples, F = 8; asynchronous execution
with the random and momentum policies against layered execution, in the same process. Prints
synaptic events per second and ms per sample (medians of the repetitions) and writes JSON.

    python benchmarks/bench_engine.py [--data ../shared/data/nmnist-subset] [--repeats 5]
        [--device cuda] [--batches 1 32 256]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch
from torch import nn

import asyncsnn
from asyncsnn.data import load_dataset

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nmnist-subset"
EXECUTIONS = [
    ("layered", {"execution": "layered"}),
    ("async random", {"scheduler": "random", "group_size": 8}),
    ("async momentum", {"scheduler": "momentum", "group_size": 8}),
]


def nmnist_frames(folder: Path, n: int, timesteps: int = 30, dt: float = 10e-3):
    """(timesteps, n, 2312) event counts of the first ``n`` real N-MNIST test samples."""
    test = load_dataset("nmnist", root=folder, train=False, dt=dt, n_timesteps=timesteps)
    frames, _ = test.stack(range(min(n, len(test))))
    return frames.transpose(0, 1).flatten(2)


def network(seed: int = 0) -> asyncsnn.Network:
    torch.manual_seed(seed)
    layers = [
        nn.Linear(2312, 128, bias=False),
        nn.Linear(128, 128, bias=False),
        nn.Linear(128, 10, bias=False),
    ]
    for layer in layers:
        nn.init.xavier_uniform_(layer.weight)
    return asyncsnn.Network.sequential(layers, tau_m=1e-3, threshold=0.3)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(net, x, repeats: int, **options) -> dict:
    times = []
    with torch.no_grad():
        r = asyncsnn.run(net, x, dt=10e-3, **options)  # warm-up
        for _ in range(repeats):
            _sync(x.device)
            start = time.perf_counter()
            r = asyncsnn.run(net, x, dt=10e-3, **options)
            _sync(x.device)
            times.append(time.perf_counter() - start)
    t = statistics.median(times)
    events = float(r.synops.sum())
    return {
        "ms_per_sample": 1e3 * t / x.shape[1],
        "synaptic_events_per_s": events / t,
        "spikes_per_sample": float(r.spike_count.mean()),
        "forward_steps_per_timestep": float(r.forward_steps.float().mean()),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=Path(__file__).with_name("bench_engine.json"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    net = network().to(device)
    frames = nmnist_frames(args.data, min(max(args.batches), 100))
    rows = []
    for batch in args.batches:
        # more samples than the data holds: repeat them (samples are independent of each other)
        x = frames[:, torch.arange(batch) % frames.shape[1]].to(device)
        for name, options in EXECUTIONS:
            m = measure(net, x, args.repeats, **options)
            rows.append({"batch": batch, "execution": name, **m})
            print(
                f"batch {batch:>3}  {name:<15} {m['ms_per_sample']:8.3f} ms/sample "
                f"{m['synaptic_events_per_s'] / 1e6:9.1f} M events/s  "
                f"{m['spikes_per_sample']:7.0f} spikes/sample  "
                f"{m['forward_steps_per_timestep']:5.2f} steps/timestep",
                flush=True,
            )
    meta = {
        "date": date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "device": str(device),
    }
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
