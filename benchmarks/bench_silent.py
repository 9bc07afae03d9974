"""The cost of credit for silent neurons (``silent_gradients``, docs/semantics.md 8.7).

One training step (forward, cross-entropy on the output counts, backward) of the ``fc``
network of ``workloads.py`` (2312-128-128-10) at batch 32 on real N-MNIST samples, momentum
policy, F = 8, with ``silent_gradients`` off and on, on the reference engine
(``backend="torch"``) and the numba kernel (``backend="numba"``). The configurations are
interleaved round by round (each round times every configuration once, in a rotated order),
so that a machine's drift falls on all of them alike; the figures are medians over the rounds,
with the range of the per-round ratios on/off. The spikes and counts of the two settings are
checked to be equal (the option changes no forward value).

    python benchmarks/bench_silent.py                       # 5 rounds, 30 timesteps
    python benchmarks/bench_silent.py --rounds 9 --timesteps 10 --backends numba
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--timesteps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--backends", nargs="+", default=["torch", "numba"], choices=["torch", "numba"])
    ap.add_argument(
        "--checks",
        default="every",
        choices=["every", "last", "firing"],
        help="surrogate_checks of both settings (docs/semantics.md 8.8)",
    )
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(REPO))
    import torch
    import torch.nn.functional as F

    import asyncsnn
    from benchmarks import workloads as W

    work = W.build("fc", seed=0)
    net = W.asyncsnn_network(work).train()
    x, y = W.inputs(work, args.data, args.batch, None)
    x = x[: args.timesteps].contiguous()

    def step(backend: str, silent: bool):
        """(forward seconds, backward seconds, spikes) of one training step."""
        net.zero_grad(set_to_none=True)
        start = time.perf_counter()
        r = asyncsnn.run(
            net,
            x,
            dt=work.dt,
            scheduler="momentum",
            group_size=W.GROUP_SIZE,
            backend=backend,
            training=True,
            silent_gradients=silent,
            surrogate_checks=args.checks,
        )
        loss = F.cross_entropy(r.output_counts, y)
        middle = time.perf_counter()
        loss.backward()
        end = time.perf_counter()
        return middle - start, end - middle, r.spikes.detach()

    configs = [(b, s) for b in args.backends for s in (False, True)]
    for b, s in configs:  # warm-up: numba's compilation, tables, the allocator
        step(b, s)
    times = {c: ([], []) for c in configs}
    for k in range(args.rounds):
        order = configs[k % len(configs) :] + configs[: k % len(configs)]
        spikes = {}
        for c in order:
            fwd, bwd, spikes[c] = step(*c)
            times[c][0].append(fwd)
            times[c][1].append(bwd)
        for b in args.backends:
            if not torch.equal(spikes[(b, False)], spikes[(b, True)]):
                raise AssertionError(f"{b}: silent_gradients changed the spikes")

    rows = []
    for b in args.backends:
        (f0, b0), (f1, b1) = times[(b, False)], times[(b, True)]
        per_sample = 1e3 / args.batch
        bwd_ratio = [on / off for on, off in zip(b1, b0, strict=True)]
        step_ratio = [(fa + ba) / (fb + bb) for fa, ba, fb, bb in zip(f1, b1, f0, b0, strict=True)]
        rows.append(
            {
                "backend": b,
                "surrogate_checks": args.checks,
                "forward_ms_per_sample_off": per_sample * statistics.median(f0),
                "forward_ms_per_sample_on": per_sample * statistics.median(f1),
                "backward_ms_per_sample_off": per_sample * statistics.median(b0),
                "backward_ms_per_sample_on": per_sample * statistics.median(b1),
                "backward_ratio_median": statistics.median(bwd_ratio),
                "backward_ratio_range": [min(bwd_ratio), max(bwd_ratio)],
                "step_ratio_median": statistics.median(step_ratio),
                "step_ratio_range": [min(step_ratio), max(step_ratio)],
            }
        )
    meta = {
        "network": "fc",
        "batch": args.batch,
        "timesteps": int(x.shape[0]),
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps({**meta, "rows": rows}))
        return 0
    print(
        f"fc 2312-128-128-10, batch {meta['batch']}, {meta['timesteps']} timesteps, momentum "
        f"F={W.GROUP_SIZE}, surrogate_checks={args.checks}, {args.rounds} interleaved rounds, "
        f"{meta['threads']} threads; ms per sample (medians)"
    )
    print(
        f"{'engine':8} {'fwd off':>8} {'fwd on':>8} {'bwd off':>8} {'bwd on':>8} "
        f"{'bwd on/off (range)':>22} {'step on/off (range)':>22}"
    )
    for r in rows:
        lo, hi = r["backward_ratio_range"]
        slo, shi = r["step_ratio_range"]
        print(
            f"{r['backend']:8} {r['forward_ms_per_sample_off']:8.2f} "
            f"{r['forward_ms_per_sample_on']:8.2f} {r['backward_ms_per_sample_off']:8.2f} "
            f"{r['backward_ms_per_sample_on']:8.2f} "
            f"{r['backward_ratio_median']:10.2f} ({lo:.2f}-{hi:.2f}) "
            f"{r['step_ratio_median']:10.2f} ({slo:.2f}-{shi:.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
