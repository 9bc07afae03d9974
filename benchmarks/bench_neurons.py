"""The neuron variants against the plain LIF: what current-based neurons and the reset by
subtraction cost in asynchronous execution.

The ``fc`` and ``conv`` networks of ``workloads.py`` (LIF, tau_m 1 ms, threshold 0.3, seed 0)
on 32 real N-MNIST test samples (30 bins of 10 ms), each built four ways: the plain LIF,
``reset="subtract"``, ``tau_syn=10e-3`` (alpha = exp(-1)) and both. For each: asynchronous
inference at batch 32 (momentum, F = 8) through the compiled kernel and the PyTorch
reference, and one unlayered training step (forward, cross-entropy on the output counts,
backward) through the kernel; median time of 3 repetitions after a warm-up, per sample, and
the network spikes and forward steps per sample. One thread (``torch.set_num_threads(1)``).

    python benchmarks/bench_neurons.py                # writes bench_neurons.json beside itself
    python benchmarks/bench_neurons.py --data ../shared/data --networks fc
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

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {
    "lif": {},
    "subtract": {"reset": "subtract"},
    "cuba": {"tau_syn": 10e-3},
    "cuba_subtract": {"tau_syn": 10e-3, "reset": "subtract"},
}
BATCH = 32
REPEATS = 3


def _median_time(fn) -> float:
    fn()  # warm-up (and numba compilation)
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(network: str, data: Path) -> list[dict]:
    sys.path.insert(0, str(REPO))
    import torch
    import torch.nn.functional as F

    import asyncsnn
    from benchmarks import workloads

    torch.set_num_threads(1)
    rows = []
    for variant, neurons in VARIANTS.items():
        work = workloads.build(network, seed=0)
        net = asyncsnn.Network.sequential(
            work.modules,
            input_shape=work.input_shape,
            tau_m=workloads.TAU_M,
            threshold=workloads.THRESHOLD,
            **neurons,
        )
        x, y = workloads.inputs(work, data, BATCH)
        kw = {"dt": work.dt, "scheduler": "momentum", "group_size": workloads.GROUP_SIZE}

        def infer(backend, net=net, x=x, kw=kw):
            with torch.no_grad():
                return asyncsnn.run(net, x, backend=backend, **kw)

        def step(net=net, x=x, y=y, kw=kw):
            net.zero_grad(set_to_none=True)
            r = asyncsnn.run(net, x, backend="numba", training=True, **kw)
            F.cross_entropy(r.output_counts, y).backward()

        r = infer("numba")
        row = {
            "network": network,
            "variant": variant,
            "spikes_per_sample": float(r.spike_count.mean()),
            "forward_steps_per_sample": float(r.forward_steps.sum(0).float().mean()),
            "kernel_ms_per_sample": 1e3 * _median_time(lambda: infer("numba")) / BATCH,
            "reference_ms_per_sample": 1e3 * _median_time(lambda: infer("torch")) / BATCH,
            "train_step_ms_per_sample": 1e3 * _median_time(step) / BATCH,
        }
        assert torch.equal(r.spikes, infer("torch").spikes)  # the kernel is the reference
        rows.append(row)
        print(
            f"{network:5s} {variant:14s} spikes {row['spikes_per_sample']:8.1f}  "
            f"steps {row['forward_steps_per_sample']:6.1f}  "
            f"kernel {row['kernel_ms_per_sample']:7.2f} ms  "
            f"reference {row['reference_ms_per_sample']:7.2f} ms  "
            f"train step {row['train_step_ms_per_sample']:7.2f} ms  (per sample)",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--networks", nargs="+", default=["fc", "conv"])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_neurons.json"))
    args = parser.parse_args()
    rows = [row for name in args.networks for row in measure(name, args.data)]
    record = {
        "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
        "date": date.today().isoformat(),
        "command": "python benchmarks/bench_neurons.py " + " ".join(sys.argv[1:]),
        "rows": rows,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
