"""tonic's data sets and transforms as asyncsnn data sets (asyncsnn.data.from_tonic).

The oracle is asyncsnn's own N-MNIST loader on the same files: tonic's NMNIST read through
from_tonic must give the same frames and labels, also with tonic's own first-saccade cut and
its down-sampling transform. tonic's NMNIST refuses a folder of fewer than 10,000 files, so
its file-count check is replaced here, as tonic's own tests do.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from asyncsnn.data import (
    NMNIST,
    DatasetNotFoundError,
    bin_events,
    downsample_events,
    from_tonic,
    load_dataset,
    make_events,
)

tonic = pytest.importorskip("tonic", reason="tonic is not installed (pip install 'tonic>=1.7')")


@pytest.fixture()
def tonic_root(shared_data, tmp_path):
    """A data folder in tonic's layout, ``root/NMNIST/{Train,Test}``, holding the real
    subset."""
    (tmp_path / "NMNIST").symlink_to(shared_data / "nmnist-subset", target_is_directory=True)
    return tmp_path


@pytest.fixture()
def subset_accepted(monkeypatch):
    monkeypatch.setattr(tonic.datasets.NMNIST, "_check_exists", lambda self: True)


class Listed:
    """A tonic-like data set of given items, with tonic's attributes where given."""

    def __init__(self, items, sensor_size=None, classes=None, targets=None) -> None:
        self.items = items
        if sensor_size is not None:
            self.sensor_size = sensor_size
        if classes is not None:
            self.classes = classes
        if targets is not None:
            self.targets = targets

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def xytp(t, x, y, p):
    """Events in tonic's own dtype and field order (int64 x, y, t, p)."""
    ev = np.zeros(len(t), dtype=np.dtype([("x", int), ("y", int), ("t", int), ("p", int)]))
    ev["t"], ev["x"], ev["y"], ev["p"] = t, x, y, p
    return ev


# ------------------------------------------------------------------ tonic's NMNIST, real data
def test_tonic_nmnist_equals_asyncsnn_nmnist(tonic_root, subset_accepted) -> None:
    ours = NMNIST(tonic_root, train=False)
    theirs = from_tonic(tonic.datasets.NMNIST(str(tonic_root), train=False), 0.01, 30)
    assert len(theirs) == len(ours) == 100
    assert theirs.targets == ours.targets
    assert sorted(set(theirs.targets)) == list(range(10))
    assert theirs.frame_shape == (2, 34, 34) and theirs.n_classes == 10
    assert theirs.classes[3] == "3 - three"  # tonic's class names
    for i in range(0, 100, 7):
        x, y = theirs[i]
        expected, label = ours[i]
        assert y == label
        assert x.dtype == torch.float32 and x.shape == (30, 2, 34, 34)
        assert x.sum() > 1000  # a real sample, not an empty one
        assert torch.equal(x, expected)


def test_tonic_options_and_transforms(tonic_root, subset_accepted) -> None:
    ours = NMNIST(tonic_root, train=False, first_saccade=True, dt=0.005, n_timesteps=20)
    theirs = load_dataset(
        "tonic:NMNIST", tonic_root, train=False, dt=0.005, n_timesteps=20, first_saccade_only=True
    )
    assert (theirs.dt, theirs.n_timesteps) == (0.005, 20)
    for i in (0, 50, 99):
        assert torch.equal(theirs[i][0], ours[i][0])

    # tonic's own transform changes the sensor: bin on the size it gives
    half = tonic.datasets.NMNIST(
        str(tonic_root), train=False, transform=tonic.transforms.Downsample(spatial_factor=0.5)
    )
    binned = from_tonic(half, 0.01, 30, sensor_size=(17, 17, 2))
    plain = NMNIST(tonic_root, train=False)
    for i in (1, 42):
        expected = bin_events(downsample_events(plain.events(i), 2), (17, 17, 2), 0.01, 30)
        assert torch.equal(binned[i][0], expected)
    # ... and binned on the data set's own sensor size the coordinates are inside it, so the
    # smaller frame would be silently wrong: the wrapper is told, not guessing
    assert binned.frame_shape == (2, 17, 17)


def test_tonic_frames_transform_passes_through(tonic_root, subset_accepted) -> None:
    """tonic's ToFrame bins by itself: from_tonic keeps its frames, cut to n_timesteps."""
    sensor = tonic.datasets.NMNIST.sensor_size
    framed = tonic.datasets.NMNIST(
        str(tonic_root), train=False, transform=tonic.transforms.ToFrame(sensor, n_time_bins=12)
    )
    raw = tonic.datasets.NMNIST(str(tonic_root), train=False)
    data = from_tonic(framed, 0.025, 10)
    x, y = data[5]
    frames = torch.as_tensor(tonic.transforms.ToFrame(sensor, n_time_bins=12)(raw[5][0]))
    assert y == raw[5][1]
    assert x.shape == (10, 2, 34, 34) and data.sensor_size is None
    assert torch.equal(x, frames[:10].float())


