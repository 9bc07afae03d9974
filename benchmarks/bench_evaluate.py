"""``asyncsnn evaluate``'s work on the compiled kernel against the reference engine.

One model of the N-MNIST study's preset (2312-128-128-10 on MNIST-saccades, 30 bins of
10 ms), evaluated on the MNIST-saccades test images under one execution by
:func:`asyncsnn.evaluation.evaluate` (every metric: the output trace, decision latency, the
accuracy against a forward-step budget, the stop-on-first-output run, the cost), once with
``backend="torch"`` (the PyTorch reference engine: what every evaluation ran before the
kernel served the monitors) and once with ``backend="auto"`` (the kernel), interleaved round
by round on the same data, one thread. Each round checks that both give the same summary.

Without ``--run``, a model is trained first for one epoch on 1,000 training images (about a
minute): its spikes are those of a young model; pass a trained run directory to time that.

    python benchmarks/bench_evaluate.py --data-dir ../shared/data/mnist --rounds 3
    python benchmarks/bench_evaluate.py --run runs/mnist-layered --execution async-random:8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _train(data_dir: Path, folder: Path) -> Path:
    from asyncsnn.training import PRESETS, TrainConfig, Trainer

    cfg = TrainConfig(
        **{
            **PRESETS["nmnist-study"],
            "dataset": "mnist-saccades",
            "data_dir": str(data_dir),
            "batch_size": 32,
            "epochs": 1,
            "limit_train": 1000,
            "limit_test": 100,
        }
    )
    run = folder / "model"
    Trainer(cfg, run, quiet=True).fit()
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a trained run directory (default: train one)")
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    ap.add_argument("--limit-test", type=int, default=2000, help="test images (default 2000)")
    ap.add_argument("--execution", default="async-momentum:8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "evaluate.json")
    args = ap.parse_args(argv)

    import torch

    from asyncsnn.evaluation import Execution, evaluate
    from asyncsnn.training import load_run, load_test_split

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or _train(args.data_dir, Path(tmp))
        net, cfg, _ = load_run(run, "best")
        cfg = dataclasses.replace(cfg, data_dir=str(args.data_dir), limit_test=args.limit_test)
        test = load_test_split(cfg)
    how = Execution.parse(args.execution)
    times: dict[str, list[float]] = {"torch": [], "auto": []}
    cpu: dict[str, list[float]] = {"torch": [], "auto": []}
    engines = {}
    for r in range(args.rounds):
        summaries = {}
        for backend in ("torch", "auto"):
            t0, c0 = time.perf_counter(), time.process_time()
            out = evaluate(net, test, cfg, how, backend=backend)
            times[backend].append(time.perf_counter() - t0)
            cpu[backend].append(time.process_time() - c0)
            summaries[backend], engines[backend] = out["summary"], out["engine"]
        same = json.dumps(summaries["torch"], sort_keys=True) == json.dumps(
            summaries["auto"], sort_keys=True
        )
        ratio = times["torch"][-1] / times["auto"][-1]
        print(
            f"round {r + 1}: reference {times['torch'][-1]:.1f} s, kernel "
            f"{times['auto'][-1]:.1f} s ({ratio:.1f}x); same figures: {same}"
        )
        if not same:
            print("the engines' figures differ:", summaries, file=sys.stderr)
            return 1
    ratios = [a / b for a, b in zip(times["torch"], times["auto"], strict=True)]
    report = {
        "execution": how.label,
        "test_samples": len(test),
        "engines": engines,
        "seconds": times,
        "cpu_seconds": cpu,
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "speed_up_per_round": ratios,
        "speed_up_median": statistics.median(ratios),
        "accuracy": summaries["auto"]["accuracy"],
        "spikes_per_sample": summaries["auto"]["spikes_per_sample"],
        "meta": {
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": args.threads,
            "run": str(args.run) if args.run else "one epoch on 1,000 training images",
            "command": " ".join(["python benchmarks/bench_evaluate.py", *(argv or sys.argv[1:])]),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"{len(test)} test images under {how.label}: reference "
        f"{report['median_s']['torch']:.1f} s, kernel {report['median_s']['auto']:.1f} s "
        f"(median of {args.rounds}); speed-up {report['speed_up_median']:.1f}x "
        f"(rounds {', '.join(f'{x:.1f}' for x in ratios)}); written {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
