"""Data-set loaders on fake files in each real on-disk format, the registry, and real samples."""

from __future__ import annotations

import pickle
from dataclasses import FrozenInstanceError
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from asyncsnn.data import (
    CIFAR10,
    NMNIST,
    SHD,
    CorruptDatasetError,
    DatasetNotFoundError,
    DVSGesture,
    available_datasets,
    get_dataset_class,
    load_dataset,
    read_nmnist_bin,
)

# ----------------------------------------------------------------------------- N-MNIST


def nmnist_bytes(events: list[tuple[int, int, int, int]]) -> bytes:
    """N-MNIST's 5-byte records from (x, y, p, t_us), written from the format's description."""
    out = bytearray()
    for x, y, p, t in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


SAMPLE_A = [
    (0, 0, 1, 0),
    (0, 0, 1, 9_999),
    (33, 33, 0, 10_000),
    (5, 7, 1, 150_000),  # needs the high timestamp byte
    (5, 7, 0, 299_999),
    (1, 1, 1, 300_000),  # after the 30 bins of 10 ms
]
SAMPLE_B = [(2, 3, 0, 50), (2, 3, 0, 60)]
SAMPLE_C = [(10, 20, 1, 95_000), (11, 21, 0, 105_000)]


def write_nmnist(folder: Path) -> None:
    for split, digit, name, events in [
        ("Train", 3, "00002.bin", SAMPLE_B),
        ("Train", 0, "00001.bin", SAMPLE_A),
        ("Train", 0, "00007.bin", SAMPLE_C),
        ("Test", 7, "00001.bin", SAMPLE_C),
    ]:
        path = folder / split / str(digit) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(nmnist_bytes(events))


@pytest.fixture
def nmnist_root(tmp_path: Path) -> Path:
    write_nmnist(tmp_path / "NMNIST")
    return tmp_path


