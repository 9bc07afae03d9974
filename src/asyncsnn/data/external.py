"""Data sets of another library as asyncsnn data sets: any tonic data set and transform.

:func:`from_tonic` wraps a tonic data set (or anything indexable that yields ``(events,
label)`` pairs as tonic's do) as a :class:`~asyncsnn.data.FrameDataset`, binning each
sample with asyncsnn's own :func:`~asyncsnn.data.bin_events`, so a user's own event data
runs without a new loader:

>>> import tonic                                                        # doctest: +SKIP
>>> ds = tonic.datasets.NMNIST("data", train=False,
...                            transform=tonic.transforms.Denoise(10_000))  # doctest: +SKIP
>>> test = from_tonic(ds, dt=0.01, n_timesteps=30)                       # doctest: +SKIP
>>> test[0][0].shape                                                     # doctest: +SKIP
torch.Size([30, 2, 34, 34])

:func:`load_tonic` opens a tonic data set by name from a local copy, as
``load_dataset("tonic:NMNIST", root)`` and the command line's ``--dataset tonic:NMNIST`` do.
tonic downloads a data set it does not find; asyncsnn never downloads, so that download is
replaced by an error that says where tonic looked.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .base import FrameDataset
from .errors import DatasetNotFoundError
from .events import _is_camera, bin_events, frame_shape

__all__ = ["TONIC_PREFIX", "TonicDataset", "from_tonic", "load_tonic"]

TONIC_PREFIX = "tonic:"
"""Prefix of a tonic data set's name in :func:`~asyncsnn.data.load_dataset` and the CLI."""


class TonicDataset(FrameDataset):
    """A tonic data set seen as an asyncsnn :class:`~asyncsnn.data.FrameDataset`.

    Made by :func:`from_tonic`, which documents the conversion. ``source`` is the wrapped
    data set; ``sensor_size`` the size events are binned on (camera ``(width, height,
    polarities)`` or audio ``(channels, 1, 1)``), ``None`` where the source yields frames.
    """

    def __init__(
        self,
        source: Any,
        dt: float,
        n_timesteps: int,
        *,
        sensor_size: Sequence[int] | None,
        t_start: float,
        name: str,
        classes: Sequence[str] | None,
    ) -> None:
        self.source = source
        self.name = name
        self.t_start = float(t_start)
        if not math.isfinite(self.t_start):
            raise ValueError(f"t_start must be a finite number of seconds, got {t_start!r}")
        first, label = _item(source, 0)
        self.sensor_size = None if sensor_size is None else tuple(int(s) for s in sensor_size)
        if _is_events(first):
            if self.sensor_size is None:
                raise ValueError(
                    f"{name} has no sensor_size to bin its events on: give from_tonic(..., "
                    "sensor_size=(width, height, polarities)) or (channels, 1, 1) for audio"
                )
            shape = frame_shape(self.sensor_size, _is_camera(first))
        else:
            shape = tuple(_as_frames(first, 0, name).shape[1:])
            self.sensor_size = None
        super().__init__(getattr(source, "train", True), dt, n_timesteps, shape)
        self.targets = _targets(source, label, name)
        self.classes = tuple(str(c) for c in classes) if classes is not None else ()
        if not self.classes:
            self.classes = tuple(str(c) for c in range(max(self.targets, default=-1) + 1))
        self.n_classes = len(self.classes)
        too_big = [y for y in self.targets if not 0 <= y < self.n_classes]
        if too_big:
            raise ValueError(f"{name} has label {too_big[0]}, outside its {self.n_classes} classes")

    def _frames(self, index: int) -> torch.Tensor:
        data, _ = _item(self.source, index)
        if not _is_events(data):
            return _fit(_as_frames(data, index, self.name), self.n_timesteps, self.frame_shape)
        if len(data) == 0:
            return torch.zeros(self.n_timesteps, *self.frame_shape)
        try:
            return bin_events(data, self.sensor_size, self.dt, self.n_timesteps, self.t_start)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{self.name} sample {index}: {error}") from error