def test_tonic_never_downloads(tonic_root, monkeypatch) -> None:
    """With tonic's check left as it is, the 1,100-file subset fails it; tonic would download,
    asyncsnn says where the data should be instead."""

    def no_network(*args, **kwargs):
        raise AssertionError("tonic tried to download")

    monkeypatch.setattr(tonic.dataset, "download_and_extract_archive", no_network)
    with pytest.raises(DatasetNotFoundError, match=r"tonic's NMNIST was not found in .*NMNIST"):
        load_dataset("tonic:NMNIST", tonic_root, train=False)


def test_cli_trains_and_evaluates_on_tonic_data(tonic_root, subset_accepted, tmp_path) -> None:
    """``--dataset tonic:NMNIST`` end to end; the evaluation is checked against the same model
    run by hand on asyncsnn's own N-MNIST loader's samples (the same stratified subset)."""
    import dataclasses
    import json

    import asyncsnn
    from asyncsnn.cli import main
    from asyncsnn.rundir import RunDir
    from asyncsnn.training import load_run, load_test_split

    out = tmp_path / "run"
    common = ["--dataset", "tonic:NMNIST", "--data-dir", str(tonic_root)]
    r = CliRunner().invoke(
        main,
        ["train", *common, "--out", str(out), "--limit-train", "60", "--limit-test", "20"]
        + ["--epochs", "1", "--hidden", "16", "--timesteps", "8", "--training", "layered", "-q"],
    )
    assert r.exit_code == 0, r.output
    record = RunDir(out).read_record()
    assert record.config["dataset"] == "tonic:NMNIST"
    assert record.data.input_shape == (2, 34, 34) and record.data.test_samples == 20
    r = CliRunner().invoke(main, ["evaluate", str(out), "--execution", "layered", "--json"])
    assert r.exit_code == 0, r.output
    reported = json.loads(r.output)

    net, cfg, _ = load_run(out)
    test = load_test_split(dataclasses.replace(cfg, dataset="nmnist"))
    with torch.no_grad():
        result = asyncsnn.run(net, test.x.transpose(0, 1), dt=cfg.dt, execution="layered")
    assert len(test.y) == 20
    assert reported["accuracy"] == pytest.approx((result.prediction == test.y).float().mean())
    assert reported["spikes_per_sample"] == pytest.approx(result.spike_count.float().mean())
    assert reported["spikes_per_sample"] > 0


# ------------------------------------------------------------------ the conversion, by hand
def test_events_are_binned_from_t_start() -> None:
    ev = xytp(t=[0, 4_000, 9_999, 10_000, 35_000], x=[0, 1, 1, 2, 0], y=[0, 0, 1, 1, 2], p=1)
    data = from_tonic(Listed([(ev, 1)], sensor_size=(3, 3, 2)), dt=0.01, n_timesteps=3)
    x, y = data[0]
    assert y == 1 and data.targets == [1] and data.n_classes == 2
    assert data.classes == ("0", "1")
    expected = torch.zeros(3, 2, 3, 3)
    expected[0, 1, 0, 0] = 1  # t = 0
    expected[0, 1, 0, 1] = 1  # t = 4 ms
    expected[0, 1, 1, 1] = 1  # t = 9.999 ms
    expected[1, 1, 1, 2] = 1  # t = 10 ms; the event at 35 ms is past the third bin
    assert torch.equal(x, expected)
    later = from_tonic(Listed([(ev, 0)], sensor_size=(3, 3, 2)), 0.01, 3, t_start=0.005)
    assert later[0][0].sum() == 2  # bins [5, 35) ms: the events at 9.999 and 10 ms
    assert later[0][0][0, 1, 1, 1] == 1 and later[0][0][0, 1, 1, 2] == 1


def test_audio_events_and_empty_samples() -> None:
    audio = np.zeros(3, dtype=np.dtype([("t", int), ("x", int), ("p", int)]))
    audio["t"], audio["x"] = [100, 200, 12_000], [699, 0, 699]
    empty = audio[:0]
    data = from_tonic(Listed([(audio, 0), (empty, 1)], sensor_size=(700, 1, 1)), 0.01, 2)
    x, _ = data[0]
    assert data.frame_shape == (700,)
    assert x[0, 699] == 1 and x[0, 0] == 1 and x[1, 699] == 1 and x.sum() == 3
    assert torch.equal(data[1][0], torch.zeros(2, 700))


