"""Unlayered training through the PyTorch engine, with and without ``recompute=True``.

One training step (forward, cross-entropy on the output counts, backward) of a network of
``workloads.py`` at batch 32 on real N-MNIST samples, through the PyTorch engine
(``backend="torch"``: what runs on a GPU or with a user's policy), momentum policy, F = 8:
time per sample and the extra peak resident memory of the step, each configuration in a fresh
process. With ``--fixed-mmap`` the children run with ``MALLOC_MMAP_THRESHOLD_=131072``, which
keeps glibc from holding freed memory in its heap (that memory counts as resident).

    python benchmarks/bench_recompute.py                       # fc and conv, 30 timesteps
    python benchmarks/bench_recompute.py --networks conv --timesteps 10 20 30 --fixed-mmap
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _measure(network: str, recompute: bool, timesteps: int, data: Path) -> dict:
    sys.path.insert(0, str(REPO))
    import torch.nn.functional as F

    import asyncsnn
    from benchmarks import workloads as W
    from benchmarks.worker import hwm_mb, release_free_memory, reset_peak, rss_mb

    work = W.build(network, seed=0)
    net = W.asyncsnn_network(work).train()
    x, y = W.inputs(work, data, 32, None)
    x = x[:timesteps]

    def step():
        net.zero_grad(set_to_none=True)
        r = asyncsnn.run(
            net, x, dt=work.dt, scheduler="momentum", backend="torch", recompute=recompute
        )
        F.cross_entropy(r.output_counts, y).backward()

    step()  # warm-up: tables, allocator
    gc.collect()
    release_free_memory()
    before = rss_mb()
    if not reset_peak():
        raise RuntimeError("this system cannot reset the peak resident set (/proc/self/clear_refs)")
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    return {
        "network": network,
        "recompute": recompute,
        "timesteps": int(x.shape[0]),
        "ms_per_sample": 1e3 * seconds / x.shape[1],
        "extra_peak_mb": hwm_mb() - before,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", nargs="+", default=["fc", "conv"], choices=["fc", "conv"])
    ap.add_argument("--timesteps", nargs="+", type=int, default=[30])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--fixed-mmap", action="store_true", help="MALLOC_MMAP_THRESHOLD_=131072")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(_measure(spec["network"], spec["recompute"], spec["T"], args.data)))
        return 0
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    if args.fixed_mmap:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    print("| network | timesteps | graph | ms / sample | extra peak MiB |")
    print("|---|---:|---|---:|---:|")
    for network in args.networks:
        for T in args.timesteps:
            for recompute in (False, True):
                spec = json.dumps({"network": network, "recompute": recompute, "T": T})
                out = subprocess.run(
                    [sys.executable, __file__, "--data", str(args.data), "--child", spec],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                row = json.loads(out.stdout.strip().splitlines()[-1])
                how = "recomputed per timestep" if recompute else "whole"
                print(
                    f"| {network} | {row['timesteps']} | {how} | {row['ms_per_sample']:.1f} | "
                    f"{row['extra_peak_mb']:.0f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