def from_tonic(
    dataset: Any,
    dt: float,
    n_timesteps: int,
    *,
    sensor_size: Sequence[int] | None = None,
    t_start: float = 0.0,
    classes: Sequence[str] | None = None,
) -> TonicDataset:
    """Any tonic data set, with any of its transforms, as an asyncsnn data set.

    Each item of ``dataset`` is ``(data, label)``. ``data`` is either

    - an event stream, a numpy structured array with fields ``t`` (microseconds, tonic's unit)
      and ``x``, plus ``y`` and ``p`` for a camera (tonic's ``xytp``, in any field order):
      binned by :func:`~asyncsnn.data.bin_events` into ``n_timesteps`` bins of ``dt`` from
      ``t_start`` (events outside them are left out; a camera's channel is its polarity, as
      tonic's ``ToFrame``), or
    - frames, already binned by a transform such as tonic's ``ToFrame``: an array or tensor of
      shape ``(T, *frame_shape)``, cut or padded with empty timesteps to ``n_timesteps``
      (``dt`` then only says how long the given bins are).

    Args:
        dataset: a tonic data set or any indexable of ``(data, label)`` with ``len``.
        dt: bin length in seconds.
        n_timesteps: timesteps of every sample (tonic's samples have no fixed length).
        sensor_size: what events are binned on; default ``dataset.sensor_size``. Give it when
            a transform changes it (e.g. ``Downsample(spatial_factor=0.5)`` makes N-MNIST's
            ``(34, 34, 2)`` into ``(17, 17, 2)``).
        t_start: start of the first bin, in seconds.
        classes: class names; default ``dataset.classes``, else ``0 .. max label``.

    Returns:
        A :class:`TonicDataset`: items ``(frames (n_timesteps, *frame_shape) float32, label
        int)``; ``targets`` the label of every sample.

    Raises:
        ValueError: no sensor size to bin on, a non-integer or negative label, NaN or badly
            shaped frames, and (when the sample is read) events outside the sensor or out of
            time order, naming the sample.
    """
    if n_timesteps is None:
        raise ValueError(
            "from_tonic needs n_timesteps: tonic's samples have no fixed length, asyncsnn's do"
        )
    if len(dataset) == 0:
        raise ValueError(f"{_name(dataset)} is empty: it has no sample to convert")
    return TonicDataset(
        dataset,
        dt,
        n_timesteps,
        sensor_size=getattr(dataset, "sensor_size", None) if sensor_size is None else sensor_size,
        t_start=t_start,
        name=_name(dataset),
        classes=_classes(dataset) if classes is None else classes,
    )


def load_tonic(
    name: str,
    root: str | os.PathLike[str],
    train: bool,
    dt: float | None,
    n_timesteps: int | None,
    **options: Any,
) -> TonicDataset:
    """Open ``tonic.datasets.NAME`` from a local copy under ``root`` and wrap it by
    :func:`from_tonic`.

    tonic looks for a data set in ``root/<ClassName>/`` (e.g. ``data/NMNIST/Train``). Where
    asyncsnn has a data set of the same name (``nmnist``, ``shd``, ``dvsgesture``), its default
    ``dt`` and ``n_timesteps`` apply; otherwise both must be given. ``options`` go to tonic's
    constructor (``first_saccade_only=True``, ``transform=...``).

    Raises:
        ImportError: tonic is not installed.
        ValueError: tonic has no data set of that name, or it has no ``train`` split.
        DatasetNotFoundError: tonic does not find the data set (where it would download it).
    """
    try:
        import tonic
    except ImportError as error:
        raise ImportError(
            f"the data set {TONIC_PREFIX}{name} needs tonic: pip install 'tonic>=1.7'"
        ) from error
    cls = getattr(tonic.datasets, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, tonic.dataset.Dataset)):
        known = sorted(
            n
            for n, c in vars(tonic.datasets).items()
            if inspect.isclass(c) and issubclass(c, tonic.dataset.Dataset) and c is not None
        )
        raise ValueError(
            f"tonic has no data set {name!r} (names are case-sensitive); tonic "
            f"{tonic.__version__} has: {', '.join(known)}"
        )
    if "train" not in inspect.signature(cls.__init__).parameters:
        raise ValueError(
            f"tonic's {name} has no train/test split (no 'train' argument): open it with tonic "
            "and pass your own split to asyncsnn.data.from_tonic"
        )
    if dt is None or n_timesteps is None:
        dt, n_timesteps = _defaults(name, dt, n_timesteps)
    local = type(cls.__name__, (cls,), {"download": _refuse_download, "__module__": cls.__module__})
    dataset = local(os.fspath(root), train=train, **options)
    return from_tonic(dataset, dt, n_timesteps)


