"""Audio the encoder must refuse, and the memory it takes: a WAV file cut short of what its
header says, an impossible sample rate, a recording above the stated length (each one line
naming the file, nothing written), and a peak memory that stays bounded as recordings grow."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import asyncsnn.data.cochlea as cochlea
from asyncsnn.cli import main
from asyncsnn.data import CorruptDatasetError
from asyncsnn.data.audio import read_wav
from asyncsnn.data.cochlea import MAX_SAMPLES, cochlea_events

REPO = Path(__file__).resolve().parents[1]


def speech(n: int, rate: int = 8000) -> np.ndarray:
    t = np.arange(n) / rate
    rng = np.random.default_rng(1)
    return (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * 400 * t) + 0.05 * (
        rng.standard_normal(n)
    )


def write_wav(path, samples, rate=8000):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.clip(samples, -1, 1) * 32000).astype("<i2").tobytes())
    return path


def encode(folder, out):
    return CliRunner().invoke(
        main, ["encode-audio", str(folder), "--out", str(out), "--channels", "16"]
    )


def test_a_data_chunk_shorter_than_its_header_says_is_refused(tmp_path):
    folder = tmp_path / "wavs"
    folder.mkdir()
    path = write_wav(folder / "3_cut.wav", speech(1000))
    path.write_bytes(path.read_bytes()[:-400])  # 200 samples lost, the header unchanged
    with pytest.raises(CorruptDatasetError) as err:
        read_wav(path)
    assert "truncated: the header announces 1000 samples, the data chunk holds 800" in str(
        err.value
    )
    assert str(path) in str(err.value)
    out = tmp_path / "spikes.h5"
    r = encode(folder, out)
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [f"Error: {err.value}"]
    assert not out.exists()


@pytest.mark.parametrize(("rate", "message"), [(1_000_000_000, "above 384000 Hz")])
def test_an_impossible_sample_rate_is_refused_naming_the_file(tmp_path, rate, message):
    folder = tmp_path / "wavs"
    folder.mkdir()
    path = write_wav(folder / "1_fast.wav", speech(4000), rate=rate)
    out = tmp_path / "spikes.h5"
    r = encode(folder, out)
    assert r.exit_code == 1
    (line,) = r.stderr.splitlines()
    assert line.startswith("Error: ") and str(path) in line and message in line
    assert not out.exists()


def test_a_recording_above_the_stated_length_is_refused():
    assert MAX_SAMPLES == 10 * 60 * 8000
    with pytest.raises(
        ValueError, match=r"4,800,001 samples \(600 s at 8000 Hz\).*at most 4,800,000"
    ):
        cochlea_events(np.ones(MAX_SAMPLES + 1), 8000, 4)


def test_narrow_blocks_give_the_same_spikes(monkeypatch):
    x = speech(6000)
    wide = cochlea_events(x, 8000, 40, seed=2)
    monkeypatch.setattr(cochlea, "_BLOCK_BYTES", 1)  # one channel at a time
    assert cochlea._block_width(3001, 40) == 1
    narrow = cochlea_events(x, 8000, 40, seed=2)
    assert wide.size > 100 and np.array_equal(wide, narrow)
    assert np.all(np.diff(narrow["t"]) >= 0)


def test_peak_memory_is_bounded_as_the_recording_grows():
    """A minute of speech through 32 channels: the arrays of all channels at once took some
    290 MiB above the start here (and 7 GB for 10 minutes of 128 channels); blocks of
    channels sized to 64 MiB keep it below 150 MiB."""
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_audio_memory.py"), "--child", "60",
         "--channels", "32"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["samples"] == 480_000 and row["spikes"] > 10_000
    assert row["peak_above_start_mib"] < 150, row
