"""mnist-saccades: the real MNIST test images through the emulated camera, N-MNIST's geometry."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from asyncsnn.data import (
    CorruptDatasetError,
    DatasetNotFoundError,
    MNISTSaccades,
    available_datasets,
    get_dataset_class,
    load_dataset,
    read_mnist,
    stratified_split,
)

TEST_COUNTS = [196, 227, 206, 202, 196, 178, 192, 206, 195, 202]  # 20% of MNIST's test classes
TRAIN_COUNTS = [784, 908, 826, 808, 786, 714, 766, 822, 779, 807]


@pytest.fixture(scope="module")
def mnist_root(shared_data: Path) -> Path:
    return shared_data / "mnist"


@pytest.fixture(scope="module")
def test_split(mnist_root: Path) -> MNISTSaccades:
    return MNISTSaccades(mnist_root, train=False)


def test_mnist_saccades_is_registered_under_its_name() -> None:
    assert "mnist-saccades" in available_datasets()
    for spelling in ("mnist-saccades", "MNIST_saccades", "mnistsaccades"):
        assert get_dataset_class(spelling) is MNISTSaccades
    from asyncsnn.cli import main

    for command in ("train", "import"):
        option = next(p for p in main.commands[command].params if p.name == "dataset")
        assert option.type.convert("mnist-saccades", option, None) == "mnist-saccades"


def test_mnist_saccades_split_sizes_and_class_balance(
    mnist_root: Path, test_split: MNISTSaccades
) -> None:
    train = load_dataset("mnist-saccades", mnist_root, train=True)
    assert (len(train), len(test_split)) == (MNISTSaccades.n_train, MNISTSaccades.n_test)
    assert (MNISTSaccades.n_train, MNISTSaccades.n_test, MNISTSaccades.n_samples) == (
        8000,
        2000,
        10000,
    )
    assert np.bincount(test_split.targets).tolist() == TEST_COUNTS
    assert np.bincount(train.targets).tolist() == TRAIN_COUNTS
    _, labels = read_mnist(mnist_root, train=False)
    train_idx, test_idx = stratified_split(labels, test_fraction=0.2, seed=0)
    assert np.array_equal(train.indices, train_idx) and np.array_equal(test_split.indices, test_idx)
    assert not set(train.indices.tolist()) & set(test_split.indices.tolist())
    assert sorted([*train.indices.tolist(), *test_split.indices.tolist()]) == list(range(10000))
    assert train.targets == labels[train.indices].tolist()
    assert test_split.targets == labels[test_split.indices].tolist()


def test_mnist_saccades_items_are_n_mnist_shaped_frames(
    mnist_root: Path, test_split: MNISTSaccades
) -> None:
    assert MNISTSaccades.sensor_size == (34, 34, 2) and MNISTSaccades.n_classes == 10
    frames, label = test_split[0]
    assert frames.shape == (30, 2, 34, 34) and frames.dtype == torch.float32
    assert isinstance(label, int) and label == test_split.targets[0]
    assert frames.sum().item() == len(test_split.events(0))
    train = load_dataset("mnist-saccades", mnist_root, train=True, dt=0.02)
    frames, label = train[7]
    assert (train.dt, train.n_timesteps) == (0.02, 15)
    assert frames.shape == (15, 2, 34, 34) and label == train.targets[7]


def test_mnist_saccades_event_counts_are_like_n_mnist(test_split: MNISTSaccades) -> None:
    """On the first 128 test samples (one block): real N-MNIST has about 1,100 to 7,200 events
    per sample spread over its 34x34 pixels; here 1,433 to 5,767, 3,759 on average."""
    streams = [test_split.events(i) for i in range(128)]
    counts = np.array([len(e) for e in streams])
    assert counts.min() >= 1000 and counts.max() <= 8000
    assert 3000 <= counts.mean() <= 4800
    pixels = [len(np.unique(e["y"].astype(np.int64) * 34 + e["x"])) for e in streams]
    assert min(pixels) >= 100  # a digit's edges, not a few pixels at the centre
    assert min(int(e["y"].max() - e["y"].min()) for e in streams) >= 15
    assert min(int(e["x"].min()) for e in streams) <= 5
    assert max(int(e["x"].max()) for e in streams) >= 28
    on = np.array([e["p"].mean() for e in streams])
    assert 0.4 < on.min() and on.max() < 0.6  # ON and OFF in balance
    frames, _ = test_split.stack(range(128))
    per_saccade = frames.reshape(128, 3, -1).sum(dim=2) / frames.sum(dim=(1, 2, 3, 4))[:, None]
    assert per_saccade.min() > 0.05  # all three saccades move the digit
    assert 0.03 < frames.mean().item() < 0.08  # inputs active per bin, as in N-MNIST (5.6%)


def test_mnist_saccades_are_deterministic_per_seed(
    mnist_root: Path, test_split: MNISTSaccades
) -> None:
    test_split[0]  # converts the first block of 128, vectorised
    again = MNISTSaccades(mnist_root, train=False)
    alone = again.events(5)  # out of order: converted alone
    assert sum(e is not None for e in again._events) == 1
    assert np.array_equal(alone, test_split.events(5))
    assert torch.equal(again[5][0], test_split[5][0])
    other = MNISTSaccades(mnist_root, train=False, seed=1)
    assert not torch.equal(other[5][0], test_split[5][0])


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_mnist_saccades_missing_or_wrong_files_say_which_and_where(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="t10k-images-idx3-ubyte") as error:
        load_dataset("mnist-saccades", tmp_path, train=True)
    assert str(tmp_path) in str(error.value) and "does not download" in str(error.value)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 28)), 0x803)
    with pytest.raises(DatasetNotFoundError, match="t10k-labels-idx1-ubyte") as error:
        load_dataset("mnist-saccades", tmp_path, train=False)
    assert str(tmp_path) in str(error.value)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(3), 0x801)
    with pytest.raises(CorruptDatasetError, match="3 MNIST test images .* expected 10000"):
        load_dataset("mnist-saccades", tmp_path)


def test_mnist_saccades_through_a_training_configuration(mnist_root: Path) -> None:
    from asyncsnn.training import TrainConfig, load_splits

    cfg = TrainConfig(
        dataset="mnist-saccades", data_dir=str(mnist_root), limit_train=30, limit_test=10
    )
    train, val, test, facts = load_splits(cfg)
    assert len(train) + len(val) == 30 and len(test) == 10
    assert tuple(train.x.shape[1:]) == (30, 2, 34, 34) and facts.n_classes == 10
    with pytest.raises(ValueError, match="first_saccade applies to the nmnist data set only"):
        load_splits(TrainConfig(dataset="mnist-saccades", first_saccade=True))
