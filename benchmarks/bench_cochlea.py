"""asyncsnn's cochlea (``asyncsnn.data.cochlea_events``) against lauscher: faithfulness and speed.

Faithfulness: lauscher 1.0.1's spikes of the FSDD test recordings
(``../shared/data/fsdd/spikes/fsdd_test.h5``, 127 recordings in SHD's schema) against ours of
the same WAV files (``../shared/data/fsdd/recordings/{digit}_{speaker}_{index}.wav``), seed 0:
per recording, the Pearson correlation of the two 700-channel spike-count profiles and the
ratio of the total spike counts (ours over lauscher's). Targets: median correlation >= 0.8,
counts within a factor of 2. For scale, the same correlation between ours with seeds 0 and 1:
how close two draws of the one model come.

Speed: one recording (by default the one of median length) encoded by both, in this process:
ours once cold (the transfer-function table and compiled code loaded) and then warm (median of
repetitions), lauscher once on one core (its worker pools limited to one process) where it is
installed. Target: at least 100 times faster.

    python benchmarks/bench_cochlea.py                  # all 127 recordings, lauscher timed once
    python benchmarks/bench_cochlea.py --recordings 20 --no-lauscher
    python benchmarks/bench_cochlea.py --json cochlea.json --figure docs/img/cochlea_raster.png
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
N_CHANNELS = 700


def _reference(data: Path) -> list[dict]:
    """lauscher's spikes of each recording of fsdd_test.h5 and the path of its WAV file."""
    import h5py

    with h5py.File(data / "fsdd" / "spikes" / "fsdd_test.h5", "r") as f:
        names = [n.decode() for n in f["extra/speaker_names"][()]]
        out = []
        for i in range(len(f["labels"])):
            digit, speaker = int(f["labels"][i]), names[int(f["extra/speaker"][i])]
            name = f"{digit}_{speaker}_{int(f['extra/index'][i])}"
            out.append(
                {
                    "name": name,
                    "wav": data / "fsdd" / "recordings" / f"{name}.wav",
                    "times": np.asarray(f["spikes/times"][i], dtype=np.float64),
                    "units": np.asarray(f["spikes/units"][i], dtype=np.int64),
                }
            )
    return out


def faithfulness(entries: list[dict]) -> dict:
    """Correlation of the channel profiles and count ratio, per recording and summarised."""
    from asyncsnn.data import cochlea_events
    from asyncsnn.data.audio import read_wav

    rows, seconds = [], 0.0
    for e in entries:
        samples, rate = read_wav(e["wav"])
        start = time.perf_counter()
        ours = cochlea_events(samples, rate, N_CHANNELS, seed=0)
        seconds += time.perf_counter() - start
        other = cochlea_events(samples, rate, N_CHANNELS, seed=1)
        a = np.bincount(ours["x"], minlength=N_CHANNELS)
        b = np.bincount(e["units"], minlength=N_CHANNELS)
        c = np.bincount(other["x"], minlength=N_CHANNELS)
        rows.append(
            {
                "name": e["name"],
                "correlation": float(np.corrcoef(a, b)[0, 1]),
                "correlation_seed_1": float(np.corrcoef(a, c)[0, 1]),
                "count_ratio": float(a.sum() / b.sum()),
                "spikes": int(a.sum()),
                "spikes_lauscher": int(b.sum()),
            }
        )
    corr = np.array([r["correlation"] for r in rows])
    ratio = np.array([r["count_ratio"] for r in rows])
    ceiling = np.array([r["correlation_seed_1"] for r in rows])
    return {
        "recordings": len(rows),
        "correlation": _summary(corr),
        "correlation_seed_0_vs_1": _summary(ceiling),
        "count_ratio": _summary(ratio),
        "within_factor_2": int(np.sum((ratio >= 0.5) & (ratio <= 2.0))),
        "seconds_per_recording": seconds / len(rows),
        "per_recording": rows,
    }


def _summary(x: np.ndarray) -> dict:
    q = np.percentile(x, [0, 10, 25, 50, 75, 90, 100])
    keys = ("min", "p10", "p25", "median", "p75", "p90", "max")
    return {k: float(v) for k, v in zip(keys, q, strict=True)}


def speed(entry: dict, repeats: int, lauscher: bool) -> dict:
    """Seconds to encode one recording: ours cold and warm, lauscher on one core."""
    from asyncsnn.data import cochlea_events
    from asyncsnn.data.audio import read_wav

    samples, rate = read_wav(entry["wav"])
    start = time.perf_counter()
    cochlea_events(samples, rate, N_CHANNELS, seed=0)
    cold = time.perf_counter() - start
    warm = []
    for seed in range(repeats):
        start = time.perf_counter()
        cochlea_events(samples, rate, N_CHANNELS, seed=seed)
        warm.append(time.perf_counter() - start)
    out = {
        "recording": entry["name"],
        "seconds_of_audio": samples.size / rate,
        "ours_cold_s": cold,
        "ours_warm_s": statistics.median(warm),
        "lauscher_s": None,
        "speedup": None,
    }
    if lauscher:
        from lauscher.helpers import CommandLineArguments

        CommandLineArguments().num_concurrent_jobs = 1  # one worker process: one core
        start = time.perf_counter()
        cochlea_events(samples, rate, N_CHANNELS, seed=0, encoder="lauscher")
        out["lauscher_s"] = time.perf_counter() - start
        out["speedup"] = out["lauscher_s"] / out["ours_warm_s"]
    return out


