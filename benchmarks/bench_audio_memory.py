"""Peak memory of the cochlear encoder (``asyncsnn.data.cochlea_events``) against the length of
the recording, up to its limit (``cochlea.MAX_SAMPLES``: 10 minutes at 8 kHz).

The recording is real speech: the FSDD recordings (``../shared/data/fsdd/recordings``, 8 kHz
mono) one after another until the length is reached (where they are missing, noise shaped
like speech: 8 kHz tones under a syllable-rate envelope). Each length is encoded in a fresh
process: the compiled code and the transfer-function table warmed on one second of audio,
the process's peak resident memory reset (``/proc/self/clear_refs``), the recording encoded
(700 channels, seed 0), then the peak read (``VmHWM``). The figure is the peak above the
memory the process held before the encoding: what the encoder itself takes (the recording's
samples, 8 bytes each, are included).

    python benchmarks/bench_audio_memory.py                   # 1, 3 and 10 minutes, 700 channels
    python benchmarks/bench_audio_memory.py --seconds 60 --channels 32 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FSDD = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
RATE = 8000


def recording(seconds: float) -> np.ndarray:
    """``seconds`` of 8 kHz speech: FSDD's recordings in a row, else speech-like noise."""
    n = int(seconds * RATE)
    files = sorted(FSDD.glob("*.wav")) if FSDD.is_dir() else []
    if files:
        from asyncsnn.data.audio import read_wav

        parts, total, i = [], 0, 0
        while total < n:
            x, rate = read_wav(files[i % len(files)])
            assert rate == RATE, rate
            parts.append(x)
            total += x.size
            i += 1
        return np.concatenate(parts)[:n]
    rng = np.random.default_rng(0)
    t = np.arange(n) / RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return envelope * (np.sin(2 * np.pi * 300 * t) + 0.3 * rng.standard_normal(n))


def _status(key: str) -> int:
    """A ``/proc/self/status`` figure in bytes (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def measure(seconds: float, channels: int) -> dict:
    """In this process: the encoder's peak memory above what the process held before."""
    from asyncsnn.data.cochlea import cochlea_events

    cochlea_events(recording(1.0), RATE, channels, seed=0)  # compiled code and table warm
    x = recording(seconds)
    Path("/proc/self/clear_refs").write_text("5")  # the peak from here on
    before = _status("VmRSS")
    start = time.perf_counter()
    events = cochlea_events(x, RATE, channels, seed=0)
    elapsed = time.perf_counter() - start
    peak = _status("VmHWM")
    return {
        "seconds": seconds,
        "samples": int(x.size),
        "channels": channels,
        "spikes": int(events.size),
        "peak_above_start_mib": round((peak - before) / 2**20, 1),
        "process_peak_mib": round(peak / 2**20, 1),
        "encode_s": round(elapsed, 1),
    }


def measure_in_child(seconds: float, channels: int) -> dict:
    """:func:`measure` in a fresh process (so that no earlier length's memory is counted)."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(seconds), "--channels", str(channels)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, nargs="*", default=[60, 180, 600])
    ap.add_argument("--channels", type=int, default=700)
    ap.add_argument("--json", type=Path, help="Also write the rows and the machine here.")
    ap.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.channels)))
        return
    rows = []
    for seconds in args.seconds:
        row = measure_in_child(seconds, args.channels)
        rows.append(row)
        print(
            f"{row['seconds']:>6.0f} s, {row['channels']} channels: peak "
            f"{row['peak_above_start_mib']:,.0f} MiB above the start "
            f"({row['process_peak_mib']:,.0f} MiB for the process), {row['spikes']:,} spikes, "
            f"{row['encode_s']:.0f} s",
            flush=True,
        )
    if args.json:
        machine = {"python": platform.python_version(), "cpus": os.cpu_count()}
        args.json.write_text(json.dumps({"rows": rows, "machine": machine}, indent=1))


if __name__ == "__main__":
    main()