def test_read_nmnist_bin_decodes_the_5_byte_format(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(nmnist_bytes(SAMPLE_A))
    events = read_nmnist_bin(path)
    assert events["x"].tolist() == [e[0] for e in SAMPLE_A]
    assert events["y"].tolist() == [e[1] for e in SAMPLE_A]
    assert events["p"].tolist() == [e[2] for e in SAMPLE_A]
    assert events["t"].tolist() == [e[3] for e in SAMPLE_A]


def test_read_nmnist_bin_timestamp_overflow_marker(tmp_path: Path) -> None:
    path = tmp_path / "overflow.bin"
    path.write_bytes(nmnist_bytes([(1, 1, 1, 100), (0, 240, 0, 0), (2, 2, 0, 50)]))
    events = read_nmnist_bin(path)
    assert events["t"].tolist() == [100, 50 + 2**13]  # the marker itself is dropped
    assert events["x"].tolist() == [1, 2]


def test_nmnist_bins_known_events_exactly(nmnist_root: Path) -> None:
    data = NMNIST(nmnist_root, train=True)
    assert len(data) == 3 and data.targets == [0, 0, 3]  # digit order, then file name
    assert data.n_timesteps == 30 and data.dt == 0.01 and data.frame_shape == (2, 34, 34)
    frames, label = data[0]
    assert label == 0 and frames.shape == (30, 2, 34, 34) and frames.dtype == torch.float32
    expected = torch.zeros(30, 2, 34, 34)
    expected[0, 1, 0, 0] = 2.0
    expected[1, 0, 33, 33] = 1.0
    expected[15, 1, 7, 5] = 1.0  # row y = 7, column x = 5
    expected[29, 0, 7, 5] = 1.0
    assert torch.equal(frames, expected)
    frames, label = data[2]
    assert label == 3 and frames[0, 0, 3, 2] == 2.0 and frames.sum() == 2


def test_nmnist_first_saccade(nmnist_root: Path) -> None:
    data = NMNIST(nmnist_root, first_saccade=True)
    frames, _ = data[0]
    assert frames.sum() == 3 and frames[0, 1, 0, 0] == 2.0 and frames[1, 0, 33, 33] == 1.0
    assert data.events(1)["t"].tolist() == [95_000]


def test_nmnist_accepts_the_folder_holding_train_and_test(nmnist_root: Path) -> None:
    direct = NMNIST(nmnist_root / "NMNIST", train=False)
    assert len(direct) == 1 and direct.targets == [7]
    frames, label = direct[0]
    assert label == 7 and frames[9, 1, 20, 10] == 1.0 and frames[10, 0, 21, 11] == 1.0


def test_nmnist_missing_folders_say_where_and_what(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as error:
        NMNIST(missing)
    assert str(missing) in str(error.value) and "does not exist" in str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    (tmp_path / "NMNIST" / "Train").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError) as error:
        NMNIST(tmp_path, train=False)
    message = str(error.value)
    assert str(tmp_path / "NMNIST" / "Test") in message and str(tmp_path / "Test") in message
    assert "Expected layout: <root>/NMNIST/Train/<digit>/<id>.bin" in message
    with pytest.raises(DatasetNotFoundError, match="no .bin files in"):
        NMNIST(tmp_path, train=True)


def test_nmnist_corrupt_files_name_the_file(nmnist_root: Path) -> None:
    path = nmnist_root / "NMNIST" / "Train" / "3" / "00002.bin"
    path.write_bytes(nmnist_bytes(SAMPLE_B)[:-3])
    data = NMNIST(nmnist_root)
    with pytest.raises(CorruptDatasetError, match="not a multiple of 5") as error:
        data[2]
    assert error.value.path == path and str(path) in str(error.value)
    path.write_bytes(b"")
    with pytest.raises(CorruptDatasetError, match="no events"):
        data[2]
    path.write_bytes(nmnist_bytes([(40, 3, 1, 10)]))
    with pytest.raises(CorruptDatasetError, match="outside the 34x34 sensor"):
        data[2]


# ----------------------------------------------------------------------------- SHD


def write_shd(
    path: Path,
    recordings: list[tuple[list[float], list[int]]],
    labels: list[int],
    keys: list[bytes] | None = None,
) -> None:
    """A file in SHD's HDF5 schema: variable-length spikes/times (s) and spikes/units."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as file:
        times = file.create_dataset(
            "spikes/times", (len(recordings),), dtype=h5py.vlen_dtype(np.float16)
        )
        units = file.create_dataset(
            "spikes/units", (len(recordings),), dtype=h5py.vlen_dtype(np.uint16)
        )
        for i, (t, u) in enumerate(recordings):
            times[i] = np.asarray(t, dtype=np.float16)
            units[i] = np.asarray(u, dtype=np.uint16)
        file["labels"] = np.asarray(labels, dtype=np.uint16)
        file["extra/speaker"] = np.zeros(len(labels), dtype=np.uint16)
        if keys is not None:
            file["extra/keys"] = np.asarray(keys)


SHD_RECORDINGS = [
    # float16-exact times in seconds: 0, 2**-8, 0.5, 0.75 and 1.25 (after the 1 s window)
    ([0.0, 0.00390625, 0.5, 0.75, 1.25], [0, 0, 699, 10, 5]),
    ([0.125], [42]),
]


@pytest.fixture
def shd_root(tmp_path: Path) -> Path:
    write_shd(tmp_path / "SHD" / "shd_train.h5", SHD_RECORDINGS, [3, 19])
    write_shd(tmp_path / "SHD" / "shd_test.h5", SHD_RECORDINGS[1:], [12])
    return tmp_path


def test_shd_bins_known_spikes_exactly(shd_root: Path) -> None:
    data = SHD(shd_root, train=True)
    assert len(data) == 2 and data.targets == [3, 19] and data.frame_shape == (700,)
    assert data.n_classes == 20 and data.classes[19] == "german neun"
    frames, label = data[0]
    assert label == 3 and frames.shape == (100, 700)
    expected = torch.zeros(100, 700)
    expected[0, 0] = 2.0
    expected[50, 699] = 1.0
    expected[75, 10] = 1.0
    assert torch.equal(frames, expected)
    assert data.events(0)["t"].tolist() == [0, 3906, 500_000, 750_000, 1_250_000]
    test = SHD(shd_root, train=False, dt=0.005, n_timesteps=40)
    frames, label = test[0]
    assert label == 12 and frames.shape == (40, 700) and frames[25, 42] == 1.0


def test_shd_from_file_reads_class_names_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "spikes.h5"
    keys = [str(d).encode() for d in range(10)]
    write_shd(path, SHD_RECORDINGS, [0, 9], keys=keys)
    data = SHD.from_file(path, train=False)
    assert data.classes == tuple(str(d) for d in range(10)) and data.n_classes == 10
    assert data[1][1] == 9


def test_shd_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as error:
        SHD(tmp_path)
    message = str(error.value)
    assert str(tmp_path / "SHD" / "shd_train.h5") in message and "Expected layout" in message
    bad = tmp_path / "not-hdf5" / "shd_train.h5"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not HDF5" * 10)
    with pytest.raises(CorruptDatasetError, match="not a readable HDF5 file") as error:
        SHD(bad.parent)
    assert str(bad) in str(error.value)
    no_spikes = tmp_path / "no-spikes" / "shd_train.h5"
    no_spikes.parent.mkdir()
    with h5py.File(no_spikes, "w") as file:
        file["labels"] = np.zeros(2, dtype=np.uint16)
    with pytest.raises(CorruptDatasetError, match="missing spikes/times, spikes/units"):
        SHD(no_spikes.parent)
    write_shd(tmp_path / "bad-channel" / "shd_train.h5", [([0.1], [700])], [0])
    with pytest.raises(CorruptDatasetError, match="channel 700 outside 0..699"):
        SHD(tmp_path / "bad-channel")[0]
    write_shd(tmp_path / "bad-label" / "shd_train.h5", [([0.1], [7])], [20])
    with pytest.raises(CorruptDatasetError, match="labels outside 0..19"):
        SHD(tmp_path / "bad-label")


# ----------------------------------------------------------------------------- DVS Gesture

GESTURE = np.array(
    # x, y, p, t (ms): tonic's DVSGesture columns
    [
        [0, 0, 1, 1000.0],
        [3, 3, 1, 1005.0],
        [127, 127, 0, 1019.0],
        [4, 0, 0, 1020.0],
        [64, 32, 1, 1045.5],
    ]
)


@pytest.fixture
def gesture_root(tmp_path: Path) -> Path:
    train = tmp_path / "DVSGesture" / "ibmGestureTrain"
    for folder, label, array in [
        ("user01_fluorescent", 3, GESTURE.astype(np.int64)),
        ("user01_fluorescent", 0, GESTURE),
        ("user02_led", 10, GESTURE[:2]),
    ]:
        (train / folder).mkdir(parents=True, exist_ok=True)
        np.save(train / folder / f"{label}.npy", array)
    test = tmp_path / "DVSGesture" / "ibmGestureTest" / "user24_led"
    test.mkdir(parents=True)
    np.save(test / "5.npy", GESTURE)
    return tmp_path


def test_dvsgesture_downsamples_and_bins_from_the_first_event(gesture_root: Path) -> None:
    data = DVSGesture(gesture_root, train=True)
    assert data.targets == [0, 3, 10] and data.users == [1, 1, 2]
    assert data.lighting == ["fluorescent", "fluorescent", "led"]
    assert data.frame_shape == (2, 32, 32) and data.n_timesteps == 300 and data.dt == 0.02
    frames, label = data[0]
    assert label == 0 and frames.shape == (300, 2, 32, 32)
    expected = torch.zeros(300, 2, 32, 32)
    expected[0, 1, 0, 0] = 2.0  # (0, 0) and (3, 3) share pixel (0, 0) after // 4
    expected[0, 0, 31, 31] = 1.0
    expected[1, 0, 0, 1] = 1.0  # t = 1020 ms is 20 ms after the first event
    expected[2, 1, 8, 16] = 1.0  # row 32 // 4, column 64 // 4
    assert torch.equal(frames, expected)
    assert torch.equal(data[1][0], expected)  # the same events stored as integers
    assert data.events(0)["t"].tolist() == [1_000_000, 1_005_000, 1_019_000, 1_020_000, 1_045_500]


def test_dvsgesture_full_resolution_and_test_split(gesture_root: Path) -> None:
    data = DVSGesture(gesture_root / "DVSGesture", train=False, downsample=1, n_timesteps=3)
    assert len(data) == 1 and data.frame_shape == (2, 128, 128)
    frames, label = data[0]
    assert label == 5 and frames.shape == (3, 2, 128, 128)
    assert frames[0, 1, 3, 3] == 1.0 and frames[0, 0, 127, 127] == 1.0 and frames.sum() == 5


def test_dvsgesture_missing_and_corrupt(gesture_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="ibmGestureTrain") as error:
        DVSGesture(tmp_path / "DVSGesture" / "ibmGestureTrain")
    assert "Expected layout" in str(error.value)
    path = gesture_root / "DVSGesture" / "ibmGestureTrain" / "user02_led" / "10.npy"
    path.write_bytes(b"\x93NUMPY garbage")
    data = DVSGesture(gesture_root)
    with pytest.raises(CorruptDatasetError, match="not a readable .npy") as error:
        data[2]
    assert str(path) in str(error.value)
    np.save(path, GESTURE[:, :3])
    with pytest.raises(CorruptDatasetError, match=r"\(N, 4\)"):
        data[2]
    np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptDatasetError):
        data[2]
    np.save(path, np.array([[128.0, 0, 1, 0]]))
    with pytest.raises(CorruptDatasetError, match="outside the 128x128 sensor"):
        data[2]


# ----------------------------------------------------------------------------- CIFAR-10


def write_cifar(folder: Path, n: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = np.zeros((n, 3072), dtype=np.uint8)
        data[0, :1024] = 255  # image 0: red channel full
        data[0, 1024 + 32 * 2 + 5] = 51  # green at row 2, column 5
        batch = {"batch_label": name, "data": data, "labels": [k % 10, (k + 1) % 10][:n]}
        with (folder / name).open("wb") as file:
            pickle.dump(batch, file, protocol=2)


def test_cifar10_repeats_each_image_as_currents(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-10-batches-py")
    data = CIFAR10(tmp_path, train=True, normalize=False, n_timesteps=4)
    assert len(data) == 10 and data.targets[:4] == [0, 1, 1, 2]
    frames, label = data[0]
    assert label == 0 and frames.shape == (4, 3, 32, 32) and frames.dtype == torch.float32
    assert torch.equal(frames[0], frames[3])
    assert frames[0, 0].min() == 1.0 and frames[0, 2].max() == 0.0
    assert frames[0, 1, 2, 5] == pytest.approx(0.2) and frames[0, 1].sum() == pytest.approx(0.2)
    normalised = CIFAR10(tmp_path / "cifar-10-batches-py", train=False)
    frames, label = normalised[0]
    assert label == 5 and frames.shape == (10, 3, 32, 32) and len(normalised) == 2
    red = (1.0 - CIFAR10.mean[0]) / CIFAR10.std[0]
    blue = (0.0 - CIFAR10.mean[2]) / CIFAR10.std[2]
    assert frames[0, 0, 0, 0].item() == pytest.approx(red, rel=1e-5)
    assert frames[0, 2, 31, 31].item() == pytest.approx(blue, rel=1e-5)


def test_cifar10_missing_batch_and_unsafe_pickle(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    with pytest.raises(DatasetNotFoundError, match="data_batch_1") as error:
        CIFAR10(tmp_path)
    assert str(folder / "data_batch_1") in str(error.value)
    write_cifar(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="no file .*data_batch_3"):
        CIFAR10(tmp_path)
    (folder / "test_batch").write_bytes(
        b"cos\nsystem\n(S'echo hacked'\ntR."  # protocol 0: os.system('echo hacked')
    )
    with pytest.raises(CorruptDatasetError, match="refused to load global 'os.system'"):
        CIFAR10(tmp_path, train=False)


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_defaults(nmnist_root: Path) -> None:
    assert available_datasets() == [
        "cifar10",
        "digits",
        "dvsgesture",
        "fsdd",
        "mnist-saccades",
        "nmnist",
        "shd",
    ]
    assert get_dataset_class("N-MNIST") is NMNIST and get_dataset_class("dvs_gesture") is DVSGesture
    data = load_dataset("nmnist", nmnist_root, train=False)
    assert (data.dt, data.n_timesteps) == (0.01, 30)
    coarse = load_dataset("nmnist", nmnist_root, dt=0.02, first_saccade=True)
    assert (coarse.dt, coarse.n_timesteps, coarse.first_saccade) == (0.02, 15, True)
    explicit = load_dataset("nmnist", nmnist_root, dt=0.001, n_timesteps=7)
    assert explicit[0][0].shape == (7, 2, 34, 34)
    assert (SHD.default_dt, SHD.default_n_timesteps) == (0.01, 100)
    assert (DVSGesture.default_dt, DVSGesture.default_n_timesteps) == (0.02, 300)


def test_registry_errors(nmnist_root: Path) -> None:
    with pytest.raises(ValueError, match="unknown data set 'mnist'; available: cifar10"):
        load_dataset("mnist")
    with pytest.raises(TypeError, match="no option 'downsample'; its options: first_saccade"):
        load_dataset("nmnist", nmnist_root, downsample=4)
    with pytest.raises(ValueError, match="dt must be a positive"):
        load_dataset("nmnist", nmnist_root, dt=0.0)


def test_registry_default_root_from_the_environment(
    nmnist_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCSNN_DATA", str(nmnist_root))
    assert len(load_dataset("nmnist", train=False)) == 1
    monkeypatch.setenv("ASYNCSNN_DATA", str(nmnist_root / "empty"))
    with pytest.raises(DatasetNotFoundError, match="empty"):
        load_dataset("shd")


def test_items_batch_with_a_dataloader(nmnist_root: Path) -> None:
    data = NMNIST(nmnist_root, n_timesteps=5)
    frames, labels = next(iter(torch.utils.data.DataLoader(data, batch_size=3)))
    assert frames.shape == (3, 5, 2, 34, 34) and labels.tolist() == [0, 0, 3]
    stacked, stacked_labels = data.stack()
    assert torch.equal(stacked, frames) and torch.equal(stacked_labels, labels)


def test_event_image_dataset_options_set_split_bins_transform_and_classes() -> None:
    from asyncsnn.data.digits import EventImageDataset, ImageSetOptions

    images = np.zeros((2, 8, 8))
    images[:, 2:6, 2:6] = 1.0
    default = EventImageDataset(images, [0, 1], sensor_size=(8, 8, 2))
    assert default.train and default.n_timesteps == 30 and default.classes == ("0", "1")
    kept: list[int] = []
    options = ImageSetOptions(
        train=False,
        n_timesteps=6,
        transform=lambda ev: kept.append(len(ev)) or ev[:0],
        classes=["a", "b", "c"],
    )
    data = EventImageDataset(images, [0, 1], sensor_size=(8, 8, 2), options=options)
    assert not data.train and data.n_timesteps == 6
    assert data.classes == ("a", "b", "c") and data.n_classes == 3
    frames, label = data[1]
    assert frames.shape == (6, 2, 8, 8) and frames.sum() == 0 and label == 1
    assert kept == [len(data.events(1))] and kept[0] > 0
    with pytest.raises(FrozenInstanceError):
        options.train = True  # type: ignore[misc]


# ----------------------------------------------------------------------------- real samples

TEST_COUNTS = {0: 8, 1: 14, 2: 8, 3: 11, 4: 14, 5: 7, 6: 10, 7: 15, 8: 2, 9: 11}


def test_real_nmnist_subset(shared_data: Path) -> None:
    root = shared_data / "nmnist-subset"
    train = load_dataset("nmnist", root, train=True)
    test = load_dataset("nmnist", root, train=False)
    assert len(train) == 1000 and len(test) == 100
    assert dict(enumerate(np.bincount(test.targets).tolist())) == TEST_COUNTS
    for data, index in [(train, 0), (train, 999), (test, 50)]:
        frames, label = data[index]
        events = data.events(index)
        assert frames.shape == (30, 2, 34, 34) and label == data.targets[index]
        assert 1000 <= len(events) <= 7200
        assert frames.sum().item() == int((events["t"] < 300_000).sum())
        assert frames[:10].sum() > 0 and frames[20:].sum() > 0  # three saccades
    first = NMNIST(root, train=False, first_saccade=True)
    assert first.events(0)["t"].max() < 100_000 and first[0][0][10:].sum() == 0


def test_real_fsdd_spikes_through_the_shd_loader(shared_data: Path) -> None:
    data = SHD.from_file(shared_data / "fsdd" / "spikes" / "fsdd_test.h5", train=False)
    assert len(data) == 127 and data.n_classes == 10
    frames, label = data[0]
    events = data.events(0)
    assert frames.shape == (100, 700) and 0 <= label <= 9
    assert frames.sum().item() == int((events["t"] < 1_000_000).sum()) > 1000


def test_real_dvs128_clip_bins_like_dvs_gesture(shared_data: Path) -> None:
    from asyncsnn.data import bin_events, downsample_events

    events = read_nmnist_bin(shared_data / "dvs128-clips" / "01.bin")
    assert 60_000 < len(events) < 190_000
    assert events["x"].max() < 128 and events["y"].max() < 128
    small = downsample_events(events, 4)
    frames = bin_events(small, (32, 32, 2), dt=0.02, t_start=events["t"][0] / 1e6)
    assert frames.shape[1:] == (2, 32, 32) and 60 <= frames.shape[0] <= 80
    assert frames.sum().item() == len(events)