def raster(entry: dict, path: Path) -> None:
    """lauscher's spikes of one recording beside ours, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from asyncsnn.data import cochlea_channel_frequencies, cochlea_events
    from asyncsnn.data.audio import read_wav

    samples, rate = read_wav(entry["wav"])
    ours = cochlea_events(samples, rate, N_CHANNELS, seed=0)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True, sharey=True)
    panels = [
        (entry["times"], entry["units"], "lauscher 1.0.1 (fsdd_test.h5)"),
        (ours["t"] / 1e6, ours["x"], "asyncsnn.data.cochlea_events (seed 0)"),
    ]
    for ax, (t, x, title) in zip(axes, panels, strict=True):
        ax.scatter(t, x, s=0.3, c="black", marker=".", linewidths=0, rasterized=True)
        ax.set_title(f"{title}: {t.size} spikes", fontsize=10)
        ax.set_xlabel("time (s)")
    axes[0].set_ylabel("channel (0 = base, high frequencies)")
    axes[0].set_ylim(N_CHANNELS, 0)
    channels = np.arange(N_CHANNELS)
    best = cochlea_channel_frequencies(N_CHANNELS)  # falling with the channel
    freq = axes[1].secondary_yaxis(
        "right",
        functions=(
            lambda c: np.interp(c, channels, best),
            lambda f: np.interp(f, best[::-1], channels[::-1]),
        ),
    )
    freq.set_yticks([100, 200, 500, 1000, 2000, 4000, 8000, 20000])
    freq.set_ylabel("best frequency (Hz)")
    fig.suptitle(f"FSDD recording {entry['name']}.wav, 700 cochlear channels", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _machine() -> dict:
    import numba

    return {
        "date": datetime.date.today().isoformat(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def _print(report: dict) -> None:
    f, s = report["faithfulness"], report["speed"]
    c, r = f["correlation"], f["count_ratio"]
    print(f"faithfulness on {f['recordings']} FSDD test recordings (lauscher's spikes vs ours):")
    print(
        f"  correlation of the channel profiles: median {c['median']:.3f} "
        f"(p10 {c['p10']:.3f}, min {c['min']:.3f})   target >= 0.8"
    )
    n = f["correlation_seed_0_vs_1"]
    print(
        f"  ours with seed 0 against ours with seed 1 (the noise ceiling): median "
        f"{n['median']:.3f} (p10 {n['p10']:.3f}, min {n['min']:.3f})"
    )
    print(
        f"  spike-count ratio ours/lauscher: median {r['median']:.3f} "
        f"(p25-p75 {r['p25']:.3f}-{r['p75']:.3f}, min {r['min']:.3f}, max {r['max']:.3f}); "
        f"{f['within_factor_2']}/{f['recordings']} within a factor of 2"
    )
    print(f"  ours: {1e3 * f['seconds_per_recording']:.0f} ms per recording on average")
    print(f"speed on {s['recording']}.wav ({s['seconds_of_audio']:.2f} s of audio):")
    print(f"  ours: {s['ours_cold_s']:.2f} s cold, {1e3 * s['ours_warm_s']:.0f} ms warm")
    if s["lauscher_s"] is None:
        print("  lauscher: not run (not installed, or --no-lauscher)")
    else:
        print(f"  lauscher (one core): {s['lauscher_s']:.1f} s; speed-up {s['speedup']:.0f}x")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--recordings", type=int, default=None, help="the first N only (default all)")
    p.add_argument("--speed-recording", default=None, help="e.g. 3_jackson_0 (default: median)")
    p.add_argument("--repeats", type=int, default=5, help="warm repetitions of ours")
    p.add_argument("--no-lauscher", action="store_true", help="do not time lauscher")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    p.add_argument("--figure", type=Path, default=None, help="write the raster PNG here")
    args = p.parse_args(argv)

    entries = _reference(args.data)[: args.recordings]
    if args.speed_recording is None:
        lengths = [os.path.getsize(e["wav"]) for e in entries]
        pick = entries[int(np.argsort(lengths)[len(lengths) // 2])]
    else:
        pick = next(e for e in entries if e["name"] == args.speed_recording)
    try:
        import lauscher  # noqa: F401

        have_lauscher = not args.no_lauscher
    except ImportError:
        have_lauscher = False
    report = {
        "machine": _machine(),
        "speed": speed(pick, args.repeats, have_lauscher),
        "faithfulness": faithfulness(entries),
    }
    _print(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    if args.figure is not None:
        raster(pick, args.figure)
    return report


if __name__ == "__main__":
    main()
