"""Event streams as numpy structured arrays, and the functions that turn them into frames.

An event stream is a 1-D numpy structured array sorted by time:

- camera events (:data:`CAMERA_EVENT_DTYPE`): ``t`` (microseconds, int64), ``x`` (column),
  ``y`` (row), ``p`` (polarity: 1 = ON, brighter; 0 = OFF, darker);
- audio / cochlear spikes (:data:`AUDIO_EVENT_DTYPE`): ``t`` (microseconds, int64), ``x``
  (channel).

A sensor is described as in tonic, ``sensor_size = (width, height, polarities)``; an audio sensor
of ``C`` channels is ``(C,)`` or tonic's ``(C, 1, 1)``. Binning gives frames of shape
``(2, H, W)`` (channel = polarity, row = y, column = x) for a camera and ``(C,)`` for audio.

All durations in the public API are in seconds (``dt``, ``t_start``, ``duration``); timestamps
inside event arrays are integer microseconds.

>>> ev = make_events(t=[0, 5_000, 12_000], x=[1, 1, 0], y=[0, 0, 2], p=[1, 1, 0])
>>> bin_events(ev, sensor_size=(2, 3, 2), dt=0.01).shape
torch.Size([2, 2, 3, 2])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

__all__ = [
    "AUDIO_EVENT_DTYPE",
    "CAMERA_EVENT_DTYPE",
    "bin_events",
    "downsample_events",
    "downsample_sensor_size",
    "first_saccade",
    "frame_shape",
    "make_events",
]

CAMERA_EVENT_DTYPE = np.dtype([("t", np.int64), ("x", np.int16), ("y", np.int16), ("p", np.int8)])
"""Camera events: time (microseconds), column, row, polarity (1 = ON, 0 = OFF)."""

AUDIO_EVENT_DTYPE = np.dtype([("t", np.int64), ("x", np.int16)])
"""Audio / cochlear spikes: time (microseconds) and channel."""

SensorSize = Sequence[int]


def make_events(
    t: npt.ArrayLike,
    x: npt.ArrayLike,
    y: npt.ArrayLike | None = None,
    p: npt.ArrayLike | None = None,
) -> np.ndarray:
    """Build an event stream from columns.

    Args:
        t: timestamps in microseconds (integers).
        x: columns (camera) or channels (audio).
        y: rows; omit, together with ``p``, for audio events.
        p: polarities (1 = ON, 0 = OFF); required with ``y``.

    Returns:
        A structured array of :data:`CAMERA_EVENT_DTYPE` (with ``y`` and ``p``) or
        :data:`AUDIO_EVENT_DTYPE` (without). Events are not sorted or validated here; binning does
        that.
    """
    if (y is None) != (p is None):
        raise ValueError("give both y and p (camera events) or neither (audio events)")
    columns = {"t": np.asarray(t), "x": np.asarray(x)}
    if y is not None:
        columns["y"] = np.asarray(y)
        columns["p"] = np.asarray(p)
    dtype = CAMERA_EVENT_DTYPE if y is not None else AUDIO_EVENT_DTYPE
    lengths = {name: column.shape for name, column in columns.items()}
    n = columns["t"].shape
    if len(n) != 1 or any(shape != n for shape in lengths.values()):
        raise ValueError(f"event columns must be 1-D and of equal length, got shapes {lengths}")
    events = np.empty(n[0], dtype=dtype)
    for name, column in columns.items():
        events[name] = column
    return events


def _is_camera(events: np.ndarray) -> bool:
    names = events.dtype.names
    if names is None or "t" not in names or "x" not in names:
        raise TypeError(
            "events must be a numpy structured array with fields 't' (microseconds) and 'x' "
            f"(and 'y', 'p' for cameras); got dtype {events.dtype}"
        )
    return "y" in names


def frame_shape(sensor_size: SensorSize, camera: bool = True) -> tuple[int, ...]:
    """Shape of one binned frame for a sensor.

    Args:
        sensor_size: ``(width, height, polarities)`` for a camera; ``(channels,)`` or
            ``(channels, 1, 1)`` for audio.
        camera: whether the events have rows and polarities.

    Returns:
        ``(polarities, height, width)`` for a camera, ``(channels,)`` for audio.
    """
    size = tuple(int(s) for s in sensor_size)
    if any(s < 1 for s in size):
        raise ValueError(f"sensor_size entries must be positive, got {size}")
    if camera:
        if len(size) != 3:
            raise ValueError(f"a camera's sensor_size is (width, height, polarities), got {size}")
        width, height, polarities = size
        return (polarities, height, width)
    if len(size) == 1 or (len(size) == 3 and size[1:] == (1, 1)):
        return (size[0],)
    raise ValueError(f"an audio sensor_size is (channels,) or (channels, 1, 1), got {size}")


def _dt_to_microseconds(dt: float) -> float:
    if not isinstance(dt, (int, float, np.floating, np.integer)) or isinstance(dt, bool):
        raise TypeError(f"dt must be a number of seconds, got {dt!r}")
    if not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    dt_us = float(dt) * 1e6
    return float(round(dt_us)) if abs(dt_us - round(dt_us)) < 1e-6 else dt_us


def _check_sorted(t: np.ndarray) -> None:
    steps = np.diff(t)
    if steps.size and steps.min() < 0:
        i = int(np.argmax(steps < 0)) + 1
        raise ValueError(
            "event timestamps are not sorted: event "
            f"{i} (t={int(t[i])} us) comes after event {i - 1} (t={int(t[i - 1])} us); "
            "sort the stream first, e.g. np.sort(events, order='t', kind='stable')"
        )


def _check_coordinates(events: np.ndarray, shape: tuple[int, ...], camera: bool) -> None:
    if camera:
        limits = {"x": shape[2], "y": shape[1]}
        if shape[0] > 1 and "p" in events.dtype.names:
            limits["p"] = shape[0]
    else:
        limits = {"x": shape[0]}
    for field, limit in limits.items():
        values = events[field].astype(np.int64)
        bad = (values < 0) | (values >= limit)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"event {i} has {field}={int(values[i])}, outside the sensor "
                f"(valid {field}: 0..{limit - 1} for frame shape {shape})"
            )


def bin_events(
    events: np.ndarray,
    sensor_size: SensorSize,
    dt: float,
    n_timesteps: int | None = None,
    t_start: float = 0.0,
) -> torch.Tensor:
    """Count events per time bin and sensor position.

    Bin ``k`` holds the events with ``t_start + k*dt <= t < t_start + (k+1)*dt``. Events before
    ``t_start`` or after the last bin are left out.

    Args:
        events: a time-sorted structured array (see the module docstring).
        sensor_size: ``(width, height, polarities)`` for a camera; ``(channels,)`` or
            ``(channels, 1, 1)`` for audio. With one polarity, ON and OFF are counted together.
        dt: bin length in seconds.
        n_timesteps: number of bins; ``None`` covers ``t_start`` to the last event.
        t_start: start of the first bin, in seconds.

    Returns:
        float32 tensor of shape ``(T, 2, H, W)`` (camera) or ``(T, C)`` (audio) holding event
        counts: a pixel with two events in one bin reads 2.0.

    Raises:
        ValueError: empty stream, unsorted timestamps, coordinates outside the sensor,
            non-positive ``dt`` or ``n_timesteps``, or no event at or after ``t_start`` when
            ``n_timesteps`` is ``None``.
    """
    camera = _is_camera(events)
    shape = frame_shape(sensor_size, camera)
    dt_us = _dt_to_microseconds(dt)
    if n_timesteps is not None and (isinstance(n_timesteps, bool) or int(n_timesteps) < 1):
        raise ValueError(f"n_timesteps must be a positive integer or None, got {n_timesteps!r}")
    if len(events) == 0:
        raise ValueError(
            "cannot bin an empty event stream (0 events): the sample has no events to place in "
            "time bins"
        )
    t = events["t"].astype(np.int64, copy=False)
    _check_sorted(t)
    _check_coordinates(events, shape, camera)

    relative = t - round(t_start * 1e6)
    if dt_us.is_integer():
        index = relative // int(dt_us)
    else:
        index = np.floor(relative / dt_us).astype(np.int64)
    if n_timesteps is None:
        if index[-1] < 0:
            raise ValueError(
                f"all events are before t_start={t_start} s; give n_timesteps or an earlier t_start"
            )
        n_timesteps = int(index[-1]) + 1
    n_timesteps = int(n_timesteps)
    keep = (index >= 0) & (index < n_timesteps)
    index = index[keep]
    selected = events[keep]
    frame_size = math.prod(shape)
    if camera:
        polarity = (
            selected["p"].astype(np.int64)
            if shape[0] > 1 and "p" in events.dtype.names
            else np.zeros(len(selected), dtype=np.int64)
        )
        position = (polarity * shape[1] + selected["y"].astype(np.int64)) * shape[2] + selected[
            "x"
        ].astype(np.int64)
    else:
        position = selected["x"].astype(np.int64)
    counts = np.bincount(index * frame_size + position, minlength=n_timesteps * frame_size)
    return torch.from_numpy(counts.astype(np.float32).reshape(n_timesteps, *shape))


def downsample_sensor_size(sensor_size: SensorSize, factor: int) -> tuple[int, ...]:
    """Sensor size after :func:`downsample_events` by ``factor`` (rounding up)."""
    _check_factor(factor)
    width, height, polarities = (int(s) for s in sensor_size)
    return (-(-width // factor), -(-height // factor), polarities)


def _check_factor(factor: int) -> None:
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")


def downsample_events(events: np.ndarray, factor: int) -> np.ndarray:
    """Spatial down-sampling: pixel ``(x, y)`` becomes ``(x // factor, y // factor)``.

    Events are kept (several may now share a pixel and a bin, and are counted there); time and
    polarity are unchanged. DVS Gesture uses ``factor=4`` to go from 128x128 to 32x32.

    Args:
        events: camera events.
        factor: positive integer.

    Returns:
        A new array of the same dtype.
    """
    _check_factor(factor)
    camera = _is_camera(events)
    out = events.copy()
    out["x"] = events["x"] // factor
    if camera:
        out["y"] = events["y"] // factor
    return out


def first_saccade(events: np.ndarray, duration: float = 0.1) -> np.ndarray:
    """Keep the events of N-MNIST's first saccade: ``t < duration`` (seconds, default 100 ms).

    Each of N-MNIST's three saccades lasts about 100 ms, starting at t = 0; this keeps about a
    third of the events, as tonic's ``first_saccade_only``.
    """
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    _is_camera(events)
    return events[events["t"] < round(duration * 1e6)]