def test_frames_are_cut_or_padded() -> None:
    short = np.arange(2 * 4, dtype=np.int16).reshape(2, 4)
    long = torch.ones(5, 4)
    data = from_tonic(Listed([(short, 0), (long, 2)]), dt=0.01, n_timesteps=3)
    assert torch.equal(data[0][0], torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [0, 0, 0, 0.0]]))
    assert torch.equal(data[1][0], torch.ones(3, 4))
    assert data.n_classes == 3


def test_labels_follow_a_target_transform() -> None:
    ev = xytp([0], [0], [0], [0])
    plain = Listed([(ev, 1), (ev, 1)], sensor_size=(1, 1, 2), targets=[1, 1])
    assert from_tonic(plain, 0.01, 1).targets == [1, 1]
    stale = Listed([(ev, 0), (ev, 2)], sensor_size=(1, 1, 2), targets=[1, 1])
    stale.target_transform = lambda y: y  # tonic's targets are then not the items' labels
    assert from_tonic(stale, 0.01, 1).targets == [0, 2]
    named = Listed([(ev, np.int64(1))], sensor_size=(1, 1, 2), classes={"b": 1, "a": 0})
    assert from_tonic(named, 0.01, 1).classes == ("a", "b")


# ------------------------------------------------------------------ bad input
def test_bad_input_is_named() -> None:
    ev = xytp([0, 10], [0, 5], [0, 0], [0, 1])
    with pytest.raises(ValueError, match="no sensor_size"):
        from_tonic(Listed([(ev, 0)]), 0.01, 2)
    with pytest.raises(ValueError, match="needs n_timesteps"):
        from_tonic(Listed([(ev, 0)], sensor_size=(6, 1, 2)), 0.01, None)
    with pytest.raises(ValueError, match="is empty"):
        from_tonic(Listed([], sensor_size=(6, 1, 2)), 0.01, 2)
    with pytest.raises(ValueError, match="dt"):
        from_tonic(Listed([(ev, 0)], sensor_size=(6, 1, 2)), 0.0, 2)
    with pytest.raises(ValueError, match="integer class index"):
        from_tonic(Listed([(ev, "seven")], sensor_size=(6, 1, 2)), 0.01, 2)
    with pytest.raises(ValueError, match=">= 0"):
        from_tonic(Listed([(ev, -1)], sensor_size=(6, 1, 2)), 0.01, 2)
    with pytest.raises(ValueError, match="not a \\(data, label\\) pair"):
        from_tonic(Listed([ev]), 0.01, 2)
    with pytest.raises(ValueError, match="NaN"):
        from_tonic(Listed([(np.full((2, 3), np.nan), 0)]), 0.01, 2)
    with pytest.raises(ValueError, match=r"shape \(timesteps, \*frame_shape\)"):
        from_tonic(Listed([(np.zeros(3), 0)]), 0.01, 2)

    small = from_tonic(Listed([(ev, 0)], sensor_size=(3, 1, 2)), 0.01, 2)
    with pytest.raises(ValueError, match=r"tonic:Listed sample 0: event 1 has x=5, outside"):
        small[0]
    unsorted = xytp([10, 0], [0, 0], [0, 0], [0, 0])
    with pytest.raises(ValueError, match="sample 0: .*sorted"):
        from_tonic(Listed([(unsorted, 0)], sensor_size=(1, 1, 2)), 0.01, 2)[0]
    mixed = from_tonic(Listed([(np.zeros((2, 3)), 0), (np.zeros((2, 4)), 0)]), 0.01, 2)
    with pytest.raises(ValueError, match=r"frames of shape \(4,\)"):
        mixed[1]


def test_load_dataset_names_what_is_wrong(tmp_path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="tonic has no data set 'Nmnist'.*NMNIST"):
        load_dataset("tonic:Nmnist", tmp_path)
    with pytest.raises(ValueError, match="give dt and n_timesteps"):
        load_dataset("tonic:POKERDVS", tmp_path)
    with pytest.raises(ValueError, match="first_saccade applies to the nmnist data set only"):
        from asyncsnn.training import TrainConfig, _dataset_options

        _dataset_options(TrainConfig(dataset="tonic:SHD", first_saccade=True))
    monkeypatch.setitem(sys.modules, "tonic", None)
    with pytest.raises(ImportError, match="needs tonic: pip install"):
        load_dataset("tonic:NMNIST", tmp_path)


def test_make_events_streams_bin_the_same() -> None:
    """asyncsnn's own event dtype goes through from_tonic as tonic's does."""
    ours = make_events(t=[0, 15_000], x=[1, 0], y=[0, 1], p=[1, 0])
    theirs = xytp([0, 15_000], [1, 0], [0, 1], [1, 0])
    a = from_tonic(Listed([(ours, 0)], sensor_size=(2, 2, 2)), 0.01, 2)[0][0]
    b = from_tonic(Listed([(theirs, 0)], sensor_size=(2, 2, 2)), 0.01, 2)[0][0]
    assert torch.equal(a, b) and a.sum() == 2
