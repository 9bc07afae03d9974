"""The fsdd data set: FSDD's layout and split, encoding on first use, the cache."""

from __future__ import annotations

import wave

import numpy as np
import pytest

import asyncsnn.data.cochlea as cochlea
from asyncsnn.data import AUDIO_EVENT_DTYPE, DatasetNotFoundError, load_dataset
from asyncsnn.data.fsdd import FSDD


def _wav(path, n):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(8000)
        f.writeframes((np.arange(n) % 50 * 100).astype("<i2").tobytes())


@pytest.fixture()
def fsdd_root(tmp_path):
    rec = tmp_path / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    for digit in (0, 3, 9):
        for speaker in ("george", "lucas"):
            for index in (0, 4, 5, 49):
                _wav(rec / f"{digit}_{speaker}_{index}.wav", 800 + 10 * digit)
    (rec / "README.wav.txt").write_text("not a recording")
    return tmp_path


@pytest.fixture()
def fake_encoder(monkeypatch):
    """A fast stand-in for the cochlea: one spike per 100 samples, in channel ``digit``
    (from the recording's length) shifted by the seed; counts its calls."""
    calls = []

    def encode(samples, rate, n_channels=700, *, seed=0, encoder="builtin"):
        calls.append((len(samples), rate, n_channels, seed, encoder))
        n = len(samples) // 100
        ev = np.empty(n, AUDIO_EVENT_DTYPE)
        ev["t"] = np.arange(n) * 10_000
        ev["x"] = (len(samples) - 800) // 10 + seed
        return ev

    monkeypatch.setattr(cochlea, "cochlea_events", encode)
    return calls


def test_the_split_of_the_data_set_and_its_items(fsdd_root, fake_encoder, tmp_path):
    test = load_dataset("fsdd", fsdd_root, train=False, cache_dir=tmp_path / "c", progress=False)
    train = load_dataset("fsdd", fsdd_root, train=True, cache_dir=tmp_path / "c", progress=False)
    assert len(test) == 12 and len(train) == 12  # index 0-4 test, 5-49 train
    assert sorted(set(test.targets)) == [0, 3, 9] and test.classes == tuple("0123456789")
    frames, label = test[0]
    assert frames.shape == (100, 700)  # 1 s in bins of 10 ms, 700 channels
    assert label == 0 and float(frames[:, 0].sum()) == 8 and float(frames.sum()) == 8
    assert all(c[1] == 8000 and c[2] == 700 for c in fake_encoder)


def test_the_cache_makes_a_second_load_instant_and_a_new_setting_encodes_again(
    fsdd_root, fake_encoder, tmp_path
):
    cache = tmp_path / "cache"
    first = FSDD(fsdd_root, train=False, cache_dir=cache, progress=False)
    assert len(fake_encoder) == 12
    again = FSDD(fsdd_root, train=False, cache_dir=cache, progress=False)
    assert len(fake_encoder) == 12  # read from the cache: nothing encoded
    assert again.cache_path == first.cache_path
    assert np.array_equal(again.events(3), first.events(3))
    other = FSDD(fsdd_root, train=False, cache_dir=cache, seed=1, progress=False)
    assert len(fake_encoder) == 24 and other.cache_path != first.cache_path
    assert not first.cache_path.exists()  # the other setting's spikes replaced
    assert int(other.events(0)["x"][0]) == 1  # digit 0: channel 0, shifted by the seed
    # a changed recording encodes again
    _wav(fsdd_root / "fsdd" / "recordings" / "0_george_0.wav", 900)
    FSDD(fsdd_root, train=False, cache_dir=cache, seed=1, progress=False)
    assert len(fake_encoder) == 36


def test_missing_recordings_say_where_they_were_looked_for(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="fsdd/recordings"):
        FSDD(tmp_path, train=True, progress=False)
    (tmp_path / "recordings").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no recordings named"):
        FSDD(tmp_path, train=True, progress=False)


def test_one_process_encodes_a_split_while_the_others_wait(tmp_path):
    """The cache's lock: a second holder waits until the first lets go (two reproduce
    workers loading FSDD at once encode it once)."""
    import threading

    from asyncsnn.data.fsdd import _held

    lock = tmp_path / ".fsdd_train.lock"
    order = []

    def second():
        with _held(lock):
            order.append("second")

    with _held(lock):
        t = threading.Thread(target=second)
        t.start()
        t.join(0.3)
        assert t.is_alive() and order == []  # it waits for the first holder
        order.append("first")
    t.join(5)
    assert order == ["first", "second"]
