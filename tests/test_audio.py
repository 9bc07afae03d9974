"""Audio files in, SHD-schema spike files out (asyncsnn.data.audio)."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from asyncsnn.data import AUDIO_EVENT_DTYPE, SHD, CorruptDatasetError
from asyncsnn.data.audio import encode_folder, labels_of_folder, read_wav, write_shd


def _wav(path, samples, rate=8000, channels=1, width=2):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(np.asarray(samples).astype(f"<i{width}").tobytes())
    return path


def test_read_wav_scales_pcm_to_unit_range(tmp_path):
    samples, rate = read_wav(_wav(tmp_path / "a.wav", [0, 16384, -32768, 32767], rate=16000))
    assert rate == 16000
    assert samples.tolist() == [0.0, 0.5, -1.0, 32767 / 32768]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: _wav(p, [1, 2, 3, 4], channels=2), "2 channels: give mono audio"),
        (lambda p: _wav(p, []), "no samples"),
        (lambda p: p.write_bytes(b"RIFF\x00\x00not a wave"), "not a readable PCM WAV file"),
        (lambda p: _wav(p, [1, 2, 3], width=4) and _trim(p), "not a readable PCM WAV file"),
    ],
)
def test_read_wav_names_the_file_and_the_problem(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(CorruptDatasetError, match=message) as e:
        read_wav(path)
    assert "bad.wav" in str(e.value)


def _trim(path):
    data = path.read_bytes()
    path.write_bytes(data[:30])  # cut inside the header
    return path


def _events(times_us, units):
    ev = np.empty(len(times_us), AUDIO_EVENT_DTYPE)
    ev["t"], ev["x"] = times_us, units
    return ev


def test_write_shd_is_read_back_by_the_shd_loader(tmp_path):
    recordings = [_events([1000, 2500, 9000], [3, 699, 3]), _events([500], [0])]
    path = write_shd(
        tmp_path / "spikes.h5",
        recordings,
        [1, 0],
        ["no", "yes"],
        extra={"names": np.array(["a.wav", "b.wav"])},
        attrs={"encoder": "test"},
    )
    data = SHD.from_file(path, dt=1e-3, n_timesteps=10)
    assert data.classes == ("no", "yes") and data.targets == [1, 0]
    assert data.events(0)["x"].tolist() == [3, 699, 3]
    frames, label = data[0]
    assert label == 1 and frames.shape == (10, 700)
    assert frames[1, 3] == 1 and frames[2, 699] == 1 and frames[9, 3] == 1
    assert float(frames.sum()) == 3
    assert not list(tmp_path.glob(".*.tmp"))


def test_classes_come_from_subfolders_or_file_names(tmp_path):
    for name in ("yes", "no"):
        (tmp_path / "kws" / name).mkdir(parents=True)
        _wav(tmp_path / "kws" / name / "1.wav", [1, 2])
    files, labels, keys = labels_of_folder(tmp_path / "kws")
    assert keys == ["no", "yes"] and labels == [0, 1]
    assert [f.parent.name for f in files] == ["no", "yes"]
    (tmp_path / "digits").mkdir()
    for name in ("3_jackson_0.wav", "0_george_4.wav"):
        _wav(tmp_path / "digits" / name, [1, 2])
    files, labels, keys = labels_of_folder(tmp_path / "digits")
    assert labels == [0, 3] and keys == ["0", "1", "2", "3"]
    _wav(tmp_path / "digits" / "hello.wav", [1])
    with pytest.raises(ValueError, match="cannot tell the class of .*hello.wav"):
        labels_of_folder(tmp_path / "digits")


def test_encode_folder_writes_one_entry_per_file(tmp_path):
    for name in ("1_a_0.wav", "2_a_0.wav"):
        _wav(tmp_path / name, [0, 100, 200])

    def encode(samples, rate):  # one spike per sample, in channel = sample value / 100
        return _events(np.arange(len(samples)) * 1000, (samples * 32768 / 100).round())

    out = encode_folder(tmp_path, tmp_path / "out.h5", encode, progress=False)
    data = SHD.from_file(out, dt=1e-3, n_timesteps=3)
    assert data.targets == [1, 2] and data.events(1)["x"].tolist() == [0, 1, 2]


def test_a_spike_file_binned_for_a_model(tmp_path):
    from asyncsnn.rundir import DataFacts
    from asyncsnn.training import TrainConfig, load_spike_file

    path = write_shd(
        tmp_path / "s.h5", [_events([1000, 25000], [5, 6]), _events([0], [1])], [2, 0], ["a"] * 3
    )
    facts = DataFacts(
        input_shape=(700,), timesteps=4, n_classes=3, dt=0.01, classes=("a", "b", "c")
    )
    cfg = TrainConfig(dataset="fsdd", dt=0.01)
    split = load_spike_file(path, cfg, facts)
    assert split.x.shape == (2, 4, 700) and split.y.tolist() == [2, 0]
    assert split.x[0, 0, 5] == 1 and split.x[0, 2, 6] == 1 and float(split.x.sum()) == 3
    with pytest.raises(ValueError, match="has labels up to 2; the model has 2 classes"):
        load_spike_file(path, cfg, DataFacts(**{**facts.to_dict(), "n_classes": 2}))
    with pytest.raises(ValueError, match="700 channels, the model takes"):
        load_spike_file(path, cfg, DataFacts(**{**facts.to_dict(), "input_shape": (24,)}))
