"""Data-parallel training: samples per second on 1 and 2 processes (torchrun, gloo).

Unlayered training (momentum, F = 8, through the compiled kernel) of 2312-128-128-10 on the
real N-MNIST subset (1,000 training samples, 900 after the validation split; 30 bins of
10 ms), global batch 64, launched as a user launches it:
``python -m torch.distributed.run --standalone --nproc-per-node N -m asyncsnn train ...``.
Each configuration trains 1 epoch and 3 epochs; the difference over the 2 extra epochs is the
time of an epoch without the start-up (imports, data loading, compilation), and samples per
second are the 900 samples of an epoch (plus validation) over it. Configurations: 1 process
with 1 thread, 1 process with 2 threads, 2 processes with 1 thread each; medians of
``--repeats`` runs, alternating.

    python benchmarks/bench_ddp.py --data ../shared/data     # writes bench_ddp.json beside it
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

CONFIGS = {
    "1 process x 1 thread": (1, 1),
    "1 process x 2 threads": (1, 2),
    "2 processes x 1 thread": (2, 1),
}
FIT = 900  # training samples of an epoch (1,000 less the 10 % validation split)


def _train(out: Path, procs: int, threads: int, epochs: int, data: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", str(procs), "-m", "asyncsnn", "train", "--out", str(out)]
    command += ["--dataset", "nmnist", "--data-dir", str(data / "nmnist-subset")]
    command += ["--limit-train", "1000", "--limit-test", "100", "--epochs", str(epochs)]
    command += ["--batch-size", "64", "--hidden", "128,128", "--training", "unlayered", "-q"]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).parents[2] / "shared/data")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    epoch_s: dict[str, list[float]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name, (procs, threads) in CONFIGS.items():
                key = name.replace(" ", "")
                one = _train(Path(tmp, f"{key}-{r}-1"), procs, threads, 1, args.data)
                three = _train(Path(tmp, f"{key}-{r}-3"), procs, threads, 3, args.data)
                epoch_s[name].append((three - one) / 2)
                print(f"{name}: epoch {epoch_s[name][-1]:.2f} s", flush=True)
    rows = []
    base = statistics.median(epoch_s["1 process x 1 thread"])
    for name, times in epoch_s.items():
        t = statistics.median(times)
        rows.append(
            {
                "config": name,
                "epoch_s": t,
                "samples_per_s": FIT / t,
                "speed_up": base / t,
                "epoch_s_all": times,
            }
        )
        print(f"{name:>24}: {FIT / t:6.1f} samples/s  ({base / t:.2f}x)")
    facts = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": platform.python_version(),
        "command": "python benchmarks/bench_ddp.py " + " ".join(sys.argv[1:]),
        "rows": rows,
    }
    Path(__file__).with_name("bench_ddp.json").write_text(json.dumps(facts, indent=2) + "\n")


if __name__ == "__main__":
    main()
