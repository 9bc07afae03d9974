"""Readers of the on-disk formats, with errors that name the file and what is wrong with it.

- :func:`read_nmnist_bin`: the 5-byte event format of N-MNIST (and of other ATIS/DVS recordings
  distributed the same way);
- :func:`read_idx`, :func:`read_mnist`: the IDX files of MNIST (optionally gzipped);
- :func:`load_pickle_arrays`, :func:`read_cifar_batch`: CIFAR-10's python pickle batches, read by
  an unpickler that only rebuilds numpy arrays and never runs any other code.

Nothing here downloads anything.
"""

from __future__ import annotations

import gzip
import importlib
import io
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CorruptDatasetError, DatasetNotFoundError
from .events import CAMERA_EVENT_DTYPE

__all__ = [
    "load_pickle_arrays",
    "read_cifar_batch",
    "read_idx",
    "read_mnist",
    "read_nmnist_bin",
]

PathLike = str | os.PathLike[str]

_NMNIST_OVERFLOW_Y = 240
_NMNIST_OVERFLOW_INCREMENT = 1 << 13


def _read_bytes(path: PathLike, what: str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{what} not found: no file at {path}")
    return path.read_bytes()


def read_nmnist_bin(path: PathLike) -> np.ndarray:
    """Read an N-MNIST ``.bin`` file: 5 bytes per event.

    Byte 0 is x, byte 1 is y, bit 7 of byte 2 the polarity (1 = ON) and the low 23 bits of bytes
    2-4 the timestamp in microseconds (big-endian). An event with ``y == 240`` is a timestamp
    overflow marker: it adds ``2**13`` microseconds to all later events and is dropped (the
    convention of the original reader).

    Returns:
        Camera events (:data:`.events.CAMERA_EVENT_DTYPE`), sorted by time.

    Raises:
        DatasetNotFoundError: no such file.
        CorruptDatasetError: the size is not a multiple of 5 bytes (truncated file).
    """
    raw = np.frombuffer(_read_bytes(path, "N-MNIST event file"), dtype=np.uint8)
    if raw.size % 5:
        raise CorruptDatasetError(
            path,
            f"{raw.size} bytes is not a multiple of 5 (5 bytes per event); the file is truncated",
        )
    records = raw.reshape(-1, 5).astype(np.int64)
    x, y = records[:, 0], records[:, 1]
    t = ((records[:, 2] & 0x7F) << 16) | (records[:, 3] << 8) | records[:, 4]
    overflow = y == _NMNIST_OVERFLOW_Y
    if overflow.any():
        t = t + np.cumsum(overflow) * _NMNIST_OVERFLOW_INCREMENT
    keep = ~overflow
    events = np.empty(int(keep.sum()), dtype=CAMERA_EVENT_DTYPE)
    events["t"] = t[keep]
    events["x"] = x[keep]
    events["y"] = y[keep]
    events["p"] = records[keep, 2] >> 7
    if events.size > 1 and np.any(np.diff(events["t"]) < 0):
        events = events[np.argsort(events["t"], kind="stable")]
    return events


_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (MNIST's format), gzipped or not.

    The header is two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian
    uint32; the data follows, big-endian, and must have exactly the announced size.

    Args:
        path: the file; a gzip file is recognised by its content, not its name.
        expected_magic: if given, the 4-byte magic number the file must carry (e.g. ``0x803``
            for MNIST images, ``0x801`` for labels).

    Returns:
        The array, in native byte order.

    Raises:
        DatasetNotFoundError: no such file.
        CorruptDatasetError: bad magic number, unknown type, or a size that does not match the
            header (truncated or padded file, or a broken gzip stream).
    """
    data = _read_bytes(path, "IDX file")
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            reason = f"cannot decompress the gzip stream ({error})"
            raise CorruptDatasetError(path, reason) from None
    if len(data) < 4:
        raise CorruptDatasetError(path, f"only {len(data)} bytes, shorter than an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise CorruptDatasetError(path, f"magic number 0x{magic:08x} is not an IDX header")
    if expected_magic is not None and magic != expected_magic:
        raise CorruptDatasetError(
            path, f"magic number 0x{magic:08x}, expected 0x{expected_magic:08x}"
        )
    dtype, ndim = _IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptDatasetError(path, f"header announces {ndim} dimensions but is truncated")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        problem = "truncated" if found < expected else "longer than announced"
        raise CorruptDatasetError(
            path,
            f"{problem}: header says shape {shape} ({expected} bytes of data), "
            f"the file holds {found}",
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


_MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_mnist_file(root: Path, stem: str) -> Path:
    folders = [root, root / "MNIST" / "raw", root / "mnist"]
    for folder in folders:
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                return folder / name
    looked = ", ".join(str(folder / (stem + "[.gz]")) for folder in folders)
    raise DatasetNotFoundError(
        f"MNIST file {stem}[.gz] not found; looked for {looked}. Expected layout: "
        "<root>/{train,t10k}-images-idx3-ubyte[.gz] and <root>/{train,t10k}-labels-idx1-ubyte"
        "[.gz] (or the same under <root>/MNIST/raw/); asyncsnn does not download data sets"
    )


def read_mnist(root: PathLike, train: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read MNIST images and labels from IDX files under ``root``.

    Returns:
        ``images`` (N, 28, 28) uint8 and ``labels`` (N,) uint8.
    """
    root = Path(root)
    image_stem, label_stem = _MNIST_FILES[bool(train)]
    image_path = _find_mnist_file(root, image_stem)
    label_path = _find_mnist_file(root, label_stem)
    images = read_idx(image_path, expected_magic=0x803)
    labels = read_idx(label_path, expected_magic=0x801)
    if len(images) != len(labels):
        raise CorruptDatasetError(
            label_path, f"{len(labels)} labels for {len(images)} images in {image_path}"
        )
    if labels.size and labels.max() > 9:
        raise CorruptDatasetError(label_path, f"label {int(labels.max())} is not a digit 0-9")
    return images, labels


def _numpy_global(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


# Globals a pickled numpy array may name, mapped to where they live in this numpy.
_SAFE_GLOBALS: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("numpy", "ndarray"): (("numpy", "ndarray"),),
    ("numpy", "dtype"): (("numpy", "dtype"),),
    ("_codecs", "encode"): (("_codecs", "encode"),),
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    for _name in ("_reconstruct", "scalar"):
        _SAFE_GLOBALS[(_module, _name)] = (
            ("numpy._core.multiarray", _name),
            ("numpy.core.multiarray", _name),
        )
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _SAFE_GLOBALS[(_module, "_frombuffer")] = (
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.numeric", "_frombuffer"),
    )


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays, and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        candidates = _SAFE_GLOBALS.get((module, name))
        if candidates is None:
            raise pickle.UnpicklingError(
                f"refused to load global '{module}.{name}': only numpy arrays, numbers, strings "
                "and containers are allowed, so this pickle would run code"
            )
        for where in candidates:
            try:
                return _numpy_global(*where)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"numpy has no '{module}.{name}'")


def load_pickle_arrays(path: PathLike) -> Any:
    """Unpickle a file that may hold only numpy arrays, numbers, strings and containers.

    Python 2 pickles (as CIFAR-10's) are read with ``encoding='latin1'``, the encoding numpy
    needs for its arrays. Any other global (a class, ``os.system``, ...) is refused.

    Raises:
        DatasetNotFoundError: no such file.
        CorruptDatasetError: unsafe content, truncated or otherwise unreadable pickle.
    """
    data = _read_bytes(path, "pickle file")
    try:
        return _ArraysOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise CorruptDatasetError(path, f"not a safe pickle of arrays: {error}") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
        reason = "truncated" if isinstance(error, EOFError) else type(error).__name__
        raise CorruptDatasetError(path, f"cannot unpickle ({reason}: {error})") from None


def _field(batch: dict[Any, Any], names: Sequence[str]) -> Any:
    for name in names:
        for key in (name, name.encode()):
            if key in batch:
                return batch[key]
    return None


def read_cifar_batch(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch (``data_batch_1`` .. ``data_batch_5``, ``test_batch``).

    The batch is a pickled dict with ``data`` (N x 3072 uint8: 1024 red, 1024 green, 1024 blue
    values, rows of 32) and ``labels`` (N integers 0-9), read with :func:`load_pickle_arrays`.

    Returns:
        ``images`` (N, 3, 32, 32) uint8 and ``labels`` (N,) int64.

    Raises:
        DatasetNotFoundError: no such file.
        CorruptDatasetError: unsafe or unreadable pickle, or content of the wrong shape.
    """
    batch = load_pickle_arrays(path)
    if not isinstance(batch, dict):
        raise CorruptDatasetError(path, f"expected a dict, found {type(batch).__name__}")
    data, labels = _field(batch, ["data"]), _field(batch, ["labels"])
    if not isinstance(data, np.ndarray) or labels is None:
        raise CorruptDatasetError(path, "expected a dict with a numpy array 'data' and 'labels'")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise CorruptDatasetError(
            path, f"'data' must be uint8 of shape (N, 3072), found {data.dtype} {data.shape}"
        )
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise CorruptDatasetError(path, "'labels' are not integers") from None
    if labels.shape != (data.shape[0],):
        raise CorruptDatasetError(
            path, f"{labels.size} labels for {data.shape[0]} images (shape {labels.shape})"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise CorruptDatasetError(path, "labels must be class indices 0-9")
    return data.reshape(-1, 3, 32, 32), labels
