"""Event transforms as small dataclasses, each delegating to a function of :mod:`.events`.

They are validated on construction and can be chained with :class:`Compose`:

>>> from asyncsnn.data.events import make_events
>>> ev = make_events(t=[0, 150_000], x=[4, 8], y=[4, 8], p=[1, 0])
>>> to_frames = Compose([FirstSaccade(), Downsample(4), ToFrames((4, 4, 2), dt=0.05)])
>>> to_frames(ev).shape
torch.Size([1, 2, 4, 4])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .events import (
    _check_factor,
    _dt_to_microseconds,
    bin_events,
    downsample_events,
    first_saccade,
    frame_shape,
)

__all__ = ["Compose", "Downsample", "FirstSaccade", "ToFrames"]


@dataclass(frozen=True)
class ToFrames:
    """Bin events into a float32 tensor of counts; see :func:`.events.bin_events`.

    Attributes:
        sensor_size: ``(width, height, polarities)`` or ``(channels,)``.
        dt: bin length in seconds.
        n_timesteps: number of bins (``None``: up to the last event).
        t_start: start of the first bin in seconds.
    """

    sensor_size: tuple[int, ...]
    dt: float
    n_timesteps: int | None = None
    t_start: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sensor_size", tuple(int(s) for s in self.sensor_size))
        camera = len(self.sensor_size) == 3 and self.sensor_size[1:] != (1, 1)
        frame_shape(self.sensor_size, camera=camera)
        _dt_to_microseconds(self.dt)
        if self.n_timesteps is not None and self.n_timesteps < 1:
            raise ValueError(f"n_timesteps must be positive or None, got {self.n_timesteps}")
        if not math.isfinite(self.t_start):
            raise ValueError(f"t_start must be a finite number of seconds, got {self.t_start}")

    def __call__(self, events: np.ndarray) -> torch.Tensor:
        return bin_events(events, self.sensor_size, self.dt, self.n_timesteps, self.t_start)


@dataclass(frozen=True)
class Downsample:
    """Divide pixel coordinates by an integer ``factor``; see :func:`.events.downsample_events`."""

    factor: int

    def __post_init__(self) -> None:
        _check_factor(self.factor)

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return downsample_events(events, self.factor)


@dataclass(frozen=True)
class FirstSaccade:
    """Keep events with ``t < duration`` (seconds); see :func:`.events.first_saccade`."""

    duration: float = 0.1

    def __post_init__(self) -> None:
        if not math.isfinite(self.duration) or self.duration <= 0:
            raise ValueError(f"duration must be a positive number of seconds, got {self.duration}")

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return first_saccade(events, self.duration)


@dataclass(frozen=True)
class Compose:
    """Apply transforms in order."""

    transforms: Sequence[Callable[[Any], Any]]

    def __call__(self, data: Any) -> Any:
        for transform in self.transforms:
            data = transform(data)
        return data
