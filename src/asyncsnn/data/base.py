"""What every asyncsnn data set has in common.

A data set is a :class:`torch.utils.data.Dataset` whose items are ``(frames, label)`` with
``frames`` a float32 tensor of shape ``(T, *frame_shape)`` and ``label`` an ``int``. Its facts are
class attributes, as in tonic (``sensor_size``, ``classes``, ``n_classes``, public split sizes,
default ``dt`` and ``n_timesteps``); per-instance choices (``dt``, ``n_timesteps``, options) are
instance attributes.

:class:`EventDataset` adds the event stream behind each item (``events(index)``) and bins it with
:func:`.events.bin_events`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch

from .events import _dt_to_microseconds, bin_events, frame_shape

__all__ = ["EventDataset", "FrameDataset"]

EventTransform = Callable[[np.ndarray], np.ndarray]


class FrameDataset(torch.utils.data.Dataset):
    """Base class: fixed-length samples ``(frames (T, *frame_shape) float32, label int)``.

    Subclasses set the class attributes and implement :meth:`_frames`. Without ``n_timesteps``,
    a sample lasts the data set's default duration, ``default_dt * default_n_timesteps``
    seconds, whatever ``dt``.

    Attributes:
        dt: timestep in seconds.
        n_timesteps: number of timesteps ``T`` of every sample.
        targets: the label of every sample, in order.
        frame_shape: shape of one timestep's input, e.g. ``(2, 34, 34)`` or ``(700,)``.
    """

    name: ClassVar[str] = ""
    sensor_size: ClassVar[tuple[int, ...]] = ()
    classes: ClassVar[tuple[str, ...]] = ()
    n_classes: ClassVar[int] = 0
    n_train: ClassVar[int] = 0
    n_test: ClassVar[int] = 0
    default_dt: ClassVar[float] = 0.01
    default_n_timesteps: ClassVar[int] = 1

    def __init__(
        self, train: bool, dt: float | None, n_timesteps: int | None, frame_shape: Sequence[int]
    ) -> None:
        self.train = bool(train)
        self.dt = float(self.default_dt if dt is None else dt)
        _dt_to_microseconds(self.dt)
        n_timesteps = self._default_n_timesteps(self.dt) if n_timesteps is None else n_timesteps
        if isinstance(n_timesteps, bool) or int(n_timesteps) != n_timesteps or n_timesteps < 1:
            raise ValueError(f"n_timesteps must be a positive integer, got {n_timesteps!r}")
        self.n_timesteps = int(n_timesteps)
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.targets: list[int] = []

    @classmethod
    def _default_n_timesteps(cls, dt: float) -> int:
        """Timesteps when none are given: the default duration (``default_dt *
        default_n_timesteps`` seconds) cut into bins of ``dt``."""
        return max(1, round(cls.default_dt * cls.default_n_timesteps / dt))

    @property
    def n_inputs(self) -> int:
        """Number of input neurons: the product of :attr:`frame_shape`."""
        return math.prod(self.frame_shape)

    @property
    def duration(self) -> float:
        """Length of a sample in seconds: ``n_timesteps * dt``."""
        return self.n_timesteps * self.dt

    def __len__(self) -> int:
        return len(self.targets)

    def _index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of {n}")
        return int(index) % n

    def _frames(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = self._index(index)
        return self._frames(index), int(self.targets[index])

    def stack(self, indices: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """All (or the given) samples as one batch.

        Returns:
            ``frames`` of shape ``(N, T, *frame_shape)`` (float32) and ``labels`` of shape
            ``(N,)`` (int64).
        """
        indices = range(len(self)) if indices is None else indices
        frames, labels = [], []
        for i in indices:
            x, y = self[i]
            frames.append(x)
            labels.append(y)
        if not frames:
            return torch.zeros(0, self.n_timesteps, *self.frame_shape), torch.zeros(
                0, dtype=torch.int64
            )
        return torch.stack(frames), torch.tensor(labels, dtype=torch.int64)

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return (
            f"{type(self).__name__}({split}, {len(self)} samples, dt={self.dt} s, "
            f"n_timesteps={self.n_timesteps}, frame_shape={self.frame_shape})"
        )


class EventDataset(FrameDataset):
    """Base class for event data: :meth:`events` gives a sample's stream, items are its bins.

    Bin ``k`` of a sample covers ``[t0 + k*dt, t0 + (k+1)*dt)`` where ``t0`` is
    :meth:`_t_start` of the stream as read (0 unless a data set says otherwise); events after
    ``n_timesteps`` bins are left out. ``transform``, if given, is applied to the events before
    binning.

    Attributes:
        binning_size: the sensor size the events are binned on (after any down-sampling).
    """

    def __init__(
        self,
        train: bool,
        dt: float | None,
        n_timesteps: int | None,
        binning_size: Sequence[int],
        camera: bool,
        transform: EventTransform | None = None,
    ) -> None:
        super().__init__(train, dt, n_timesteps, frame_shape(binning_size, camera))
        self.binning_size = tuple(int(s) for s in binning_size)
        self.transform = transform

    def events(self, index: int) -> np.ndarray:
        """The time-sorted event stream of sample ``index`` (timestamps in microseconds)."""
        raise NotImplementedError

    def _t_start(self, events: np.ndarray) -> float:
        return 0.0

    def _frames(self, index: int) -> torch.Tensor:
        events = self.events(index)
        t_start = self._t_start(events) if len(events) else 0.0
        if self.transform is not None:
            events = self.transform(events)
        if len(events) == 0:
            return torch.zeros(self.n_timesteps, *self.frame_shape)
        return bin_events(events, self.binning_size, self.dt, self.n_timesteps, t_start)