def _refuse_download(self) -> None:
    name = type(self).__name__
    hint = (
        f" ({self.location_on_system}/Train/<digit>/<id>.bin), or use asyncsnn's own loader "
        "(--dataset nmnist), which accepts a partial copy"
        if name == "NMNIST"
        else ""
    )
    raise DatasetNotFoundError(
        f"tonic's {name} was not found in {self.location_on_system}: tonic's own check of its "
        "files failed, and tonic would now download it. asyncsnn does not download data sets: "
        f"put a local copy there in tonic's layout{hint}"
    )


def _defaults(name: str, dt: float | None, n_timesteps: int | None) -> tuple[float, int]:
    from .registry import get_dataset_class

    try:
        twin = get_dataset_class(name)
    except ValueError:
        raise ValueError(
            f"give dt and n_timesteps (--dt and --timesteps) for {TONIC_PREFIX}{name}: asyncsnn "
            "has no defaults for it"
        ) from None
    dt = twin.default_dt if dt is None else dt
    return dt, (twin._default_n_timesteps(dt) if n_timesteps is None else n_timesteps)


def _name(dataset: Any) -> str:
    return f"{TONIC_PREFIX}{type(dataset).__name__}"


def _classes(dataset: Any) -> Sequence[str] | None:
    classes = getattr(dataset, "classes", None)
    if isinstance(classes, dict):  # some tonic data sets map names to labels
        return [name for name, _ in sorted(classes.items(), key=lambda kv: kv[1])]
    return list(classes) if isinstance(classes, (list, tuple)) and classes else None


def _item(dataset: Any, index: int) -> tuple[Any, Any]:
    item = dataset[index]
    if not (isinstance(item, tuple) and len(item) == 2):
        raise ValueError(
            f"{_name(dataset)} sample {index} is not a (data, label) pair: got "
            f"{type(item).__name__}"
        )
    return item


def _is_events(data: Any) -> bool:
    return isinstance(data, np.ndarray) and data.dtype.names is not None


def _as_frames(data: Any, index: int, name: str) -> torch.Tensor:
    try:
        frames = torch.as_tensor(np.asarray(data) if not torch.is_tensor(data) else data)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{name} sample {index} is neither an event stream (a structured array with 't' "
            f"and 'x') nor frames: {type(data).__name__}"
        ) from error
    if frames.ndim < 2:
        raise ValueError(
            f"{name} sample {index}: frames must have shape (timesteps, *frame_shape), got "
            f"{tuple(frames.shape)}"
        )
    frames = frames.to(torch.float32)
    if not torch.isfinite(frames).all():
        raise ValueError(f"{name} sample {index}: frames hold NaN or infinite values")
    return frames


def _fit(frames: torch.Tensor, n_timesteps: int, shape: tuple[int, ...]) -> torch.Tensor:
    if tuple(frames.shape[1:]) != shape:
        raise ValueError(
            f"frames of shape {tuple(frames.shape[1:])} per timestep, but the data set's first "
            f"sample has {shape}"
        )
    if len(frames) >= n_timesteps:
        return frames[:n_timesteps].contiguous()
    pad = torch.zeros(n_timesteps - len(frames), *shape)
    return torch.cat([frames, pad])


def _label(value: Any, where: str) -> int:
    if (torch.is_tensor(value) or isinstance(value, np.ndarray)) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{where}: a label must be an integer class index, got {value!r}")
    if value < 0:
        raise ValueError(f"{where}: a label must be >= 0, got {value}")
    return int(value)


def _targets(dataset: Any, first_label: Any, name: str) -> list[int]:
    """The label of every sample: tonic's ``targets`` where they are the items' labels (no
    target transform), else read from every item (each sample is read once)."""
    targets = getattr(dataset, "targets", None)
    transformed = any(
        getattr(dataset, attr, None) is not None for attr in ("target_transform", "transforms")
    )
    if targets is not None and not transformed and len(targets) == len(dataset):
        return [_label(y, f"{name} sample {i}") for i, y in enumerate(targets)]
    labels = [_label(first_label, f"{name} sample 0")]
    labels += [_label(_item(dataset, i)[1], f"{name} sample {i}") for i in range(1, len(dataset))]
    return labels
