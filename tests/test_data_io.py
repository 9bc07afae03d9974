"""Readers of IDX files and of pickled arrays (CIFAR-10 batches), on files written here."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from asyncsnn.data import (
    CorruptDatasetError,
    DatasetNotFoundError,
    load_pickle_arrays,
    read_cifar_batch,
    read_idx,
    read_mnist,
)


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    """IDX encoding written from the format's description, independently of the reader."""
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(
        struct.pack(">I", n) for n in array.shape
    )
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    return header + big_endian.tobytes()


@pytest.fixture
def images() -> np.ndarray:
    return np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)


def test_read_idx_uint8_plain_and_gzipped(tmp_path: Path, images: np.ndarray) -> None:
    plain = tmp_path / "images-idx3-ubyte"
    plain.write_bytes(idx_bytes(images, 0x08))
    packed = tmp_path / "images-idx3-ubyte.gz"
    packed.write_bytes(gzip.compress(idx_bytes(images, 0x08)))
    for path in (plain, packed):
        out = read_idx(path, expected_magic=0x803)
        assert out.dtype == np.uint8 and np.array_equal(out, images)


def test_read_idx_big_endian_types(tmp_path: Path) -> None:
    values = np.array([[-2, 300], [32767, -32768]], dtype=np.int16)
    path = tmp_path / "shorts.idx"
    path.write_bytes(idx_bytes(values, 0x0B))
    out = read_idx(path)
    assert out.dtype == np.dtype(np.int16) and np.array_equal(out, values)
    floats = np.array([1.5, -0.25], dtype=np.float32)
    path.write_bytes(idx_bytes(floats, 0x0D))
    assert read_idx(path).tolist() == [1.5, -0.25]


def test_read_idx_reports_truncated_and_padded_files(tmp_path: Path, images: np.ndarray) -> None:
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(idx_bytes(images, 0x08)[:-1])
    with pytest.raises(CorruptDatasetError, match="truncated: header says shape") as error:
        read_idx(path)
    assert str(path) in str(error.value) and error.value.path == path
    path.write_bytes(idx_bytes(images, 0x08) + b"\0")
    with pytest.raises(CorruptDatasetError, match="longer than announced"):
        read_idx(path)
    path.write_bytes(b"\0\0\x08")
    with pytest.raises(CorruptDatasetError, match="shorter than an IDX header"):
        read_idx(path)


def test_read_idx_checks_magic_numbers(tmp_path: Path, images: np.ndarray) -> None:
    path = tmp_path / "bad-magic"
    path.write_bytes(b"\x12\x34" + idx_bytes(images, 0x08)[2:])
    with pytest.raises(CorruptDatasetError, match="not an IDX header"):
        read_idx(path)
    path.write_bytes(idx_bytes(images, 0x08))
    with pytest.raises(CorruptDatasetError, match="expected 0x00000801"):
        read_idx(path, expected_magic=0x801)


def test_read_idx_reports_a_broken_gzip_stream(tmp_path: Path, images: np.ndarray) -> None:
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(idx_bytes(images, 0x08))[:-12])
    with pytest.raises(CorruptDatasetError, match="gzip"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="no file at") as error:
        read_idx(tmp_path / "nothing-here")
    assert isinstance(error.value, FileNotFoundError)


def test_read_mnist_layouts_and_errors(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    images[1, 4, 5] = 200
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images, 0x08)))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([7, 2, 1], np.uint8), 0x08))
    got, labels = read_mnist(tmp_path, train=False)
    assert np.array_equal(got, images) and labels.tolist() == [7, 2, 1]
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte") as error:
        read_mnist(tmp_path, train=True)
    assert str(tmp_path) in str(error.value)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([7, 2], np.uint8), 0x08))
    with pytest.raises(CorruptDatasetError, match="2 labels for 3 images"):
        read_mnist(tmp_path, train=False)


def cifar_batch(n: int, seed: int = 0) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    return {
        "batch_label": "testing batch 1 of 1",
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        "labels": [int(v) for v in rng.integers(0, 10, n)],
        "filenames": [f"img_{i}.png" for i in range(n)],
    }


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_read_cifar_batch_any_pickle_protocol(tmp_path: Path, protocol: int) -> None:
    batch = cifar_batch(4)
    path = tmp_path / "data_batch_1"
    with path.open("wb") as file:
        pickle.dump(batch, file, protocol=protocol)
    images, labels = read_cifar_batch(path)
    assert images.shape == (4, 3, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(images.reshape(4, -1), batch["data"])
    assert labels.tolist() == batch["labels"]


def test_read_cifar_batch_with_bytes_keys_and_numpy_labels(tmp_path: Path) -> None:
    batch = cifar_batch(3)
    path = tmp_path / "test_batch"
    with path.open("wb") as file:
        pickle.dump(
            {b"data": batch["data"], b"labels": np.array(batch["labels"], np.int64)}, file, 2
        )
    images, labels = read_cifar_batch(path)
    assert labels.tolist() == batch["labels"] and images.shape == (3, 3, 32, 32)


class _RunsShell:
    """Unpickling this would call os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_calls_os_system_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    batch = cifar_batch(2)
    batch["data"] = _RunsShell(marker)
    with path.open("wb") as file:
        pickle.dump(batch, file, protocol=2)
    with pytest.raises(CorruptDatasetError, match="refused to load global") as error:
        read_cifar_batch(path)
    message = str(error.value)
    assert str(path) in message and "system" in message
    assert not marker.exists()


@pytest.mark.parametrize("target", [eval, __import__, getattr])
def test_other_builtins_are_refused(tmp_path: Path, target: object) -> None:
    class Sneaky:
        def __reduce__(self) -> tuple[object, tuple[str, ...]]:
            return (target, ("1",))

    path = tmp_path / "sneaky.pkl"
    path.write_bytes(pickle.dumps({"data": Sneaky()}, protocol=2))
    with pytest.raises(CorruptDatasetError, match="refused"):
        load_pickle_arrays(path)


def test_truncated_and_malformed_batches(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(cifar_batch(2), protocol=2)[:-40])
    with pytest.raises(CorruptDatasetError, match="data_batch_1"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}))
    with pytest.raises(CorruptDatasetError, match=r"shape \(N, 3072\)"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}))
    with pytest.raises(CorruptDatasetError, match="1 labels for 2 images"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(CorruptDatasetError, match="expected a dict"):
        read_cifar_batch(path)
