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

import numpy as np
import torch
from torch import nn

import asyncsnn

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nmnist-subset"
EXECUTIONS = [
    ("layered", {"execution": "layered"}),
    ("async random", {"scheduler": "random", "group_size": 8}),
    ("async momentum", {"scheduler": "momentum", "group_size": 8}),
]


def read_nmnist_bin(path: Path) -> np.ndarray:
    """Events of one N-MNIST ``.bin`` file as (x, y, polarity, t in microseconds) columns."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5:
        raise ValueError(f"{path}: {raw.size} bytes is not a whole number of 5-byte events")
    ev = raw.reshape(-1, 5).astype(np.int64)
    t = ((ev[:, 2] & 0x7F) << 16) | (ev[:, 3] << 8) | ev[:, 4]
    return np.stack([ev[:, 0], ev[:, 1], ev[:, 2] >> 7, t], axis=1)


def nmnist_frames(folder: Path, n: int, timesteps: int = 30, dt_us: int = 10_000):
    """(timesteps, n, 2312) event counts of the first ``n`` test samples (sorted by path)."""
    files = sorted((folder / "Test").glob("*/*.bin"))[:n]
    if not files:
        raise SystemExit(f"no N-MNIST test samples under {folder / 'Test'}: pass --data")
    out = torch.zeros(timesteps, len(files), 2, 34, 34)
    for i, f in enumerate(files):
        x, y, p, t = read_nmnist_bin(f).T
        keep = t < timesteps * dt_us
        b = torch.as_tensor(t[keep] // dt_us)
        idx = (
            b,
            torch.full_like(b, i),
            torch.as_tensor(p[keep]),
            torch.as_tensor(y[keep]),
            torch.as_tensor(x[keep]),
        )
        out.index_put_(idx, torch.ones(len(b)), accumulate=True)
    return out.flatten(2)


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
