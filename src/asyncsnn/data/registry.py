"""Data sets by name: ``load_dataset("nmnist", root, train=False)``.

Each name maps to a class whose class attributes hold its defaults:

==============  ==========  ===========  ======================================
name            default dt  n_timesteps  options
==============  ==========  ===========  ======================================
digits          10 ms       30 (300 ms)  seed, config, transform
mnist-saccades  10 ms       30 (300 ms)  seed, config, transform
nmnist          10 ms       30 (300 ms)  first_saccade, transform
shd             10 ms       100 (1 s)    transform
fsdd            10 ms       100 (1 s)    encoder, seed, cache_dir, progress, transform
dvsgesture      20 ms       300 (6 s)    downsample (default 4), transform
cifar10         10 ms       10           normalize
==============  ==========  ===========  ======================================

Names are looked up with case, ``-``, ``_`` and spaces ignored (``"N-MNIST"``,
``"MNIST_saccades"``); :func:`available_datasets` gives them as the classes spell them.

When only ``dt`` is given, ``n_timesteps`` keeps the default duration (except for CIFAR-10,
where it stays 10).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from .base import FrameDataset
from .datasets import CIFAR10, NMNIST, SHD, DVSGesture
from .digits import Digits
from .external import TONIC_PREFIX, load_tonic
from .fsdd import FSDD
from .mnist import MNISTSaccades

__all__ = [
    "DATA_ROOT_ENV",
    "available_datasets",
    "default_data_root",
    "get_dataset_class",
    "load_dataset",
]

DATA_ROOT_ENV = "ASYNCSNN_DATA"
"""Environment variable naming the default data folder (else ``./data``)."""


def _normalise(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


_DATASETS: dict[str, type[FrameDataset]] = {
    _normalise(cls.name): cls
    for cls in (Digits, MNISTSaccades, NMNIST, SHD, FSDD, DVSGesture, CIFAR10)
}


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (and by the command line's ``--dataset``), as
    the classes spell them (``mnist-saccades``)."""
    return sorted(cls.name for cls in _DATASETS.values())


def get_dataset_class(name: str) -> type[FrameDataset]:
    """The class behind a data-set name (case, ``-`` and ``_`` are ignored: ``"N-MNIST"``)."""
    cls = _DATASETS.get(_normalise(name))
    if cls is None:
        raise ValueError(f"unknown data set {name!r}; available: {', '.join(available_datasets())}")
    return cls


def default_data_root() -> Path:
    """``$ASYNCSNN_DATA`` if set, else ``./data``."""
    return Path(os.environ.get(DATA_ROOT_ENV) or "data")


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    train: bool = True,
    dt: float | None = None,
    n_timesteps: int | None = None,
    **options: Any,
) -> FrameDataset:
    """Open a data set by name from a local copy.

    Args:
        name: one of :func:`available_datasets` (``digits``, ``mnist-saccades``, ``nmnist``,
            ``shd``, ``fsdd``, ``dvsgesture``, ``cifar10``), or ``tonic:NAME`` for tonic's
            data set ``tonic.datasets.NAME`` found under ``root`` in tonic's layout
            (:func:`.external.load_tonic`; its options are tonic's).
        root: the data folder (default :func:`default_data_root`); ignored by ``digits``.
        train: training split if True, else test split.
        dt: timestep in seconds (default: the data set's, see the module docstring).
        n_timesteps: number of timesteps (default: the data set's duration divided by ``dt``).
        **options: data-set-specific keyword options (e.g. ``first_saccade=True`` for N-MNIST,
            ``downsample=4`` for DVS Gesture).

    Returns:
        The data set; items are ``(frames (T, *frame_shape) float32, label int)``.

    Raises:
        ValueError: unknown name.
        TypeError: an option the data set does not have.
        DatasetNotFoundError: the local copy is missing (the message says where it should be).
    """
    root = default_data_root() if root is None else root
    if name.startswith(TONIC_PREFIX):
        return load_tonic(name[len(TONIC_PREFIX) :], root, train, dt, n_timesteps, **options)
    cls = get_dataset_class(name)
    parameters = inspect.signature(cls.__init__).parameters
    accepted = [
        p
        for p, spec in parameters.items()
        if spec.kind is inspect.Parameter.KEYWORD_ONLY and not p.startswith("_")
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(
            f"data set {cls.name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options: {', '.join(accepted) or 'none'}"
        )
    return cls(root, train, dt, n_timesteps, **options)
